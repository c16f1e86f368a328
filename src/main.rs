//! The factwal command line: `factwal --help` lists the subcommands, and
//! README.md shows each one with an example.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
