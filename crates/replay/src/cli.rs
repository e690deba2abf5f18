//! The `custodian-replay` command line: argument definitions, opening the source, printing the
//! report, and the exit status.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use custodian_domain::checkpoint::{Checkpoint, NoteVerifier};
use custodian_store::StoreError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::merkle::MerkleCommand;
use crate::source::{Source, SourceError};
use crate::verify::{BreakReason, DEFAULT_PAGE_SIZE, VerifyReport, verify_in_pages};

/// Exit status: the whole chain verified.
pub const EXIT_VERIFIED: u8 = 0;
/// Exit status: the chain is broken; stdout names the first broken position.
pub const EXIT_BROKEN: u8 = 1;
/// Exit status: the source could not be opened or read (also clap's status for a wrong command line).
pub const EXIT_UNREADABLE: u8 = 2;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  verified: every event is intact and linked to the one before it
  1  chain broken: stdout names the first broken position and why, or the log contradicts the
     checkpoint (cut short, or history rewritten)
  2  could not read the source (missing file, unreachable database), the checkpoint or its key, or
     a usage error";

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
    /// Recompute the hash chain and the Merkle tree of the whole log, name the first broken
    /// position, and prove the log extends a signed checkpoint kept elsewhere
    #[command(after_help = EXIT_STATUS_HELP)]
    Verify(VerifyArgs),
    /// RFC 6962 roots and proofs over data on stdin, and proof verification, to cross-check any
    /// implementation
    #[command(subcommand)]
    Merkle(MerkleCommand),
    /// Build every view as it stood at a time or position into a fresh SQLite file
    At(crate::at::AtArgs),
    /// Write the log (or part of it) as JSON lines for SIEM import: the records as stored, or OCSF
    Export(crate::export::ExportArgs),
    /// Every principal that could do a permission on a resource at an instant, with the events
    /// that made it so and those that later ended them
    WhoCan(crate::access::WhoCanArgs),
    /// Whether one principal could do a permission on a resource at an instant, and why
    #[command(after_help = crate::access::CAN_EXIT_HELP)]
    Can(crate::access::CanArgs),
    /// Access gained, lost or expired per principal between two instants
    Diff(crate::access::DiffArgs),
    /// Every event that touches one principal or one resource
    History(crate::history::HistoryArgs),
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log: a SQLite file path (or sqlite: URL), a postgres:// URL, or a file written by
    /// `export --format jsonl`. It is opened read-only: no migrations, and a missing file is an
    /// error, never created.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// A signed checkpoint (the text of GET /v1/ledger/checkpoint, or one published on NATS) kept
    /// outside the log: also prove that the log still extends it.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub checkpoint: Option<std::path::PathBuf>,
    /// The checkpoint's verifier key (the text of GET /v1/ledger/checkpoint/key, obtained
    /// independently), or a file holding it.
    #[arg(long, value_name = "KEY|FILE")]
    pub key: Option<String>,
    /// The log's origin the checkpoint must name (its first line, e.g. `custodian.example/ledger`):
    /// a checkpoint of another log, even one signed with the same key, is refused.
    #[arg(long, value_name = "ORIGIN", requires = "checkpoint")]
    pub origin: Option<String>,
}

/// The log a command reads: every command but `merkle` takes one.
pub const SOURCE_HELP: &str = "The log: a SQLite file path (or sqlite: URL), a postgres:// URL, or a file written by `export --format jsonl`. It is opened read-only: no migrations, and a missing file is an error, never created.";

/// Runs the parsed command line and returns the process exit status.
pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    match cli.command {
        Command::Verify(args) => ExitCode::from(
            verify_command(
                &args,
                json,
                &mut io::stdout(),
                &mut io::stderr(),
                ProgressDrawTarget::stderr(),
            )
            .await,
        ),
        Command::Merkle(command) => ExitCode::from(crate::merkle::run(
            &command,
            json,
            &mut io::stdin().lock(),
            &mut io::stdout(),
            &mut io::stderr(),
        )),
        Command::At(args) => ExitCode::from(
            crate::at::run(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
        Command::Export(args) => ExitCode::from(
            crate::export::run(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
        Command::WhoCan(args) => ExitCode::from(
            crate::access::who_can(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
        Command::Can(args) => ExitCode::from(
            crate::access::can(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
        Command::Diff(args) => ExitCode::from(
            crate::access::diff(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
        Command::History(args) => ExitCode::from(
            crate::history::run(&args, cli.json, &mut io::stdout(), &mut io::stderr()).await,
        ),
    }
}

/// `verify`: prints the report on `out` (and the reading rate on `err`), or the reason the source
/// is unreadable on `err`, and returns the exit status ([`EXIT_VERIFIED`], [`EXIT_BROKEN`] or
/// [`EXIT_UNREADABLE`]).
///
/// The progress bar is drawn on `draw`; [`ProgressDrawTarget::stderr`] hides itself when stderr is
/// not a terminal.
pub async fn verify_command(
    args: &VerifyArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    draw: ProgressDrawTarget,
) -> u8 {
    let checkpoint = match read_checkpoint(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "custodian-replay: {e}");
            return EXIT_UNREADABLE;
        }
    };
    let started = Instant::now();
    match verify_source(&args.source, checkpoint.as_ref(), draw).await {
        Ok(report) => {
            let stats = Stats::since(started, report.events_read());
            if json {
                let _ = writeln!(out, "{}", report_json(&report, &stats));
            } else {
                let _ = writeln!(out, "{report}");
                let _ = writeln!(err, "{stats}");
            }
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

/// Reads and checks the signed checkpoint of `verify --checkpoint FILE --key KEY`.
fn read_checkpoint(args: &VerifyArgs) -> Result<Option<Checkpoint>, String> {
    let (Some(path), Some(key)) = (&args.checkpoint, &args.key) else {
        return Ok(None);
    };
    let key = if key.contains('+') {
        key.clone()
    } else {
        std::fs::read_to_string(key)
            .map_err(|e| format!("cannot read the verifier key file {key}: {e}"))?
    };
    let verifier =
        NoteVerifier::parse(&key).map_err(|e| format!("the verifier key is unusable: {e}"))?;
    let note = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the checkpoint {}: {e}", path.display()))?;
    let checkpoint = verifier
        .open_checkpoint(&note)
        .map_err(|e| format!("the checkpoint {} is not usable: {e}", path.display()))?;
    if let Some(origin) = &args.origin
        && *origin != checkpoint.origin
    {
        return Err(format!(
            "the checkpoint {} is of the log {}, not {origin}",
            path.display(),
            checkpoint.origin
        ));
    }
    Ok(Some(checkpoint))
}

/// Opens `source` read-only and verifies the whole log, and that it extends `checkpoint` if one is
/// given, showing progress on `draw`.
pub async fn verify_source(
    source: &str,
    checkpoint: Option<&Checkpoint>,
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
    let result = verify_in_pages(&mut source, DEFAULT_PAGE_SIZE, checkpoint, |n| {
        bar.set_position(n)
    })
    .await;
    bar.finish_and_clear();
    let result = result.map_err(|error| source.read_error(error));
    source.close().await;
    result
}

/// How fast a command read the log, and the most memory the process held.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Events read.
    pub events: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// The process's peak resident memory, where the system tells it (Linux).
    pub peak_memory_bytes: Option<u64>,
}

impl Stats {
    /// The figures of `events` read since `started`.
    pub fn since(started: Instant, events: u64) -> Self {
        Self::of(events, started.elapsed().as_secs_f64())
    }

    /// The figures of `events` read in `seconds`, with the peak memory so far.
    pub fn of(events: u64, seconds: f64) -> Self {
        Self {
            events,
            seconds,
            peak_memory_bytes: peak_memory_bytes(),
        }
    }

    /// Events per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The figures as JSON fields.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "events_read": self.events,
            "elapsed_seconds": self.seconds,
            "events_per_second": self.rate().round(),
            "peak_memory_bytes": self.peak_memory_bytes,
        })
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {} events in {:.2} s ({:.0} events/s)",
            self.events,
            self.seconds,
            self.rate()
        )?;
        if let Some(peak) = self.peak_memory_bytes {
            write!(f, ", peak memory {:.1} MiB", peak as f64 / 1048576.0)?;
        }
        Ok(())
    }
}

/// The peak resident set size of this process (`VmHWM` in `/proc/self/status`), if known.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn report_json(report: &VerifyReport, stats: &Stats) -> serde_json::Value {
    let checkpoint_json = |c: &Checkpoint| {
        serde_json::json!({
            "origin": c.origin,
            "tree_size": c.size,
            "root": hex::encode(c.root),
            "time": c.time.map(|t| t.to_string()),
        })
    };
    let mut doc = match report {
        VerifyReport::Verified {
            events,
            head,
            head_time,
            root,
            checkpoint,
        } => serde_json::json!({
            "status": "verified",
            "position": head.position,
            "time": head_time.map(|t| t.to_string()),
            "events": events,
            "head_hash": head.hash.to_hex(),
            "merkle_root": hex::encode(root),
            "tree_size": events,
            "checkpoint": checkpoint.as_ref().map(checkpoint_json),
        }),
        VerifyReport::Broken { position, reason } => serde_json::json!({
            "status": "broken",
            "position": position,
            "reason": reason.to_string(),
            "message": report.to_string(),
        }),
        VerifyReport::Contradicts {
            checkpoint,
            events,
            found,
        } => serde_json::json!({
            "status": "contradicts_checkpoint",
            "position": events,
            "checkpoint": checkpoint_json(checkpoint),
            "found_root": found.map(hex::encode),
            "message": report.to_string(),
        }),
    };
    if let (Some(doc), serde_json::Value::Object(stats)) = (doc.as_object_mut(), stats.json()) {
        doc.extend(stats);
    }
    doc
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
