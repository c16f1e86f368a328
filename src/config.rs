//! Configuration: a TOML file (`factwal.example.toml` documents every key) or
//! a builder in code. Unknown keys are refused; every value is checked against
//! its limits, and a refusal names the file, the key and the value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoOp, Result};
// The largest segment and record accepted are the format's own bounds.
use crate::wal::format::{
    self, RECORD_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
// Defined beside the scan that acts on it; configured here.
pub use crate::wal::recovery::RecoveryMode;

const MIB: u64 = 1024 * 1024;
/// Smallest segment accepted, so that tests can exercise many segment rolls.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Smallest redb cache accepted.
pub const REDB_CACHE_BYTES_MIN: u64 = MIB;
/// Largest redb cache accepted.
pub const REDB_CACHE_BYTES_MAX: u64 = 64 * 1024 * MIB;
/// Longest checkpoint interval accepted, in seconds (a day).
pub const CHECKPOINT_INTERVAL_S_MAX: f64 = 86_400.0;
/// Default `persistence.segment_bytes`.
const SEGMENT_BYTES_DEFAULT: u64 = 64 * MIB;
/// Default `persistence.max_record_bytes`.
const RECORD_BYTES_DEFAULT: u64 = 16 * MIB;
/// Most writes without a thread (`Store::write_async`) accepted in flight:
/// the largest `persistence.max_writes_in_flight`.
pub const WRITES_IN_FLIGHT_MAX: u64 = 16 * 1024 * 1024;
/// Default `persistence.max_writes_in_flight`.
const WRITES_IN_FLIGHT_DEFAULT: u64 = 65_536;

// How the limits relate, checked when the crate compiles.
const _: () = {
    // The smallest segment holds its header and a record of a small batch.
    assert!(SEGMENT_BYTES_MIN > format::SEGMENT_HEADER_BYTES + format::RECORD_HEADER_BYTES);
    assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_MAX);
    assert!(REDB_CACHE_BYTES_MIN <= REDB_CACHE_BYTES_MAX);
    // The defaults are within the limits, and a default segment holds
    // several records of the default largest size.
    assert!(
        SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT && SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX
    );
    assert!(RECORD_BYTES_DEFAULT <= RECORD_BYTES_MAX);
    assert!(1 <= WRITES_IN_FLIGHT_DEFAULT && WRITES_IN_FLIGHT_DEFAULT <= WRITES_IN_FLIGHT_MAX);
    let record = format::RECORD_HEADER_BYTES + RECORD_BYTES_DEFAULT;
    assert!(format::SEGMENT_HEADER_BYTES + 3 * record <= SEGMENT_BYTES_DEFAULT);
};

/// `[persistence]`: where and how data is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PersistenceConfig {
    /// Directory holding `state.redb`, the lock file and (by default) the WAL.
    pub data_dir: PathBuf,
    /// WAL mode (true) or direct mode, one redb commit per write (false).
    pub wal_enabled: bool,
    /// WAL directory; `<data_dir>/wal` when unset.
    pub wal_path: Option<PathBuf>,
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Largest encoded batch accepted; larger ones get `LimitExceeded`.
    pub max_record_bytes: u64,
    /// What recovery does with a WAL that does not end cleanly.
    pub recovery_mode: RecoveryMode,
    /// When the unfolded WAL reaches this many bytes, writers wait for a fold.
    pub wal_bytes_max: u64,
    /// Memory redb may use to cache `state.redb`'s pages (redb's own default
    /// is 1 GiB).
    pub redb_cache_bytes: u64,
    /// Writes without a thread of their own (`Store::write_async`,
    /// `Store::write_many`) accepted and not yet settled; one more is
    /// refused with `LimitExceeded`. Blocking writes are bounded by their
    /// threads and not counted.
    pub max_writes_in_flight: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            data_dir: PathBuf::from("factwal-data"),
            wal_enabled: true,
            wal_path: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            max_record_bytes: RECORD_BYTES_DEFAULT,
            recovery_mode: RecoveryMode::default(),
            wal_bytes_max: 1024 * MIB,
            redb_cache_bytes: 64 * MIB,
            max_writes_in_flight: WRITES_IN_FLIGHT_DEFAULT,
        }
    }
}

/// `[checkpoint]`: the fold loop's cadence and reporting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// Seconds between passes; 0 disables the loop. Negative values are
    /// coerced to 0 with a WARN by the file loader.
    pub interval_s: f64,
    /// A pass slower than this is reported with a WARN.
    pub warn_ms: u64,
    /// Wake the loop early once this many unfolded WAL bytes have built up.
    pub wal_bytes_trigger: u64,
    /// How many pass durations are kept for the statistics.
    pub samples: usize,
    /// How long close waits for the loop thread to stop.
    pub join_timeout_s: f64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_s: 1.0,
            warn_ms: 200,
            wal_bytes_trigger: 64 * MIB,
            samples: 512,
            join_timeout_s: 5.0,
        }
    }
}

/// The whole configuration.
///
/// ```
/// let config = factwal::Config::new("/tmp/factwal-doc").segment_bytes(8 << 20).max_record_bytes(1 << 20);
/// config.validate().unwrap();
/// assert_eq!(config.wal_dir(), std::path::Path::new("/tmp/factwal-doc/wal"));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// `[persistence]`.
    pub persistence: PersistenceConfig,
    /// `[checkpoint]`.
    pub checkpoint: CheckpointConfig,
}

impl Config {
    /// Defaults with the given data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Config::default();
        config.persistence.data_dir = data_dir.into();
        config
    }

    /// Sets WAL mode (true, the default) or direct mode (false).
    pub fn wal_enabled(mut self, enabled: bool) -> Self {
        self.persistence.wal_enabled = enabled;
        self
    }

    /// Sets the WAL directory.
    pub fn wal_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.persistence.wal_path = Some(path.into());
        self
    }

    /// Sets the segment size.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.persistence.segment_bytes = bytes;
        self
    }

    /// Sets the largest record accepted.
    pub fn max_record_bytes(mut self, bytes: u64) -> Self {
        self.persistence.max_record_bytes = bytes;
        self
    }

    /// Sets the recovery mode.
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.persistence.recovery_mode = mode;
        self
    }

    /// Sets the unfolded-WAL bound beyond which writers wait.
    pub fn wal_bytes_max(mut self, bytes: u64) -> Self {
        self.persistence.wal_bytes_max = bytes;
        self
    }

    /// Sets the memory redb may use to cache pages.
    pub fn redb_cache_bytes(mut self, bytes: u64) -> Self {
        self.persistence.redb_cache_bytes = bytes;
        self
    }

    /// Sets how many writes without a thread may be in flight.
    pub fn max_writes_in_flight(mut self, writes: u64) -> Self {
        self.persistence.max_writes_in_flight = writes;
        self
    }

    /// The WAL directory in force.
    pub fn wal_dir(&self) -> PathBuf {
        match &self.persistence.wal_path {
            Some(path) => path.clone(),
            None => self.persistence.data_dir.join("wal"),
        }
    }

    /// The redb file.
    pub fn state_path(&self) -> PathBuf {
        self.persistence.data_dir.join("state.redb")
    }

    /// The checkpoint interval, `None` when the loop is disabled.
    pub fn checkpoint_interval(&self) -> Option<Duration> {
        let seconds = self.checkpoint.interval_s;
        (seconds > 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
    }

    /// Loads and validates a TOML file.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("broker.toml");
    /// std::fs::write(&path, "[persistence]\ndata_dir = \"store\"\nsegment_bytes = 33554432\n")?;
    /// let config = factwal::Config::from_file(&path)?;
    /// assert_eq!(config.persistence.segment_bytes, 32 << 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `Io` when the file cannot be read; `Config` naming the file, the key
    /// and the value when it does not parse or validate.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::io(path, IoOp::Read, "config", source))?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `origin` names the file in errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    /// use factwal::{Config, Error};
    ///
    /// let text = "[persistence]\ndata_dir = \"store\"\nsegment_bytes = 5\n";
    /// match Config::from_toml(text, Path::new("broker.toml")) {
    ///     Err(Error::Config { path, key, value, .. }) => {
    ///         assert_eq!((path.as_path(), key.as_str(), value.as_str()),
    ///                    (Path::new("broker.toml"), "persistence.segment_bytes", "5"));
    ///     }
    ///     other => panic!("expected a config error, got {other:?}"),
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// `Config` naming `origin`, the key and the value when the text does
    /// not parse or validate.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config> {
        let mut config: Config =
            toml::from_str(text).map_err(|error| toml_error(text, origin, &error))?;
        if config.checkpoint.interval_s < 0.0 {
            tracing::warn!(
                target: "factwal::config",
                key = "checkpoint.interval_s",
                value = config.checkpoint.interval_s,
                file = %origin.display(),
                "negative checkpoint interval coerced to 0 (loop disabled)"
            );
            config.checkpoint.interval_s = 0.0;
        }
        config.validate_at(origin)?;
        Ok(config)
    }

    /// Checks every value against its limits.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = factwal::Config::new("store").segment_bytes(32 << 20);
    /// assert!(config.validate().is_ok());
    /// let error = factwal::Config::new("store").segment_bytes(5).validate().unwrap_err();
    /// assert!(error.to_string().contains("persistence.segment_bytes"), "{error}");
    /// ```
    ///
    /// # Errors
    ///
    /// `Config` naming the first key out of its range, and why.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Path::new("<builder>"))
    }

    fn validate_at(&self, origin: &Path) -> Result<()> {
        self.persistence.check().and_then(|()| self.checkpoint.check()).map_err(
            |Refusal { key, value, reason }| Error::Config {
                path: origin.to_path_buf(),
                key: key.to_string(),
                value,
                reason,
            },
        )
    }
}

/// Why a value is refused: the key (with its table), the value as written,
/// the reason.
struct Refusal {
    key: &'static str,
    value: String,
    reason: String,
}

fn refuse(key: &'static str, value: impl ToString, reason: impl Into<String>) -> Refusal {
    Refusal { key, value: value.to_string(), reason: reason.into() }
}

/// Refuses `value` outside `range`, saying what the range is.
fn within<T: PartialOrd + fmt::Display>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> std::result::Result<(), Refusal> {
    if range.contains(&value) {
        return Ok(());
    }
    let reason = format!("must be between {} and {}", range.start(), range.end());
    Err(refuse(key, value, reason))
}

impl PersistenceConfig {
    fn check(&self) -> std::result::Result<(), Refusal> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(refuse("persistence.data_dir", "\"\"", "must not be empty"));
        }
        if self.wal_path.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
            let reason = "must not be empty (leave it out for <data_dir>/wal)";
            return Err(refuse("persistence.wal_path", "\"\"", reason));
        }
        let cache_bytes = REDB_CACHE_BYTES_MIN..=REDB_CACHE_BYTES_MAX;
        within("persistence.redb_cache_bytes", self.redb_cache_bytes, cache_bytes)?;
        let segment_bytes = SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX;
        within("persistence.segment_bytes", self.segment_bytes, segment_bytes)?;
        within("persistence.max_record_bytes", self.max_record_bytes, 1..=RECORD_BYTES_MAX)?;
        let in_flight = 1..=WRITES_IN_FLIGHT_MAX;
        within("persistence.max_writes_in_flight", self.max_writes_in_flight, in_flight)?;
        let overhead = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES;
        if self.max_record_bytes + overhead > self.segment_bytes {
            let reason = format!(
                "a segment must hold one largest record: at least max_record_bytes + {overhead}"
            );
            return Err(refuse("persistence.segment_bytes", self.segment_bytes, reason));
        }
        if self.wal_bytes_max < self.segment_bytes {
            let reason = "must be at least segment_bytes";
            return Err(refuse("persistence.wal_bytes_max", self.wal_bytes_max, reason));
        }
        Ok(())
    }
}

impl CheckpointConfig {
    fn check(&self) -> std::result::Result<(), Refusal> {
        if !self.interval_s.is_finite()
            || self.interval_s < 0.0
            || self.interval_s > CHECKPOINT_INTERVAL_S_MAX
        {
            let reason = format!("must be between 0 (disabled) and {CHECKPOINT_INTERVAL_S_MAX}");
            return Err(refuse("checkpoint.interval_s", self.interval_s, reason));
        }
        within("checkpoint.samples", self.samples, 1..=1_000_000)?;
        let join_timeout_s = self.join_timeout_s;
        if !join_timeout_s.is_finite() || join_timeout_s <= 0.0 || join_timeout_s > 3_600.0 {
            let reason = "must be above 0 and at most 3600";
            return Err(refuse("checkpoint.join_timeout_s", join_timeout_s, reason));
        }
        if self.wal_bytes_trigger == 0 {
            return Err(refuse("checkpoint.wal_bytes_trigger", 0, "must be above 0"));
        }
        Ok(())
    }
}

/// Turns a TOML parse or type error into a `Config` error naming the key
/// (with its table: `persistence.segment_bytes`) and the value found at the
/// place the parser points to.
fn toml_error(text: &str, origin: &Path, error: &toml::de::Error) -> Error {
    let refuse = |key: &str, value: &str| Error::Config {
        path: origin.to_path_buf(),
        key: one_line(key),
        value: one_line(value),
        reason: one_line(error.message().trim()),
    };
    let Some(span) = error.span() else {
        return refuse("<document>", "");
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
    let line = text[line_start..line_end].trim();
    if let Some(table) = table_header(line) {
        return refuse(table, "");
    }
    let (key, value) = line.split_once('=').unwrap_or((line, ""));
    let table = text[..line_start].lines().rev().find_map(|line| table_header(line.trim()));
    let key = match table {
        Some(table) => format!("{table}.{}", key.trim()),
        None => key.trim().to_string(),
    };
    refuse(&key, strip_comment(value.trim()))
}

/// Longest key, value or reason quoted in a config error, in characters.
const QUOTED_CHARS_MAX: usize = 160;

/// `text` made fit for a one-line error: control characters (the newlines of
/// a multi-line string the parser quotes back, say) escaped, and cut to
/// `QUOTED_CHARS_MAX` characters with an ellipsis.
fn one_line(text: &str) -> String {
    let mut shown = String::new();
    for (count, character) in text.chars().enumerate() {
        if count == QUOTED_CHARS_MAX {
            shown.push('…');
            break;
        }
        if character.is_control() {
            shown.extend(character.escape_default());
        } else {
            shown.push(character);
        }
    }
    shown
}

/// `persistence` for the line `[persistence]`.
fn table_header(line: &str) -> Option<&str> {
    line.strip_prefix('[')?.split(']').next().map(str::trim)
}

/// The value without a trailing `# comment` (outside a quoted string).
fn strip_comment(value: &str) -> &str {
    let mut quoted = false;
    for (index, character) in value.char_indices() {
        match character {
            '"' | '\'' => quoted = !quoted,
            '#' if !quoted => return value[..index].trim_end(),
            _ => {}
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_and_bad_value_are_named() {
        // A typo'd key and a wrongly typed value each give an error naming the
        // file, the key and the value.
        let origin = Path::new("conf.toml");
        let error = Config::from_toml("[persistence]\nsegment_byte = 5\n", origin).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("conf.toml") && text.contains("segment_byte"), "{text}");
        let error =
            Config::from_toml("[persistence]\nsegment_bytes = \"big\"\n", origin).unwrap_err();
        match error {
            Error::Config { key, value, .. } => {
                assert_eq!(key, "persistence.segment_bytes");
                assert_eq!(value, "\"big\"");
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = Config::from_toml("[persistence]\nsegment_bytes = 100\n", origin).unwrap_err();
        assert!(
            matches!(error, Error::Config { ref key, .. } if key == "persistence.segment_bytes"),
            "{error}"
        );
    }

    #[test]
    fn comments_are_not_part_of_the_value() {
        let error =
            Config::from_toml("[persistence]\nwal_enabled = 1 # yes\n", Path::new("c.toml"))
                .unwrap_err();
        match error {
            Error::Config { key, value, .. } => {
                assert_eq!((key.as_str(), value.as_str()), ("persistence.wal_enabled", "1"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let error = Config::from_toml("[persistance]\n", Path::new("c.toml")).unwrap_err();
        assert!(
            matches!(error, Error::Config { ref key, .. } if key == "persistance"),
            "{error:?}"
        );
    }

    #[test]
    fn an_error_quoting_a_multi_line_value_is_one_bounded_line() {
        // Found by the `config` fuzz target: a multi-line string given as an
        // enum value comes back inside the parser's reason, newlines and all
        // (TOML drops the newline right after the opening quotes).
        // The error must still print as one line, and quote a bounded amount.
        let long = "x".repeat(1000);
        let text = format!("[persistence]\nrecovery_mode = \"\"\"\nnot-a-mode\n\n# {long}\"\"\"\n");
        let error = Config::from_toml(&text, Path::new("c.toml")).unwrap_err();
        let shown = error.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
        assert!(
            shown.chars().count() < 3 * QUOTED_CHARS_MAX + 100,
            "{} characters",
            shown.chars().count()
        );
        match error {
            Error::Config { key, reason, .. } => {
                assert_eq!(key, "persistence.recovery_mode");
                assert!(reason.starts_with("unknown variant `not-a-mode\\n\\n# xxx"), "{reason}");
                assert!(reason.ends_with('…'), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(one_line("a\r\nb\tc"), "a\\r\\nb\\tc");
        assert_eq!(one_line(&"é".repeat(QUOTED_CHARS_MAX)), "é".repeat(QUOTED_CHARS_MAX));
    }

    #[test]
    fn negative_interval_is_coerced_to_zero() {
        let config =
            Config::from_toml("[checkpoint]\ninterval_s = -3\n", Path::new("c.toml")).unwrap();
        assert_eq!(config.checkpoint.interval_s, 0.0);
        assert_eq!(config.checkpoint_interval(), None);
    }

    #[test]
    fn example_file_parses_to_the_defaults() {
        // The shipped example documents every key with its default value.
        let text = include_str!("../factwal.example.toml");
        let config = Config::from_toml(text, Path::new("factwal.example.toml")).unwrap();
        let mut expected = Config::new("factwal-data");
        expected.persistence.wal_path = None;
        assert_eq!(config, expected);
    }
}
