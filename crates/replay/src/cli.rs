//! The `custodian-replay` command line: argument definitions, opening the source, printing the
//! report, and the exit status.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use custodian_store::StoreError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::source::{Source, SourceError};
use crate::verify::{BreakReason, VerifyReport, verify};

/// Exit status: the whole chain verified.
pub const EXIT_VERIFIED: u8 = 0;
/// Exit status: the chain is broken; stdout names the first broken position.
pub const EXIT_BROKEN: u8 = 1;
/// Exit status: the source could not be opened or read (also clap's status for a wrong command line).
pub const EXIT_UNREADABLE: u8 = 2;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  verified: every event is intact and linked to the one before it
  1  chain broken: stdout names the first broken position and why
  2  could not read the source (missing file, unreachable database), or a usage error";

/// Offline tools over the Custodian event log.
#[derive(Debug, Parser)]
#[command(name = "custodian-replay", version, long_about = None, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Print one JSON document (or JSON lines where a command says so) for programs, instead of
    /// tables for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Recompute the hash chain of the whole log and name the first broken position
    #[command(after_help = EXIT_STATUS_HELP)]
    Verify(VerifyArgs),
    /// Every event that touches one principal or one resource
    History(crate::history::HistoryArgs),
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log: a SQLite file path (or sqlite: URL) or a postgres:// URL. It is opened read-only:
    /// no migrations, and a missing SQLite file is an error, never created.
    #[arg(value_name = "SOURCE")]
    pub source: String,
}

/// The log a command reads: every command but `merkle` takes one.
pub const SOURCE_HELP: &str = "The log: a SQLite file path (or sqlite: URL), a postgres:// URL, or a file written by `export --format jsonl`. It is opened read-only: no migrations, and a missing file is an error, never created.";

/// Runs the parsed command line and returns the process exit status.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Verify(args) => ExitCode::from(
            verify_command(
                &args,
                &mut io::stdout(),
                &mut io::stderr(),
                ProgressDrawTarget::stderr(),
            )
            .await,
        ),
        Command::History(args) => ExitCode::from(
            crate::history::run(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
    }
}

/// `verify`: prints the report on `out` or the reason the source is unreadable on `err`, and
/// returns the exit status ([`EXIT_VERIFIED`], [`EXIT_BROKEN`] or [`EXIT_UNREADABLE`]).
///
/// The progress bar is drawn on `draw`; [`ProgressDrawTarget::stderr`] hides itself when stderr is
/// not a terminal.
pub async fn verify_command(
    args: &VerifyArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    draw: ProgressDrawTarget,
) -> u8 {
    match verify_source(&args.source, draw).await {
        Ok(report) => {
            let _ = writeln!(out, "{report}");
            let _ = out.flush();
            if report.is_verified() {
                EXIT_VERIFIED
            } else {
                EXIT_BROKEN
            }
        }
        Err(e) => {
            let _ = writeln!(err, "custodian-replay: {e}");
            let _ = err.flush();
            EXIT_UNREADABLE
        }
    }
}

/// Opens `source` read-only and verifies the whole log, showing progress on `draw`.
pub async fn verify_source(
    source: &str,
    draw: ProgressDrawTarget,
) -> Result<VerifyReport, SourceError> {
    let mut source = match Source::open(source).await {
        Ok(source) => source,
        // Opening reads the head; an unreadable head row is a broken chain, not a missing source.
        Err(SourceError::Open {
            error: StoreError::CorruptRecord { position, reason },
            ..
        }) => {
            return Ok(VerifyReport::Broken {
                position,
                reason: BreakReason::Unreadable(reason),
            });
        }
        Err(e) => return Err(e),
    };
    // Only for the bar's length: a head that cannot be read is verify's to report.
    let total = source.head_position().await;
    let bar = progress_bar(total, draw);
    let result = verify(&mut source, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let result = result.map_err(|error| source.read_error(error));
    source.close().await;
    result
}

fn progress_bar(total: Option<u64>, draw: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, draw);
    let template = if total.is_some() {
        "verifying {wide_bar} {human_pos}/{human_len} events ({eta})"
    } else {
        "verifying {spinner} {human_pos} events"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_documents_the_exit_statuses() {
        let help = Cli::command()
            .find_subcommand_mut("verify")
            .unwrap()
            .render_long_help()
            .to_string();
        for line in [
            "0  verified",
            "1  chain broken",
            "2  could not read the source",
        ] {
            assert!(help.contains(line), "{line:?} missing from:\n{help}");
        }
    }
}
