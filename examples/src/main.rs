//! `labbridge`: the LabBridge reference engine and command-line tool.
//!
//! Output is for pipes: results on standard output, one JSON line per
//! message where the command says so, problems on standard error, no colour.
//! Exit status: 0 when every message parsed, 1 when any failed, 2 on a usage
//! error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod compendium;
mod hl7;
mod mapping;
mod transport;

/// LabBridge: connect clinical labs with the EMRs that order from them.
#[derive(Debug, Parser)]
#[command(name = "labbridge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read, check and acknowledge HL7 v2 messages.
    #[command(subcommand)]
    Hl7(hl7::Hl7Command),
    /// The lab's test compendium: import, diff, eDOS export, order validation, MFK acks, EMR sync.
    #[command(subcommand)]
    Compendium(compendium::Cmd),
    /// Map HL7 in an EMR's dialect to the lab contract (JSON), or back with --reverse.
    Map(mapping::MapArgs),
    /// Check and list EMR profiles.
    #[command(subcommand)]
    Profile(mapping::ProfileCommand),
    /// Send and receive over file://, mllp://, http(s):// and sftp:// with store-and-forward; quarantine and audit.
    #[command(subcommand)]
    Transport(transport::Cmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Hl7(cmd) => hl7::run(cmd),
        Command::Compendium(cmd) => compendium::run(cmd),
        Command::Map(args) => mapping::map(args),
        Command::Profile(cmd) => mapping::profile(cmd),
        Command::Transport(cmd) => transport::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("labbridge: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A failure of the command itself (not of a message in its input).
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Input or output failed: exit 1.
    Io(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Io(_) => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(s) | CliError::Io(s) => f.write_str(s),
        }
    }
}
