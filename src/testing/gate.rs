//! A gate in front of one kind of call of the simulated disk
//! ([`SimDisk::gate`](super::SimDisk::gate)): calls wait there until the test
//! lets them through. A test that must act while a `sync_data` is in flight
//! (writers queueing behind it, a stop waiting for it) holds the sync at the
//! gate and waits until it has arrived, instead of sleeping and hoping the
//! scheduler kept to the timing.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::fault::{Call, Hook};
use crate::sync::lock;

/// The test's handle on a gate. Dropping it opens the gate for good, so that
/// a test failing while calls are held leaves no thread waiting forever.
pub struct Gate {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<GateState>,
    /// Signalled when a call arrives at the gate and when the gate lets
    /// calls through.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Every call passes.
    open: bool,
    /// Calls that may still pass while the gate is closed.
    admitted: u64,
    /// Calls waiting at the gate now.
    held: usize,
}

impl Gate {
    /// A closed gate, and the hook that makes each call wait at it.
    pub(super) fn closed() -> (Gate, Hook) {
        let shared =
            Arc::new(Shared { state: Mutex::new(GateState::default()), changed: Condvar::new() });
        let at_gate = shared.clone();
        (Gate { shared }, Arc::new(move |_: &Call| at_gate.pass()))
    }

    /// Lets `calls` more calls through, then holds again: calls already
    /// waiting or the next to arrive, whichever take the places first (among
    /// several waiting calls, the scheduler picks).
    pub fn admit(&self, calls: u64) {
        lock(&self.shared.state).admitted += calls;
        self.shared.changed.notify_all();
    }

    /// Lets every waiting call and every later one through.
    pub fn open(&self) {
        lock(&self.shared.state).open = true;
        self.shared.changed.notify_all();
    }

    /// Calls waiting at the gate now.
    pub fn held(&self) -> usize {
        lock(&self.shared.state).held
    }

    /// Waits until at least `calls` calls wait at the gate: true once they
    /// do, false if `timeout` passed first.
    pub fn wait_held(&self, calls: usize, timeout: Duration) -> bool {
        let state = lock(&self.shared.state);
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |state| state.held < calls)
            .unwrap_or_else(PoisonError::into_inner);
        state.held >= calls
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate").field("state", &*lock(&self.shared.state)).finish()
    }
}

impl Shared {
    /// A call at the gate: returns once the gate lets it through.
    fn pass(&self) {
        let mut state = lock(&self.state);
        if !state.open && state.admitted == 0 {
            state.held += 1;
            self.changed.notify_all();
            while !state.open && state.admitted == 0 {
                state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            state.held -= 1;
        }
        if !state.open {
            state.admitted -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::super::{OpKind, Side, SimDisk};

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
    const MOMENT: std::time::Duration = std::time::Duration::from_millis(20);

    #[test]
    fn a_gate_holds_syncs_until_the_test_lets_them_through() {
        // One sync is held, then admitted: it was not counted (nor made)
        // while held. Two more are held together and released by opening
        // the gate, after which syncs pass without waiting. Writes never
        // meet the gate.
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path());
        let file = disk.wal_io().create(&dir.path().join("file")).unwrap();
        let gate = disk.gate(OpKind::Sync, Some(Side::Wal));
        file.write_at(0, b"x").unwrap();

        let syncing = {
            let file = file.clone();
            thread::spawn(move || file.sync_data())
        };
        assert!(gate.wait_held(1, PATIENCE), "the sync reached the gate");
        assert_eq!(disk.count(OpKind::Sync), 0, "a held sync has not happened");
        gate.admit(1);
        syncing.join().unwrap().unwrap();
        assert_eq!(disk.count(OpKind::Sync), 1);
        assert_eq!(gate.held(), 0);
        assert!(!gate.wait_held(1, MOMENT), "nothing is held");

        let syncing: Vec<_> = (0..2)
            .map(|_| {
                let file = file.clone();
                thread::spawn(move || file.sync_data())
            })
            .collect();
        assert!(gate.wait_held(2, PATIENCE));
        gate.open();
        for sync in syncing {
            sync.join().unwrap().unwrap();
        }
        file.sync_data().unwrap();
        assert_eq!(disk.count(OpKind::Sync), 4);
    }

    #[test]
    fn admitted_calls_pass_without_waiting_and_dropping_the_gate_opens_it() {
        // Two places admitted ahead: the next two syncs pass on this very
        // thread; the third is held until the test drops its handle.
        let dir = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(dir.path());
        let file = disk.wal_io().create(&dir.path().join("file")).unwrap();
        let gate = disk.gate(OpKind::Sync, None);
        gate.admit(2);
        file.sync_data().unwrap();
        file.sync_data().unwrap();
        let syncing = {
            let file = file.clone();
            thread::spawn(move || file.sync_data())
        };
        assert!(gate.wait_held(1, PATIENCE));
        drop(gate);
        syncing.join().unwrap().unwrap();
        assert_eq!(disk.count(OpKind::Sync), 3);
    }
}
