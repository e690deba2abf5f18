//! Administration: tenants, and the users of a tenant, by their administrators.

pub mod emails;
pub mod tenants;
pub mod users;
