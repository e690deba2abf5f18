//! A view applied a page at a time (`Projection::apply_batch`) holds exactly the rows of the same
//! view applied one event at a time (`Projection::apply`), on random histories cut into random
//! pages, for every view that has its own batch apply.

use std::sync::Arc;

use async_trait::async_trait;
use custodian_domain::key::{KeyEvent, RateLimit, UsageLimit};
use custodian_domain::policy::{Permission, Scope};
use custodian_domain::session::{self, RevokeReason, Session, SessionCommand};
use custodian_domain::tenant::{self, Plan, Tenant, TenantCommand};
use custodian_domain::user::LoginMethod;
use custodian_domain::{DomainEvent, EventRecord, NewEvent, Timestamp, secret::TokenHash};
use custodian_projections::audit::AuditView;
use custodian_projections::keys::KeysView;
use custodian_projections::sessions::SessionsView;
use custodian_projections::tenants::TenantsView;
use custodian_projections::{ApplyError, Projection, Tables, ViewBuild, ViewDb};
use custodian_store::{EventStore, ExpectedVersion};
use custodian_testkit::sample::decided;
use custodian_testkit::{Ledger, stream};
use proptest::prelude::*;
use sqlx::{AnyConnection, Row};

use crate::support::Views as _;

/// The same view under another name, applied one event at a time (the trait's default batch).
struct PerEvent {
    name: &'static str,
    view: Arc<dyn Projection>,
}

impl PerEvent {
    fn of(view: Arc<dyn Projection>) -> Self {
        Self {
            name: Box::leak(format!("{}_per_event", view.name()).into_boxed_str()),
            view,
        }
    }
}

#[async_trait]
impl Projection for PerEvent {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        self.view.version()
    }
    fn tables(&self) -> &'static [&'static str] {
        self.view.tables()
    }
    fn create(&self, tables: &Tables) -> Vec<String> {
        self.view.create(tables)
    }
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        tables: &Tables,
        event: &EventRecord,
    ) -> Result<(), ApplyError> {
        self.view.apply(conn, tables, event).await
    }
}

/// One step of a history: a tenant command or a session command, on one of a few streams.
#[derive(Debug, Clone)]
enum Step {
    Tenant(usize, TenantCommand),
    /// Start, refresh with the current token, refresh with a spent one, or revoke.
    Session(usize, u8),
    /// Issue, update, rotate, revoke, or record a use in minute `.2`, appended as is.
    Key(usize, u8, u8),
}

fn step() -> impl Strategy<Value = Step> {
    let plan = prop_oneof![Just(Plan::Free), Just(Plan::Team), Just(Plan::Enterprise)];
    let cmd = prop_oneof![
        ("[A-Za-z ]{1,12}", plan.clone()).prop_map(|(name, plan)| TenantCommand::Create {
            name,
            slug: String::new(),
            plan
        }),
        "[A-Za-z ]{1,12}".prop_map(|name| TenantCommand::Rename { name }),
        plan.prop_map(|plan| TenantCommand::ChangePlan { plan }),
        "[a-z ]{1,10}".prop_map(|reason| TenantCommand::Suspend { reason }),
        Just(TenantCommand::Reactivate),
    ];
    prop_oneof![
        (0usize..4, cmd).prop_map(|(t, c)| Step::Tenant(t, c)),
        (0usize..3, 0u8..4).prop_map(|(s, c)| Step::Session(s, c)),
        (0usize..3, 0u8..5, 0u8..60).prop_map(|(k, c, m)| Step::Key(k, c, m)),
    ]
}

fn key_event(c: u8, minute: u8) -> KeyEvent {
    let at = Timestamp::parse(&format!("2026-11-25T12:{minute:02}:00Z")).unwrap();
    match c {
        0 => KeyEvent::Issued {
            owner: "user_a".into(),
            name: "bot".into(),
            scopes: vec![Permission::parse("project:read").unwrap()],
            on: minute
                .is_multiple_of(2)
                .then(|| Scope::ResourceType("project".into())),
            expires_at: minute.is_multiple_of(3).then_some(at),
            ip_allowlist: vec!["10.0.0.0/8".parse().unwrap()],
            ratelimit: None,
            usage_limit: Some(UsageLimit {
                remaining: 10,
                refill: None,
            }),
            hash: TokenHash("ab".repeat(32)),
            preview: "cst_abcd…wxyz".into(),
        },
        1 => KeyEvent::Updated {
            name: minute.is_multiple_of(2).then(|| format!("bot {minute}")),
            ratelimit: minute.is_multiple_of(3).then_some(Some(RateLimit {
                limit: u64::from(minute) + 1,
                window_seconds: 1,
            })),
            usage_limit: minute.is_multiple_of(5).then_some(None),
            ip_allowlist: minute.is_multiple_of(7).then(Vec::new),
        },
        2 => KeyEvent::Rotated {
            hash: TokenHash("cd".repeat(32)),
            preview: format!("cst_{minute:04}…stuv"),
            previous_valid_until: at,
        },
        3 => KeyEvent::Revoked {},
        _ => KeyEvent::Used {
            window_start: at,
            uses: u64::from(minute) + 1,
            cost: 1,
            first_used_at: at,
            last_used_at: at,
            remaining: None,
        },
    }
}

fn token(n: u64) -> TokenHash {
    TokenHash(format!("{n:064x}"))
}

/// Decides and appends every step that the domain accepts.
async fn append_history(store: &Arc<dyn EventStore>, history: Vec<Step>) {
    let at = Timestamp::parse("2026-11-25T12:00:00Z").unwrap();
    let mut tenants: Vec<(Option<Tenant>, u64)> = vec![(None, 0); 4];
    let mut sessions: Vec<(Option<Session>, u64)> = vec![(None, 0); 3];
    let mut tokens = 0u64;
    for step in history {
        match step {
            Step::Tenant(t, cmd) => {
                let (state, version) = &mut tenants[t];
                let cmd = match cmd {
                    TenantCommand::Create { name, plan, .. } => TenantCommand::Create {
                        name,
                        slug: format!("tenant-{t}"),
                        plan,
                    },
                    other => other,
                };
                let Ok(events) = tenant::decide(state.as_ref(), cmd) else {
                    continue;
                };
                append(
                    store,
                    &format!("_system/tenant/tnt_{t}"),
                    *version,
                    &events,
                    at,
                )
                .await;
                for e in &events {
                    *state = tenant::evolve(state.take(), e);
                    *version += 1;
                }
            }
            Step::Key(k, c, minute) => {
                store
                    .append(
                        &stream(&format!("acme/key/key_{k}")),
                        ExpectedVersion::Any,
                        vec![decided(&key_event(c, minute), at)],
                    )
                    .await
                    .unwrap();
            }
            Step::Session(s, c) => {
                let (state, version) = &mut sessions[s];
                tokens += 1;
                let cmd = match (c, state.as_ref()) {
                    (0, _) | (_, None) => SessionCommand::Start {
                        user_id: format!("user_{s}"),
                        refresh: token(tokens),
                        method: LoginMethod::Password,
                        expires_at: at.plus(time::Duration::hours(1)),
                        ip: None,
                        user_agent: None,
                    },
                    (1, Some(st)) => SessionCommand::Refresh {
                        generation: st.generation,
                        presented: st.current.clone(),
                        next: token(tokens),
                        ip: None,
                        now: at,
                    },
                    (2, Some(st)) => SessionCommand::Refresh {
                        generation: 0,
                        presented: st.spent.first().cloned().unwrap_or_else(|| token(0)),
                        next: token(tokens),
                        ip: None,
                        now: at,
                    },
                    (_, Some(_)) => SessionCommand::Revoke {
                        reason: RevokeReason::Logout,
                    },
                };
                let Ok(events) = session::decide(state.as_ref(), cmd) else {
                    continue;
                };
                append(
                    store,
                    &format!("acme/session/sess_{s}"),
                    *version,
                    &events,
                    at,
                )
                .await;
                for e in &events {
                    *state = session::evolve(state.take(), e);
                    *version += 1;
                }
            }
        }
    }
}

async fn append(
    store: &Arc<dyn EventStore>,
    name: &str,
    version: u64,
    events: &[impl DomainEvent],
    at: Timestamp,
) {
    if events.is_empty() {
        return;
    }
    let new: Vec<NewEvent> = events.iter().map(|e| decided(e, at)).collect();
    store
        .append(&stream(name), ExpectedVersion::Exact(version), new)
        .await
        .unwrap();
}

/// Every row of `table`, each value as text, sorted.
async fn dump(views: &ViewDb, table: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = sqlx::query(&format!("SELECT * FROM {table}"))
        .fetch_all(views.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        format!("{v:?}")
                    } else if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        format!("{v:?}")
                    } else {
                        format!("{:?}", r.try_get::<Option<f64>, _>(i).unwrap())
                    }
                })
                .collect()
        })
        .collect();
    rows.sort();
    rows
}

async fn check(ledger: Ledger, history: Vec<Step>, pages: Vec<usize>) {
    let store = ledger.open().await;
    append_history(&store, history).await;
    let records = ledger.records().await;
    let views = ledger.views().await;
    let batched: Vec<Arc<dyn Projection>> = vec![
        Arc::new(TenantsView),
        Arc::new(SessionsView),
        Arc::new(KeysView),
        Arc::new(AuditView),
    ];
    let mut all = batched.clone();
    all.extend(
        batched
            .iter()
            .map(|v| Arc::new(PerEvent::of(v.clone())) as Arc<dyn Projection>),
    );
    let mut build = ViewBuild::start(views.clone(), all).await.unwrap();
    let mut rest = &records[..];
    for size in pages.into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (page, tail) = rest.split_at(size.min(rest.len()));
        build.apply(page).await.unwrap();
        rest = tail;
    }
    let built = build.finish().await.unwrap();
    for view in &batched {
        let of = |name: &str| {
            built
                .iter()
                .find(|b| b.name == name)
                .unwrap()
                .generation
                .clone()
        };
        let (batch, single) = (of(view.name()), of(&format!("{}_per_event", view.name())));
        for table in view.tables() {
            let expected = dump(&views, &single.name(table)).await;
            assert_eq!(
                dump(&views, &batch.name(table)).await,
                expected,
                "the {} view's {table} table, applied by page and by event",
                view.name()
            );
        }
    }
    store.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn sqlite_batch_applied_views_equal_per_event_views(
        history in proptest::collection::vec(step(), 0..60),
        pages in proptest::collection::vec(1usize..25, 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(Ledger::sqlite(), history, pages));
    }

    #[test]
    fn postgres_batch_applied_views_equal_per_event_views(
        history in proptest::collection::vec(step(), 0..60),
        pages in proptest::collection::vec(1usize..25, 1..6),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            if let Some(ledger) = Ledger::postgres().await {
                check(ledger, history, pages).await;
            }
        });
    }
}
