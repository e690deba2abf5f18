//! Verifying the whole log: read every record from position 1 in pages, check each one against the
//! hash chain, fold its hash into the Merkle tree, and name the first position at which the chain
//! breaks.
//!
//! A row the store cannot parse is a break at its position too. The chain alone cannot see a log
//! cut short at its end, nor one rewritten and rehashed from some position on: the last surviving
//! record is a valid head. A signed checkpoint kept elsewhere can: given one, verification also
//! recomputes the Merkle root at the checkpoint's tree size and compares it with the signed root.
//! A shorter log, or a different root, contradicts the checkpoint.
//!
//! Memory stays bounded whatever the log's length: the pages read ahead (two per reader, one
//! reader per core from 2 to 8, so at most 16 pages of 1,000 records) and the `O(log n)` hashes of
//! the tree's right edge ([`Frontier`]).

use std::fmt;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use custodian_domain::checkpoint::Checkpoint;
use custodian_domain::merkle::{Frontier, Hash};
use custodian_domain::{ChainBreak, ChainVerifier, EventHash, EventRecord, Timestamp};
use custodian_store::{EventStore, Head, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::source::Source;

/// How many records [`verify`] reads at a time.
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// What verifying the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every record from position 1 to the head is readable, hashes to its stored hash, and points
    /// at its predecessor.
    Verified {
        /// How many events were verified (positions are gapless from 1, so also the head position).
        events: u64,
        /// The last verified position and its hash; position 0 and zeros for an empty log.
        head: Head,
        /// When the head event occurred (`None` for an empty log).
        head_time: Option<Timestamp>,
        /// The RFC 6962 root of the tree whose leaves are every event's hash.
        root: Hash,
        /// The checkpoint the log was proven to extend, if one was given.
        checkpoint: Option<Checkpoint>,
    },
    /// The chain is broken.
    Broken {
        /// The first position at which it is broken; every position before it verified.
        position: u64,
        /// What is wrong there.
        reason: BreakReason,
    },
    /// The chain holds, but the log does not extend the given checkpoint: it is shorter than the
    /// checkpoint's tree (its tail was cut), or its first events hash to another root (history was
    /// rewritten and rehashed).
    Contradicts {
        /// The checkpoint.
        checkpoint: Checkpoint,
        /// How many events the log holds (all verified up to the checkpoint's size, or the head).
        events: u64,
        /// The root of the log's first `checkpoint.size` events; `None` when it has fewer.
        found: Option<Hash>,
    },
}

impl VerifyReport {
    /// True when the whole log verified.
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
    }

    /// How many events were read and found intact.
    pub fn events_read(&self) -> u64 {
        match self {
            Self::Verified { events, .. } | Self::Contradicts { events, .. } => *events,
            Self::Broken { position, .. } => position.saturating_sub(1),
        }
    }

    fn broken(chain_break: ChainBreak) -> Self {
        Self::Broken {
            position: chain_break.position(),
            reason: BreakReason::Chain(chain_break),
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Verified {
                events,
                head,
                head_time,
                root,
                checkpoint,
            } => {
                if *events == 0 {
                    f.write_str("verified: 0 events, the log is empty")?;
                } else {
                    write!(
                        f,
                        "verified: {events} event{}, head position {}, hash {}",
                        if *events == 1 { "" } else { "s" },
                        head.position,
                        head.hash
                    )?;
                    if let Some(time) = head_time {
                        write!(f, "\nas of position {} ({time})", head.position)?;
                    }
                }
                write!(
                    f,
                    "\nmerkle root {} (tree size {events})",
                    hex::encode(root)
                )?;
                if let Some(c) = checkpoint {
                    write!(
                        f,
                        "\nextends the checkpoint of {} at tree size {}, root {}",
                        c.origin,
                        c.size,
                        hex::encode(c.root)
                    )?;
                }
                Ok(())
            }
            Self::Contradicts {
                checkpoint,
                events,
                found: None,
            } => write!(
                f,
                "contradicts the checkpoint of {} at tree size {}: the log holds only {events} event{}, so its tail was cut",
                checkpoint.origin,
                checkpoint.size,
                if *events == 1 { "" } else { "s" },
            ),
            Self::Contradicts {
                checkpoint,
                found: Some(found),
                ..
            } => write!(
                f,
                "contradicts the checkpoint of {} at tree size {}: the log's first {} events have merkle root {}, the checkpoint signed {}, so history up to position {} was rewritten",
                checkpoint.origin,
                checkpoint.size,
                checkpoint.size,
                hex::encode(found),
                hex::encode(checkpoint.root),
                checkpoint.size,
            ),
            Self::Broken { position, reason } => {
                let reason = reason.to_string();
                // The chain's own messages start by naming the position; say it only once.
                let prefix = format!("position {position}: ");
                let reason = reason.strip_prefix(&prefix).unwrap_or(&reason);
                write!(f, "chain broken at position {position}: {reason}")
            }
        }
    }
}

/// Why the chain is broken at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// The record was read, but it does not fit the chain: a gap, a wrong `prev_hash`, or contents
    /// that do not hash to the stored hash.
    Chain(ChainBreak),
    /// The stored row cannot be read as an event record (the store's explanation).
    Unreadable(String),
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Chain(b) => b.fmt(f),
            Self::Unreadable(reason) => write!(f, "the record is unreadable: {reason}"),
        }
    }
}

/// Verifies the whole log in pages of [`DEFAULT_PAGE_SIZE`], without a checkpoint; see
/// [`verify_in_pages`].
pub async fn verify(
    source: &mut Source,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    verify_in_pages(source, DEFAULT_PAGE_SIZE, None, progress).await
}

/// Reads the log from position 1, `page_size` records at a time, checks every record against
/// the chain and folds its hash into the Merkle tree. After each page, `progress` is called with
/// the number of events verified so far.
///
/// A broken chain, including an unreadable row, is a [`VerifyReport::Broken`] naming the first
/// broken position. With a `checkpoint`, a log that does not extend it is a
/// [`VerifyReport::Contradicts`], reported when the tree reaches the checkpoint's size (or the log
/// ends before); a break before that position is reported first. An `Err` means the store could
/// not be read at all (the database failed).
pub async fn verify_in_pages(
    source: &mut Source,
    page_size: usize,
    checkpoint: Option<&Checkpoint>,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let page_size = page_size.max(1);
    // This walk names every break itself.
    source.skip_chain_check();
    let mut walk = Walk::new(checkpoint);
    if let Some(c) = checkpoint
        && c.size == 0
        && c.root != walk.tree.root()
    {
        return Ok(walk.contradicts(c, Some(walk.tree.root())));
    }
    // A database is read ahead by several readers at once, which also hash what they read; the
    // first page they cannot read whole is read again below, one careful step at a time.
    if let Some(store) = source.store() {
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        if let Some(report) =
            prefetch(store.clone(), page_size, readers, &mut walk, &mut progress).await?
        {
            return Ok(report);
        }
    }
    let mut limit = page_size;
    loop {
        let from = walk.verifier.head().0 + 1;
        match source.read_all(from, limit).await {
            Ok(records) => {
                let hashes = records.iter().map(hash_of).collect();
                let report = walk.page(&records, hashes, records.len() < limit);
                progress(walk.verifier.head().0);
                if let Some(report) = report {
                    return Ok(report);
                }
                limit = page_size;
            }
            Err(StoreError::CorruptRecord { position, reason }) => {
                if position <= from {
                    return Ok(VerifyReport::Broken {
                        position,
                        reason: BreakReason::Unreadable(reason),
                    });
                }
                // The page was refused whole, so the records before the unreadable one are not
                // checked yet, and one of them may be the first break. Read up to it and go on.
                if limit == 1 {
                    // The first stored row at or after `from` is the unreadable one.
                    return Ok(VerifyReport::broken(ChainBreak::Gap {
                        expected: from,
                        found: position,
                    }));
                }
                let before = usize::try_from(position - from).unwrap_or(usize::MAX);
                // Exactly the rows before it if positions are gapless; halve if they are not.
                limit = if before < limit { before } else { limit / 2 };
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a record's contents hash to, as [`ChainVerifier::push_computed`] takes it.
fn hash_of(record: &EventRecord) -> Result<EventHash, String> {
    record.compute_hash().map_err(|e| e.to_string())
}

/// The state of one verification: the chain so far, the tree's right edge, and the checkpoint.
struct Walk<'c> {
    verifier: ChainVerifier,
    tree: Frontier,
    head_time: Option<Timestamp>,
    checkpoint: Option<&'c Checkpoint>,
}

impl<'c> Walk<'c> {
    fn new(checkpoint: Option<&'c Checkpoint>) -> Self {
        Self {
            verifier: ChainVerifier::new(),
            tree: Frontier::new(),
            head_time: None,
            checkpoint,
        }
    }

    fn contradicts(&self, c: &Checkpoint, found: Option<Hash>) -> VerifyReport {
        VerifyReport::Contradicts {
            checkpoint: c.clone(),
            events: self.tree.size(),
            found,
        }
    }

    /// Checks a page of records in order, given their computed hashes. Answers the report when
    /// the walk ends here: at a break, at a contradicted checkpoint, or at the `last` page.
    fn page(
        &mut self,
        records: &[EventRecord],
        hashes: Vec<Result<EventHash, String>>,
        last: bool,
    ) -> Option<VerifyReport> {
        for (record, computed) in records.iter().zip(hashes) {
            if let Err(chain_break) = self.verifier.push_computed(record, computed) {
                return Some(VerifyReport::broken(chain_break));
            }
            self.tree.push(&record.hash.0);
            self.head_time = Some(record.occurred_at);
            if let Some(c) = self.checkpoint
                && c.size == self.tree.size()
                && c.root != self.tree.root()
            {
                return Some(self.contradicts(c, Some(self.tree.root())));
            }
        }
        if !last {
            return None;
        }
        if let Some(c) = self.checkpoint
            && c.size > self.tree.size()
        {
            return Some(self.contradicts(c, None));
        }
        let (position, hash) = self.verifier.head();
        Some(VerifyReport::Verified {
            events: position,
            head: Head { position, hash },
            head_time: self.head_time,
            root: self.tree.root(),
            checkpoint: self.checkpoint.cloned(),
        })
    }
}

/// A page read ahead: its index, and its records with their hashes (or why it could not be read).
type Prefetched = (
    u64,
    Result<(Vec<EventRecord>, Vec<Result<EventHash, String>>), StoreError>,
);

/// Reads the log with `readers` tasks at once, each reading the next unclaimed page (positions
/// are gapless, so page `k` starts at position `k * page_size + 1`) and hashing its records, while
/// this task checks the pages in order. At most two pages per reader wait to be checked, so memory
/// stays bounded. Answers the report, or `None` when a page could not be read whole: the walk
/// stands before that page, for the careful reading to take over.
async fn prefetch(
    store: Arc<dyn EventStore>,
    page_size: usize,
    readers: usize,
    walk: &mut Walk<'_>,
    progress: &mut impl FnMut(u64),
) -> Result<Option<VerifyReport>, StoreError> {
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let permits = Arc::new(Semaphore::new(readers * 2));
    let (tx, mut rx) = mpsc::channel::<Prefetched>(readers * 2);
    let mut tasks = JoinSet::new();
    for _ in 0..readers {
        let (store, next, stop, permits, tx) = (
            store.clone(),
            next.clone(),
            stop.clone(),
            permits.clone(),
            tx.clone(),
        );
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                permit.forget();
                let k = next.fetch_add(1, Ordering::Relaxed);
                let from = k * page_size as u64 + 1;
                let page = store.read_all(from, page_size).await.map(|records| {
                    let hashes = records.iter().map(hash_of).collect();
                    (records, hashes)
                });
                let end = !matches!(&page, Ok((records, _)) if records.len() == page_size);
                if tx.send((k, page)).await.is_err() || end {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut waiting = BTreeMap::new();
    let mut expected = 0;
    let outcome = 'pages: loop {
        let received = tokio::select! {
            received = rx.recv() => received,
            // A reader that failed (it panicked) never sends the page it claimed: read carefully.
            Some(Err(_)) = tasks.join_next() => None,
        };
        let Some((k, page)) = received else {
            // Every reader stopped without the page this walk needs: read it carefully.
            break Ok(None);
        };
        waiting.insert(k, page);
        while let Some(page) = waiting.remove(&expected) {
            expected += 1;
            permits.add_permits(1);
            match page {
                Ok((records, hashes)) => {
                    let last = records.len() < page_size;
                    let report = walk.page(&records, hashes, last);
                    progress(walk.verifier.head().0);
                    if let Some(report) = report {
                        stop.store(true, Ordering::Relaxed);
                        tasks.abort_all();
                        return Ok(Some(report));
                    }
                }
                Err(StoreError::CorruptRecord { .. }) => {
                    stop.store(true, Ordering::Relaxed);
                    tasks.abort_all();
                    return Ok(None);
                }
                Err(e) => break 'pages Err(e),
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    outcome
}

#[cfg(test)]
mod tests {
    use custodian_domain::EventHash;

    use super::*;

    #[test]
    fn reports_name_the_head_the_root_and_the_checkpoint() {
        let head = Head {
            position: 300,
            hash: EventHash([0xab; 32]),
        };
        let time = Timestamp::parse("2026-12-02T10:00:00Z").unwrap();
        let checkpoint = Checkpoint {
            origin: "custodian.example/ledger".into(),
            size: 250,
            root: [0xcd; 32],
            time: None,
        };
        assert_eq!(
            VerifyReport::Verified {
                events: 300,
                head,
                head_time: Some(time),
                root: [0xef; 32],
                checkpoint: Some(checkpoint.clone()),
            }
            .to_string(),
            format!(
                "verified: 300 events, head position 300, hash {}\n\
                 as of position 300 (2026-12-02T10:00:00.000000Z)\n\
                 merkle root {} (tree size 300)\n\
                 extends the checkpoint of custodian.example/ledger at tree size 250, root {}",
                "ab".repeat(32),
                "ef".repeat(32),
                "cd".repeat(32)
            )
        );
        assert_eq!(
            VerifyReport::Verified {
                events: 0,
                head: Head::default(),
                head_time: None,
                root: custodian_domain::merkle::empty_root(),
                checkpoint: None,
            }
            .to_string(),
            format!(
                "verified: 0 events, the log is empty\nmerkle root {} (tree size 0)",
                hex::encode(custodian_domain::merkle::empty_root())
            )
        );
        let cut = VerifyReport::Contradicts {
            checkpoint: checkpoint.clone(),
            events: 200,
            found: None,
        };
        assert_eq!(
            cut.to_string(),
            "contradicts the checkpoint of custodian.example/ledger at tree size 250: the log holds only 200 events, so its tail was cut"
        );
        let rewritten = VerifyReport::Contradicts {
            checkpoint,
            events: 250,
            found: Some([1; 32]),
        };
        assert!(
            rewritten
                .to_string()
                .ends_with("so history up to position 250 was rewritten"),
            "{rewritten}"
        );
    }

    #[test]
    fn broken_reports_read_as_one_line() {
        let broken = VerifyReport::broken(ChainBreak::HashMismatch {
            position: 137,
            stored: EventHash([1; 32]),
            computed: EventHash([2; 32]),
        });
        let text = broken.to_string();
        assert!(
            text.starts_with("chain broken at position 137: stored hash is 0101"),
            "{text}"
        );
        let unreadable = VerifyReport::Broken {
            position: 5,
            reason: BreakReason::Unreadable("data is not valid JSON".into()),
        };
        assert_eq!(
            unreadable.to_string(),
            "chain broken at position 5: the record is unreadable: data is not valid JSON"
        );
        let gap = VerifyReport::broken(ChainBreak::Gap {
            expected: 4,
            found: 6,
        });
        assert_eq!(
            gap.to_string(),
            "chain broken at position 4: position 4 expected, found position 6: the log has a gap or a duplicate"
        );
    }
}
