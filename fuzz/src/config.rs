//! The `config` target: arbitrary text into `Config::from_toml`.
//!
//! What it checks, besides "never panics": a refusal is an `Error::Config`
//! naming the file given as origin, with a reason, printed on one line; an
//! accepted config passes `validate()`, and written back as TOML it loads
//! again to the same config.

use std::path::Path;

use factwal::{Config, Error};

/// The file name given as origin.
pub const ORIGIN: &str = "fuzz.toml";

/// Runs every check on one input (bytes that are not UTF-8 are replaced, as
/// a lossy reader would).
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let origin = Path::new(ORIGIN);
    match Config::from_toml(&text, origin) {
        Ok(config) => {
            config.validate().expect("an accepted config validates");
            let written = toml::to_string(&config).expect("an accepted config serializes");
            let again = Config::from_toml(&written, origin).unwrap_or_else(|error| {
                panic!("the config written back is refused: {error}\n{written}")
            });
            assert_eq!(again, config, "written back as\n{written}");
        }
        Err(error @ Error::Config { .. }) => {
            let Error::Config { path, reason, .. } = &error else { unreachable!() };
            assert_eq!(path, origin, "the error names the file");
            assert!(!reason.trim().is_empty(), "the error gives a reason");
            let shown = error.to_string();
            assert!(!shown.contains('\n'), "a config error is one line: {shown:?}");
        }
        Err(other) => panic!("a config text gave a non-config error: {other:?}"),
    }
}
