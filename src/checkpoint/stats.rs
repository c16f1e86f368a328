//! Pass durations: the last `checkpoint.samples` of them, and their
//! percentiles for `Store::checkpoint_stats` and the close summary.

use std::collections::VecDeque;
use std::time::Duration;

/// Percentiles of recent pass durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CheckpointStats {
    /// Passes sampled (at most `checkpoint.samples`).
    pub n: usize,
    /// Median pass duration; `None` while `n` is 0.
    pub p50: Option<Duration>,
    /// 95th percentile; `None` while `n` is 0.
    pub p95: Option<Duration>,
    /// Longest pass sampled; `None` while `n` is 0.
    pub max: Option<Duration>,
}

/// A bounded window of pass durations.
#[derive(Debug)]
pub(crate) struct Samples {
    window: VecDeque<Duration>,
    capacity: usize,
}

impl Samples {
    pub(crate) fn new(capacity: usize) -> Samples {
        Samples { window: VecDeque::with_capacity(capacity), capacity: capacity.max(1) }
    }

    pub(crate) fn record(&mut self, elapsed: Duration) {
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(elapsed);
    }

    pub(crate) fn stats(&self) -> CheckpointStats {
        let mut sorted: Vec<Duration> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        CheckpointStats {
            n: sorted.len(),
            p50: percentile(&sorted, 50),
            p95: percentile(&sorted, 95),
            max: sorted.last().copied(),
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], percent: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_last_samples_and_ranks_them() {
        // 1..=600 ms into a window of 512: the first 88 fall out.
        let mut samples = Samples::new(512);
        assert_eq!(samples.stats(), CheckpointStats::default());
        for ms in 1..=600u64 {
            samples.record(Duration::from_millis(ms));
        }
        let stats = samples.stats();
        assert_eq!(stats.n, 512);
        assert_eq!(stats.max, Some(Duration::from_millis(600)));
        // Nearest rank over 89..=600: p50 is the 256th value, p95 the 487th.
        assert_eq!(stats.p50, Some(Duration::from_millis(88 + 256)));
        assert_eq!(stats.p95, Some(Duration::from_millis(88 + 487)));
        let mut one = Samples::new(4);
        one.record(Duration::from_millis(7));
        assert_eq!(one.stats().p50, Some(Duration::from_millis(7)));
        assert_eq!(one.stats().p95, Some(Duration::from_millis(7)));
    }
}
