//! The log's own record of its verifiability: the keys that sign its checkpoints and the signed
//! checkpoints the service published, in the one stream `_system/ledger/checkpoints`.
//!
//! A checkpoint key's private half never enters the log (it stays wrapped under the master key
//! outside it); its issuance names the C2SP verifier key only. The first key is issued in the same
//! append as the first checkpoint, so nothing is written to a log that nobody has used yet. Each
//! checkpoint covers a larger tree than the last, and its note must open with the stream's current
//! key: both rules are checked here, so a checkpoint the log holds was signed by the key the log
//! says was current.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, NoteVerifier};
use crate::event::Timestamp;

/// The aggregate name of the ledger's stream, in the tenant `_system`.
pub const AGGREGATE: &str = "ledger";

/// The id of the one stream of the aggregate: `_system/ledger/checkpoints`.
pub const STREAM_ID: &str = "checkpoints";

/// The type of a published checkpoint's event.
pub const CHECKPOINTED: &str = "ledger.checkpointed";

/// The facts of the ledger's stream. Every variant is `ledger.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LedgerEvent {
    /// A checkpoint signing key was made: checkpoints from here on are signed with it.
    CheckpointKeyIssued {
        /// The key id: 8 lower-case hex digits, as in the verifier key and each signature line.
        key_id: String,
        /// The key name of the signed notes (the log's origin when the key was made).
        key_name: String,
        /// The C2SP verifier key: `name+id+base64(0x01 || public key)`.
        verifier_key: String,
        /// The key it replaces, or `None` for the first key.
        replaces: Option<String>,
    },
    /// A signed checkpoint of the log's Merkle tree was published.
    Checkpointed {
        /// The checkpoint's origin line.
        origin: String,
        /// The number of events the tree covers: positions `1..=tree_size`.
        tree_size: u64,
        /// The tree's root, 64 lower-case hex digits.
        root_hash: String,
        /// When it was taken.
        time: Timestamp,
        /// The id of the key that signed it.
        key_id: String,
        /// The whole signed note, as published.
        note: String,
    },
}

crate::tagged_event!(
    LedgerEvent,
    "ledger",
    ["checkpoint_key_issued", "checkpointed"]
);

/// The key that signs checkpoints now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentKey {
    /// Its id (8 hex digits).
    pub key_id: String,
    /// Its name.
    pub key_name: String,
    /// Its verifier key string.
    pub verifier_key: String,
}

/// The last checkpoint published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheckpoint {
    /// The tree size it covers.
    pub tree_size: u64,
    /// Its root, hex.
    pub root_hash: String,
    /// When it was taken.
    pub time: Timestamp,
    /// The key that signed it.
    pub key_id: String,
}

/// The ledger's stream as its events have made it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// The current checkpoint key, once one was issued.
    pub key: Option<CurrentKey>,
    /// The last checkpoint, once one was published.
    pub last: Option<LastCheckpoint>,
}

/// A key to issue: its name and verifier key (the id is read from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The key name.
    pub key_name: String,
    /// The verifier key string.
    pub verifier_key: String,
}

/// What someone asks of the ledger's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCommand {
    /// Make `key` the checkpoint key, replacing the current one if any.
    IssueKey(NewKey),
    /// Record a signed checkpoint. With `issue_key`, the key is issued first in the same append
    /// (the first checkpoint of a log must bring its key).
    Checkpoint {
        /// The full signed note; its body gives origin, size, root and time.
        note: String,
        /// A key to issue before it, which must be the one that signed it.
        issue_key: Option<NewKey>,
    },
}

/// Why a ledger command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No checkpoint key was issued yet, and the command brings none.
    #[error("no checkpoint key has been issued yet")]
    NoKey,
    /// The key asked for is already the current one.
    #[error("checkpoint key {0} is already the current key")]
    AlreadyCurrent(String),
    /// The checkpoint does not cover more of the log than the last one.
    #[error("the last checkpoint covers {last} events; a new one must cover more than {asked}")]
    NotNewer {
        /// The last checkpoint's tree size.
        last: u64,
        /// The tree size asked.
        asked: u64,
    },
    /// A verifier key or note is malformed, or the note is not signed by the current key.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Invalid(e.to_string())
}

/// Reads a new key's verifier key, checking its name matches.
fn read_key(key: &NewKey) -> Result<(NoteVerifier, String), LedgerError> {
    let verifier = NoteVerifier::parse(&key.verifier_key).map_err(invalid)?;
    if verifier.name() != key.key_name {
        return Err(LedgerError::Invalid(format!(
            "the verifier key is named {:?}, not {:?}",
            verifier.name(),
            key.key_name
        )));
    }
    let key_id = key
        .verifier_key
        .split('+')
        .nth(1)
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok((verifier, key_id))
}

/// Decides what a command does to the ledger's stream.
pub fn decide(
    state: &LedgerState,
    command: LedgerCommand,
) -> Result<Vec<LedgerEvent>, LedgerError> {
    match command {
        LedgerCommand::IssueKey(key) => {
            let (_, key_id) = read_key(&key)?;
            if state.key.as_ref().is_some_and(|k| k.key_id == key_id) {
                return Err(LedgerError::AlreadyCurrent(key_id));
            }
            Ok(vec![issued(state, key, key_id)])
        }
        LedgerCommand::Checkpoint { note, issue_key } => {
            let mut events = Vec::new();
            let (verifier, key_id) = match issue_key {
                Some(key) => {
                    let (verifier, key_id) = read_key(&key)?;
                    if state.key.as_ref().is_some_and(|k| k.key_id == key_id) {
                        return Err(LedgerError::AlreadyCurrent(key_id));
                    }
                    events.push(issued(state, key, key_id.clone()));
                    (verifier, key_id)
                }
                None => {
                    let key = state.key.as_ref().ok_or(LedgerError::NoKey)?;
                    (
                        NoteVerifier::parse(&key.verifier_key).map_err(invalid)?,
                        key.key_id.clone(),
                    )
                }
            };
            let Checkpoint {
                origin,
                size,
                root,
                time,
            } = verifier.open_checkpoint(&note).map_err(invalid)?;
            let time = time.ok_or_else(|| {
                LedgerError::Invalid("the checkpoint has no time line".to_owned())
            })?;
            if let Some(last) = &state.last
                && size <= last.tree_size
            {
                return Err(LedgerError::NotNewer {
                    last: last.tree_size,
                    asked: size,
                });
            }
            if size == 0 {
                return Err(LedgerError::Invalid(
                    "a checkpoint covers at least one event".to_owned(),
                ));
            }
            events.push(LedgerEvent::Checkpointed {
                origin,
                tree_size: size,
                root_hash: hex::encode(root),
                time,
                key_id,
                note,
            });
            Ok(events)
        }
    }
}

fn issued(state: &LedgerState, key: NewKey, key_id: String) -> LedgerEvent {
    LedgerEvent::CheckpointKeyIssued {
        key_id,
        key_name: key.key_name,
        verifier_key: key.verifier_key,
        replaces: state.key.as_ref().map(|k| k.key_id.clone()),
    }
}

/// Applies an event to the ledger's state.
pub fn evolve(mut state: LedgerState, event: &LedgerEvent) -> LedgerState {
    match event {
        LedgerEvent::CheckpointKeyIssued {
            key_id,
            key_name,
            verifier_key,
            ..
        } => {
            state.key = Some(CurrentKey {
                key_id: key_id.clone(),
                key_name: key_name.clone(),
                verifier_key: verifier_key.clone(),
            });
        }
        LedgerEvent::Checkpointed {
            tree_size,
            root_hash,
            time,
            key_id,
            ..
        } => {
            state.last = Some(LastCheckpoint {
                tree_size: *tree_size,
                root_hash: root_hash.clone(),
                time: *time,
                key_id: key_id.clone(),
            });
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::DomainEvent;
    use crate::checkpoint::NoteSigner;

    fn signer(seed: u8) -> NoteSigner {
        NoteSigner::new(
            "custodian.example/ledger",
            SigningKey::from_bytes(&[seed; 32]),
        )
        .unwrap()
    }

    fn new_key(s: &NoteSigner) -> NewKey {
        NewKey {
            key_name: s.name().to_owned(),
            verifier_key: s.verifier_key(),
        }
    }

    fn note(s: &NoteSigner, size: u64) -> String {
        let body = Checkpoint {
            origin: "custodian.example/ledger".to_owned(),
            size,
            root: [size as u8; 32],
            time: Some(Timestamp::parse("2026-03-01T12:00:00Z").unwrap()),
        }
        .body();
        s.sign(&body).unwrap()
    }

    fn run(state: LedgerState, command: LedgerCommand) -> (LedgerState, Vec<LedgerEvent>) {
        let events = decide(&state, command).unwrap();
        let state = events.iter().fold(state, evolve);
        (state, events)
    }

    #[test]
    fn the_first_checkpoint_brings_its_key_and_later_ones_must_grow() {
        let a = signer(1);
        assert_eq!(
            decide(
                &LedgerState::default(),
                LedgerCommand::Checkpoint {
                    note: note(&a, 3),
                    issue_key: None
                }
            ),
            Err(LedgerError::NoKey)
        );
        let (state, events) = run(
            LedgerState::default(),
            LedgerCommand::Checkpoint {
                note: note(&a, 3),
                issue_key: Some(new_key(&a)),
            },
        );
        assert_eq!(
            events.iter().map(|e| e.event_type()).collect::<Vec<_>>(),
            ["ledger.checkpoint_key_issued", "ledger.checkpointed"]
        );
        assert_eq!(events[0].data()["replaces"], serde_json::Value::Null);
        assert_eq!(events[1].data()["key_id"], hex::encode(a.key_id()));
        assert_eq!(events[1].data()["root_hash"], hex::encode([3u8; 32]));
        assert_eq!(
            decide(
                &state,
                LedgerCommand::Checkpoint {
                    note: note(&a, 3),
                    issue_key: None
                }
            ),
            Err(LedgerError::NotNewer { last: 3, asked: 3 })
        );
        let (state, _) = run(
            state,
            LedgerCommand::Checkpoint {
                note: note(&a, 5),
                issue_key: None,
            },
        );
        assert_eq!(state.last.unwrap().tree_size, 5);
        for e in &events {
            assert_eq!(
                LedgerEvent::decode(e.event_type(), 1, &e.data()).unwrap(),
                *e
            );
        }
    }

    #[test]
    fn after_a_rotation_only_the_new_key_signs() {
        let (a, b) = (signer(1), signer(2));
        let (state, _) = run(
            LedgerState::default(),
            LedgerCommand::Checkpoint {
                note: note(&a, 1),
                issue_key: Some(new_key(&a)),
            },
        );
        assert_eq!(
            decide(&state, LedgerCommand::IssueKey(new_key(&a))),
            Err(LedgerError::AlreadyCurrent(hex::encode(a.key_id())))
        );
        let (state, events) = run(state, LedgerCommand::IssueKey(new_key(&b)));
        assert_eq!(events[0].data()["replaces"], hex::encode(a.key_id()));
        assert!(matches!(
            decide(
                &state,
                LedgerCommand::Checkpoint {
                    note: note(&a, 2),
                    issue_key: None
                }
            ),
            Err(LedgerError::Invalid(_))
        ));
        run(
            state,
            LedgerCommand::Checkpoint {
                note: note(&b, 2),
                issue_key: None,
            },
        );
    }

    #[test]
    fn a_key_whose_name_differs_from_its_verifier_key_is_refused() {
        let a = signer(1);
        let key = NewKey {
            key_name: "other.example/log".to_owned(),
            verifier_key: a.verifier_key(),
        };
        assert!(matches!(
            decide(&LedgerState::default(), LedgerCommand::IssueKey(key)),
            Err(LedgerError::Invalid(_))
        ));
    }
}
