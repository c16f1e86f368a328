//! The `factwal` binary: argument parsing, the options every store
//! subcommand shares, error reporting and exit codes. Each subcommand lives
//! in its own module.

mod bench;
mod checkpoint;
mod crash;
mod demo;
mod dump;
mod facts;
mod inspect;
mod load;
mod log;
mod measure;
mod output;
mod problem;
mod salvage;
mod scratch;
mod verify;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use factwal::{Config, Error};

/// Exit code of a corrupted WAL or `state.redb` (and of `verify` finding
/// corruption).
pub const EXIT_CORRUPTED: u8 = 2;
/// Exit code of a file written in a format version newer than this build
/// reads: not damage, and nothing in the runbook for damage applies.
pub const EXIT_UNSUPPORTED_VERSION: u8 = 4;
/// Exit code of any other failure.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a command line that does not parse. Not 2, which means
/// corruption: a script checking `verify` must not mistake a typo for it.
pub const EXIT_USAGE: u8 = 64;
/// Exit code when stdout was closed under us (`factwal facts | head`), as a
/// process killed by SIGPIPE would report it.
pub const EXIT_BROKEN_PIPE: u8 = 141;
/// Exit code of an internal error (a panic that was not contained: a bug).
pub const EXIT_INTERNAL: u8 = 70;

/// The last panic's message and place. The hook only records it: a panic
/// the library contains (redb failing on a damaged file, say) becomes an
/// ordinary error and must not print "internal error"; one that escapes is
/// printed by `main`, and one in a thread by whoever joins it.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// What the last panic said, for a thread that was joined after one.
pub fn last_panic() -> String {
    LAST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_default()
}

/// The error to report for a thread that panicked.
pub fn thread_panicked(what: &str) -> CliError {
    CliError::with_code(
        EXIT_INTERNAL,
        format!("internal error (please report it): {what} panicked: {}", last_panic()),
    )
}

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 failure (missing or locked directory, bad config, I/O error, a WAL
that is not this store's); 2 corruption (WAL or state.redb); 4 a file in a newer format
version than this factwal reads; 64 bad command line. `verify` defines its own (see
`factwal verify --help`). Errors are one line on stderr: `factwal: <what failed and where>`.";

/// An embedded, zero-loss store for rule-engine session state: a segmented,
/// CRC-framed write-ahead log with group commit, folded into redb.
///
/// Start with `factwal demo`: it kills a writer process with SIGKILL, reopens
/// its store and checks that every acknowledged write survived, then measures
/// what durability costs against the disk's own floor.
#[derive(Debug, Parser)]
#[command(name = "factwal", version, after_help = AFTER_HELP)]
struct Cli {
    /// Which library events to print on stderr: off, error, warn, info
    /// (adds every checkpoint pass and the close summary), debug or trace.
    #[arg(long, global = true, value_name = "LEVEL", default_value = "warn")]
    log: log::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Each subcommand's help is the doc comment of its arguments struct.
    Demo(demo::DemoArgs),
    Load(load::LoadArgs),
    Facts(facts::FactsArgs),
    Inspect(inspect::InspectArgs),
    Dump(dump::DumpArgs),
    Verify(verify::VerifyArgs),
    Checkpoint(checkpoint::CheckpointArgs),
    Salvage(salvage::SalvageArgs),
    Bench(bench::BenchArgs),
}

/// The options of every subcommand that opens a store. The configuration is
/// the file's (or the defaults), then each flag given overrides its key.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store's data directory; overrides `persistence.data_dir` of --config.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A TOML configuration file (`factwal.example.toml` documents every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The WAL directory; overrides `persistence.wal_path` (default: DIR/wal).
    #[arg(long, value_name = "PATH")]
    pub wal_path: Option<PathBuf>,
    /// WAL mode (true) or direct mode, one redb commit per write (false);
    /// overrides `persistence.wal_enabled`.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    pub wal_enabled: Option<bool>,
}

impl StoreArgs {
    /// The configuration in force: the file's, with the flags' overrides.
    pub fn config(&self) -> Result<Config, CliError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None if self.dir.is_none() => {
                return Err(CliError::failed(
                    "no store given: pass --dir DIR (or --config FILE with a data_dir)",
                ))
            }
            None => Config::default(),
        };
        if let Some(dir) = &self.dir {
            config.persistence.data_dir = dir.clone();
        }
        if let Some(path) = &self.wal_path {
            config.persistence.wal_path = Some(path.clone());
        }
        if let Some(enabled) = self.wal_enabled {
            config.persistence.wal_enabled = enabled;
        }
        config.validate()?;
        Ok(config)
    }
}

/// A failure to report: one line on stderr and an exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    /// Printed as `factwal: <message>`; nothing is printed when empty.
    pub message: String,
}

impl CliError {
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError { code: EXIT_FAILED, message: message.into() }
    }

    pub fn with_code(code: u8, message: impl Into<String>) -> CliError {
        CliError { code, message: message.into() }
    }

    /// An I/O failure of the command line itself, naming what it was doing.
    pub fn io(what: impl std::fmt::Display, error: std::io::Error) -> CliError {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError { code: EXIT_BROKEN_PIPE, message: String::new() };
        }
        CliError::failed(format!("{what}: {error}"))
    }
}

/// The exit code for a library error.
pub fn exit_code(error: &Error) -> u8 {
    match error {
        _ if error.is_corruption() => EXIT_CORRUPTED,
        Error::UnsupportedFormatVersion { .. } => EXIT_UNSUPPORTED_VERSION,
        _ => EXIT_FAILED,
    }
}

impl From<&Error> for CliError {
    fn from(error: &Error) -> CliError {
        CliError { code: exit_code(error), message: error.to_string() }
    }
}

impl From<Error> for CliError {
    fn from(error: Error) -> CliError {
        CliError::from(&error)
    }
}

/// Parses the command line, runs the subcommand and turns its outcome into
/// an exit code.
pub fn main() -> ExitCode {
    // A panic that escapes is a bug, but the user still gets one line, not
    // a backtrace (printed below, or by whoever joins the thread).
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string().replace('\n', " ");
        *LAST_PANIC.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(text);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    log::install(cli.log);
    let outcome = std::panic::catch_unwind(|| run(cli.command)).unwrap_or_else(|_| {
        Err(CliError::with_code(
            EXIT_INTERNAL,
            format!("internal error (please report it): {}", last_panic()),
        ))
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            if !error.message.is_empty() {
                output::eprint_line(&format!("factwal: {}", error.message.replace('\n', " ")));
            }
            ExitCode::from(error.code)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Demo(args) => demo::run(&args),
        Command::Load(args) => load::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Facts(args) => facts::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Dump(args) => dump::run(&args),
        Command::Verify(args) => Ok(verify::run(&args)),
        Command::Checkpoint(args) => checkpoint::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Salvage(args) => salvage::run(&args),
        Command::Bench(args) => bench::run(&args).map(|()| ExitCode::SUCCESS),
    }
}
