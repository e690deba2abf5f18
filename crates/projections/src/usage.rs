//! The `usage` view: each tenant's usage per period, meter and subject, the status of its quotas
//! (overrides, refusals, warnings) and of its budget (amount, spending per period, thresholds
//! crossed), folded from the `{tenant}/usage/*` streams; and the queries that read it
//! ([`usage_of`], [`meters`], [`quota_overrides`], [`budget`]).
//!
//! A plan's quotas are configuration, not events: the view holds what the log says (a tenant's
//! own quotas), and the application combines it with the plan's.

use async_trait::async_trait;
use custodian_domain::usage::{AGGREGATE, UsageEvent};
use custodian_domain::{DomainEvent, EventRecord};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::runtime::{ApplyError, Projection, Tables};

/// Folds `usage.*`, `quota.*`, `meter.*` and `budget.*` events into the usage tables.
#[derive(Debug, Default)]
pub struct UsageView;

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn small(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Units of `meter` used in `tenant` in `period`, by `subject` or (without one) by everyone.
pub async fn usage_of(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    period: &str,
    meter: &str,
    subject: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let used: Option<i64> = match subject {
        Some(subject) => sqlx::query(&format!(
            "SELECT quantity FROM {} WHERE tenant = $1 AND period = $2 AND meter = $3 AND subject = $4",
            tables.name("totals")
        ))
        .bind(tenant)
        .bind(period)
        .bind(meter)
        .bind(subject)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get("quantity"))
        .transpose()?,
        None => sqlx::query(&format!(
            "SELECT quantity FROM {} WHERE tenant = $1 AND period = $2 AND meter = $3",
            tables.name("meters")
        ))
        .bind(tenant)
        .bind(period)
        .bind(meter)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get("quantity"))
        .transpose()?,
    };
    Ok(used.map_or(0, small))
}

/// One meter of a tenant in one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterRow {
    /// The meter.
    pub meter: String,
    /// Units used.
    pub used: u64,
    /// Records refused by a hard quota.
    pub refused: u64,
    /// Whether the soft quota's warning was recorded.
    pub warned: bool,
}

/// Every meter `tenant` used (or was refused) in `period`, by name.
pub async fn meters(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    period: &str,
) -> Result<Vec<MeterRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT meter, quantity, refused, warned FROM {} WHERE tenant = $1 AND period = $2 ORDER BY meter",
        tables.name("meters")
    ))
    .bind(tenant)
    .bind(period)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(MeterRow {
            meter: r.try_get("meter")?,
            used: small(r.try_get("quantity")?),
            refused: small(r.try_get("refused")?),
            warned: r.try_get::<i64, _>("warned")? != 0,
        })
    })
    .collect()
}

/// A tenant's own quota of a meter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaOverride {
    /// The meter.
    pub meter: String,
    /// Units per month.
    pub limit: u64,
    /// Whether records beyond it are refused.
    pub hard: bool,
}

/// The quotas `tenant` set itself, by meter.
pub async fn quota_overrides(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
) -> Result<Vec<QuotaOverride>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT meter, quota_limit, hard FROM {} WHERE tenant = $1 ORDER BY meter",
        tables.name("quotas")
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok(QuotaOverride {
            meter: r.try_get("meter")?,
            limit: small(r.try_get("quota_limit")?),
            hard: r.try_get::<i64, _>("hard")? != 0,
        })
    })
    .collect()
}

/// A tenant's budget in one period.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BudgetRow {
    /// The monthly budget in micro-units (0: none).
    pub amount: u64,
    /// Spent in the period, in micro-units.
    pub spent: u64,
    /// The thresholds crossed in the period, ascending.
    pub crossed: Vec<u8>,
}

/// `tenant`'s budget and its spending in `period`.
pub async fn budget(
    pool: &AnyPool,
    tables: &Tables,
    tenant: &str,
    period: &str,
) -> Result<BudgetRow, sqlx::Error> {
    let amount: Option<i64> = sqlx::query(&format!(
        "SELECT amount FROM {} WHERE tenant = $1",
        tables.name("budgets")
    ))
    .bind(tenant)
    .fetch_optional(pool)
    .await?
    .map(|r| r.try_get("amount"))
    .transpose()?;
    let row = sqlx::query(&format!(
        "SELECT spent, crossed_50, crossed_80, crossed_100 FROM {} WHERE tenant = $1 AND period = $2",
        tables.name("spending")
    ))
    .bind(tenant)
    .bind(period)
    .fetch_optional(pool)
    .await?;
    let mut out = BudgetRow {
        amount: amount.map_or(0, small),
        ..BudgetRow::default()
    };
    if let Some(r) = row {
        out.spent = small(r.try_get("spent")?);
        for (column, t) in [("crossed_50", 50), ("crossed_80", 80), ("crossed_100", 100)] {
            if r.try_get::<i64, _>(column)? != 0 {
                out.crossed.push(t);
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Projection for UsageView {
    fn name(&self) -> &'static str {
        "usage"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["totals", "meters", "quotas", "costs", "budgets", "spending"]
    }

    fn create(&self, t: &Tables) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    tenant TEXT NOT NULL,
                    period TEXT NOT NULL,
                    meter TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    quantity BIGINT NOT NULL,
                    records BIGINT NOT NULL,
                    cost BIGINT NOT NULL,
                    PRIMARY KEY (tenant, period, meter, subject)
                )",
                t.name("totals")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    tenant TEXT NOT NULL,
                    period TEXT NOT NULL,
                    meter TEXT NOT NULL,
                    quantity BIGINT NOT NULL,
                    refused BIGINT NOT NULL,
                    warned BIGINT NOT NULL,
                    PRIMARY KEY (tenant, period, meter)
                )",
                t.name("meters")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    tenant TEXT NOT NULL,
                    meter TEXT NOT NULL,
                    quota_limit BIGINT NOT NULL,
                    hard BIGINT NOT NULL,
                    PRIMARY KEY (tenant, meter)
                )",
                t.name("quotas")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    tenant TEXT NOT NULL,
                    meter TEXT NOT NULL,
                    unit_cost BIGINT NOT NULL,
                    PRIMARY KEY (tenant, meter)
                )",
                t.name("costs")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    tenant TEXT PRIMARY KEY,
                    amount BIGINT NOT NULL
                )",
                t.name("budgets")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    tenant TEXT NOT NULL,
                    period TEXT NOT NULL,
                    spent BIGINT NOT NULL,
                    crossed_50 BIGINT NOT NULL,
                    crossed_80 BIGINT NOT NULL,
                    crossed_100 BIGINT NOT NULL,
                    PRIMARY KEY (tenant, period)
                )",
                t.name("spending")
            ),
        ]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        t: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        if event.stream.aggregate() != AGGREGATE {
            return Ok(());
        }
        let decoded = UsageEvent::decode(event.event_type.as_str(), event.schema, &event.data)
            .map_err(|e| ApplyError(e.to_string()))?;
        let tenant = event.stream.tenant();
        match decoded {
            UsageEvent::Recorded {
                period,
                subject,
                meter,
                quantity,
                records,
                cost,
                ..
            } => {
                let totals = t.name("totals");
                sqlx::query(&format!(
                    "INSERT INTO {totals} (tenant, period, meter, subject, quantity, records, cost) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tenant, period, meter, subject) DO UPDATE SET \
                     quantity = {totals}.quantity + excluded.quantity, \
                     records = {totals}.records + excluded.records, \
                     cost = {totals}.cost + excluded.cost"
                ))
                .bind(tenant)
                .bind(&period)
                .bind(&meter)
                .bind(subject)
                .bind(big(quantity))
                .bind(big(records))
                .bind(big(cost))
                .execute(&mut *conn)
                .await?;
                let meters = t.name("meters");
                sqlx::query(&format!(
                    "INSERT INTO {meters} (tenant, period, meter, quantity, refused, warned) \
                     VALUES ($1, $2, $3, $4, 0, 0) \
                     ON CONFLICT (tenant, period, meter) DO UPDATE SET \
                     quantity = {meters}.quantity + excluded.quantity"
                ))
                .bind(tenant)
                .bind(&period)
                .bind(&meter)
                .bind(big(quantity))
                .execute(&mut *conn)
                .await?;
                let spending = t.name("spending");
                sqlx::query(&format!(
                    "INSERT INTO {spending} (tenant, period, spent, crossed_50, crossed_80, crossed_100) \
                     VALUES ($1, $2, $3, 0, 0, 0) \
                     ON CONFLICT (tenant, period) DO UPDATE SET \
                     spent = {spending}.spent + excluded.spent"
                ))
                .bind(tenant)
                .bind(&period)
                .bind(big(cost))
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::QuotaExceeded {
                period,
                meter,
                refused,
                ..
            } => {
                let meters = t.name("meters");
                sqlx::query(&format!(
                    "INSERT INTO {meters} (tenant, period, meter, quantity, refused, warned) \
                     VALUES ($1, $2, $3, 0, $4, 0) \
                     ON CONFLICT (tenant, period, meter) DO UPDATE SET \
                     refused = {meters}.refused + excluded.refused"
                ))
                .bind(tenant)
                .bind(&period)
                .bind(&meter)
                .bind(big(refused))
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::QuotaWarning { period, meter, .. } => {
                let meters = t.name("meters");
                sqlx::query(&format!(
                    "INSERT INTO {meters} (tenant, period, meter, quantity, refused, warned) \
                     VALUES ($1, $2, $3, 0, 0, 1) \
                     ON CONFLICT (tenant, period, meter) DO UPDATE SET warned = 1"
                ))
                .bind(tenant)
                .bind(&period)
                .bind(&meter)
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::BudgetThresholdCrossed {
                period, threshold, ..
            } => {
                let column = match threshold {
                    50 => "crossed_50",
                    80 => "crossed_80",
                    _ => "crossed_100",
                };
                let spending = t.name("spending");
                sqlx::query(&format!(
                    "INSERT INTO {spending} (tenant, period, spent, crossed_50, crossed_80, crossed_100) \
                     VALUES ($1, $2, 0, 0, 0, 0) \
                     ON CONFLICT (tenant, period) DO NOTHING"
                ))
                .bind(tenant)
                .bind(&period)
                .execute(&mut *conn)
                .await?;
                sqlx::query(&format!(
                    "UPDATE {spending} SET {column} = 1 WHERE tenant = $1 AND period = $2"
                ))
                .bind(tenant)
                .bind(&period)
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::QuotaSet { meter, limit, hard } => {
                let quotas = t.name("quotas");
                sqlx::query(&format!(
                    "INSERT INTO {quotas} (tenant, meter, quota_limit, hard) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant, meter) DO UPDATE SET \
                     quota_limit = excluded.quota_limit, hard = excluded.hard"
                ))
                .bind(tenant)
                .bind(meter)
                .bind(big(limit))
                .bind(i64::from(hard))
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::QuotaCleared { meter } => {
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE tenant = $1 AND meter = $2",
                    t.name("quotas")
                ))
                .bind(tenant)
                .bind(meter)
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::MeterCostSet { meter, unit_cost } => {
                let costs = t.name("costs");
                sqlx::query(&format!(
                    "INSERT INTO {costs} (tenant, meter, unit_cost) VALUES ($1, $2, $3) \
                     ON CONFLICT (tenant, meter) DO UPDATE SET unit_cost = excluded.unit_cost"
                ))
                .bind(tenant)
                .bind(meter)
                .bind(big(unit_cost))
                .execute(&mut *conn)
                .await?;
            }
            UsageEvent::BudgetSet { amount } => {
                let budgets = t.name("budgets");
                sqlx::query(&format!(
                    "INSERT INTO {budgets} (tenant, amount) VALUES ($1, $2) \
                     ON CONFLICT (tenant) DO UPDATE SET amount = excluded.amount"
                ))
                .bind(tenant)
                .bind(big(amount))
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}
