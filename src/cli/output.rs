//! Writing results: stdout lines and JSON, progress on stderr, and the small
//! formatting helpers the subcommands share.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::CliError;

/// The progress bar on screen, if any: stderr lines are printed around it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Prints one line on stderr without tearing a progress bar in half.
pub fn eprint_line(line: &str) {
    let bar = ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let print = || {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    match bar {
        Some(bar) => bar.suspend(print),
        None => print(),
    }
}

/// Progress of one long phase, on stderr: a bar when stderr is a terminal,
/// one plain line at the start otherwise (logs stay readable).
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Where the current slice of a phase measured in turns starts.
    slice_start: Cell<u64>,
}

impl Progress {
    /// Starts a phase of `length` steps (milliseconds, writes, ...).
    pub fn start(label: &str, length: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            eprint_line(&format!("{label} ..."));
            return Progress { bar: None, slice_start: Cell::new(0) };
        }
        let style = ProgressStyle::with_template("{prefix:<34} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(label.to_string());
        *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
        Progress { bar: Some(bar), slice_start: Cell::new(0) }
    }

    /// Moves the bar to `position` within the current slice, with a short
    /// status message.
    pub fn set(&self, position: u64, message: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.slice_start.get() + position);
            bar.set_message(message());
        }
    }

    /// Starts a new slice where the bar stands: a phase measured in turns
    /// moves one bar through all its slices.
    pub fn begin_slice(&self) {
        if let Some(bar) = &self.bar {
            self.slice_start.set(bar.position());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

/// Buffered stdout for a subcommand's results. A closed pipe
/// (`factwal facts | head`) ends the command quietly.
pub struct Out {
    inner: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Out {
    pub fn new() -> Out {
        Out { inner: std::io::BufWriter::new(std::io::stdout().lock()) }
    }

    pub fn line(&mut self, text: impl std::fmt::Display) -> Result<(), CliError> {
        writeln!(self.inner, "{text}").map_err(|e| CliError::io("write to stdout", e))
    }

    /// One JSON document on one line.
    pub fn json(&mut self, value: &impl Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CliError::failed(format!("encode JSON: {e}")))?;
        self.line(text)
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.inner.flush().map_err(|e| CliError::io("write to stdout", e))
    }
}

/// Standard base64 (RFC 4648, with padding), for values that are not UTF-8.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let group = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (index, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if index <= chunk.len() {
                text.push(char::from(ALPHABET[(group >> shift & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// A value as JSON wants it: the text when it is UTF-8, else base64 with
/// `encoding` saying so.
pub fn json_value(bytes: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (base64(bytes), Some("base64")),
    }
}

/// An id or a text value as plain output shows it: as it is when that is
/// unambiguous, else as a JSON string (quoted, with `\n`, `\"`, `\\` and
/// `\uXXXX` escapes, as the JSON output writes it). Quoted: anything empty,
/// holding whitespace, a control character, a quote, a backslash or one of
/// `also`, or starting with `base64:` (the plain form of a binary value).
/// So no id can forge a line or a column.
pub fn plain_text<'a>(text: &'a str, also: &[char]) -> std::borrow::Cow<'a, str> {
    let ambiguous = text.is_empty()
        || text.starts_with("base64:")
        || text.chars().any(|c| {
            c.is_whitespace() || c.is_control() || c == '"' || c == '\\' || also.contains(&c)
        });
    if ambiguous {
        std::borrow::Cow::Owned(serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}")))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A text value as the last column of a plain line: as it is (inner spaces
/// included, the value is the rest of the line) unless it could forge a
/// line or be misread: a control character, a leading quote, leading or
/// trailing whitespace, or the `base64:` prefix of a binary value. Then it
/// is a JSON string, as [`plain_text`] writes one.
pub fn plain_value(text: &str) -> std::borrow::Cow<'_, str> {
    let ambiguous = text.is_empty()
        || text.starts_with('"')
        || text.starts_with("base64:")
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
        || text.chars().any(char::is_control);
    if ambiguous {
        std::borrow::Cow::Owned(serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}")))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `41233` as `41,233`, for figures people read.
pub fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// Milliseconds with microsecond resolution, as the library's events print them.
pub fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// A duration for people: `0.412 ms`, `12.3 ms`, `1.20 s`.
pub fn human_duration(duration: Duration) -> String {
    let ms = millis(duration);
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn plain_text_quotes_what_could_forge_a_line_or_a_column() {
        assert_eq!(plain_text("s1", &[]), "s1");
        assert_eq!(plain_text("café", &[]), "café");
        assert_eq!(plain_text("a b", &[]), "\"a b\"");
        assert_eq!(plain_text("x\ns0 f0 forged", &[]), "\"x\\ns0 f0 forged\"");
        assert_eq!(plain_text("say \"hi\"", &[]), "\"say \\\"hi\\\"\"");
        assert_eq!(plain_text("", &[]), "\"\"");
        assert_eq!(plain_text("base64:Zg==", &[]), "\"base64:Zg==\"");
        assert_eq!(plain_text("a/b", &['/']), "\"a/b\"");
        assert_eq!(plain_text("a/b", &[]), "a/b");
        assert_eq!(plain_value("hello world"), "hello world");
        assert_eq!(plain_value("two\nlines"), "\"two\\nlines\"");
        assert_eq!(plain_value(" padded"), "\" padded\"");
        assert_eq!(plain_value("\"quoted\""), "\"\\\"quoted\\\"\"");
        assert_eq!(plain_value("base64:Zg=="), "\"base64:Zg==\"");
        assert_eq!(plain_value(""), "\"\"");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(41_233_001), "41,233,001");
    }
}
