//! Authentication: the master key and what is derived from it, per-subject data keys, passwords,
//! TOTP, opaque tokens, access tokens, the in-memory index of who may act, and login throttling.

pub mod index;
pub mod jwt;
pub mod password;
pub mod secrets;
pub mod throttle;
pub mod tokens;
pub mod totp;
pub mod vault;
