//! Second factors: TOTP enrollment, confirmation and removal, and recovery codes.
