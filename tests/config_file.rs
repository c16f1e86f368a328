//! Loading the configuration from real TOML files: every key round-trips,
//! refusals name the file, the key and the value, a negative interval is
//! coerced with a WARN, and the shipped example file is the defaults.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use factwal::{Config, Error, RecoveryMode};

mod common;

/// Writes `text` to a file named `name` in `dir` and returns its path.
fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A configuration in which every value differs from its default. (The
/// configuration structs are `#[non_exhaustive]`, so they are changed field
/// by field; a field forgotten here keeps its default and makes
/// `full_file_round_trips` fail against the hand-written file.)
fn every_key_changed() -> Config {
    let mut config = Config::new("/srv/factwal/data");
    let persistence = &mut config.persistence;
    persistence.wal_enabled = false;
    persistence.wal_path = Some(PathBuf::from("/fast-disk/factwal-wal"));
    persistence.segment_bytes = 1 << 20;
    persistence.max_record_bytes = 64 * 1024;
    persistence.recovery_mode = RecoveryMode::PointInTime;
    persistence.wal_bytes_max = 8 << 20;
    persistence.redb_cache_bytes = 16 << 20;
    persistence.max_writes_in_flight = 512;
    let checkpoint = &mut config.checkpoint;
    checkpoint.interval_s = 2.5;
    checkpoint.warn_ms = 50;
    checkpoint.wal_bytes_trigger = 4096;
    checkpoint.samples = 16;
    checkpoint.join_timeout_s = 0.5;
    config
}

const EVERY_KEY_CHANGED_TOML: &str = r#"
[persistence]
data_dir = "/srv/factwal/data"
wal_enabled = false
wal_path = "/fast-disk/factwal-wal"
segment_bytes = 1048576
max_record_bytes = 65536
recovery_mode = "point-in-time"
wal_bytes_max = 8388608
redb_cache_bytes = 16777216
max_writes_in_flight = 512

[checkpoint]
interval_s = 2.5
warn_ms = 50
wal_bytes_trigger = 4096
samples = 16
join_timeout_s = 0.5
"#;

/// Every `table.key` of a TOML document.
fn keys_of(text: &str) -> BTreeSet<String> {
    let document: toml::Table = toml::from_str(text).unwrap();
    let mut keys = BTreeSet::new();
    for (table, values) in document {
        for key in values.as_table().unwrap().keys() {
            keys.insert(format!("{table}.{key}"));
        }
    }
    keys
}

/// True when `key` names `table.name`. Parse errors currently give the bare
/// name while Error::Config documents the table-qualified one; this accepts
/// both, and `parse_errors_name_the_key_with_its_table` pins the documented
/// form.
fn names_key(key: &str, table: &str, name: &str) -> bool {
    key == name || key == format!("{table}.{name}")
}

fn config_error(result: Result<Config, Error>) -> (PathBuf, String, String, String) {
    match result {
        Err(Error::Config { path, key, value, reason }) => (path, key, value, reason),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn full_file_round_trips() {
    // Loads a hand-written file setting every key to a non-default value and
    // compares with the same configuration built in code; then writes that
    // configuration back out with serde and loads it again. The hand-written
    // file must set every key serde writes, so no key is left untested.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "factwal.toml", EVERY_KEY_CHANGED_TOML);
    let expected = every_key_changed();
    assert_eq!(Config::from_file(&path).unwrap(), expected);
    let written = toml::to_string(&expected).unwrap();
    assert_eq!(keys_of(&written), keys_of(EVERY_KEY_CHANGED_TOML));
    assert_eq!(keys_of(&written).len(), 14);
    let path = write_file(dir.path(), "written.toml", &written);
    assert_eq!(Config::from_file(&path).unwrap(), expected);
}

#[test]
fn empty_file_is_the_defaults() {
    // Every key is optional: an empty file loads as Config::default().
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "empty.toml", "");
    assert_eq!(Config::from_file(&path).unwrap(), Config::default());
}

#[test]
fn unknown_key_is_refused_naming_the_file_and_the_key() {
    // A misspelt key in a table, and an unknown top-level table, are each
    // refused with the file's path, the key as written, and the parser's
    // reason; the one-line message carries the path and the key too.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "typo.toml",
        "[persistence]\nwal_enabled = true\nsegment_byte = 8192\n",
    );
    let error = Config::from_file(&path).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("segment_byte"), "{text}");
    let (error_path, key, value, reason) = config_error(Err(error));
    assert_eq!(error_path, path);
    assert!(names_key(&key, "persistence", "segment_byte"), "{key}");
    assert_eq!(value, "8192");
    assert!(reason.contains("unknown field `segment_byte`"), "{reason}");

    let path = write_file(dir.path(), "table.toml", "[persistance]\nsegment_bytes = 8192\n");
    let (error_path, key, _, reason) = config_error(Config::from_file(&path));
    assert_eq!(error_path, path);
    assert!(key.contains("persistance"), "{key}");
    assert!(reason.contains("unknown field `persistance`"), "{reason}");
}

#[test]
fn wrong_type_is_refused_naming_the_key_and_the_value() {
    // Values of the wrong type (a string for a boolean, a float for a count,
    // an unknown enum variant) are refused with the key and the value as
    // written in the file, and the file's path.
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[persistence]\nwal_enabled = \"yes\"\n",
            "persistence",
            "wal_enabled",
            "\"yes\"",
            "expected a boolean",
        ),
        ("[checkpoint]\nsamples = 1.5\n", "checkpoint", "samples", "1.5", "expected usize"),
        (
            "[persistence]\nrecovery_mode = \"sometimes\"\n",
            "persistence",
            "recovery_mode",
            "\"sometimes\"",
            "unknown variant",
        ),
    ];
    for (index, (text, table, name, value_expected, reason_expected)) in
        cases.into_iter().enumerate()
    {
        let path = write_file(dir.path(), &format!("type{index}.toml"), text);
        let (error_path, key, value, reason) = config_error(Config::from_file(&path));
        assert_eq!(error_path, path);
        assert!(names_key(&key, table, name), "{key}");
        assert_eq!(value, value_expected);
        assert!(reason.contains(reason_expected), "{reason}");
    }
}

#[test]
fn parse_errors_name_the_key_with_its_table() {
    // Error::Config documents its key as "the key, with its table:
    // `persistence.segment_bytes`", which is what range errors report; an
    // unknown key or a wrongly typed value must be named the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "range.toml", "[persistence]\nsegment_bytes = 100\n");
    assert_eq!(config_error(Config::from_file(&path)).1, "persistence.segment_bytes");
    let path = write_file(dir.path(), "type.toml", "[persistence]\nwal_enabled = \"yes\"\n");
    assert_eq!(config_error(Config::from_file(&path)).1, "persistence.wal_enabled");
    let path = write_file(dir.path(), "typo.toml", "[checkpoint]\ninterval = 1\n");
    assert_eq!(config_error(Config::from_file(&path)).1, "checkpoint.interval");
}

#[test]
fn out_of_range_value_in_a_file_names_the_file() {
    // A well-typed but out-of-range value is refused by validation with the
    // file's path (not "<builder>"), the full key and the value.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "range.toml", "[checkpoint]\nsamples = 0\n");
    let (error_path, key, value, _) = config_error(Config::from_file(&path));
    assert_eq!((error_path, key.as_str(), value.as_str()), (path, "checkpoint.samples", "0"));
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    // Loading a path that does not exist gives Error::Io with that path and
    // the operating system's "not found".
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    match Config::from_file(&path) {
        Err(Error::Io { path: error_path, operation, what, source }) => {
            assert_eq!(error_path, path);
            assert_eq!((operation, what), (factwal::IoOp::Read, "config"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn negative_interval_becomes_zero_with_a_warning() {
    // Loads a file with a negative checkpoint interval under a capturing
    // subscriber: the interval must read as 0 (loop disabled) and exactly one
    // WARN on target factwal::config must name the key, the value and the
    // file. A zero interval loads silently.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "negative.toml", "[checkpoint]\ninterval_s = -3\n");
    let (config, events) = common::capture(|| Config::from_file(&path).unwrap());
    assert_eq!(config.checkpoint.interval_s, 0.0);
    assert_eq!(config.checkpoint_interval(), None);
    let warnings: Vec<_> = events.iter().filter(|e| e.level == tracing::Level::WARN).collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    let warning = warnings[0];
    assert_eq!(warning.target, "factwal::config");
    assert_eq!(warning.fields.get("key").map(String::as_str), Some("checkpoint.interval_s"));
    assert_eq!(warning.fields.get("value").map(String::as_str), Some("-3.0"));
    assert_eq!(warning.fields.get("file"), Some(&path.display().to_string()));

    let path = write_file(dir.path(), "zero.toml", "[checkpoint]\ninterval_s = 0\n");
    let (config, events) = common::capture(|| Config::from_file(&path).unwrap());
    assert_eq!(config.checkpoint.interval_s, 0.0);
    assert!(events.iter().all(|e| e.level != tracing::Level::WARN), "{events:?}");
}

#[test]
fn example_file_loads_as_the_defaults_and_names_every_key() {
    // Loads factwal.example.toml from the repository root: it must equal
    // Config::default() (as the unit test in src/config.rs checks on the
    // text), and it must set every key the defaults have, with wal_path, the
    // one key without a default, present as a comment.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("factwal.example.toml");
    assert_eq!(Config::from_file(&path).unwrap(), Config::default());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(keys_of(&text), keys_of(&toml::to_string(&Config::default()).unwrap()));
    assert!(text.lines().any(|line| line.starts_with("# wal_path = ")), "wal_path is documented");
}

#[test]
fn an_empty_wal_path_is_refused_wherever_it_comes_from() {
    // `wal_path = ""` once meant "the current directory": a 64 MiB segment
    // appeared wherever the process ran. It is refused, from a file, from
    // the builder and from the command line, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "empty.toml", "[persistence]\nwal_path = \"\"\n");
    match Config::from_file(&path).unwrap_err() {
        factwal::Error::Config { key, value, reason, .. } => {
            assert_eq!((key.as_str(), value.as_str()), ("persistence.wal_path", "\"\""));
            assert!(reason.contains("must not be empty"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let error = Config::new(dir.path()).wal_path("").validate().unwrap_err();
    assert!(
        matches!(error, factwal::Error::Config { ref key, .. } if key == "persistence.wal_path"),
        "{error}"
    );
    assert!(factwal::Store::open(Config::new(dir.path().join("store")).wal_path("")).is_err());
    let output = common::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_factwal"))
            .args([
                "load",
                "--dir",
                &dir.path().join("cli").display().to_string(),
                "--wal-path",
                "",
                "--sessions",
                "1",
                "--writes",
                "1",
            ])
            .current_dir(dir.path()),
    );
    // The command line refuses an empty value itself (a usage error).
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--wal-path"));
    let stray: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(stray.iter().all(|name| !name.to_string_lossy().ends_with(".wal")), "{stray:?}");
}

#[test]
fn an_unknown_table_is_named_as_a_table() {
    // `[x]` is an unknown table: the error says so, without an empty value.
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "table.toml", "[x]\na = 1\n");
    let text = Config::from_file(&path).unwrap_err().to_string();
    assert!(text.contains("table [x]: unknown field `x`"), "{text}");
    assert!(!text.contains("= :"), "{text}");
}

#[test]
fn writes_in_flight_are_bounded() {
    // max_writes_in_flight is at least 1 and at most 16 Mi.
    let dir = tempfile::tempdir().unwrap();
    for writes in [0, (16 << 20) + 1] {
        let error = Config::new(dir.path()).max_writes_in_flight(writes).validate().unwrap_err();
        assert!(
            matches!(error, factwal::Error::Config { ref key, .. } if key == "persistence.max_writes_in_flight"),
            "{error}"
        );
    }
    Config::new(dir.path()).max_writes_in_flight(1).validate().unwrap();
}

#[test]
fn the_redb_cache_is_bounded() {
    // redb_cache_bytes is checked against its limits and reaches redb.
    let dir = tempfile::tempdir().unwrap();
    for bytes in [0, (1 << 20) - 1, (64u64 << 30) + 1] {
        let error = Config::new(dir.path()).redb_cache_bytes(bytes).validate().unwrap_err();
        assert!(
            matches!(error, factwal::Error::Config { ref key, .. } if key == "persistence.redb_cache_bytes"),
            "{error}"
        );
    }
    let store = factwal::Store::open(Config::new(dir.path()).redb_cache_bytes(1 << 20)).unwrap();
    store.assert("s", "f", b"v").unwrap();
    assert!(store.close().is_clean());
}
