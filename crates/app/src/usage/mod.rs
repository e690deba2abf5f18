//! Usage metering, quotas and budgets: recording what a tenant's subjects consume, one record at a
//! time or in batches, counting each idempotency key once; holding usage to the monthly quotas of
//! the tenant's plan or its own; and announcing its monthly budget's thresholds.
//!
//! A record is acknowledged only once it is durable: admission reserves it in the
//! [`UsageLedger`], the [`UsageWriter`] appends it rolled up with whatever else is waiting, and
//! only then does the caller hear "accepted". Reads come from the `usage` view.

mod ledger;
mod writer;

use custodian_domain::policy::Target;
use custodian_domain::usage::{
    self, AGGREGATE, QuotaRule, SETTINGS_STREAM_ID, UsageError, UsageEvent,
};
use custodian_domain::{Timestamp, tenant::Plan};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use ledger::UsageLedger;
pub use writer::UsageWriter;

use crate::access::{Principal, authorize};
use crate::commands;
use crate::error::AppError;
use crate::{App, stream};
use ledger::{Admission, Outcome};
use writer::Submission;

/// Most records in one batch.
pub const MAX_BATCH: usize = 1_000;
/// Largest quantity of one record.
pub const MAX_QUANTITY: u64 = 1_000_000_000_000;
/// Largest cost of one unit, in micro-units.
pub const MAX_UNIT_COST: u64 = 1_000_000_000_000;

fn invalid(e: UsageError) -> AppError {
    AppError::invalid(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Recording.

/// `POST /v1/tenants/{tenant}/usage`: one record of usage.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// The meter: 1 to 63 characters of a-z, 0-9, `_`, `-` and `.`, starting with a letter.
    #[schema(example = "api_calls")]
    pub meter: String,
    /// Units consumed, 1 to 10^12.
    #[schema(example = 1, minimum = 1)]
    pub quantity: u64,
    /// Who or what consumed: 1 to 200 printable ASCII characters without spaces.
    #[schema(example = "user_01jd8x")]
    pub subject: String,
    /// The caller's unique id of this record: a retry with the same key counts once. 1 to 200
    /// printable ASCII characters without spaces.
    #[schema(example = "req-7f3a-0001")]
    pub idempotency_key: String,
}

/// The answer to one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Recorded {
    /// Always true: the record counts (once).
    pub accepted: bool,
    /// True when its idempotency key had been recorded already, so this retry counted nothing.
    pub duplicate: bool,
    /// The log position at which the record is durable (the head, for a duplicate already
    /// applied).
    pub position: u64,
}

/// `POST /v1/tenants/{tenant}/usage/batch`: up to 1,000 records, admitted together.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// 1 to 1,000 records.
    pub records: Vec<UsageRecord>,
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchRecorded {
    /// Records that counted now.
    pub accepted: usize,
    /// Records whose idempotency key was recorded already (or repeated in the batch).
    pub duplicates: usize,
    /// The log position at which every record of the batch is durable.
    pub position: u64,
}

fn checked(r: UsageRecord) -> Result<(String, u64, String, String), AppError> {
    usage::check_meter(&r.meter).map_err(invalid)?;
    usage::check_subject(&r.subject).map_err(invalid)?;
    usage::check_idempotency_key(&r.idempotency_key).map_err(invalid)?;
    if r.quantity == 0 || r.quantity > MAX_QUANTITY {
        return Err(AppError::invalid(
            "quantity must be a whole number from 1 to 1000000000000",
        ));
    }
    Ok((r.meter, r.quantity, r.subject, r.idempotency_key))
}

/// Records one unit of usage. Needs `usage:create`. A hard quota that the record would take
/// beyond its limit refuses it ([`AppError::QuotaExceeded`]); the refusal is recorded.
pub async fn record(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: UsageRecord,
) -> Result<Recorded, AppError> {
    authorize(app, principal, tenant, "usage:create", Target::Tenant)?;
    let r = checked(req)?;
    let (fresh, duplicates, position) = admit_and_write(app, tenant, vec![r]).await?;
    Ok(Recorded {
        accepted: true,
        duplicate: fresh == 0 && duplicates == 1,
        position,
    })
}

/// Records up to [`MAX_BATCH`] records, all or none: if a hard quota refuses one, none counts.
/// Needs `usage:create`.
pub async fn record_batch(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: UsageBatch,
) -> Result<BatchRecorded, AppError> {
    authorize(app, principal, tenant, "usage:create", Target::Tenant)?;
    if req.records.is_empty() || req.records.len() > MAX_BATCH {
        return Err(AppError::invalid(format!(
            "records must hold 1 to {MAX_BATCH} records, not {}",
            req.records.len()
        )));
    }
    let records = req
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            checked(r).map_err(|e| match e {
                AppError::Invalid(d) => AppError::invalid(format!("records[{i}]: {d}")),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (accepted, duplicates, position) = admit_and_write(app, tenant, records).await?;
    Ok(BatchRecorded {
        accepted,
        duplicates,
        position,
    })
}

/// Admits, writes and waits until durable; a duplicate of a record still being written waits for
/// it, and if that write fails, is admitted again.
async fn admit_and_write(
    app: &App,
    tenant: &str,
    records: Vec<(String, u64, String, String)>,
) -> Result<(usize, usize, u64), AppError> {
    app.usage.ready().await?;
    // Records written in an earlier round are duplicates in the next one.
    let mut written = 0;
    for _ in 0..3 {
        let at = app.now();
        match app.usage.admit(tenant, at, records.clone())? {
            Admission::Refused {
                meter,
                limit,
                used,
                refused,
            } => {
                // The refusal stands even if it cannot be reported (the server is stopping).
                let report = Submission::Refused {
                    tenant: tenant.to_owned(),
                    records: refused,
                    limit,
                };
                if app.usage_writer.submit(report).await.is_err() {
                    tracing::warn!(tenant, meter, "a quota refusal could not be recorded");
                }
                return Err(AppError::QuotaExceeded {
                    detail: format!(
                        "the hard quota of {meter} is {limit} units a month and {used} are used in {}; the request would exceed it",
                        usage::period_of(at)
                    ),
                    retry_after: seconds_to_next_period(at),
                });
            }
            Admission::Admitted {
                fresh,
                duplicates,
                waiting,
                outcome,
            } => {
                let accepted = fresh.len();
                let mut position = 0;
                if let Some(outcome) = outcome {
                    let mut rx = outcome.subscribe();
                    // Until the writer holds them, the reservations are ours to release: if the
                    // queue is closed, or the caller goes away while waiting for room in it.
                    let mut held = Reserved {
                        app,
                        tenant,
                        records: fresh.clone(),
                        handed_over: false,
                    };
                    app.usage_writer
                        .submit(Submission::Records {
                            tenant: tenant.to_owned(),
                            records: fresh,
                            outcome,
                        })
                        .await?;
                    held.handed_over = true;
                    position = settled(&mut rx).await?;
                }
                let mut retry = false;
                for mut rx in waiting {
                    match settled(&mut rx).await {
                        Ok(p) => position = position.max(p),
                        Err(_) => retry = true,
                    }
                }
                written += accepted;
                if retry {
                    // An earlier request with some of these keys failed to write: try again.
                    continue;
                }
                if position == 0 {
                    position = app.answer_position(0).await?;
                }
                let earlier = written - accepted;
                return Ok((written, duplicates.saturating_sub(earlier), position));
            }
        }
    }
    Err(AppError::unavailable(
        "the usage records could not be written; retry with the same idempotency keys",
        1,
    ))
}

/// Records admitted and reserved but not yet handed to the writer; released when dropped before.
struct Reserved<'a> {
    app: &'a App,
    tenant: &'a str,
    records: Vec<custodian_domain::usage::Record>,
    handed_over: bool,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.app
                .usage
                .release(self.tenant, &self.records, &ledger::FollowUps::default());
        }
    }
}

async fn settled(rx: &mut tokio::sync::watch::Receiver<Outcome>) -> Result<u64, AppError> {
    let outcome = rx
        .wait_for(|o| *o != Outcome::Waiting)
        .await
        .map(|o| o.clone())
        .map_err(|_| AppError::unavailable("the server is shutting down", 5))?;
    match outcome {
        Outcome::Durable(p) => Ok(p),
        Outcome::Failed(e) => Err(e),
        Outcome::Waiting => Err(AppError::internal("a settled outcome is waiting")),
    }
}

fn seconds_to_next_period(at: Timestamp) -> u64 {
    let d = at.as_datetime();
    let (year, month) = if u8::from(d.month()) == 12 {
        (d.year() + 1, time::Month::January)
    } else {
        (d.year(), d.month().next())
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|date| {
            let next = date.midnight().assume_utc();
            u64::try_from((next - d).whole_seconds())
                .unwrap_or(1)
                .max(1)
        })
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// `GET /v1/tenants/{tenant}/usage` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// The meter.
    pub meter: Option<String>,
    /// One subject's usage (default: the whole tenant's).
    pub subject: Option<String>,
    /// The month, `YYYY-MM` (default: the current one, UTC).
    pub period: Option<String>,
}

/// A meter's usage in one period, against the tenant's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageView {
    /// The month, `YYYY-MM`.
    pub period: String,
    /// The meter.
    pub meter: String,
    /// The subject asked about, if any.
    pub subject: Option<String>,
    /// Units used in the period: by the subject, or by the whole tenant.
    pub used: u64,
    /// The tenant's monthly quota of the meter; null when it has none (unlimited).
    pub limit: Option<u64>,
    /// Whether the quota is hard; null without one.
    pub hard: Option<bool>,
    /// Units left to the whole tenant under the quota (0 when passed); null without one.
    pub remaining: Option<u64>,
}

/// The quota in force for `tenant`'s `meter`: its own, else its plan's.
async fn quota_in_force(
    app: &App,
    tenant: &str,
    meter: &str,
) -> Result<Option<QuotaRule>, AppError> {
    let tables = app.tables("usage")?;
    let own = custodian_projections::usage::quota_overrides(app.db.pool(), &tables, tenant).await?;
    if let Some(o) = own.into_iter().find(|o| o.meter == meter) {
        return Ok(Some(QuotaRule {
            limit: o.limit,
            hard: o.hard,
        }));
    }
    Ok(app
        .plans
        .tier(plan_of(app, tenant).await?)
        .quotas
        .get(meter)
        .copied())
}

async fn plan_of(app: &App, tenant: &str) -> Result<Plan, AppError> {
    let tables = app.tables("tenants")?;
    Ok(
        custodian_projections::tenants::find_tenant(app.db.pool(), &tables, tenant)
            .await?
            .map_or(Plan::Free, |t| t.plan),
    )
}

fn period_or_now(app: &App, period: Option<String>) -> Result<String, AppError> {
    match period {
        Some(p) => {
            usage::check_period(&p).map_err(invalid)?;
            Ok(p)
        }
        None => Ok(usage::period_of(app.now())),
    }
}

/// A meter's usage in a period, with the quota. Needs `usage:read`.
pub async fn read(
    app: &App,
    principal: &Principal,
    tenant: &str,
    query: UsageQuery,
) -> Result<UsageView, AppError> {
    authorize(app, principal, tenant, "usage:read", Target::Tenant)?;
    let Some(meter) = query.meter else {
        return Err(AppError::invalid("meter is required"));
    };
    usage::check_meter(&meter).map_err(invalid)?;
    if let Some(s) = &query.subject {
        usage::check_subject(s).map_err(invalid)?;
    }
    let period = period_or_now(app, query.period)?;
    let tables = app.tables("usage")?;
    let pool = app.db.pool();
    let used = custodian_projections::usage::usage_of(
        pool,
        &tables,
        tenant,
        &period,
        &meter,
        query.subject.as_deref(),
    )
    .await?;
    let tenant_used = match query.subject {
        Some(_) => {
            custodian_projections::usage::usage_of(pool, &tables, tenant, &period, &meter, None)
                .await?
        }
        None => used,
    };
    let rule = quota_in_force(app, tenant, &meter).await?;
    Ok(UsageView {
        period,
        meter,
        subject: query.subject,
        used,
        limit: rule.map(|r| r.limit),
        hard: rule.map(|r| r.hard),
        remaining: rule.map(|r| r.limit.saturating_sub(tenant_used)),
    })
}

/// `GET /v1/tenants/{tenant}/quotas` and `/budget` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PeriodQuery {
    /// The month, `YYYY-MM` (default: the current one, UTC).
    pub period: Option<String>,
}

/// Where a quota comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaSource {
    /// The tenant's plan.
    Plan,
    /// The tenant's own, set by command.
    Tenant,
}

/// One meter's quota and its status in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotaStatus {
    /// The meter.
    pub meter: String,
    /// Units per month; null when the meter has no quota.
    pub limit: Option<u64>,
    /// Whether records beyond the limit are refused; null without a quota.
    pub hard: Option<bool>,
    /// Where the quota comes from; null without one.
    pub source: Option<QuotaSource>,
    /// Units used by the tenant in the period.
    pub used: u64,
    /// Units left (0 when passed); null without a quota.
    pub remaining: Option<u64>,
    /// Records a hard quota refused in the period.
    pub refused: u64,
    /// Whether the soft quota's warning was recorded in the period.
    pub warned: bool,
}

/// A tenant's quotas and their status in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotasView {
    /// The month, `YYYY-MM`.
    pub period: String,
    /// The tenant's plan.
    #[schema(value_type = String, example = "free")]
    pub plan: Plan,
    /// Every meter with a quota or with usage in the period, by name.
    pub quotas: Vec<QuotaStatus>,
}

/// Every quota of the tenant (its plan's and its own) with its status. Needs `quota:read`.
pub async fn quotas(
    app: &App,
    principal: &Principal,
    tenant: &str,
    query: PeriodQuery,
) -> Result<QuotasView, AppError> {
    authorize(app, principal, tenant, "quota:read", Target::Tenant)?;
    let period = period_or_now(app, query.period)?;
    let tables = app.tables("usage")?;
    let pool = app.db.pool();
    let plan = plan_of(app, tenant).await?;
    let mut rules: std::collections::BTreeMap<String, (QuotaRule, QuotaSource)> = app
        .plans
        .tier(plan)
        .quotas
        .iter()
        .map(|(m, r)| (m.clone(), (*r, QuotaSource::Plan)))
        .collect();
    for o in custodian_projections::usage::quota_overrides(pool, &tables, tenant).await? {
        rules.insert(
            o.meter,
            (
                QuotaRule {
                    limit: o.limit,
                    hard: o.hard,
                },
                QuotaSource::Tenant,
            ),
        );
    }
    let mut rows: std::collections::BTreeMap<String, QuotaStatus> = rules
        .into_iter()
        .map(|(meter, (rule, source))| {
            (
                meter.clone(),
                QuotaStatus {
                    meter,
                    limit: Some(rule.limit),
                    hard: Some(rule.hard),
                    source: Some(source),
                    used: 0,
                    remaining: Some(rule.limit),
                    refused: 0,
                    warned: false,
                },
            )
        })
        .collect();
    for m in custodian_projections::usage::meters(pool, &tables, tenant, &period).await? {
        let row = rows.entry(m.meter.clone()).or_insert_with(|| QuotaStatus {
            meter: m.meter.clone(),
            limit: None,
            hard: None,
            source: None,
            used: 0,
            remaining: None,
            refused: 0,
            warned: false,
        });
        row.used = m.used;
        row.refused = m.refused;
        row.warned = m.warned;
        row.remaining = row.limit.map(|l| l.saturating_sub(m.used));
    }
    Ok(QuotasView {
        period,
        plan,
        quotas: rows.into_values().collect(),
    })
}

/// A tenant's budget in one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BudgetView {
    /// The month, `YYYY-MM`.
    pub period: String,
    /// The monthly budget in micro-units (millionths of the billing currency); 0: none.
    pub amount: u64,
    /// Spent in the period, in micro-units.
    pub spent: u64,
    /// Left of the budget (0 when passed).
    pub remaining: u64,
    /// The thresholds (50, 80, 100 percent) crossed in the period.
    pub thresholds_crossed: Vec<u8>,
}

/// The tenant's budget and its spending in a period. Needs `quota:read`.
pub async fn budget(
    app: &App,
    principal: &Principal,
    tenant: &str,
    query: PeriodQuery,
) -> Result<BudgetView, AppError> {
    authorize(app, principal, tenant, "quota:read", Target::Tenant)?;
    let period = period_or_now(app, query.period)?;
    let tables = app.tables("usage")?;
    let b = custodian_projections::usage::budget(app.db.pool(), &tables, tenant, &period).await?;
    Ok(BudgetView {
        period,
        amount: b.amount,
        spent: b.spent,
        remaining: b.amount.saturating_sub(b.spent),
        thresholds_crossed: b.crossed,
    })
}

// ---------------------------------------------------------------------------------------------
// Settings.

/// `PUT /v1/tenants/{tenant}/quotas/{meter}`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuotaRequest {
    /// Units per month.
    #[schema(example = 50000)]
    pub limit: u64,
    /// Whether records beyond the limit are refused (otherwise a warning is recorded once a
    /// month).
    pub hard: bool,
}

/// `PUT /v1/tenants/{tenant}/meters/{meter}`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMeterRequest {
    /// The cost of one unit, in micro-units (millionths of the billing currency).
    #[schema(example = 1500)]
    pub unit_cost: u64,
}

/// `PUT /v1/tenants/{tenant}/budget`
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    /// The monthly budget, in micro-units; 0 removes it.
    #[schema(example = 100000000)]
    pub amount: u64,
}

/// What a setting command changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SettingChanged {
    /// The event it recorded: `quota.set`, `quota.cleared`, `meter.cost_set` or `budget.set`.
    pub event: String,
    /// The position of its event.
    pub position: u64,
}

async fn change_setting(
    app: &App,
    principal: &Principal,
    tenant: &str,
    event: UsageEvent,
) -> Result<SettingChanged, AppError> {
    use custodian_domain::DomainEvent as _;
    let stream = stream(tenant, AGGREGATE, SETTINGS_STREAM_ID)?;
    let ctx = principal.context(app.now());
    let position =
        commands::record(&app.store, &stream, &ctx, std::slice::from_ref(&event)).await?;
    // Admissions after the answer see the new setting.
    app.usage.wait_for(position).await?;
    Ok(SettingChanged {
        event: event.event_type().to_owned(),
        position,
    })
}

/// Sets the tenant's own quota of `meter`, replacing its plan's. Needs `quota:update`.
pub async fn set_quota(
    app: &App,
    principal: &Principal,
    tenant: &str,
    meter: &str,
    req: SetQuotaRequest,
) -> Result<SettingChanged, AppError> {
    authorize(app, principal, tenant, "quota:update", Target::Tenant)?;
    usage::check_meter(meter).map_err(invalid)?;
    let event = UsageEvent::QuotaSet {
        meter: meter.to_owned(),
        limit: req.limit,
        hard: req.hard,
    };
    change_setting(app, principal, tenant, event).await
}

/// Restores the plan's quota of `meter`. Needs `quota:update`.
pub async fn clear_quota(
    app: &App,
    principal: &Principal,
    tenant: &str,
    meter: &str,
) -> Result<SettingChanged, AppError> {
    authorize(app, principal, tenant, "quota:update", Target::Tenant)?;
    usage::check_meter(meter).map_err(invalid)?;
    let event = UsageEvent::QuotaCleared {
        meter: meter.to_owned(),
    };
    change_setting(app, principal, tenant, event).await
}

/// Sets the unit cost of `meter` for the tenant, for records from now on. Needs `quota:update`.
pub async fn set_meter(
    app: &App,
    principal: &Principal,
    tenant: &str,
    meter: &str,
    req: SetMeterRequest,
) -> Result<SettingChanged, AppError> {
    authorize(app, principal, tenant, "quota:update", Target::Tenant)?;
    usage::check_meter(meter).map_err(invalid)?;
    if req.unit_cost > MAX_UNIT_COST {
        return Err(AppError::invalid(format!(
            "unit_cost must be at most {MAX_UNIT_COST} micro-units (a million per unit)"
        )));
    }
    let event = UsageEvent::MeterCostSet {
        meter: meter.to_owned(),
        unit_cost: req.unit_cost,
    };
    change_setting(app, principal, tenant, event).await
}

/// Sets the tenant's monthly budget. Needs `quota:update`.
pub async fn set_budget(
    app: &App,
    principal: &Principal,
    tenant: &str,
    req: SetBudgetRequest,
) -> Result<SettingChanged, AppError> {
    authorize(app, principal, tenant, "quota:update", Target::Tenant)?;
    let event = UsageEvent::BudgetSet { amount: req.amount };
    change_setting(app, principal, tenant, event).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_to_wait_until_the_next_month() {
        let at = Timestamp::parse("2026-12-31T23:59:00Z").unwrap();
        assert_eq!(seconds_to_next_period(at), 60);
        let at = Timestamp::parse("2026-03-31T23:59:59.5Z").unwrap();
        assert_eq!(seconds_to_next_period(at), 1);
    }
}
