//! The email reservation aggregate: at most one user of a tenant holds an email address.
//!
//! Reservations live in streams `{tenant}/email/{email_index}`, named by the address's blind index
//! (a keyed hash), so the log can enforce uniqueness and find a user by email without storing the
//! address. A user claims the reservation before their own stream is created and releases it when
//! they change address or are deleted.

use serde::{Deserialize, Serialize};

/// The facts of a reservation. Every variant is `email.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailEvent {
    /// A user holds the address.
    Claimed {
        /// The holder.
        user_id: String,
    },
    /// The holder let go of the address.
    Released {
        /// The former holder.
        user_id: String,
    },
}

crate::tagged_event!(EmailEvent, "email", ["claimed", "released"]);

/// Who holds an address, if anyone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reservation {
    /// The holder.
    pub holder: Option<String>,
}

/// What someone asks of a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailCommand {
    /// Claim the address for `user_id`. `holder_gone` says the current holder's stream does not
    /// exist (a creation that claimed the address and then failed), so the claim may be taken over.
    Claim {
        /// The claimant.
        user_id: String,
        /// The current holder never came to exist.
        holder_gone: bool,
    },
    /// Release the address held by `user_id`.
    Release {
        /// The holder.
        user_id: String,
    },
}

/// Why a reservation command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Another user holds the address.
    #[error("the email address is already in use in this tenant")]
    Taken,
}

/// Decides what a reservation command means.
pub fn decide(state: &Reservation, command: EmailCommand) -> Result<Vec<EmailEvent>, EmailError> {
    match command {
        EmailCommand::Claim {
            user_id,
            holder_gone,
        } => match &state.holder {
            Some(h) if *h == user_id => Ok(vec![]),
            Some(_) if !holder_gone => Err(EmailError::Taken),
            _ => Ok(vec![EmailEvent::Claimed { user_id }]),
        },
        EmailCommand::Release { user_id } => match &state.holder {
            Some(h) if *h == user_id => Ok(vec![EmailEvent::Released { user_id }]),
            _ => Ok(vec![]),
        },
    }
}

/// Applies one event to a reservation.
pub fn evolve(mut state: Reservation, event: &EmailEvent) -> Reservation {
    match event {
        EmailEvent::Claimed { user_id } => state.holder = Some(user_id.clone()),
        EmailEvent::Released { user_id } => {
            if state.holder.as_deref() == Some(user_id.as_str()) {
                state.holder = None;
            }
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(u: &str, holder_gone: bool) -> EmailCommand {
        EmailCommand::Claim {
            user_id: u.into(),
            holder_gone,
        }
    }

    #[test]
    fn one_holder_at_a_time() {
        let mut r = Reservation::default();
        for e in decide(&r, claim("a", false)).unwrap() {
            r = evolve(r, &e);
        }
        assert_eq!(decide(&r, claim("a", false)), Ok(vec![]));
        assert_eq!(decide(&r, claim("b", false)), Err(EmailError::Taken));
        assert_eq!(
            decide(&r, claim("b", true)),
            Ok(vec![EmailEvent::Claimed {
                user_id: "b".into()
            }])
        );
        assert_eq!(
            decide(
                &r,
                EmailCommand::Release {
                    user_id: "b".into()
                }
            ),
            Ok(vec![])
        );
        for e in decide(
            &r,
            EmailCommand::Release {
                user_id: "a".into(),
            },
        )
        .unwrap()
        {
            r = evolve(r, &e);
        }
        assert_eq!(r.holder, None);
        assert_eq!(
            decide(&r, claim("b", false)),
            Ok(vec![EmailEvent::Claimed {
                user_id: "b".into()
            }])
        );
    }
}
