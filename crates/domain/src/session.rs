//! The session aggregate: one login, its rotating refresh token, and how it ended.
//!
//! Sessions live in streams `{tenant}/session/{session_id}`. A session is one refresh-token family:
//! each refresh spends the current token and issues the next generation. Presenting a spent token
//! of the family (reuse: it was stolen, or the client raced itself) revokes the whole session.

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;
use crate::secret::TokenHash;
use crate::user::LoginMethod;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// The user revoked it from their session list.
    RevokedByUser,
    /// An administrator revoked it.
    RevokedByAdmin,
    /// A spent refresh token of it was presented again.
    RefreshTokenReuse,
    /// The password was changed or reset.
    PasswordChanged,
}

/// The facts of a session's life. Every variant is `session.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionEvent {
    /// A login started the session.
    Started {
        /// Whose session.
        user_id: String,
        /// Keyed hash of the first refresh token (generation 0).
        refresh: TokenHash,
        /// How the login was completed.
        method: LoginMethod,
        /// The session cannot be refreshed after this, however active.
        expires_at: Timestamp,
        /// The client's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
        /// The client's `User-Agent`, truncated.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_agent: Option<String>,
    },
    /// The refresh token was rotated: the previous generation is spent.
    Refreshed {
        /// The new generation.
        generation: u64,
        /// Keyed hash of the new refresh token.
        refresh: TokenHash,
    },
    /// A spent refresh token was presented: the family is compromised.
    RefreshTokenReused {
        /// The generation of the token presented.
        generation: u64,
        /// The client's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<String>,
    },
    /// The session ended; its tokens are dead.
    Revoked {
        /// Why.
        reason: RevokeReason,
    },
}

crate::tagged_event!(
    SessionEvent,
    "session",
    ["started", "refreshed", "refresh_token_reused", "revoked"]
);

/// A session as its events have made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whose session.
    pub user_id: String,
    /// How it started.
    pub method: LoginMethod,
    /// The current refresh token's generation.
    pub generation: u64,
    /// Keyed hash of the current refresh token.
    pub current: TokenHash,
    /// Keyed hashes of spent refresh tokens, by generation (index = generation).
    pub spent: Vec<TokenHash>,
    /// Absolute expiry.
    pub expires_at: Timestamp,
    /// Why it ended, if it has.
    pub revoked: Option<RevokeReason>,
}

impl Session {
    /// Whether the session's tokens are alive at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked.is_none() && now < self.expires_at
    }
}

/// What someone asks of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Start a session after a completed login.
    Start {
        /// Whose session.
        user_id: String,
        /// Keyed hash of the first refresh token.
        refresh: TokenHash,
        /// How the login was completed.
        method: LoginMethod,
        /// Absolute expiry.
        expires_at: Timestamp,
        /// Client address.
        ip: Option<String>,
        /// Client user agent.
        user_agent: Option<String>,
    },
    /// Rotate the refresh token.
    Refresh {
        /// Generation named by the presented token.
        generation: u64,
        /// Keyed hash of the presented token.
        presented: TokenHash,
        /// Keyed hash of the next token.
        next: TokenHash,
        /// Client address.
        ip: Option<String>,
        /// The time of the request.
        now: Timestamp,
    },
    /// End the session.
    Revoke {
        /// Why.
        reason: RevokeReason,
    },
}

/// Why a session command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session.
    #[error("session not found")]
    NotFound,
    /// The session already exists.
    #[error("session already exists")]
    AlreadyExists,
    /// The session is revoked or expired.
    #[error("the session has ended")]
    Ended,
    /// The presented token is not one this session issued.
    #[error("the refresh token is invalid")]
    InvalidToken,
}

/// Decides what a command on a session means. A refresh with a spent token of this family is
/// *not* an error here: it yields `RefreshTokenReused` and `Revoked`, which the caller must append
/// and then refuse the request.
pub fn decide(
    state: Option<&Session>,
    command: SessionCommand,
) -> Result<Vec<SessionEvent>, SessionError> {
    use SessionCommand as C;
    use SessionEvent as E;
    match (state, command) {
        (
            None,
            C::Start {
                user_id,
                refresh,
                method,
                expires_at,
                ip,
                user_agent,
            },
        ) => Ok(vec![E::Started {
            user_id,
            refresh,
            method,
            expires_at,
            ip,
            user_agent,
        }]),
        (Some(_), C::Start { .. }) => Err(SessionError::AlreadyExists),
        (None, _) => Err(SessionError::NotFound),
        (
            Some(s),
            C::Refresh {
                generation,
                presented,
                next,
                ip,
                now,
            },
        ) => {
            if s.revoked.is_some() {
                return Err(SessionError::Ended);
            }
            let spent = usize::try_from(generation)
                .ok()
                .and_then(|g| s.spent.get(g))
                .is_some_and(|h| *h == presented);
            if spent {
                return Ok(vec![
                    E::RefreshTokenReused { generation, ip },
                    E::Revoked {
                        reason: RevokeReason::RefreshTokenReuse,
                    },
                ]);
            }
            if generation != s.generation || presented != s.current {
                return Err(SessionError::InvalidToken);
            }
            if now >= s.expires_at {
                return Err(SessionError::Ended);
            }
            Ok(vec![E::Refreshed {
                generation: s.generation + 1,
                refresh: next,
            }])
        }
        (Some(s), C::Revoke { reason }) => {
            if s.revoked.is_some() {
                Ok(vec![])
            } else {
                Ok(vec![E::Revoked { reason }])
            }
        }
    }
}

/// Applies one event to a session's state.
pub fn evolve(state: Option<Session>, event: &SessionEvent) -> Option<Session> {
    use SessionEvent as E;
    match (state, event) {
        (
            None,
            E::Started {
                user_id,
                refresh,
                method,
                expires_at,
                ..
            },
        ) => Some(Session {
            user_id: user_id.clone(),
            method: *method,
            generation: 0,
            current: refresh.clone(),
            spent: vec![],
            expires_at: *expires_at,
            revoked: None,
        }),
        (None, _) => None,
        (
            Some(mut s),
            E::Refreshed {
                generation,
                refresh,
            },
        ) => {
            let previous = std::mem::replace(&mut s.current, refresh.clone());
            s.spent.push(previous);
            s.generation = *generation;
            Some(s)
        }
        (Some(mut s), E::Revoked { reason }) => {
            s.revoked = Some(*reason);
            Some(s)
        }
        (Some(s), E::Started { .. } | E::RefreshTokenReused { .. }) => Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;

    fn h(c: char) -> TokenHash {
        TokenHash(std::iter::repeat_n(c, 64).collect())
    }

    fn now() -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
    }

    fn run(events: &mut Vec<SessionEvent>, c: SessionCommand) -> Result<(), SessionError> {
        let state = events.iter().fold(None, evolve);
        events.extend(decide(state.as_ref(), c)?);
        Ok(())
    }

    fn started() -> Vec<SessionEvent> {
        let mut e = vec![];
        run(
            &mut e,
            SessionCommand::Start {
                user_id: "user_1".into(),
                refresh: h('0'),
                method: LoginMethod::Password,
                expires_at: now().plus(time::Duration::days(30)),
                ip: None,
                user_agent: None,
            },
        )
        .unwrap();
        e
    }

    fn refresh(generation: u64, presented: char, next: char) -> SessionCommand {
        SessionCommand::Refresh {
            generation,
            presented: h(presented),
            next: h(next),
            ip: None,
            now: now(),
        }
    }

    #[test]
    fn rotation_spends_the_old_token_and_reuse_revokes_the_family() {
        let mut e = started();
        run(&mut e, refresh(0, '0', '1')).unwrap();
        run(&mut e, refresh(1, '1', '2')).unwrap();
        let before = e.len();
        // The spent generation-0 token again: reuse.
        run(&mut e, refresh(0, '0', '9')).unwrap();
        assert_eq!(
            &e[before..],
            &[
                SessionEvent::RefreshTokenReused {
                    generation: 0,
                    ip: None
                },
                SessionEvent::Revoked {
                    reason: RevokeReason::RefreshTokenReuse
                }
            ]
        );
        // The newest token is dead too.
        assert_eq!(run(&mut e, refresh(2, '2', '3')), Err(SessionError::Ended));
    }

    #[test]
    fn a_forged_token_is_refused_without_revoking() {
        let mut e = started();
        run(&mut e, refresh(0, '0', '1')).unwrap();
        assert_eq!(
            run(&mut e, refresh(0, 'x', '2')),
            Err(SessionError::InvalidToken)
        );
        assert_eq!(
            run(&mut e, refresh(5, '1', '2')),
            Err(SessionError::InvalidToken)
        );
        run(&mut e, refresh(1, '1', '2')).unwrap();
    }

    #[test]
    fn expired_sessions_cannot_refresh() {
        let e = started();
        let s = e.iter().fold(None, evolve);
        let late = SessionCommand::Refresh {
            generation: 0,
            presented: h('0'),
            next: h('1'),
            ip: None,
            now: now().plus(time::Duration::days(31)),
        };
        assert_eq!(decide(s.as_ref(), late), Err(SessionError::Ended));
    }

    #[test]
    fn revoke_is_idempotent_and_events_round_trip() {
        let mut e = started();
        run(
            &mut e,
            SessionCommand::Revoke {
                reason: RevokeReason::Logout,
            },
        )
        .unwrap();
        let n = e.len();
        run(
            &mut e,
            SessionCommand::Revoke {
                reason: RevokeReason::Logout,
            },
        )
        .unwrap();
        assert_eq!(e.len(), n);
        for ev in &e {
            let back =
                SessionEvent::decode(ev.event_type(), ev.schema_version(), &ev.data()).unwrap();
            assert_eq!(&back, ev);
        }
    }
}
