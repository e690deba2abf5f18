//! Access-token signing keys: the issuance of each key, so the log says which public keys the
//! service has signed tokens with, and from when.
//!
//! A key's stream is `_system/signing_key/{kid}`. Its event names the public half only: the private
//! half never enters the log (it stays wrapped under the master key in the `signing_keys` table).

use serde::{Deserialize, Serialize};

use crate::event::Timestamp;

/// The aggregate name of signing keys' streams, which live in the tenant `_system`.
pub const AGGREGATE: &str = "signing_key";

/// The JWS algorithm a key signs with (the JWK's `alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// EdDSA (RFC 8037).
    #[serde(rename = "EdDSA")]
    EdDsa,
}

/// The curve of a key (the JWK's `crv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    /// Ed25519: a 32-byte public key.
    Ed25519,
}

/// The facts of a signing key. Every variant is `signing_key.{variant}` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SigningKeyEvent {
    /// A new key was made; servers sign new access tokens with it once they have loaded it (within
    /// 30 seconds), and publish it in the JWKS until the last token it signed has expired.
    Issued {
        /// The key id: the `kid` of the JWK and of every token header the key signs.
        kid: String,
        /// The algorithm it signs with.
        algorithm: SigningAlgorithm,
        /// Its curve.
        curve: Curve,
        /// The public key, as the JWK's `x`: base64url without padding of the 32 bytes.
        public_key: String,
        /// When it was made: it signs no token issued before then.
        created_at: Timestamp,
    },
}

crate::tagged_event!(SigningKeyEvent, "signing_key", ["issued"]);

/// A key as its events have made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    /// The key id.
    pub kid: String,
    /// The public key (JWK `x`).
    pub public_key: String,
    /// When it was made.
    pub created_at: Timestamp,
}

/// What someone asks of a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKeyCommand {
    /// Record the issuance of a new Ed25519 key.
    Issue {
        /// `sk_` and 32 lower-case hex digits.
        kid: String,
        /// The 32-byte public key as base64url without padding (43 characters).
        public_key: String,
        /// When it was made.
        created_at: Timestamp,
    },
}

/// Why a signing-key command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// A key with this id was issued already.
    #[error("signing key {0} was issued already")]
    AlreadyIssued(String),
    /// A field is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: &'static str,
    },
}

fn check_kid(kid: &str) -> Result<(), SigningKeyError> {
    let ok = kid.strip_prefix("sk_").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    });
    if ok {
        Ok(())
    } else {
        Err(SigningKeyError::Invalid {
            field: "kid",
            message: "must be sk_ and 32 lower-case hex digits",
        })
    }
}

fn check_public_key(x: &str) -> Result<(), SigningKeyError> {
    let ok = x.len() == 43
        && x.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SigningKeyError::Invalid {
            field: "public_key",
            message: "must be 32 bytes as base64url without padding",
        })
    }
}

/// Decides what a command does to a key's stream.
pub fn decide(
    state: Option<&IssuedKey>,
    command: SigningKeyCommand,
) -> Result<Vec<SigningKeyEvent>, SigningKeyError> {
    match (state, command) {
        (Some(key), SigningKeyCommand::Issue { .. }) => {
            Err(SigningKeyError::AlreadyIssued(key.kid.clone()))
        }
        (
            None,
            SigningKeyCommand::Issue {
                kid,
                public_key,
                created_at,
            },
        ) => {
            check_kid(&kid)?;
            check_public_key(&public_key)?;
            Ok(vec![SigningKeyEvent::Issued {
                kid,
                algorithm: SigningAlgorithm::EdDsa,
                curve: Curve::Ed25519,
                public_key,
                created_at,
            }])
        }
    }
}

/// Applies an event to a key's state.
pub fn evolve(state: Option<IssuedKey>, event: &SigningKeyEvent) -> Option<IssuedKey> {
    match (state, event) {
        (
            None,
            SigningKeyEvent::Issued {
                kid,
                public_key,
                created_at,
                ..
            },
        ) => Some(IssuedKey {
            kid: kid.clone(),
            public_key: public_key.clone(),
            created_at: *created_at,
        }),
        // Events that do not apply (never produced by `decide`) leave the state as it was.
        (state, _) => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;

    fn issue(kid: &str, x: &str) -> SigningKeyCommand {
        SigningKeyCommand::Issue {
            kid: kid.to_owned(),
            public_key: x.to_owned(),
            created_at: Timestamp::parse("2026-03-01T12:00:00Z").unwrap(),
        }
    }

    const KID: &str = "sk_0193a5b2c3d47e8f9a0b1c2d3e4f5a6b";
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn a_key_is_issued_once_with_its_public_half_only() {
        let events = decide(None, issue(KID, X)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), "signing_key.issued");
        let data = events[0].data();
        let mut fields: Vec<&str> = data
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["algorithm", "created_at", "curve", "kid", "public_key"]
        );
        assert_eq!(data["algorithm"], "EdDSA");
        assert_eq!(data["curve"], "Ed25519");
        let state = evolve(None, &events[0]);
        assert_eq!(
            decide(state.as_ref(), issue(KID, X)),
            Err(SigningKeyError::AlreadyIssued(KID.to_owned()))
        );
        let decoded = SigningKeyEvent::decode("signing_key.issued", 1, &data).unwrap();
        assert_eq!(decoded, events[0]);
    }

    #[test]
    fn malformed_ids_and_keys_are_refused() {
        for (kid, x) in [
            ("key_1", X),
            ("sk_0193A5B2C3D47E8F9A0B1C2D3E4F5A6B", X),
            (KID, "too-short"),
            (KID, "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        ] {
            assert!(
                matches!(
                    decide(None, issue(kid, x)),
                    Err(SigningKeyError::Invalid { .. })
                ),
                "{kid} {x}"
            );
        }
    }
}
