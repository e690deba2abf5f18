//! `custodian-replay export`: the log, or the part of it a SIEM asks for, as JSON lines.
//!
//! `--format jsonl` writes each record exactly as stored, so an unfiltered export is itself a log
//! every replay command reads (and `verify` checks). `--format ocsf` writes one OCSF 1.9 event per
//! record (see [`crate::ocsf`]). The log is read forward in pages from position 1, whatever the
//! filters, so memory stays bounded by a page and the OCSF mapper's references.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use custodian_domain::{EventRecord, Timestamp};
use serde::Serialize;

use crate::at::parse_time;
use crate::ocsf::Mapper;
use crate::source::{Source, SourceError};

/// How many records `export` reads at a time.
pub const PAGE_SIZE: usize = 1000;

const EXPORT_HELP: &str = "\
With --from, --to or --tenant the records written no longer link into one hash chain: such an
export is for a SIEM, not for `verify`. Without them, a jsonl export is a complete log that every
custodian-replay command reads as SOURCE.

The summary (position and time evaluated at, events written) goes to stdout with --out, to stderr
when the events themselves go to stdout.

Exit status:
  0  the export was written
  2  could not read the source, or a bad argument (FILE exists without --force)";

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One event record per line, exactly as stored.
    Jsonl,
    /// One OCSF 1.9 event per line.
    Ocsf,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
#[command(after_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// What to write.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Only events that occurred at or after this instant (RFC 3339).
    #[arg(long, value_name = "T1", value_parser = parse_time)]
    pub from: Option<Timestamp>,
    /// Only the log as it stood at this instant (RFC 3339): events up to, not including, the
    /// first that occurred after it.
    #[arg(long, value_name = "T2", value_parser = parse_time)]
    pub to: Option<Timestamp>,
    /// Only this tenant's events.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Write to FILE instead of stdout; it must not exist yet, unless --force.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// The log.
    #[arg(value_name = "SOURCE", help = crate::cli::SOURCE_HELP)]
    pub source: String,
}

/// Which records an export keeps.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only those that occurred at or after this instant.
    pub from: Option<Timestamp>,
    /// Stop at the first that occurred after this instant.
    pub to: Option<Timestamp>,
    /// Only this tenant's.
    pub tenant: Option<String>,
}

impl Filter {
    fn keeps(&self, record: &EventRecord) -> bool {
        self.from.is_none_or(|from| record.occurred_at >= from)
            && self.tenant.as_deref().is_none_or(|t| record.tenant == t)
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The last position read: the head, or the last one before `--to`.
    pub position: u64,
    /// The time evaluated at: `--to`, or when the last event read occurred (`None` for an
    /// empty log).
    pub time: Option<Timestamp>,
    /// The format written.
    pub format: Format,
    /// Where: the file, or `-` for stdout.
    pub out: String,
    /// Events written.
    pub events: u64,
    /// Events of the selection not written because their type has no OCSF mapping.
    pub skipped: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The output file exists and `--force` was not given.
    #[error("{0} exists; pass --force to replace it")]
    Exists(String),
    /// The output cannot be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file, or `stdout`.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The source cannot be opened or read.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Runs `export`: events on `out` or the file, the summary on `out` (with a file) or `err`, a
/// failure as one line on `err`. Returns the exit status.
pub async fn run(args: &ExportArgs, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let filter = Filter {
        from: args.from,
        to: args.to,
        tenant: args.tenant.clone(),
    };
    let result = match &args.out {
        Some(path) => {
            let shown = path.display().to_string();
            if path.exists() && !args.force {
                Err(ExportError::Exists(shown))
            } else {
                match File::create(path) {
                    Ok(file) => {
                        let mut file = BufWriter::new(file);
                        export(&args.source, args.format, &filter, &mut file, &shown).await
                    }
                    Err(error) => Err(ExportError::Write { path: shown, error }),
                }
            }
        }
        None => export(&args.source, args.format, &filter, out, "-").await,
    };
    match result {
        Ok(report) => {
            let summary: &mut dyn Write = if args.out.is_some() { out } else { err };
            if json {
                let _ = serde_json::to_writer(&mut *summary, &report);
                let _ = writeln!(summary);
            } else {
                let mut line = format!("as of position {}", report.position);
                if let Some(time) = report.time {
                    line.push_str(&format!(" ({time})"));
                }
                let _ = writeln!(summary, "{line}");
                let _ = write!(
                    summary,
                    "exported {} event{} as {} to {}",
                    report.events,
                    if report.events == 1 { "" } else { "s" },
                    match report.format {
                        Format::Jsonl => "jsonl",
                        Format::Ocsf => "ocsf",
                    },
                    report.out
                );
                if report.skipped > 0 {
                    let _ = write!(
                        summary,
                        " ({} without an OCSF class skipped)",
                        report.skipped
                    );
                }
                let _ = writeln!(summary);
            }
            let _ = summary.flush();
            0
        }
        Err(e) => {
            let _ = writeln!(err, "custodian-replay: {e}");
            let _ = err.flush();
            2
        }
    }
}

/// Reads the log at `source` from position 1 and writes the records `filter` keeps to `sink`
/// in `format`, one per line. `shown` names the sink in errors and the report.
pub async fn export(
    source: &str,
    format: Format,
    filter: &Filter,
    sink: &mut dyn Write,
    shown: &str,
) -> Result<ExportReport, ExportError> {
    let mut source = Source::open(source).await?;
    // An export copies the log as stored, tampered or not: evidence is kept, and `verify` on
    // the export names any break.
    source.skip_chain_check();
    let result = write_all(&mut source, format, filter, sink, shown).await;
    source.close().await;
    result
}

async fn write_all(
    source: &mut Source,
    format: Format,
    filter: &Filter,
    sink: &mut dyn Write,
    shown: &str,
) -> Result<ExportReport, ExportError> {
    let write_error = |error| ExportError::Write {
        path: shown.to_owned(),
        error,
    };
    let mut mapper = Mapper::new();
    let mut report = ExportReport {
        position: 0,
        time: None,
        format,
        out: shown.to_owned(),
        events: 0,
        skipped: 0,
    };
    'pages: loop {
        let page = source
            .read_all(report.position + 1, PAGE_SIZE)
            .await
            .map_err(|e| source.read_error(e))?;
        let full = page.len() == PAGE_SIZE;
        for record in &page {
            if filter.to.is_some_and(|to| record.occurred_at > to) {
                break 'pages;
            }
            if filter.keeps(record) {
                let written = match format {
                    Format::Jsonl => serde_json::to_writer(&mut *sink, record).map(|()| true),
                    Format::Ocsf => match mapper.map(record) {
                        Some(event) => serde_json::to_writer(&mut *sink, &event).map(|()| true),
                        None => Ok(false),
                    },
                }
                .map_err(|e| write_error(e.into()))?;
                if written {
                    sink.write_all(b"\n").map_err(write_error)?;
                    report.events += 1;
                } else {
                    report.skipped += 1;
                }
            }
            if format == Format::Ocsf {
                mapper.observe(record);
            }
            report.position = record.position;
            report.time = Some(record.occurred_at);
        }
        if !full {
            break;
        }
    }
    sink.flush().map_err(write_error)?;
    if let Some(to) = filter.to {
        report.time = Some(to);
    }
    Ok(report)
}
