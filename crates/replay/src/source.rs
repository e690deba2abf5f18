//! Where the tools read the log from: a SQLite file, a PostgreSQL database, or an exported log file
//! (`export --format jsonl`: one event record per line, as stored). Every source is opened
//! read-only; nothing here can write to it.
//!
//! A source is read forward in pages with [`Source::read_all`], as the store's own `read_all`
//! reads: records from a position, at most `limit` of them. Memory stays bounded by the page, so
//! the tools walk logs of any length.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::{ChainVerifier, EventRecord};
use custodian_store::{EventStore, StoreError, StoreOptions};
use sqlx::{Connection, PgConnection};

/// Why a source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source could not be opened.
    #[error("cannot open the event log at {location}: {error}")]
    Open {
        /// The source, with any password hidden.
        location: String,
        /// What went wrong.
        error: StoreError,
    },
    /// The source was opened but reading it failed.
    #[error("cannot read the event log at {location}: {error}")]
    Read {
        /// The source, with any password hidden.
        location: String,
        /// What went wrong.
        error: StoreError,
    },
}

/// An open log.
pub struct Source {
    location: String,
    kind: Kind,
    /// The hash chain of what has been read from position 1 on, so that no answer comes from a
    /// log that was tampered with; `None` once turned off (by `verify`, which names breaks itself).
    chain: Option<ChainVerifier>,
}

enum Kind {
    Store(Arc<dyn EventStore>),
    File(Box<LogFile>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// How long a PostgreSQL server gets to answer before the source counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Source {
    /// Opens `location` read-only: a `postgres://` URL, a `sqlite:` URL, a SQLite file, or an
    /// exported log file (any other existing file). A missing file is an error, never created.
    ///
    /// A store whose head row cannot be read opens with [`StoreError::CorruptRecord`] in
    /// [`SourceError::Open`]; `verify` reports that as a break at that position.
    pub async fn open(location: &str) -> Result<Self, SourceError> {
        let open_error = |error| SourceError::Open {
            location: redact(location).into_owned(),
            error,
        };
        let kind = if is_postgres(location) {
            check_postgres_reachable(location)
                .await
                .map_err(open_error)?;
            Kind::Store(open_store(location).await.map_err(open_error)?)
        } else {
            let path = sqlite_path(location);
            if is_log_file(path).map_err(open_error)? {
                Kind::File(Box::new(
                    LogFile::open(path.to_path_buf()).map_err(open_error)?,
                ))
            } else {
                Kind::Store(open_store(location).await.map_err(open_error)?)
            }
        };
        Ok(Self {
            location: redact(location).into_owned(),
            kind,
            chain: Some(ChainVerifier::new()),
        })
    }

    /// A source over a store already open (the caller keeps it read-only).
    pub fn from_store(location: &str, store: Arc<dyn EventStore>) -> Self {
        Self {
            location: redact(location).into_owned(),
            kind: Kind::Store(store),
            chain: Some(ChainVerifier::new()),
        }
    }

    /// Stops checking the hash chain of what is read: for a caller that checks it itself and names
    /// the breaks (`verify`), or copies the log as stored (`export`).
    pub fn skip_chain_check(&mut self) {
        self.chain = None;
    }

    /// The location, with any password hidden, fit for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The store behind a database source (`None` for an exported file).
    pub fn store(&self) -> Option<&Arc<dyn EventStore>> {
        match &self.kind {
            Kind::Store(store) => Some(store),
            Kind::File(_) => None,
        }
    }

    /// The head position when the source knows it without reading everything (a database);
    /// `None` for a file or an unreadable head.
    pub async fn head_position(&self) -> Option<u64> {
        match &self.kind {
            Kind::Store(store) => store.head().await.ok().map(|h| h.position),
            Kind::File(_) => None,
        }
    }

    /// Up to `limit` records from position `from` on, in log order; fewer (or none) at the end.
    ///
    /// A file is read forward: asking for the position after the last one returned continues
    /// where the last page stopped, and records come in the order they are written, so a
    /// reordered or repeated record reaches the caller as it is. Asking for any other position
    /// reads the file again from its start up to the first record at or after it.
    ///
    /// Records read in order from position 1 are checked against the hash chain as they come: a
    /// record that breaks it (changed, missing, moved, inserted) is refused as
    /// [`StoreError::CorruptRecord`] at its position, so that no answer is built on a tampered
    /// log. `verify` turns this off ([`Source::skip_chain_check`]) to name breaks itself.
    pub async fn read_all(
        &mut self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let records = match &mut self.kind {
            Kind::Store(store) => store.read_all(from, limit).await,
            Kind::File(file) => file.read_all(from, limit),
        }?;
        if let Some(chain) = &mut self.chain
            && from == chain.head().0 + 1
        {
            for record in &records {
                chain.push(record).map_err(|b| StoreError::CorruptRecord {
                    position: b.position(),
                    reason: format!(
                        "the hash chain is broken ({b}); `custodian-replay verify` tells more, and no answer is given from a tampered log"
                    ),
                })?;
            }
        }
        Ok(records)
    }

    /// Closes the source.
    pub async fn close(self) {
        if let Kind::Store(store) = self.kind {
            store.close().await;
        }
    }

    /// A read error, named with this source.
    pub fn read_error(&self, error: StoreError) -> SourceError {
        SourceError::Read {
            location: self.location.clone(),
            error,
        }
    }
}

async fn open_store(location: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    let options = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    custodian_store::open(location, options).await
}

fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

fn sqlite_path(location: &str) -> &Path {
    let path = location
        .strip_prefix("sqlite://")
        .or_else(|| location.strip_prefix("sqlite:"));
    Path::new(path.unwrap_or(location))
}

/// Whether the file at `path` is an exported log rather than a SQLite database. A missing file is
/// the store's to report (it says there is no database, and creates none); a file that is neither
/// is an error.
fn is_log_file(path: &Path) -> Result<bool, StoreError> {
    let unreadable =
        |e: std::io::Error| StoreError::Config(format!("cannot read {}: {e}", path.display()));
    let Ok(file) = File::open(path) else {
        return Ok(false);
    };
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    file.take(SQLITE_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(unreadable)?;
    if head == SQLITE_MAGIC {
        return Ok(false);
    }
    // An export's first line is a JSON object. An empty file is the store's: SQLite reads it as a
    // database without a log.
    match head.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(false),
        Some(b'{') => Ok(true),
        Some(_) => Err(StoreError::Config(format!(
            "{} is neither a SQLite database nor an exported log (JSON lines)",
            path.display()
        ))),
    }
}

/// For a PostgreSQL source, one plain connection first: the store's pool retries a refused
/// connection until its timeout and then reports only that it timed out, while this says why at once.
async fn check_postgres_reachable(source: &str) -> Result<(), StoreError> {
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

/// An exported log: one JSON event record per line, read forward.
struct LogFile {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    /// The 1-based number of the next line.
    line: u64,
    /// The position after the last record returned: where a sequential read goes on.
    next: u64,
    /// A record read past the end of the last page, returned first by the next read.
    pending: Option<EventRecord>,
}

impl LogFile {
    fn open(path: PathBuf) -> Result<Self, StoreError> {
        let file = File::open(&path)
            .map_err(|e| StoreError::Config(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self {
            path,
            lines: BufReader::with_capacity(1 << 20, file).lines(),
            line: 1,
            next: 1,
            pending: None,
        })
    }

    fn rewind(&mut self) -> Result<(), StoreError> {
        *self = Self::open(self.path.clone())?;
        Ok(())
    }

    /// The next record of the file, or `None` at its end. A line that is not a record is a
    /// corrupt record at the position it would hold.
    fn next_record(&mut self) -> Result<Option<EventRecord>, StoreError> {
        if let Some(record) = self.pending.take() {
            return Ok(Some(record));
        }
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            let number = self.line;
            self.line += 1;
            let line = line.map_err(|e| {
                StoreError::Config(format!(
                    "cannot read line {number} of {}: {e}",
                    self.path.display()
                ))
            })?;
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| StoreError::CorruptRecord {
                    position: self.next,
                    reason: format!("line {number} is not an event record: {e}"),
                });
        }
    }

    fn read_all(&mut self, from: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        if from != self.next {
            self.rewind()?;
            loop {
                match self.next_record()? {
                    Some(record) if record.position < from => self.next = record.position + 1,
                    Some(record) => {
                        self.pending = Some(record);
                        break;
                    }
                    None => return Ok(Vec::new()),
                }
            }
        }
        let mut records = Vec::with_capacity(limit.min(4096));
        while records.len() < limit {
            match self.next_record()? {
                Some(record) => {
                    self.next = record.position + 1;
                    records.push(record);
                }
                None => break,
            }
        }
        Ok(records)
    }
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
    use super::*;

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
