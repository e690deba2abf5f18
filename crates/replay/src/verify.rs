//! Verifying the whole log: read every record from position 1 in pages, check each one against the
//! hash chain, and name the first position at which the chain breaks.
//!
//! A row the store cannot parse is a break at its position too. What verification cannot see is a
//! log cut short at its end: the last surviving record is a valid head. Compare the reported head
//! hash with one recorded elsewhere to rule that out.

use std::fmt;

use custodian_domain::{ChainBreak, ChainVerifier};
use custodian_store::{Head, StoreError};

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
    },
    /// The chain is broken.
    Broken {
        /// The first position at which it is broken; every position before it verified.
        position: u64,
        /// What is wrong there.
        reason: BreakReason,
    },
}

impl VerifyReport {
    /// True when the whole log verified.
    pub fn is_verified(&self) -> bool {
        matches!(self, Self::Verified { .. })
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
            Self::Verified { events: 0, .. } => f.write_str("verified: 0 events, the log is empty"),
            Self::Verified { events, head } => write!(
                f,
                "verified: {events} event{}, head position {}, hash {}",
                if *events == 1 { "" } else { "s" },
                head.position,
                head.hash
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

/// Verifies the whole log in pages of [`DEFAULT_PAGE_SIZE`]; see [`verify_in_pages`].
pub async fn verify(
    source: &mut Source,
    progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    verify_in_pages(source, DEFAULT_PAGE_SIZE, progress).await
}

/// Reads the log from position 1, `page_size` records at a time, and checks every record against
/// the chain. After each page, `progress` is called with the number of events verified so far.
///
/// A broken chain, including an unreadable row, is a [`VerifyReport::Broken`] naming the first
/// broken position. An `Err` means the store could not be read at all (the database failed).
pub async fn verify_in_pages(
    source: &mut Source,
    page_size: usize,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let page_size = page_size.max(1);
    let mut verifier = ChainVerifier::new();
    let mut limit = page_size;
    loop {
        let from = verifier.head().0 + 1;
        match source.read_all(from, limit).await {
            Ok(records) => {
                for record in &records {
                    if let Err(chain_break) = verifier.push(record) {
                        return Ok(VerifyReport::broken(chain_break));
                    }
                }
                let (position, hash) = verifier.head();
                progress(position);
                if records.len() < limit {
                    return Ok(VerifyReport::Verified {
                        events: position,
                        head: Head { position, hash },
                    });
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

#[cfg(test)]
mod tests {
    use custodian_domain::EventHash;

    use super::*;

    #[test]
    fn reports_read_as_one_line() {
        let head = Head {
            position: 300,
            hash: EventHash([0xab; 32]),
        };
        assert_eq!(
            VerifyReport::Verified { events: 300, head }.to_string(),
            format!(
                "verified: 300 events, head position 300, hash {}",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            VerifyReport::Verified {
                events: 0,
                head: Head::default()
            }
            .to_string(),
            "verified: 0 events, the log is empty"
        );
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
