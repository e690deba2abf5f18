//! User administration within a tenant.
