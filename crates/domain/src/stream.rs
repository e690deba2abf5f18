//! Stream names: `{tenant}/{aggregate}/{id}`, the address of one aggregate instance in the log.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The tenant segment that holds platform-level streams (platform admins, tenant registry).
pub const SYSTEM_TENANT: &str = "_system";

/// A validated stream name `{tenant}/{aggregate}/{id}`.
///
/// - `tenant` is `_system` or 1–63 characters of `a-z 0-9 _ -`, starting with a letter or digit;
/// - `aggregate` is 1–32 characters of `a-z 0-9 _`, starting with a letter;
/// - `id` is 1–128 characters of `A-Z a-z 0-9 _ -`, starting with a letter or digit.
///
/// None of the segments can contain `.` or `/`, so a stream name maps one-to-one onto the NATS
/// subject `custodian.{tenant}.{aggregate}.{type}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName {
    raw: String,
    tenant_end: usize,
    aggregate_end: usize,
}

/// Why a string is not a stream name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    /// Not exactly three `/`-separated segments.
    #[error("stream name {0:?} must have the form tenant/aggregate/id")]
    Shape(String),
    /// The tenant segment is malformed.
    #[error(
        "stream name {0:?}: tenant must be `_system` or 1-63 characters of a-z, 0-9, `_`, `-` starting with a letter or digit"
    )]
    Tenant(String),
    /// The aggregate segment is malformed.
    #[error(
        "stream name {0:?}: aggregate must be 1-32 characters of a-z, 0-9, `_` starting with a letter"
    )]
    Aggregate(String),
    /// The id segment is malformed.
    #[error(
        "stream name {0:?}: id must be 1-128 characters of A-Z, a-z, 0-9, `_`, `-` starting with a letter or digit"
    )]
    Id(String),
}

fn valid_tenant(s: &str) -> bool {
    if s == SYSTEM_TENANT {
        return true;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn valid_aggregate(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl StreamName {
    /// Parses and validates a stream name.
    pub fn parse(s: &str) -> Result<Self, StreamNameError> {
        let mut parts = s.split('/');
        let (Some(tenant), Some(aggregate), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(StreamNameError::Shape(s.to_owned()));
        };
        if !valid_tenant(tenant) {
            return Err(StreamNameError::Tenant(s.to_owned()));
        }
        if !valid_aggregate(aggregate) {
            return Err(StreamNameError::Aggregate(s.to_owned()));
        }
        if !valid_id(id) {
            return Err(StreamNameError::Id(s.to_owned()));
        }
        Ok(Self {
            raw: s.to_owned(),
            tenant_end: tenant.len(),
            aggregate_end: tenant.len() + 1 + aggregate.len(),
        })
    }

    /// Builds a stream name from its parts, validating each.
    pub fn new(tenant: &str, aggregate: &str, id: &str) -> Result<Self, StreamNameError> {
        Self::parse(&format!("{tenant}/{aggregate}/{id}"))
    }

    /// The whole name.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The tenant segment.
    pub fn tenant(&self) -> &str {
        self.raw.get(..self.tenant_end).unwrap_or_default()
    }

    /// The aggregate segment.
    pub fn aggregate(&self) -> &str {
        self.raw
            .get(self.tenant_end + 1..self.aggregate_end)
            .unwrap_or_default()
    }

    /// The id segment.
    pub fn id(&self) -> &str {
        self.raw.get(self.aggregate_end + 1..).unwrap_or_default()
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName({:?})", self.raw)
    }
}

impl std::str::FromStr for StreamName {
    type Err = StreamNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for StreamName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_well_formed_names_and_splits_them() {
        for (name, tenant, aggregate, id) in [
            ("acme/user/user_01jd7x", "acme", "user", "user_01jd7x"),
            ("_system/tenant/tnt_01", "_system", "tenant", "tnt_01"),
            (
                "tnt_01jd-x/api_key/key_ABC-9",
                "tnt_01jd-x",
                "api_key",
                "key_ABC-9",
            ),
        ] {
            let s = StreamName::parse(name).unwrap();
            assert_eq!(
                (s.tenant(), s.aggregate(), s.id()),
                (tenant, aggregate, id),
                "{name}"
            );
            assert_eq!(s.as_str(), name);
        }
    }

    #[test]
    fn rejects_malformed_names_with_the_failing_segment() {
        use StreamNameError as E;
        let cases: &[(&str, fn(&StreamNameError) -> bool)] = &[
            ("", |e| matches!(e, E::Shape(_))),
            ("acme/user", |e| matches!(e, E::Shape(_))),
            ("acme/user/1/2", |e| matches!(e, E::Shape(_))),
            ("Acme/user/1", |e| matches!(e, E::Tenant(_))),
            ("ac.me/user/1", |e| matches!(e, E::Tenant(_))),
            ("_other/user/1", |e| matches!(e, E::Tenant(_))),
            ("acme/User/1", |e| matches!(e, E::Aggregate(_))),
            ("acme/1user/1", |e| matches!(e, E::Aggregate(_))),
            ("acme/user/", |e| matches!(e, E::Id(_))),
            ("acme/user/a.b", |e| matches!(e, E::Id(_))),
            ("acme/user/-a", |e| matches!(e, E::Id(_))),
        ];
        for (name, check) in cases {
            let err = StreamName::parse(name).unwrap_err();
            assert!(check(&err), "{name:?} gave {err:?}");
        }
        let long_id = format!("acme/user/{}", "a".repeat(129));
        assert!(matches!(StreamName::parse(&long_id), Err(E::Id(_))));
    }
}
