//! `custodian-replay at`: every view as it stood at a moment of the log, built into a fresh SQLite
//! file by the live service's own projections.
//!
//! The log is read forward in pages of [`PAGE_SIZE`] and each page is folded into the views
//! before the next is read, so memory stays bounded by one page and the folds' transactions
//! whatever the log's length. The file is built under a temporary name beside `--out` and only
//! renamed into place once complete: a failed build leaves nothing behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{ArgGroup, Args};
use custodian_domain::Timestamp;
use custodian_projections::{BuildError, BuiltView, ViewBuild, ViewDb};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sqlx::Row;

use crate::source::{Source, SourceError};

/// How many records `at` reads and folds at a time.
pub const PAGE_SIZE: usize = 1000;

/// The table in the output file that says what the file is.
pub const SNAPSHOT_TABLE: &str = "replay_snapshot";

const AT_HELP: &str = "\
The file holds the views' tables and their registry exactly as the live service keeps them, plus a
table `replay_snapshot` (source, position, time, built_at) saying what it is.

Exit status:
  0  the views were written to FILE
  2  could not read the source, a bad argument (FILE exists without --force, a position past the
     head), or an event the views cannot fold";

/// Arguments of `at`.
#[derive(Debug, Args)]
#[command(after_help = AT_HELP)]
#[command(group(ArgGroup::new("moment").required(true).args(["time", "position"])))]
pub struct AtArgs {
    /// The views as the log stood at this instant (RFC 3339): every event up to, not including,
    /// the first one that occurred after it.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub time: Option<Timestamp>,
    /// The views once position N was applied (0: before the first event).
    #[arg(long, value_name = "N")]
    pub position: Option<u64>,
    /// The SQLite file to write; it must not exist yet, unless --force.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// The log.
    #[arg(value_name = "SOURCE", help = crate::cli::SOURCE_HELP)]
    pub source: String,
}

/// Parses an RFC 3339 instant from the command line.
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse(s)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time, e.g. 2026-03-01T12:00:00Z"))
}

/// Where the build stops.
#[derive(Debug, Clone, Copy)]
pub enum Moment {
    /// Once this position is applied.
    Position(u64),
    /// Before the first event that occurred after this instant.
    Time(Timestamp),
}

/// What `at` built.
#[derive(Debug, Clone, Serialize)]
pub struct AtReport {
    /// The last position folded into the views.
    pub position: u64,
    /// The time evaluated at: the instant asked for, or when the last event folded occurred
    /// (`None` for position 0).
    pub time: Option<Timestamp>,
    /// The source, with any password hidden.
    pub source: String,
    /// The file written.
    pub out: String,
    /// How many events were folded.
    pub events: u64,
    /// How long reading and folding took.
    pub seconds: f64,
    /// Events folded per second.
    pub events_per_second: f64,
    /// Every view table written, with its row count.
    pub views: Vec<ViewTable>,
}

/// One view table of the output file.
#[derive(Debug, Clone, Serialize)]
pub struct ViewTable {
    /// The projection.
    pub view: String,
    /// The table, without its generation prefix.
    pub table: String,
    /// Its rows.
    pub rows: i64,
}

/// Why `at` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AtError {
    /// The output file exists and `--force` was not given.
    #[error("{0} exists; pass --force to replace it")]
    Exists(String),
    /// The output file cannot be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        error: String,
    },
    /// The source cannot be opened or read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The position asked for is past the log's head.
    #[error("position {wanted} is past the head of the log (position {head})")]
    PastHead {
        /// The position asked for.
        wanted: u64,
        /// The log's last position.
        head: u64,
    },
    /// The views could not be built.
    #[error("cannot build the views: {0}; `custodian-replay verify` checks the log")]
    Build(#[from] BuildError),
}

/// Runs `at`: the report on `out` (a table, or JSON with `json`), progress and the rate on `err`,
/// a failure as one line on `err`. Returns the exit status.
pub async fn run(args: &AtArgs, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let moment = match (args.position, args.time) {
        (Some(n), _) => Moment::Position(n),
        (None, Some(t)) => Moment::Time(t),
        // clap requires one of them.
        (None, None) => Moment::Position(0),
    };
    match build(
        &args.source,
        moment,
        &args.out,
        args.force,
        ProgressDrawTarget::stderr(),
    )
    .await
    {
        Ok(report) => {
            let stats = crate::cli::Stats::of(report.events, report.seconds);
            if json {
                let mut doc = serde_json::to_value(&report).unwrap_or_default();
                if let (Some(doc), serde_json::Value::Object(stats)) =
                    (doc.as_object_mut(), stats.json())
                {
                    doc.extend(stats);
                }
                let _ = writeln!(out, "{doc}");
            } else {
                let _ = write!(out, "{}", table(&report));
                let _ = writeln!(err, "{stats}");
            }
            let _ = out.flush();
            0
        }
        Err(e) => {
            let _ = writeln!(err, "custodian-replay: {e}");
            let _ = err.flush();
            2
        }
    }
}

fn table(report: &AtReport) -> String {
    let mut text = format!("as of position {}", report.position);
    if let Some(time) = report.time {
        text.push_str(&format!(" ({time})"));
    }
    text.push_str(&format!("\nviews written to {}\n\n", report.out));
    let view_width = report
        .views
        .iter()
        .map(|v| v.view.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let table_width = report
        .views
        .iter()
        .map(|v| v.table.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    text.push_str(&format!(
        "{:view_width$}  {:table_width$}  rows\n",
        "view", "table"
    ));
    for v in &report.views {
        text.push_str(&format!(
            "{:view_width$}  {:table_width$}  {}\n",
            v.view, v.table, v.rows
        ));
    }
    text
}

/// Builds every view as of `moment` from the log at `source` into a new SQLite file at `out`
/// (replaced only with `force`), showing progress on `draw`.
pub async fn build(
    source: &str,
    moment: Moment,
    out: &Path,
    force: bool,
    draw: ProgressDrawTarget,
) -> Result<AtReport, AtError> {
    let out_text = out.display().to_string();
    if out.exists() && !force {
        return Err(AtError::Exists(out_text));
    }
    let write_error = |error: String| AtError::Write {
        path: out_text.clone(),
        error,
    };
    let mut source = Source::open(source).await?;
    let head = source.head_position().await;
    if let (Moment::Position(wanted), Some(head)) = (moment, head)
        && wanted > head
    {
        source.close().await;
        return Err(AtError::PastHead { wanted, head });
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".custodian-at-")
        .suffix(".db")
        .tempfile_in(&dir)
        .map_err(|e| write_error(e.to_string()))?;
    let db = ViewDb::open(&partial.path().display().to_string())
        .await
        .map_err(|e| write_error(e.to_string()))?;
    let total = match moment {
        Moment::Position(n) => Some(n),
        Moment::Time(_) => head,
    };
    let bar = progress_bar(total, draw);
    let started = Instant::now();
    let folded = fold(&mut source, &db, moment, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let location = source.location().to_owned();
    source.close().await;
    let (position, last_time, views) = match folded {
        Ok(folded) => folded,
        Err(e) => {
            db.pool().close().await;
            return Err(e);
        }
    };
    let time = match moment {
        Moment::Time(t) => Some(t),
        Moment::Position(_) => last_time,
    };
    let described = describe(&db, &location, position, time, &views).await;
    db.pool().close().await;
    let views = described.map_err(|e| write_error(e.to_string()))?;
    partial
        .persist(out)
        .map_err(|e| write_error(e.error.to_string()))?;
    Ok(AtReport {
        position,
        time,
        source: location,
        out: out_text,
        events: position,
        seconds,
        events_per_second: if seconds > 0.0 {
            position as f64 / seconds
        } else {
            0.0
        },
        views,
    })
}

/// Reads the log page by page and folds it into the views up to `moment`; returns the last
/// position folded, when it occurred, and the views.
async fn fold(
    source: &mut Source,
    db: &ViewDb,
    moment: Moment,
    mut progress: impl FnMut(u64),
) -> Result<(u64, Option<Timestamp>, Vec<BuiltView>), AtError> {
    let mut build = ViewBuild::start(db.clone(), custodian_projections::all()).await?;
    let mut last_time = None;
    loop {
        let position = build.position();
        let limit = match moment {
            Moment::Position(n) if position >= n => break,
            Moment::Position(n) => usize::try_from(n - position)
                .unwrap_or(usize::MAX)
                .min(PAGE_SIZE),
            Moment::Time(_) => PAGE_SIZE,
        };
        let mut page = source
            .read_all(position + 1, limit)
            .await
            .map_err(|e| source.read_error(e))?;
        let full = page.len() == limit;
        let mut reached = false;
        if let Moment::Time(t) = moment
            && let Some(cut) = page.iter().position(|r| r.occurred_at > t)
        {
            page.truncate(cut);
            reached = true;
        }
        build.apply(&page).await?;
        if let Some(last) = page.last() {
            last_time = Some(last.occurred_at);
        }
        progress(build.position());
        if reached {
            break;
        }
        if !full {
            if let Moment::Position(wanted) = moment
                && build.position() < wanted
            {
                return Err(AtError::PastHead {
                    wanted,
                    head: build.position(),
                });
            }
            break;
        }
    }
    let position = build.position();
    Ok((position, last_time, build.finish().await?))
}

/// Records what the file is and counts every view table's rows.
async fn describe(
    db: &ViewDb,
    source: &str,
    position: u64,
    time: Option<Timestamp>,
    views: &[BuiltView],
) -> Result<Vec<ViewTable>, sqlx::Error> {
    sqlx::query(&format!(
        "CREATE TABLE {SNAPSHOT_TABLE} (source TEXT NOT NULL, position BIGINT NOT NULL, \
         time TEXT, built_at TEXT NOT NULL)"
    ))
    .execute(db.pool())
    .await?;
    let built_at = Timestamp::from_datetime(time::OffsetDateTime::now_utc());
    sqlx::query(&format!(
        "INSERT INTO {SNAPSHOT_TABLE} (source, position, time, built_at) VALUES ($1, $2, $3, $4)"
    ))
    .bind(source)
    .bind(i64::try_from(position).unwrap_or(i64::MAX))
    .bind(time.map(|t| t.to_string()))
    .bind(built_at.to_string())
    .execute(db.pool())
    .await?;
    let mut tables = Vec::new();
    for view in views {
        for table in view.tables {
            let row = sqlx::query(&format!(
                "SELECT COUNT(*) FROM {}",
                view.generation.name(table)
            ))
            .fetch_one(db.pool())
            .await?;
            tables.push(ViewTable {
                view: view.name.to_owned(),
                table: (*table).to_owned(),
                rows: row.try_get(0)?,
            });
        }
    }
    Ok(tables)
}

fn progress_bar(total: Option<u64>, draw: ProgressDrawTarget) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, draw);
    let template = if total.is_some() {
        "folding {wide_bar} {human_pos}/{human_len} events ({per_sec}, {eta})"
    } else {
        "folding {spinner} {human_pos} events ({per_sec})"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
