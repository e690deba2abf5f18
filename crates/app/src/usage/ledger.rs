//! The usage ledger: every tenant's plan, quota overrides, meter costs and budget, its usage and
//! spending per period, and the idempotency keys already counted, kept in memory by following
//! the log; plus the reservations of records admitted but not yet applied from the log.
//!
//! Admission and the writer's follow-up decisions happen under one lock, against committed usage
//! (applied from the log) plus reservations, so concurrent requests cannot pass a hard quota
//! together and a key posted twice at once counts once. A reservation is released when the
//! ledger applies the event that carries its key, or when its append fails.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use custodian_domain::tenant::{Plan, TenantEvent};
use custodian_domain::usage::{self, QuotaRule, Record, UsageEvent};
use custodian_domain::{DomainEvent as _, EventRecord, Timestamp};
use custodian_store::EventStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::follower::Progress;
use crate::plans::Plans;

/// How a record's append ended, as the callers waiting on it learn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not yet written.
    Waiting,
    /// Durable, at this position.
    Durable(u64),
    /// Not written; the records were released.
    Failed(AppError),
}

/// The largest total a meter's month or a tenant's monthly spending may reach.
pub const TOTAL_MAX: u64 = i64::MAX as u64;

/// A record admitted and reserved, until the ledger applies it or its append fails.
#[derive(Debug)]
struct Pending {
    period: String,
    meter: String,
    quantity: u64,
    cost: u64,
    /// Handed to the writer (its events are decided or being appended).
    flushed: bool,
    outcome: watch::Receiver<Outcome>,
}

#[derive(Debug, Default)]
pub(crate) struct PeriodUsage {
    /// Meter → units applied from the log.
    pub(crate) used: HashMap<String, u64>,
    /// Meter → units admitted and not yet applied.
    reserved: HashMap<String, u64>,
    /// Meter → units of records handed to the writer and not yet applied.
    flushed: HashMap<String, u64>,
    /// Cost applied from the log.
    pub(crate) spent: u64,
    /// Cost of records handed to the writer and not yet applied.
    flushed_cost: u64,
    /// Meters whose soft quota warning is recorded (or being appended).
    warned: HashSet<String>,
    /// Budget thresholds recorded (or being appended).
    announced: BTreeSet<u8>,
}

#[derive(Debug)]
pub(crate) struct TenantUsage {
    pub(crate) plan: Plan,
    pub(crate) overrides: BTreeMap<String, QuotaRule>,
    pub(crate) unit_costs: BTreeMap<String, u64>,
    pub(crate) budget: u64,
    pub(crate) periods: BTreeMap<String, PeriodUsage>,
    /// Idempotency key → the period it counted in.
    keys: HashMap<String, String>,
}

impl Default for TenantUsage {
    fn default() -> Self {
        Self {
            plan: Plan::Free,
            overrides: BTreeMap::new(),
            unit_costs: BTreeMap::new(),
            budget: 0,
            periods: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) tenants: HashMap<String, TenantUsage>,
    pending: HashMap<(String, String), Pending>,
}

/// What an admission decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// The new records are reserved (`outcome` says when they are durable); the others are
    /// duplicates, some of which wait for an earlier request's append.
    Admitted {
        fresh: Vec<Record>,
        duplicates: usize,
        waiting: Vec<watch::Receiver<Outcome>>,
        outcome: Option<watch::Sender<Outcome>>,
    },
    /// A hard quota refuses the request (nothing reserved): the records to report.
    Refused {
        meter: String,
        limit: u64,
        used: u64,
        refused: Vec<Record>,
    },
}

/// The follow-ups the writer appends with one tenant's records.
#[derive(Debug, Default)]
pub(crate) struct FollowUps {
    pub(crate) events: Vec<UsageEvent>,
}

/// The ledger and its follower's progress.
#[derive(Debug)]
pub struct UsageLedger {
    state: Mutex<State>,
    plans: Arc<Plans>,
    progress: Progress,
    /// The log's head when the service started: admissions wait until it is applied.
    start_head: u64,
}

impl UsageLedger {
    /// Starts following `store` from position 1; the task stops with `shutdown`.
    pub async fn start(
        store: Arc<dyn EventStore>,
        plans: Arc<Plans>,
        wait: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let start_head = store.head().await?.position;
        let ledger = Arc::new(Self {
            state: Mutex::new(State::default()),
            plans,
            progress: Progress::new(wait),
            start_head,
        });
        let follower = ledger.clone();
        crate::follower::spawn(store, "the usage ledger", shutdown, move |record| {
            follower.apply(record);
        });
        Ok(ledger)
    }

    /// The last position applied.
    pub fn applied(&self) -> u64 {
        self.progress.applied()
    }

    /// Waits (bounded) until the ledger has applied `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), AppError> {
        if self.progress.reached(position).await {
            Ok(())
        } else {
            Err(AppError::unavailable(
                "the usage ledger is catching up with the log",
                1,
            ))
        }
    }

    /// Waits (bounded) until the ledger knows everything logged before the service started, so
    /// that retries of earlier records are recognised.
    pub async fn ready(&self) -> Result<(), AppError> {
        self.wait_for(self.start_head).await
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, State>, AppError> {
        self.state
            .lock()
            .map_err(|_| AppError::internal("the usage ledger's lock is poisoned"))
    }

    /// The quota of `meter` in force for `tenant`: its own, else its plan's.
    pub(crate) fn quota(&self, tenant: &TenantUsage, meter: &str) -> Option<QuotaRule> {
        tenant
            .overrides
            .get(meter)
            .or_else(|| self.plans.tier(tenant.plan).quotas.get(meter))
            .copied()
    }

    /// The unit cost of `meter` for `tenant`: its own, else its plan's, else 0.
    pub(crate) fn unit_cost(&self, tenant: &TenantUsage, meter: &str) -> u64 {
        tenant
            .unit_costs
            .get(meter)
            .or_else(|| self.plans.tier(tenant.plan).unit_costs.get(meter))
            .copied()
            .unwrap_or(0)
    }

    /// The tenant's plan as the ledger knows it.
    pub fn plan(&self, tenant: &str) -> Result<Plan, AppError> {
        Ok(self
            .lock()?
            .tenants
            .get(tenant)
            .map_or(Plan::Free, |t| t.plan))
    }

    /// The plans the ledger applies.
    pub fn plans(&self) -> &Plans {
        &self.plans
    }

    /// Decides whether `records` (already validated, each with its time) are admitted in
    /// `tenant`, and reserves the new ones. All or nothing: if a hard quota refuses one, none is
    /// reserved.
    pub(crate) fn admit(
        &self,
        tenant: &str,
        at: Timestamp,
        records: Vec<(String, u64, String, String)>,
    ) -> Result<Admission, AppError> {
        let period = usage::period_of(at);
        let mut state = self.lock()?;
        let State { tenants, pending } = &mut *state;
        let t = tenants.entry(tenant.to_owned()).or_default();
        let mut fresh: Vec<Record> = Vec::new();
        let mut seen_here: HashSet<&str> = HashSet::new();
        let mut duplicates = 0;
        let mut waiting = Vec::new();
        for (meter, quantity, subject, key) in &records {
            if !seen_here.insert(key.as_str()) || t.keys.contains_key(key) {
                duplicates += 1;
                continue;
            }
            if let Some(p) = pending.get(&(tenant.to_owned(), key.clone())) {
                duplicates += 1;
                waiting.push(p.outcome.clone());
                continue;
            }
            fresh.push(Record {
                at,
                subject: subject.clone(),
                meter: meter.clone(),
                quantity: *quantity,
                cost: 0,
                idempotency_key: key.clone(),
            });
        }
        for r in &mut fresh {
            r.cost = usage::cost_of(r.quantity, self.unit_cost(t, &r.meter));
        }
        // The hard quotas, against what is used, reserved, and asked for by this request.
        let mut asked: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &fresh {
            let n = asked.entry(r.meter.as_str()).or_default();
            *n = n.saturating_add(r.quantity);
        }
        let p = t.periods.get(&period);
        for (meter, quantity) in &asked {
            let Some(rule) = self.quota(t, meter) else {
                continue;
            };
            let counted = p.map_or(0, |p| {
                p.used
                    .get(*meter)
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(p.reserved.get(*meter).copied().unwrap_or(0))
            });
            if !usage::admits(rule, counted, *quantity) {
                let meter = (*meter).to_owned();
                let refused = fresh.into_iter().filter(|r| r.meter == meter).collect();
                return Ok(Admission::Refused {
                    meter,
                    limit: rule.limit,
                    used: counted,
                    refused,
                });
            }
        }
        self.within_totals(t, &period, &asked, &fresh)?;
        if fresh.is_empty() {
            return Ok(Admission::Admitted {
                fresh,
                duplicates,
                waiting,
                outcome: None,
            });
        }
        let (tx, rx) = watch::channel(Outcome::Waiting);
        let p = t.periods.entry(period.clone()).or_default();
        for r in &fresh {
            let n = p.reserved.entry(r.meter.clone()).or_default();
            *n = n.saturating_add(r.quantity);
            pending.insert(
                (tenant.to_owned(), r.idempotency_key.clone()),
                Pending {
                    period: period.clone(),
                    meter: r.meter.clone(),
                    quantity: r.quantity,
                    cost: r.cost,
                    flushed: false,
                    outcome: rx.clone(),
                },
            );
        }
        Ok(Admission::Admitted {
            fresh,
            duplicates,
            waiting,
            outcome: Some(tx),
        })
    }

    /// Refuses records that would take a month's total of a meter, or the tenant's spending,
    /// past [`TOTAL_MAX`]: the views keep totals as 64-bit signed integers.
    fn within_totals(
        &self,
        t: &TenantUsage,
        period: &str,
        asked: &BTreeMap<&str, u64>,
        fresh: &[Record],
    ) -> Result<(), AppError> {
        let p = t.periods.get(period);
        let mut spent = p.map_or(0, |p| p.spent.saturating_add(p.flushed_cost));
        for (meter, quantity) in asked {
            let (used, reserved) = p.map_or((0, 0), |p| {
                (
                    p.used.get(*meter).copied().unwrap_or(0),
                    p.reserved.get(*meter).copied().unwrap_or(0),
                )
            });
            if used.saturating_add(reserved).saturating_add(*quantity) > TOTAL_MAX {
                return Err(AppError::invalid(format!(
                    "{meter}: this would take the month's total past {TOTAL_MAX}"
                )));
            }
            spent = spent.saturating_add(usage::cost_of(reserved, self.unit_cost(t, meter)));
        }
        let asked_cost = fresh.iter().fold(0u64, |n, r| n.saturating_add(r.cost));
        if spent.saturating_add(asked_cost) > TOTAL_MAX {
            return Err(AppError::invalid(format!(
                "this would take the month's spending past {TOTAL_MAX} micro-units"
            )));
        }
        Ok(())
    }

    /// Marks `records` of `tenant` as handed to the writer and decides the follow-ups their
    /// append carries: a soft quota's warning when usage reaches its limit, and each budget
    /// threshold reached, each once per period. Undone by [`release`](Self::release) if the
    /// append fails.
    pub(crate) fn flush(&self, tenant: &str, records: &[Record]) -> Result<FollowUps, AppError> {
        let mut state = self.lock()?;
        let State { tenants, pending } = &mut *state;
        let t = tenants.entry(tenant.to_owned()).or_default();
        let mut touched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in records {
            let Some(p) = pending.get_mut(&(tenant.to_owned(), r.idempotency_key.clone())) else {
                continue;
            };
            if p.flushed {
                continue;
            }
            p.flushed = true;
            let period = t.periods.entry(p.period.clone()).or_default();
            let n = period.flushed.entry(p.meter.clone()).or_default();
            *n = n.saturating_add(p.quantity);
            period.flushed_cost = period.flushed_cost.saturating_add(p.cost);
            touched
                .entry(p.period.clone())
                .or_default()
                .insert(p.meter.clone());
        }
        let mut follow = FollowUps::default();
        for (period_name, meters) in touched {
            let rules: Vec<(String, Option<QuotaRule>)> = meters
                .iter()
                .map(|m| (m.clone(), self.quota(t, m)))
                .collect();
            let budget = t.budget;
            let Some(period) = t.periods.get_mut(&period_name) else {
                continue;
            };
            for (meter, rule) in rules {
                let Some(rule) = rule else { continue };
                let logged = period
                    .used
                    .get(&meter)
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(period.flushed.get(&meter).copied().unwrap_or(0));
                if !period.warned.contains(&meter) && usage::reaches_limit(rule, 0, logged) {
                    period.warned.insert(meter.clone());
                    follow.events.push(UsageEvent::QuotaWarning {
                        period: period_name.clone(),
                        meter,
                        used: logged,
                        limit: rule.limit,
                    });
                }
            }
            let spent = period.spent.saturating_add(period.flushed_cost);
            for threshold in usage::thresholds_reached(spent, budget, &period.announced) {
                period.announced.insert(threshold);
                follow.events.push(UsageEvent::BudgetThresholdCrossed {
                    period: period_name.clone(),
                    threshold,
                    spent,
                    budget,
                });
            }
        }
        Ok(follow)
    }

    /// Releases the reservations of `records` of `tenant` whose append failed, and forgets the
    /// follow-ups decided with them.
    pub(crate) fn release(&self, tenant: &str, records: &[Record], follow: &FollowUps) {
        let Ok(mut state) = self.lock() else { return };
        let State { tenants, pending } = &mut *state;
        let t = tenants.entry(tenant.to_owned()).or_default();
        for r in records {
            if let Some(p) = pending.remove(&(tenant.to_owned(), r.idempotency_key.clone())) {
                unreserve(t, &p);
            }
        }
        for e in &follow.events {
            match e {
                UsageEvent::QuotaWarning { period, meter, .. } => {
                    if let Some(p) = t.periods.get_mut(period) {
                        p.warned.remove(meter);
                    }
                }
                UsageEvent::BudgetThresholdCrossed {
                    period, threshold, ..
                } => {
                    if let Some(p) = t.periods.get_mut(period) {
                        p.announced.remove(threshold);
                    }
                }
                _ => {}
            }
        }
    }

    fn apply(&self, record: &EventRecord) {
        if let Ok(mut state) = self.state.lock() {
            apply(&mut state, record);
        }
        self.progress.advance(record.position);
    }
}

fn unreserve(t: &mut TenantUsage, p: &Pending) {
    if let Some(period) = t.periods.get_mut(&p.period) {
        if let Some(n) = period.reserved.get_mut(&p.meter) {
            *n = n.saturating_sub(p.quantity);
        }
        if p.flushed {
            if let Some(n) = period.flushed.get_mut(&p.meter) {
                *n = n.saturating_sub(p.quantity);
            }
            period.flushed_cost = period.flushed_cost.saturating_sub(p.cost);
        }
    }
}

fn apply(state: &mut State, record: &EventRecord) {
    let (t, schema, data) = (record.event_type.as_str(), record.schema, &record.data);
    match record.stream.aggregate() {
        "tenant" => {
            let plan = match TenantEvent::decode(t, schema, data) {
                Ok(TenantEvent::Created { plan, .. } | TenantEvent::PlanChanged { plan }) => plan,
                _ => return,
            };
            state
                .tenants
                .entry(record.stream.id().to_owned())
                .or_default()
                .plan = plan;
        }
        usage::AGGREGATE => {
            let event = match UsageEvent::decode(t, schema, data) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(position = record.position, error = %e, "unreadable usage event");
                    return;
                }
            };
            let tenant_name = record.stream.tenant().to_owned();
            let State { tenants, pending } = state;
            let tenant = tenants.entry(tenant_name.clone()).or_default();
            apply_usage(tenant, pending, &tenant_name, event);
        }
        _ => {}
    }
}

fn period_entry<'a>(tenant: &'a mut TenantUsage, period: &str) -> &'a mut PeriodUsage {
    if !tenant.periods.contains_key(period) {
        // A new period: keep only it and the one before (and anything newer), so memory stays
        // bounded and a retry is recognised in the period of its record and the next.
        if let Some(previous) = usage::previous_period(period) {
            tenant.periods.retain(|p, _| *p >= previous);
            tenant.keys.retain(|_, p| *p >= previous);
        }
    }
    tenant.periods.entry(period.to_owned()).or_default()
}

fn apply_usage(
    tenant: &mut TenantUsage,
    pending: &mut HashMap<(String, String), Pending>,
    tenant_name: &str,
    event: UsageEvent,
) {
    match event {
        UsageEvent::Recorded {
            period,
            meter,
            quantity,
            cost,
            idempotency_keys,
            ..
        } => {
            for key in idempotency_keys {
                if let Some(p) = pending.remove(&(tenant_name.to_owned(), key.clone())) {
                    unreserve(tenant, &p);
                }
                tenant.keys.insert(key, period.clone());
            }
            let p = period_entry(tenant, &period);
            let n = p.used.entry(meter).or_default();
            *n = n.saturating_add(quantity);
            p.spent = p.spent.saturating_add(cost);
        }
        UsageEvent::QuotaWarning { period, meter, .. } => {
            period_entry(tenant, &period).warned.insert(meter);
        }
        UsageEvent::BudgetThresholdCrossed {
            period, threshold, ..
        } => {
            period_entry(tenant, &period).announced.insert(threshold);
        }
        UsageEvent::QuotaExceeded { .. } => {}
        UsageEvent::QuotaSet { meter, limit, hard } => {
            tenant.overrides.insert(meter, QuotaRule { limit, hard });
        }
        UsageEvent::QuotaCleared { meter } => {
            tenant.overrides.remove(&meter);
        }
        UsageEvent::MeterCostSet { meter, unit_cost } => {
            tenant.unit_costs.insert(meter, unit_cost);
        }
        UsageEvent::BudgetSet { amount } => tenant.budget = amount,
    }
}
