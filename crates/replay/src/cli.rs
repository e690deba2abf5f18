//! The `custodian-replay` command line: argument definitions, opening the source, printing the
//! report, and the exit status.

use std::borrow::Cow;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use custodian_store::{StoreError, StoreOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::{Connection, PgConnection};

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
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log: a SQLite file path (or sqlite: URL) or a postgres:// URL. It is opened read-only:
    /// no migrations, and a missing SQLite file is an error, never created.
    #[arg(value_name = "SOURCE")]
    pub source: String,
}

/// Why the source could not be verified at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The store could not be opened.
    #[error("cannot open the event log at {location}: {error}")]
    Open {
        /// The source, with any password hidden.
        location: String,
        /// What the store said.
        error: StoreError,
    },
    /// The store was opened but reading it failed.
    #[error("cannot read the event log at {location}: {error}")]
    Read {
        /// The source, with any password hidden.
        location: String,
        /// What the store said.
        error: StoreError,
    },
}

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
    let options = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    if let Err(error) = check_postgres_reachable(source).await {
        return Err(SourceError::Open {
            location: redact(source).into_owned(),
            error,
        });
    }
    let store = match custodian_store::open(source, options).await {
        Ok(store) => store,
        // Opening reads the head; an unreadable head row is a broken chain, not a missing source.
        Err(StoreError::CorruptRecord { position, reason }) => {
            return Ok(VerifyReport::Broken {
                position,
                reason: BreakReason::Unreadable(reason),
            });
        }
        Err(error) => {
            return Err(SourceError::Open {
                location: redact(source).into_owned(),
                error,
            });
        }
    };
    // Only for the bar's length: a head that cannot be read is verify's to report.
    let total = store.head().await.ok().map(|h| h.position);
    let bar = progress_bar(total, draw);
    let result = verify(&*store, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    store.close().await;
    result.map_err(|error| SourceError::Read {
        location: redact(source).into_owned(),
        error,
    })
}

/// How long a PostgreSQL server gets to answer before the source counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// For a PostgreSQL source, one plain connection first: the store's pool retries a refused
/// connection until its timeout and then reports only that it timed out, while this says why at once.
async fn check_postgres_reachable(source: &str) -> Result<(), StoreError> {
    if !(source.starts_with("postgres://") || source.starts_with("postgresql://")) {
        return Ok(());
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(source)).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(StoreError::Config(format!(
            "the database did not answer within {} seconds",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
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

/// `location` with the password of a URL replaced by `***`, fit for messages.
pub fn redact(location: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = location.split_once("://") else {
        return Cow::Borrowed(location);
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(location);
    };
    let Some((user, _password)) = userinfo.split_once(':') else {
        return Cow::Borrowed(location);
    };
    let tail = &rest[authority.len()..];
    Cow::Owned(format!("{scheme}://{user}:***@{host}{tail}"))
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

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://app:s3cret@db.internal:5432/custodian?sslmode=require"),
            "postgres://app:***@db.internal:5432/custodian?sslmode=require"
        );
        assert_eq!(
            redact("postgres://app@db/custodian"),
            "postgres://app@db/custodian"
        );
        assert_eq!(redact("/var/lib/custodian.db"), "/var/lib/custodian.db");
        assert_eq!(redact("sqlite:custodian.db"), "sqlite:custodian.db");
    }
}
