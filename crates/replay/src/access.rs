//! Forensics of access: `who-can`, `can` and `diff` answer, from the log alone, who could do what
//! at an instant, which events made it so, and which later events ended it.
//!
//! The whole log is folded, page by page, into the domain's [`AccessHistory`], the very fold the
//! service's authorization index runs, so the tool decides as the service did. Because the policy
//! keeps its history, one fold answers for any instant, and every link still carries the event that
//! later ended it. Memory is bounded by the policy state (grants, assignments, roles, memberships,
//! standing changes), never by the length of the log.
//!
//! Platform administrators (users of `_system` created or invited with the root role
//! `platform_admin`) may do everything in every tenant, whatever its policy says and even while it
//! is suspended, as long as they are active: `who-can` lists them in a section of their own and
//! `can` allows them, marked as such. API keys are not principals of their own: a key acts as its
//! owner, narrowed by its scopes, so it never reaches further than its owner; the answers name
//! the owners.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;

use clap::Args;
use custodian_domain::Timestamp;
use custodian_domain::policy::{
    AccessHistory, AsOf, Check, Effect, Ending, Link, MatchKind, Matched, Permission, Resource,
    Scope, Stamp, Target, Verdict, effective,
};
use serde::Serialize;

use crate::cli::{EXIT_UNREADABLE, SOURCE_HELP};
use crate::source::Source;

/// How many records are read at a time.
const PAGE: usize = 1000;

/// Exit status of `can`: allowed.
pub const EXIT_ALLOWED: u8 = 0;
/// Exit status of `can`: denied.
pub const EXIT_DENIED: u8 = 1;

/// Arguments of `who-can`.
#[derive(Debug, Args)]
pub struct WhoCanArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The permission, `type:action` (e.g. `document:read`).
    #[arg(long)]
    pub permission: String,
    /// The resource, `type/id` (e.g. `document/d1`).
    #[arg(long)]
    pub resource: String,
    /// The instant, RFC 3339 (e.g. `2026-03-01T12:00:00Z`): the log as it stood then.
    #[arg(long, value_name = "TIME")]
    pub at: String,
    #[arg(value_name = "SOURCE", help = SOURCE_HELP)]
    /// The log.
    pub source: String,
}

/// Arguments of `can`.
#[derive(Debug, Args)]
pub struct CanArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The principal (a user id).
    #[arg(long)]
    pub principal: String,
    /// The permission, `type:action` (e.g. `document:read`).
    #[arg(long)]
    pub permission: String,
    /// The resource, `type/id` (e.g. `document/d1`).
    #[arg(long)]
    pub resource: String,
    /// The instant, RFC 3339 (e.g. `2026-03-01T12:00:00Z`): the log as it stood then.
    #[arg(long, value_name = "TIME")]
    pub at: String,
    #[arg(value_name = "SOURCE", help = SOURCE_HELP)]
    /// The log.
    pub source: String,
}

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier instant, RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// The later instant, RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub to: String,
    /// Only this tenant (every tenant with a policy when absent).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(value_name = "SOURCE", help = SOURCE_HELP)]
    /// The log.
    pub source: String,
}

/// Help on `can`'s exit statuses.
pub const CAN_EXIT_HELP: &str = "\
Exit status:
  0  allowed
  1  denied: the reason and the events behind it are printed
  2  could not read the source, or a usage error";

// ---------------------------------------------------------------------------------------------
// What the commands print with --json.

/// An event of the log, as an answer names it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventRef {
    /// Its position.
    pub position: u64,
    /// Its `occurred_at`.
    pub time: Timestamp,
    /// Its type, e.g. `grant.revoked`.
    pub event_type: &'static str,
    /// Why, where the event says (`revoked`, `role_deleted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl EventRef {
    fn of(stamp: Stamp, event_type: &'static str) -> Self {
        Self {
            position: stamp.position,
            time: stamp.at,
            event_type,
            reason: None,
        }
    }

    fn ending(e: &Ending) -> Self {
        Self {
            reason: e.reason,
            ..Self::of(e.stamp, e.event_type)
        }
    }
}

/// One link of the chain that made an answer so.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkView {
    /// `grant`, `assignment`, `role`, `group`, `principal`, `tenant` or `platform_admin`.
    pub kind: &'static str,
    /// The grant's or assignment's id, the role's or group's name, the principal or the tenant.
    pub id: String,
    /// The position of the event that made it (0: defined by the service).
    pub position: u64,
    /// That event's time (absent for what the service defines).
    pub time: Option<Timestamp>,
    /// That event's type (`builtin` for what the service defines).
    pub event_type: &'static str,
    /// When its own window closes without an event.
    pub expires: Option<Timestamp>,
    /// The later event that ended it; absent while it still stands at the head.
    pub ended: Option<EventRef>,
}

impl LinkView {
    fn of(link: &Link) -> Self {
        Self {
            kind: kind_name(link.kind),
            id: link.id.clone(),
            position: link.made.map_or(0, |s| s.position),
            time: link.made.map(|s| s.at),
            event_type: link.event_type,
            expires: link.expires,
            ended: link.ended.as_ref().map(EventRef::ending),
        }
    }
}

/// A principal that could act, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Holder {
    /// The principal.
    pub principal: String,
    /// Why, in words.
    pub reason: String,
    /// The chain: assignment, roles, group membership, grant (a grant to the principal alone when
    /// there is no assignment).
    pub chain: Vec<LinkView>,
    /// The later event that took the principal out of service, if any.
    pub principal_ended: Option<EventRef>,
    /// The later suspension of the tenant, if any.
    pub tenant_ended: Option<EventRef>,
}

/// A platform administrator: may do everything in every tenant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdminView {
    /// The user of `_system`.
    pub principal: String,
    /// The event that gave the root role (`user.created` or `user.invited`).
    pub granted: EventRef,
    /// The event from which they could act (the creation, or the acceptance of the invitation).
    pub active: EventRef,
    /// The later event that took them out of service, if any.
    pub ended: Option<EventRef>,
}

/// The answer of `who-can`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WhoCanReport {
    /// The position evaluated at: the log as it stood at `time`.
    pub position: u64,
    /// The instant asked about.
    pub time: Timestamp,
    /// The last position of the log.
    pub head: u64,
    /// The tenant.
    pub tenant: String,
    /// The permission.
    pub permission: String,
    /// The resource.
    pub resource: String,
    /// The tenant's suspension in force then: nobody of the tenant could act.
    pub tenant_suspended: Option<EventRef>,
    /// The tenant's principals that could act, by id.
    pub principals: Vec<Holder>,
    /// The platform administrators active then, who may do everything in every tenant.
    pub platform_admins: Vec<AdminView>,
}

/// The answer of `can`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CanReport {
    /// The position evaluated at: the log as it stood at `time`.
    pub position: u64,
    /// The instant asked about.
    pub time: Timestamp,
    /// The last position of the log.
    pub head: u64,
    /// The tenant.
    pub tenant: String,
    /// The principal.
    pub principal: String,
    /// The permission.
    pub permission: String,
    /// The resource.
    pub resource: String,
    /// `allow` or `deny`.
    pub decision: Verdict,
    /// Why, in words.
    pub reason: String,
    /// Whether the principal was allowed as a platform administrator.
    pub platform_admin: bool,
    /// The chain that decided (a deny grant's, the standing change, or the root role); empty when
    /// nothing granted it.
    pub chain: Vec<LinkView>,
    /// The later event that took the principal out of service, if any.
    pub principal_ended: Option<EventRef>,
    /// The later suspension of the tenant, if any.
    pub tenant_ended: Option<EventRef>,
}

/// One access a principal held: an allow or a deny of a permission on a scope.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// `allow` or `deny`.
    pub effect: &'static str,
    /// The permission as granted (possibly a pattern).
    pub permission: String,
    /// What it covers (absent: the whole tenant).
    pub on: Option<String>,
    /// The assignment's scope that narrows it, if any.
    pub within: Option<String>,
}

/// A change of access between the two instants.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    /// The access.
    #[serde(flatten)]
    pub access: Access,
    /// The grant that carries it.
    pub grant: String,
    /// The assignment it came through, if any.
    pub assignment: Option<String>,
    /// The event that made the change (gained: the latest link made; lost: the one that ended
    /// it); absent when no event did (a window opened or closed).
    pub event: Option<EventRef>,
    /// For an expiry: when the grant's or the assignment's window closed.
    pub expired_at: Option<Timestamp>,
}

/// One principal's changes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrincipalDiff {
    /// The tenant.
    pub tenant: String,
    /// The principal.
    pub principal: String,
    /// Access held at `to` and not at `from`.
    pub gained: Vec<Change>,
    /// Access an event took away.
    pub lost: Vec<Change>,
    /// Access whose own window closed, with no event.
    pub expired: Vec<Change>,
}

/// An instant and the position of the log as it stood then.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Instant {
    /// The position.
    pub position: u64,
    /// The instant.
    pub time: Timestamp,
}

/// The answer of `diff`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiffReport {
    /// The position evaluated at last (that of `to`).
    pub position: u64,
    /// The later instant.
    pub time: Timestamp,
    /// The earlier instant and its position.
    pub from: Instant,
    /// The later instant and its position.
    pub to: Instant,
    /// The principals whose access changed, by tenant and id.
    pub principals: Vec<PrincipalDiff>,
}

// ---------------------------------------------------------------------------------------------
// Reading the log.

/// The whole log folded, with the positions of the instants asked about.
struct Folded {
    history: AccessHistory,
    head: u64,
    tenants: HashSet<String>,
    positions: Vec<u64>,
}

/// Folds the whole log at `location` into access history; for each of `times`, the position of
/// the log as it stood then: every event up to the first one that occurred after it.
async fn fold(location: &str, times: &[Timestamp]) -> Result<Folded, String> {
    let mut source = Source::open(location).await.map_err(|e| e.to_string())?;
    let mut history = AccessHistory::new();
    let mut tenants = HashSet::new();
    let mut passed: Vec<Option<u64>> = vec![None; times.len()];
    let mut head = 0;
    let result = loop {
        let page = match source.read_all(head + 1, PAGE).await {
            Ok(page) => page,
            Err(e) => break Err(source.read_error(e).to_string()),
        };
        if page.is_empty() {
            break Ok(());
        }
        let mut failed = None;
        for record in &page {
            for (p, t) in passed.iter_mut().zip(times) {
                if p.is_none() && record.occurred_at > *t {
                    *p = Some(head);
                }
            }
            if let Err(e) = history.apply(record) {
                failed = Some(format!(
                    "the event at position {} cannot be read ({e}); run `custodian-replay verify` on the log",
                    record.position
                ));
                break;
            }
            if !tenants.contains(record.stream.tenant()) {
                tenants.insert(record.stream.tenant().to_owned());
            }
            head = record.position;
        }
        if let Some(message) = failed {
            break Err(message);
        }
    };
    source.close().await;
    result?;
    Ok(Folded {
        history,
        head,
        tenants,
        positions: passed.into_iter().map(|p| p.unwrap_or(head)).collect(),
    })
}

fn parse_time(flag: &str, value: &str) -> Result<Timestamp, String> {
    Timestamp::parse(value).map_err(|_| {
        format!("{flag}: {value:?} is not an RFC 3339 time (write e.g. 2026-03-01T12:00:00Z)")
    })
}

fn usage_error(err: &mut dyn Write, message: &str) -> u8 {
    let _ = writeln!(err, "custodian-replay: {message}");
    let _ = err.flush();
    EXIT_UNREADABLE
}

fn known_tenant(folded: &Folded, tenant: &str) -> Result<(), String> {
    if folded.tenants.contains(tenant) {
        Ok(())
    } else {
        Err(format!(
            "--tenant: the log holds no event of tenant {tenant:?}"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// who-can

/// `who-can`: every principal that could do the permission on the resource at the instant, with
/// the events that made it so and the later ones that ended them. Exit 0, or 2 when the source
/// cannot be read or an argument is wrong.
pub async fn who_can(
    args: &WhoCanArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match who_can_report(args).await {
        Ok(report) => {
            let _ = if json {
                print_json(out, &report)
            } else {
                print_who_can(out, &report)
            };
            0
        }
        Err(message) => usage_error(err, &message),
    }
}

/// Folds the log at `args.source` and answers `who-can`.
pub async fn who_can_report(args: &WhoCanArgs) -> Result<WhoCanReport, String> {
    let permission =
        Permission::parse(&args.permission).map_err(|e| format!("--permission: {e}"))?;
    let resource = Resource::parse(&args.resource).map_err(|e| format!("--resource: {e}"))?;
    let time = parse_time("--at", &args.at)?;
    let folded = fold(&args.source, &[time]).await?;
    known_tenant(&folded, &args.tenant)?;
    let history = &folded.history;
    let as_of = AsOf {
        position: folded.positions.first().copied().unwrap_or(folded.head),
        time,
    };
    let target = Target::Resource(&resource);
    let tenant = args.tenant.as_str();
    let mut principals = Vec::new();
    for principal in history.policy(tenant).principals() {
        let check = Check {
            principal,
            permission: &permission,
            target,
            ip: None,
            as_of,
            explain: false,
        };
        let decision = history.decide(tenant, &check);
        if decision.verdict != Verdict::Allow {
            continue;
        }
        principals.push(Holder {
            principal: principal.to_owned(),
            reason: decision.reason,
            chain: chain(history, tenant, &decision.matched, target, as_of),
            principal_ended: history
                .principal_ended_after(principal, as_of.position)
                .as_ref()
                .map(EventRef::ending),
            tenant_ended: history
                .tenant_ended_after(tenant, as_of.position)
                .as_ref()
                .map(EventRef::ending),
        });
    }
    Ok(WhoCanReport {
        position: as_of.position,
        time,
        head: folded.head,
        tenant: args.tenant.clone(),
        permission: permission.to_string(),
        resource: resource.to_string(),
        tenant_suspended: history
            .tenant_suspended(tenant, as_of.position)
            .map(|s| EventRef::of(s.stamp, s.event_type)),
        principals,
        platform_admins: admins(history, as_of.position),
    })
}

fn chain(
    history: &AccessHistory,
    tenant: &str,
    matched: &[Matched],
    target: Target<'_>,
    as_of: AsOf,
) -> Vec<LinkView> {
    history
        .provenance(tenant, matched, target, as_of)
        .iter()
        .map(LinkView::of)
        .collect()
}

fn admins(history: &AccessHistory, position: u64) -> Vec<AdminView> {
    history
        .platform_admins_at(position)
        .into_iter()
        .filter_map(|a| {
            Some(AdminView {
                principal: a.user_id.clone(),
                granted: EventRef::of(a.granted, a.granted_by),
                active: EventRef::of(
                    a.active?,
                    if a.active == Some(a.granted) {
                        a.granted_by
                    } else {
                        "user.invitation_accepted"
                    },
                ),
                ended: history
                    .principal_ended_after(&a.user_id, position)
                    .as_ref()
                    .map(EventRef::ending),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// can

/// `can`: one decision with its provenance. Exit 0 allowed, 1 denied, 2 when the source cannot be
/// read or an argument is wrong.
pub async fn can(args: &CanArgs, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match can_report(args).await {
        Ok(report) => {
            let _ = if json {
                print_json(out, &report)
            } else {
                print_can(out, &report)
            };
            if report.decision == Verdict::Allow {
                EXIT_ALLOWED
            } else {
                EXIT_DENIED
            }
        }
        Err(message) => usage_error(err, &message),
    }
}

/// Folds the log at `args.source` and answers `can`.
pub async fn can_report(args: &CanArgs) -> Result<CanReport, String> {
    let permission =
        Permission::parse(&args.permission).map_err(|e| format!("--permission: {e}"))?;
    let resource = Resource::parse(&args.resource).map_err(|e| format!("--resource: {e}"))?;
    if args.principal.trim().is_empty() {
        return Err("--principal: give a principal id".to_owned());
    }
    let time = parse_time("--at", &args.at)?;
    let folded = fold(&args.source, &[time]).await?;
    known_tenant(&folded, &args.tenant)?;
    let history = &folded.history;
    let as_of = AsOf {
        position: folded.positions.first().copied().unwrap_or(folded.head),
        time,
    };
    let tenant = args.tenant.as_str();
    let principal = args.principal.as_str();
    let target = Target::Resource(&resource);
    let principal_ended = history
        .principal_ended_after(principal, as_of.position)
        .as_ref()
        .map(EventRef::ending);
    let tenant_ended = history
        .tenant_ended_after(tenant, as_of.position)
        .as_ref()
        .map(EventRef::ending);
    let base = |decision, reason, platform_admin, chain| CanReport {
        position: as_of.position,
        time,
        head: folded.head,
        tenant: args.tenant.clone(),
        principal: args.principal.clone(),
        permission: permission.to_string(),
        resource: resource.to_string(),
        decision,
        reason,
        platform_admin,
        chain,
        principal_ended: principal_ended.clone(),
        tenant_ended: tenant_ended.clone(),
    };
    if let Some(admin) = history.platform_admin_at(principal, as_of.position) {
        let active = admin.active.unwrap_or(admin.granted);
        let link = LinkView {
            kind: "platform_admin",
            id: admin.user_id.clone(),
            position: active.position,
            time: Some(active.at),
            event_type: if admin.active == Some(admin.granted) {
                admin.granted_by
            } else {
                "user.invitation_accepted"
            },
            expires: None,
            ended: principal_ended.clone(),
        };
        return Ok(base(
            Verdict::Allow,
            "the principal is a platform administrator: they may do everything in every tenant"
                .to_owned(),
            true,
            vec![link],
        ));
    }
    let decision = history.decide(
        tenant,
        &Check {
            principal,
            permission: &permission,
            target,
            ip: None,
            as_of,
            explain: false,
        },
    );
    let links = chain(history, tenant, &decision.matched, target, as_of);
    Ok(base(decision.verdict, decision.reason, false, links))
}

// ---------------------------------------------------------------------------------------------
// diff

/// `diff`: per principal, access gained, lost or expired between two instants. Exit 0, or 2 when
/// the source cannot be read or an argument is wrong.
pub async fn diff(args: &DiffArgs, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match diff_report(args).await {
        Ok(report) => {
            let _ = if json {
                print_json(out, &report)
            } else {
                print_diff(out, &report)
            };
            0
        }
        Err(message) => usage_error(err, &message),
    }
}

/// One access held at an instant, with the path it came by.
struct Held<'p> {
    access: Access,
    grant: &'p custodian_domain::policy::Grant,
    via: Vec<Matched>,
}

impl Held<'_> {
    fn assignment(&self) -> Option<&str> {
        self.via
            .iter()
            .find(|m| m.kind == MatchKind::Assignment)
            .map(|m| m.id.as_str())
    }

    /// The chain as a decision would give it: the path, then the grant.
    fn chain(&self) -> Vec<Matched> {
        let mut chain = self.via.clone();
        chain.push(Matched {
            kind: MatchKind::Grant,
            id: self.grant.id.clone(),
            position: self.grant.created.position,
        });
        chain
    }
}

/// What `principal` held in `tenant` as of `as_of`: nothing while they or the tenant were out of
/// service; otherwise every grant that reached them, as [`effective`] finds them.
fn held<'p>(
    history: &'p AccessHistory,
    tenant: &str,
    principal: &str,
    as_of: AsOf,
) -> BTreeMap<Access, Held<'p>> {
    let mut out = BTreeMap::new();
    if history.tenant_suspended(tenant, as_of.position).is_some()
        || history
            .principal_out_of_service(principal, as_of.position)
            .is_some()
    {
        return out;
    }
    for e in effective(history.policy(tenant), principal, as_of) {
        let scope = |s: Option<&Scope>| s.map(ToString::to_string);
        let (on, within) = match (&e.grant.on, e.assignment_on) {
            (Some(g), a) => (
                Some(g.to_string()),
                scope(a).filter(|a| *a != g.to_string()),
            ),
            (None, a) => (scope(a), None),
        };
        let access = Access {
            effect: match e.grant.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            },
            permission: e.grant.permission.to_string(),
            on,
            within,
        };
        out.entry(access.clone()).or_insert(Held {
            access,
            grant: e.grant,
            via: e.via,
        });
    }
    out
}

/// Folds the log at `args.source` and answers `diff`.
pub async fn diff_report(args: &DiffArgs) -> Result<DiffReport, String> {
    let t1 = parse_time("--from", &args.from)?;
    let t2 = parse_time("--to", &args.to)?;
    if t2 < t1 {
        return Err("--to: must not be before --from".to_owned());
    }
    let folded = fold(&args.source, &[t1, t2]).await?;
    if let Some(tenant) = &args.tenant {
        known_tenant(&folded, tenant)?;
    }
    let history = &folded.history;
    let from = AsOf {
        position: folded.positions.first().copied().unwrap_or(folded.head),
        time: t1,
    };
    let to = AsOf {
        position: folded.positions.get(1).copied().unwrap_or(folded.head),
        time: t2,
    };
    let tenants: BTreeSet<&str> = match &args.tenant {
        Some(t) => std::iter::once(t.as_str()).collect(),
        None => history.tenants().collect(),
    };
    let mut principals = Vec::new();
    for tenant in tenants {
        for principal in history.policy(tenant).principals() {
            let before = held(history, tenant, principal, from);
            let after = held(history, tenant, principal, to);
            let mut d = PrincipalDiff {
                tenant: tenant.to_owned(),
                principal: principal.to_owned(),
                gained: vec![],
                lost: vec![],
                expired: vec![],
            };
            for (access, h) in &before {
                if after.contains_key(access) {
                    continue;
                }
                let (event, expired_at) = why_gone(history, tenant, principal, h, from, to);
                let change = Change {
                    access: h.access.clone(),
                    grant: h.grant.id.clone(),
                    assignment: h.assignment().map(str::to_owned),
                    event,
                    expired_at,
                };
                if change.expired_at.is_some() {
                    d.expired.push(change);
                } else {
                    d.lost.push(change);
                }
            }
            for (access, h) in &after {
                if before.contains_key(access) {
                    continue;
                }
                d.gained.push(Change {
                    access: h.access.clone(),
                    grant: h.grant.id.clone(),
                    assignment: h.assignment().map(str::to_owned),
                    event: why_new(history, tenant, principal, h, from, to),
                    expired_at: None,
                });
            }
            if !(d.gained.is_empty() && d.lost.is_empty() && d.expired.is_empty()) {
                principals.push(d);
            }
        }
    }
    Ok(DiffReport {
        position: to.position,
        time: t2,
        from: Instant {
            position: from.position,
            time: t1,
        },
        to: Instant {
            position: to.position,
            time: t2,
        },
        principals,
    })
}

/// Why access held at `from` is gone at `to`: the first event between them that ended a link of
/// its chain or took the principal or the tenant out of service (lost), or else the close of the
/// grant's or the assignment's window (expired).
fn why_gone(
    history: &AccessHistory,
    tenant: &str,
    principal: &str,
    h: &Held<'_>,
    from: AsOf,
    to: AsOf,
) -> (Option<EventRef>, Option<Timestamp>) {
    let within = |e: &Ending| e.stamp.position <= to.position;
    let mut endings: Vec<Ending> = history
        .provenance(tenant, &h.chain(), Target::Tenant, from)
        .into_iter()
        .filter_map(|l| l.ended)
        .collect();
    endings.extend(history.principal_ended_after(principal, from.position));
    endings.extend(history.tenant_ended_after(tenant, from.position));
    if let Some(first) = endings
        .iter()
        .filter(|e| within(e))
        .min_by_key(|e| e.stamp.position)
    {
        return (Some(EventRef::ending(first)), None);
    }
    let assignment_until = h
        .assignment()
        .and_then(|id| history.policy(tenant).assignment(id))
        .and_then(|a| a.window.valid_until);
    let closed = [h.grant.window.valid_until, assignment_until]
        .into_iter()
        .flatten()
        .filter(|u| *u <= to.time)
        .min();
    (None, closed)
}

/// The event that gave access held at `to` and not at `from`: the latest event between them that
/// made a link of its chain, or that put the principal or the tenant back in service; `None` when
/// a window opened with no event.
fn why_new(
    history: &AccessHistory,
    tenant: &str,
    principal: &str,
    h: &Held<'_>,
    from: AsOf,
    to: AsOf,
) -> Option<EventRef> {
    let between = |s: &Stamp| s.position > from.position && s.position <= to.position;
    let made = history
        .provenance(tenant, &h.chain(), Target::Tenant, to)
        .into_iter()
        .filter_map(|l| l.made.map(|s| (s, l.event_type)))
        .filter(|(s, _)| between(s))
        .max_by_key(|(s, _)| s.position);
    // Back in service: the principal enabled again, or the tenant reactivated.
    let restored = [
        history
            .principal_out_of_service(principal, from.position)
            .map(|_| history.principal_standing(principal)),
        history
            .tenant_suspended(tenant, from.position)
            .map(|_| history.tenant_standing(tenant)),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .filter(|s| !s.out_of_service && between(&s.stamp))
    .map(|s| (s.stamp, s.event_type));
    made.into_iter()
        .chain(restored)
        .max_by_key(|(s, _)| s.position)
        .map(|(s, t)| EventRef::of(s, t))
}

// ---------------------------------------------------------------------------------------------
// Output.

fn kind_name(kind: MatchKind) -> &'static str {
    match kind {
        MatchKind::Grant => "grant",
        MatchKind::Assignment => "assignment",
        MatchKind::Role => "role",
        MatchKind::Group => "group",
        MatchKind::Principal => "principal",
        MatchKind::Tenant => "tenant",
    }
}

fn print_json(out: &mut dyn Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    out.flush()
}

fn header(out: &mut dyn Write, position: u64, time: Timestamp) -> std::io::Result<()> {
    writeln!(out, "as of position {position} ({time})")
}

fn event_text(e: &EventRef) -> String {
    let reason = e.reason.map(|r| format!(", {r}")).unwrap_or_default();
    format!(
        "{} at position {} ({}{reason})",
        e.event_type, e.position, e.time
    )
}

fn made_text(l: &LinkView) -> String {
    match l.time {
        Some(time) => format!("{} at position {} ({time})", l.event_type, l.position),
        None => "defined by the service".to_owned(),
    }
}

fn ended_text(l: &LinkView) -> String {
    match (&l.ended, l.expires) {
        (Some(e), _) => event_text(e),
        (None, Some(until)) => format!("expires {until}"),
        (None, None) => "-".to_owned(),
    }
}

/// Writes rows as columns padded to their widest cell, two spaces apart.
fn table(out: &mut dyn Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn link_rows(rows: &mut Vec<Vec<String>>, first: &str, chain: &[LinkView]) {
    for (i, l) in chain.iter().enumerate() {
        rows.push(vec![
            if i == 0 {
                first.to_owned()
            } else {
                String::new()
            },
            format!("{} {}", l.kind, l.id),
            made_text(l),
            ended_text(l),
        ]);
    }
}

fn print_who_can(out: &mut dyn Write, r: &WhoCanReport) -> std::io::Result<()> {
    header(out, r.position, r.time)?;
    writeln!(
        out,
        "who can {} on {} in tenant {}",
        r.permission, r.resource, r.tenant
    )?;
    if let Some(s) = &r.tenant_suspended {
        writeln!(out, "the tenant was suspended: {}", event_text(s))?;
    }
    writeln!(out)?;
    if r.principals.is_empty() {
        writeln!(out, "no principal of the tenant could")?;
    } else {
        let mut rows = vec![vec![
            "PRINCIPAL".to_owned(),
            "LINK".to_owned(),
            "MADE BY".to_owned(),
            "ENDED LATER BY".to_owned(),
        ]];
        for h in &r.principals {
            link_rows(&mut rows, &h.principal, &h.chain);
            for e in [&h.principal_ended, &h.tenant_ended].into_iter().flatten() {
                rows.push(vec![
                    String::new(),
                    if e.event_type.starts_with("tenant.") {
                        format!("tenant {}", r.tenant)
                    } else {
                        format!("principal {}", h.principal)
                    },
                    "-".to_owned(),
                    event_text(e),
                ]);
            }
        }
        table(out, &rows)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "platform administrators (may do everything in every tenant): {}",
        r.platform_admins.len()
    )?;
    if !r.platform_admins.is_empty() {
        let mut rows = vec![vec![
            "PRINCIPAL".to_owned(),
            "ACTIVE SINCE".to_owned(),
            "ENDED LATER BY".to_owned(),
        ]];
        for a in &r.platform_admins {
            rows.push(vec![
                a.principal.clone(),
                event_text(&a.active),
                a.ended.as_ref().map_or("-".to_owned(), event_text),
            ]);
        }
        table(out, &rows)?;
    }
    out.flush()
}

fn print_can(out: &mut dyn Write, r: &CanReport) -> std::io::Result<()> {
    header(out, r.position, r.time)?;
    let verdict = match r.decision {
        Verdict::Allow => "allowed",
        Verdict::Deny => "denied",
    };
    writeln!(
        out,
        "{verdict}: {} {} on {} in tenant {}",
        r.principal, r.permission, r.resource, r.tenant
    )?;
    writeln!(out, "reason: {}", r.reason)?;
    if !r.chain.is_empty() {
        writeln!(out)?;
        let mut rows = vec![vec![
            "LINK".to_owned(),
            "MADE BY".to_owned(),
            "ENDED LATER BY".to_owned(),
        ]];
        for l in &r.chain {
            rows.push(vec![
                format!("{} {}", l.kind, l.id),
                made_text(l),
                ended_text(l),
            ]);
        }
        table(out, &rows)?;
    }
    for (what, e) in [
        ("principal", &r.principal_ended),
        ("tenant", &r.tenant_ended),
    ] {
        if let Some(e) = e {
            writeln!(
                out,
                "later, the {what} was taken out of service: {}",
                event_text(e)
            )?;
        }
    }
    out.flush()
}

fn access_text(a: &Access) -> String {
    let mut s = format!("{} {}", a.effect, a.permission);
    match &a.on {
        Some(on) => s.push_str(&format!(" on {on}")),
        None => s.push_str(" on the tenant"),
    }
    if let Some(w) = &a.within {
        s.push_str(&format!(" within {w}"));
    }
    s
}

fn print_diff(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
    header(out, r.to.position, r.to.time)?;
    writeln!(
        out,
        "compared with position {} ({})",
        r.from.position, r.from.time
    )?;
    writeln!(out)?;
    if r.principals.is_empty() {
        writeln!(out, "no access changed")?;
        return out.flush();
    }
    let mut rows = vec![vec![
        "TENANT".to_owned(),
        "PRINCIPAL".to_owned(),
        "CHANGE".to_owned(),
        "ACCESS".to_owned(),
        "GRANT".to_owned(),
        "BECAUSE".to_owned(),
    ]];
    for p in &r.principals {
        for (word, changes) in [
            ("gained", &p.gained),
            ("lost", &p.lost),
            ("expired", &p.expired),
        ] {
            for c in changes {
                let because = match (&c.event, c.expired_at) {
                    (Some(e), _) => event_text(e),
                    (None, Some(at)) => format!("its window closed at {at}"),
                    (None, None) if word == "gained" => "its window opened".to_owned(),
                    (None, None) => "-".to_owned(),
                };
                rows.push(vec![
                    p.tenant.clone(),
                    p.principal.clone(),
                    word.to_owned(),
                    access_text(&c.access),
                    c.grant.clone(),
                    because,
                ]);
            }
        }
    }
    table(out, &rows)?;
    out.flush()
}
