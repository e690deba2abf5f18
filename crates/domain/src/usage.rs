//! Usage metering, quotas and budgets: the facts of what a tenant consumed, the limits it is held
//! to, and the pure rules that decide admissions, soft-quota warnings and budget alerts.
//!
//! A tenant's usage and its follow-ups (refusals, warnings, budget thresholds) are appended to
//! `{tenant}/usage/records`, rolled up per subject, meter and minute, never one event per request.
//! Its settings (quota overrides, meter costs, the budget) are in `{tenant}/usage/settings`.
//! Quantities are whole units of a meter; money is in micro-units (millionths of the billing
//! currency), so sums are exact.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{DomainEvent, EventDecodeError, Timestamp, variant_body, variant_tag};

/// The aggregate name of usage streams.
pub const AGGREGATE: &str = "usage";
/// The id of a tenant's stream of recorded usage and its follow-ups.
pub const RECORDS_STREAM_ID: &str = "records";
/// The id of a tenant's stream of quota overrides, meter costs and budget.
pub const SETTINGS_STREAM_ID: &str = "settings";
/// The budget thresholds, in percent, each announced once per period.
pub const THRESHOLDS: [u8; 3] = [50, 80, 100];
/// Most idempotency keys one `usage.recorded` event carries; a window with more is split, so an
/// event stays far below the store's size limit (keys are at most [`MAX_KEY_LEN`] bytes).
pub const KEYS_PER_EVENT: usize = 500;
/// Longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 200;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 200;

/// A rule a tenant's usage of one meter is held to in each calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRule {
    /// Most units per month.
    pub limit: u64,
    /// Hard: a record that would pass the limit is refused. Soft: it is accepted and a warning is
    /// recorded once per month when usage reaches the limit.
    pub hard: bool,
}

/// Why usage input is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A field is not what it must be.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(s: impl Into<String>) -> UsageError {
    UsageError::Invalid(s.into())
}

/// Checks a meter name: 1 to 63 characters of `a-z`, `0-9`, `_`, `-` and `.`, starting with a
/// letter (`api_calls`, `storage.gb_hours`).
pub fn check_meter(meter: &str) -> Result<(), UsageError> {
    let mut chars = meter.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && meter.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "meter must be 1 to 63 characters of a-z, 0-9, '_', '-' and '.', starting with a letter",
        ))
    }
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic())
}

/// Checks a subject (who or what consumed: a user, a key, a customer of the tenant): 1 to 200
/// printable ASCII characters without spaces.
pub fn check_subject(subject: &str) -> Result<(), UsageError> {
    if !subject.is_empty() && subject.len() <= MAX_SUBJECT_LEN && printable(subject) {
        Ok(())
    } else {
        Err(invalid(
            "subject must be 1 to 200 printable ASCII characters without spaces",
        ))
    }
}

/// Checks an idempotency key: 1 to 200 printable ASCII characters without spaces.
pub fn check_idempotency_key(key: &str) -> Result<(), UsageError> {
    if !key.is_empty() && key.len() <= MAX_KEY_LEN && printable(key) {
        Ok(())
    } else {
        Err(invalid(
            "idempotency_key must be 1 to 200 printable ASCII characters without spaces",
        ))
    }
}

/// The calendar month (UTC) an instant falls in, written `YYYY-MM`: the period quotas and budgets
/// count in.
pub fn period_of(at: Timestamp) -> String {
    let d = at.as_datetime();
    format!("{:04}-{:02}", d.year(), u8::from(d.month()))
}

/// Checks a period written `YYYY-MM`.
pub fn check_period(period: &str) -> Result<(), UsageError> {
    let b = period.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|s| s.iter().all(|c| c.is_ascii_digit()))
    };
    let month = period
        .get(5..7)
        .and_then(|m| m.parse::<u8>().ok())
        .unwrap_or(0);
    if b.len() == 7 && digits(0..4) && b.get(4) == Some(&b'-') && (1..=12).contains(&month) {
        Ok(())
    } else {
        Err(invalid("period must be a month written YYYY-MM"))
    }
}

/// The period before `period` (`2026-01` → `2025-12`); `None` for a malformed one.
pub fn previous_period(period: &str) -> Option<String> {
    check_period(period).ok()?;
    let year: u32 = period.get(0..4)?.parse().ok()?;
    let month: u32 = period.get(5..7)?.parse().ok()?;
    Some(if month == 1 {
        format!("{:04}-12", year.checked_sub(1)?)
    } else {
        format!("{year:04}-{:02}", month - 1)
    })
}

/// The start of the minute an instant falls in: the window usage is rolled up in.
pub fn window_of(at: Timestamp) -> Timestamp {
    let d = at.as_datetime();
    let start = d
        .replace_second(0)
        .and_then(|d| d.replace_nanosecond(0))
        .unwrap_or(d);
    Timestamp::from_datetime(start)
}

/// Whether a hard quota admits `quantity` more units when `counted` are used or reserved: a
/// record may take usage up to the limit exactly, never beyond. A soft quota admits everything.
pub fn admits(rule: QuotaRule, counted: u64, quantity: u64) -> bool {
    !rule.hard
        || counted
            .checked_add(quantity)
            .is_some_and(|n| n <= rule.limit)
}

/// Whether usage going from `before` to `after` reaches a soft quota's limit for the first time.
pub fn reaches_limit(rule: QuotaRule, before: u64, after: u64) -> bool {
    !rule.hard && before < rule.limit && after >= rule.limit
}

/// The cost of `quantity` units at `unit_cost` micro-units each, saturating.
pub fn cost_of(quantity: u64, unit_cost: u64) -> u64 {
    quantity.saturating_mul(unit_cost)
}

/// The budget thresholds that spending `spent` of `budget` has reached and that were not
/// announced yet this period (`announced`): what the budget's process manager records as
/// `budget.threshold_crossed`, so each is recorded exactly once per period. No budget (0) has no
/// thresholds.
pub fn thresholds_reached(spent: u64, budget: u64, announced: &BTreeSet<u8>) -> Vec<u8> {
    if budget == 0 {
        return Vec::new();
    }
    THRESHOLDS
        .into_iter()
        .filter(|t| !announced.contains(t))
        .filter(|t| u128::from(spent) * 100 >= u128::from(*t) * u128::from(budget))
        .collect()
}

/// The facts of a tenant's usage and of the limits it is held to. The event type is the
/// variant's serde name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum UsageEvent {
    /// `usage.recorded` v1: usage of one meter by one subject in one minute, rolled up from the
    /// records acknowledged together.
    #[serde(rename = "usage.recorded")]
    Recorded {
        /// The month it counts in, `YYYY-MM`.
        period: String,
        /// The start of the minute.
        window: Timestamp,
        /// Who or what consumed.
        subject: String,
        /// The meter.
        meter: String,
        /// Units, summed over the records.
        quantity: u64,
        /// How many records.
        records: u64,
        /// Their cost, in micro-units, at the meter's unit cost when they were recorded.
        cost: u64,
        /// The idempotency key of each record: a retry with one of them counts nothing.
        idempotency_keys: Vec<String>,
    },
    /// `quota.exceeded` v1: records refused by a hard quota in one minute, rolled up.
    #[serde(rename = "quota.exceeded")]
    QuotaExceeded {
        /// The month, `YYYY-MM`.
        period: String,
        /// The start of the minute.
        window: Timestamp,
        /// Who or what asked.
        subject: String,
        /// The meter.
        meter: String,
        /// How many records were refused.
        refused: u64,
        /// Their units, summed.
        quantity: u64,
        /// The limit in force.
        limit: u64,
    },
    /// `quota.warning` v1: usage of a meter reached a soft quota's limit (once per month).
    #[serde(rename = "quota.warning")]
    QuotaWarning {
        /// The month, `YYYY-MM`.
        period: String,
        /// The meter.
        meter: String,
        /// Units used this month, including the records that reached the limit.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// `budget.threshold_crossed` v1: spending this month reached 50, 80 or 100 % of the budget
    /// (each once per month), for subscribers to act on.
    #[serde(rename = "budget.threshold_crossed")]
    BudgetThresholdCrossed {
        /// The month, `YYYY-MM`.
        period: String,
        /// 50, 80 or 100.
        threshold: u8,
        /// Spent this month, in micro-units.
        spent: u64,
        /// The budget, in micro-units.
        budget: u64,
    },
    /// `quota.set` v1: the tenant's own quota of a meter, replacing its plan's.
    #[serde(rename = "quota.set")]
    QuotaSet {
        /// The meter.
        meter: String,
        /// Most units per month.
        limit: u64,
        /// Whether records beyond it are refused.
        hard: bool,
    },
    /// `quota.cleared` v1: the meter's quota is its plan's again.
    #[serde(rename = "quota.cleared")]
    QuotaCleared {
        /// The meter.
        meter: String,
    },
    /// `meter.cost_set` v1: the cost of one unit of a meter for the tenant, from now on.
    #[serde(rename = "meter.cost_set")]
    MeterCostSet {
        /// The meter.
        meter: String,
        /// Micro-units per unit.
        unit_cost: u64,
    },
    /// `budget.set` v1: the tenant's monthly budget, from now on (0: none).
    #[serde(rename = "budget.set")]
    BudgetSet {
        /// Micro-units per month.
        amount: u64,
    },
}

impl DomainEvent for UsageEvent {
    const TYPES: &'static [(&'static str, u32)] = &[
        ("usage.recorded", 1),
        ("quota.exceeded", 1),
        ("quota.warning", 1),
        ("budget.threshold_crossed", 1),
        ("quota.set", 1),
        ("quota.cleared", 1),
        ("meter.cost_set", 1),
        ("budget.set", 1),
    ];

    fn event_type(&self) -> &'static str {
        match self {
            Self::Recorded { .. } => "usage.recorded",
            Self::QuotaExceeded { .. } => "quota.exceeded",
            Self::QuotaWarning { .. } => "quota.warning",
            Self::BudgetThresholdCrossed { .. } => "budget.threshold_crossed",
            Self::QuotaSet { .. } => "quota.set",
            Self::QuotaCleared { .. } => "quota.cleared",
            Self::MeterCostSet { .. } => "meter.cost_set",
            Self::BudgetSet { .. } => "budget.set",
        }
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn data(&self) -> Value {
        debug_assert_eq!(variant_tag(self), self.event_type());
        variant_body(self)
    }

    fn decode(event_type: &str, schema: u32, data: &Value) -> Result<Self, EventDecodeError> {
        if !Self::TYPES
            .iter()
            .any(|(t, v)| *t == event_type && *v == schema)
        {
            return Err(EventDecodeError::Unknown {
                event_type: event_type.to_owned(),
                schema,
            });
        }
        let mut wrapped = serde_json::Map::new();
        wrapped.insert(event_type.to_owned(), data.clone());
        serde_json::from_value(Value::Object(wrapped)).map_err(|source| {
            EventDecodeError::Malformed {
                event_type: event_type.to_owned(),
                schema,
                source,
            }
        })
    }
}

/// One acknowledged record, as the writer rolls it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was admitted.
    pub at: Timestamp,
    /// Who or what consumed.
    pub subject: String,
    /// The meter.
    pub meter: String,
    /// Units.
    pub quantity: u64,
    /// Cost in micro-units.
    pub cost: u64,
    /// Its idempotency key.
    pub idempotency_key: String,
}

/// Rolls records up into one `usage.recorded` event per (subject, meter, minute) present, in
/// the order first seen; a group with more than [`KEYS_PER_EVENT`] records is split.
pub fn roll_up(records: &[Record]) -> Vec<UsageEvent> {
    roll_up_by(records, KEYS_PER_EVENT)
}

/// [`roll_up`] with at most `keys_per_event` records per event (at least 1), for a store whose
/// event size limit is below what [`KEYS_PER_EVENT`] keys can take.
pub fn roll_up_by(records: &[Record], keys_per_event: usize) -> Vec<UsageEvent> {
    let keys_per_event = keys_per_event.max(1);
    let mut groups: Vec<((String, String, Timestamp), Vec<&Record>)> = Vec::new();
    let mut index: std::collections::HashMap<(String, String, Timestamp), usize> =
        std::collections::HashMap::new();
    for r in records {
        let key = (r.subject.clone(), r.meter.clone(), window_of(r.at));
        let i = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        if let Some((_, group)) = groups.get_mut(i) {
            group.push(r);
        }
    }
    let mut events = Vec::new();
    for ((subject, meter, window), group) in groups {
        for chunk in group.chunks(keys_per_event) {
            events.push(UsageEvent::Recorded {
                period: period_of(window),
                window,
                subject: subject.clone(),
                meter: meter.clone(),
                quantity: chunk
                    .iter()
                    .map(|r| r.quantity)
                    .fold(0, u64::saturating_add),
                records: chunk.len() as u64,
                cost: chunk.iter().map(|r| r.cost).fold(0, u64::saturating_add),
                idempotency_keys: chunk.iter().map(|r| r.idempotency_key.clone()).collect(),
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn a_hard_quota_admits_up_to_its_limit_exactly() {
        let hard = QuotaRule {
            limit: 10,
            hard: true,
        };
        assert!(admits(hard, 9, 1));
        assert!(!admits(hard, 10, 1));
        assert!(!admits(hard, 5, 6));
        assert!(!admits(hard, u64::MAX, 1));
        assert!(admits(
            QuotaRule {
                hard: false,
                ..hard
            },
            10,
            5
        ));
    }

    #[test]
    fn thresholds_are_reached_once_each() {
        let none = BTreeSet::new();
        assert_eq!(thresholds_reached(49, 100, &none), Vec::<u8>::new());
        assert_eq!(thresholds_reached(50, 100, &none), vec![50]);
        assert_eq!(thresholds_reached(100, 100, &none), vec![50, 80, 100]);
        let some: BTreeSet<u8> = [50].into();
        assert_eq!(thresholds_reached(85, 100, &some), vec![80]);
        assert_eq!(thresholds_reached(1_000, 0, &none), Vec::<u8>::new());
    }

    #[test]
    fn periods_and_windows_are_utc_months_and_minutes() {
        let at = ts("2026-01-31T23:59:59.999999Z");
        assert_eq!(period_of(at), "2026-01");
        assert_eq!(window_of(at), ts("2026-01-31T23:59:00Z"));
        assert_eq!(previous_period("2026-01").as_deref(), Some("2025-12"));
        assert_eq!(previous_period("2026-11").as_deref(), Some("2026-10"));
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "2026-00"] {
            assert!(check_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_roll_up_per_subject_meter_and_minute() {
        let r = |at: &str, subject: &str, key: &str| Record {
            at: ts(at),
            subject: subject.into(),
            meter: "api_calls".into(),
            quantity: 2,
            cost: 10,
            idempotency_key: key.into(),
        };
        let events = roll_up(&[
            r("2026-01-01T00:00:01Z", "a", "k1"),
            r("2026-01-01T00:00:59Z", "a", "k2"),
            r("2026-01-01T00:01:00Z", "a", "k3"),
            r("2026-01-01T00:00:30Z", "b", "k4"),
        ]);
        assert_eq!(events.len(), 3);
        let UsageEvent::Recorded {
            quantity,
            records,
            cost,
            idempotency_keys,
            ..
        } = &events[0]
        else {
            panic!("not a record")
        };
        assert_eq!((*quantity, *records, *cost), (4, 2, 20));
        assert_eq!(idempotency_keys, &["k1", "k2"]);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_meter("api_calls").is_ok());
        assert!(check_meter("storage.gb-hours").is_ok());
        for bad in ["", "1abc", "API", "a b", &"a".repeat(64)] {
            assert!(check_meter(bad).is_err(), "{bad}");
        }
        assert!(check_subject("user_01").is_ok());
        assert!(check_subject("a b").is_err());
        assert!(check_idempotency_key(&"k".repeat(201)).is_err());
    }
}
