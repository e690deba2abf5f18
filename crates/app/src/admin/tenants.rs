//! Tenant administration (platform administrators).
