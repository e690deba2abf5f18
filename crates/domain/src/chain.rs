//! Verifying the hash chain: positions gapless from 1, each `prev_hash` the hash before it, each
//! `hash` the SHA-256 of the record's canonical form.

use crate::event::{EventHash, EventRecord};

/// The first place where a log stops being a valid chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// A position is missing or repeated.
    #[error(
        "position {expected} expected, found position {found}: the log has a gap or a duplicate"
    )]
    Gap {
        /// The position that should come next.
        expected: u64,
        /// The position that came.
        found: u64,
    },
    /// The record does not point at its predecessor.
    #[error(
        "position {position}: prev_hash is {found} but the hash of position {} is {expected}",
        position - 1
    )]
    PrevHashMismatch {
        /// The record's position.
        position: u64,
        /// The predecessor's hash.
        expected: EventHash,
        /// The stored `prev_hash`.
        found: EventHash,
    },
    /// The record's contents do not hash to its stored hash: it was changed after it was written.
    #[error(
        "position {position}: stored hash is {stored} but the record hashes to {computed}: its contents were changed after it was written"
    )]
    HashMismatch {
        /// The record's position.
        position: u64,
        /// The stored hash.
        stored: EventHash,
        /// The hash of the stored contents.
        computed: EventHash,
    },
    /// The record cannot be put in canonical form.
    #[error("position {position}: the record cannot be canonicalized: {reason}")]
    Unhashable {
        /// The record's position.
        position: u64,
        /// Why.
        reason: String,
    },
}

impl ChainBreak {
    /// The position the break was found at.
    pub fn position(&self) -> u64 {
        match self {
            Self::Gap { expected, .. } => *expected,
            Self::PrevHashMismatch { position, .. }
            | Self::HashMismatch { position, .. }
            | Self::Unhashable { position, .. } => *position,
        }
    }
}

/// Checks records one at a time, in position order, from position 1.
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    head_position: u64,
    head_hash: EventHash,
}

impl ChainVerifier {
    /// A verifier expecting position 1 next.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next record.
    pub fn push(&mut self, record: &EventRecord) -> Result<(), ChainBreak> {
        self.push_computed(record, record.compute_hash().map_err(|e| e.to_string()))
    }

    /// Checks the next record, given what its contents hash to (computed ahead, possibly on
    /// another thread, by [`EventRecord::compute_hash`]; `Err` when they cannot be canonicalized).
    pub fn push_computed(
        &mut self,
        record: &EventRecord,
        computed: Result<EventHash, String>,
    ) -> Result<(), ChainBreak> {
        let expected = self.head_position + 1;
        if record.position != expected {
            return Err(ChainBreak::Gap {
                expected,
                found: record.position,
            });
        }
        if record.prev_hash != self.head_hash {
            return Err(ChainBreak::PrevHashMismatch {
                position: record.position,
                expected: self.head_hash,
                found: record.prev_hash,
            });
        }
        let computed = computed.map_err(|reason| ChainBreak::Unhashable {
            position: record.position,
            reason,
        })?;
        if computed != record.hash {
            return Err(ChainBreak::HashMismatch {
                position: record.position,
                stored: record.hash,
                computed,
            });
        }
        self.head_position = record.position;
        self.head_hash = record.hash;
        Ok(())
    }

    /// The last verified position and its hash (`0` and zeros before any record).
    pub fn head(&self) -> (u64, EventHash) {
        (self.head_position, self.head_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, EventType, NewEvent, Timestamp};
    use crate::stream::StreamName;

    fn chain(n: u64) -> Vec<EventRecord> {
        let mut prev = EventHash::ZERO;
        (1..=n)
            .map(|p| {
                let r = EventRecord::seal(
                    p,
                    StreamName::parse("acme/user/u1").unwrap(),
                    p,
                    prev,
                    NewEvent {
                        id: uuid::Uuid::from_u128(p.into()),
                        event_type: EventType::parse("user.renamed").unwrap(),
                        schema: 1,
                        actor: Actor::system(),
                        occurred_at: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
                        correlation_id: None,
                        causation_id: None,
                        data: serde_json::json!({"n": p}),
                    },
                )
                .unwrap();
                prev = r.hash;
                r
            })
            .collect()
    }

    fn verify(records: &[EventRecord]) -> Result<(u64, EventHash), ChainBreak> {
        let mut v = ChainVerifier::new();
        for r in records {
            v.push(r)?;
        }
        Ok(v.head())
    }

    #[test]
    fn an_intact_chain_verifies_to_its_head() {
        let c = chain(5);
        assert_eq!(verify(&c), Ok((5, c[4].hash)));
    }

    #[test]
    fn changed_data_is_found_at_its_position() {
        let mut c = chain(5);
        c[2].data = serde_json::json!({"n": 99});
        assert!(matches!(
            verify(&c),
            Err(ChainBreak::HashMismatch { position: 3, .. })
        ));
    }

    #[test]
    fn a_rehashed_forgery_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].data = serde_json::json!({"n": 99});
        c[2].hash = c[2].compute_hash().unwrap();
        assert!(matches!(
            verify(&c),
            Err(ChainBreak::PrevHashMismatch { position: 4, .. })
        ));
    }

    #[test]
    fn gaps_and_duplicates_are_found() {
        let c = chain(5);
        let gap = [c[0].clone(), c[2].clone()];
        assert_eq!(
            verify(&gap),
            Err(ChainBreak::Gap {
                expected: 2,
                found: 3
            })
        );
        let dup = [c[0].clone(), c[0].clone()];
        assert_eq!(
            verify(&dup),
            Err(ChainBreak::Gap {
                expected: 2,
                found: 1
            })
        );
    }
}
