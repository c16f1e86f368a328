//! The library's tracing events (checkpoint passes, slow-pass warnings,
//! recovery repairs) printed on stderr, one line each:
//!
//! `[  1.234s]  INFO factwal::checkpoint: checkpoint pass mode=passive busy=false log_frames=12 ...`
//!
//! A deliberately small subscriber: the binary needs levels and one line per
//! event, not spans or filters per target.

use std::fmt::Write as _;
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use super::output;

/// The `--log` levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn filter(self) -> LevelFilter {
        match self {
            Level::Off => LevelFilter::OFF,
            Level::Error => LevelFilter::ERROR,
            Level::Warn => LevelFilter::WARN,
            Level::Info => LevelFilter::INFO,
            Level::Debug => LevelFilter::DEBUG,
            Level::Trace => LevelFilter::TRACE,
        }
    }
}

/// Installs the stderr subscriber for the whole process (threads the store
/// starts included).
pub fn install(level: Level) {
    let subscriber = StderrLog { filter: level.filter(), started: Instant::now() };
    // Only fails if a subscriber is already installed, which `main` never does.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

struct StderrLog {
    filter: LevelFilter,
    started: Instant,
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.filter
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.filter)
    }

    // The library emits events only; spans get one shared id and are ignored.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let seconds = self.started.elapsed().as_secs_f64();
        let line = format!(
            "[{seconds:8.3}s] {:>5} {}: {}{}",
            metadata.level(),
            metadata.target(),
            fields.message,
            fields.rest
        );
        output::eprint_line(&line);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The event's message, then ` key=value` for every other field.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else if value.is_empty()
            || value.contains(|c: char| c.is_whitespace() || c == '=' || c == '"')
        {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        } else {
            // Bare words read better (`mode=passive`) and still split on spaces.
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}
