//! Values that events carry in place of secrets and personal data.
//!
//! The domain never sees a plaintext secret: the edge encrypts personal data and credentials under
//! the subject's data key and hashes tokens with a server key, and hands the domain these opaque
//! forms. The domain only stores and compares them.

use serde::{Deserialize, Serialize};

/// Data encrypted under one subject's data key (AES-256-GCM): `v1.` followed by base64url (no
/// padding) of the 12-byte nonce and the ciphertext with its tag. Destroying the subject's key makes
/// every `Sealed` of theirs unreadable while the events that carry it still verify.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(pub String);

/// A keyed hash (HMAC-SHA-256 under a server key) of a high-entropy token, as 64 lowercase hex digits.
/// Refresh, invitation and reset tokens and recovery codes are stored only in this form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(pub String);
