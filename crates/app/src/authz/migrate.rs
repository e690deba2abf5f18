//! Carrying the earlier model's `tenant_admin` over to the policy, by events.
//!
//! Ledgers written before the policy existed name `tenant_admin` in their users' `user.created`
//! and `user.invitation_accepted` events. Those events stay as they are (history is never
//! rewritten); at start-up, each such user who has never had the carried-over assignment gets an
//! `assignment.created` of the built-in `admin` role on the whole tenant, with
//! `migrated_from: "tenant_admin"` and the actor `system`. The check is made again inside the
//! command, so servers starting together on one database append it once. An assignment that was
//! carried over and later ended is not made again.

use custodian_domain::policy::{PolicyCommand, Window};
use custodian_domain::user::ROLE_TENANT_ADMIN;
use custodian_domain::{Actor, id::type_id};
use uuid::Uuid;

use super::run;
use crate::App;
use crate::auth::index::SYSTEM_TENANT;
use crate::commands::Context;
use crate::error::AppError;

/// The role `tenant_admin` becomes.
pub const ADMIN: &str = "admin";

/// Appends the missing carried-over assignments; answers how many it appended.
pub async fn tenant_admins(app: &App) -> Result<usize, AppError> {
    app.security
        .index
        .catch_up()
        .await
        .map_err(|_| AppError::unavailable("the authentication index is catching up", 1))?;
    app.policy.catch_up().await?;
    let mut appended = 0;
    for (tenant, user_id) in app.security.index.users_with_role(ROLE_TENANT_ADMIN) {
        if tenant == SYSTEM_TENANT {
            continue;
        }
        let carried = |p: &custodian_domain::policy::Policy| {
            p.assignments().any(|a| {
                a.principal == user_id && a.migrated_from.as_deref() == Some(ROLE_TENANT_ADMIN)
            })
        };
        if app.policy.read(&tenant, carried)? {
            continue;
        }
        let ctx = Context {
            actor: Actor::system(),
            now: app.now(),
            correlation_id: None,
        };
        let id = type_id("asg", Uuid::now_v7());
        let done = run(app, &tenant, &ctx, |p| {
            if carried(p) {
                return Err(AppError::conflict("carried over already"));
            }
            Ok(PolicyCommand::Assign {
                id: id.clone(),
                principal: user_id.clone(),
                role: ADMIN.to_owned(),
                on: None,
                window: Window::default(),
                assigned_by: "system".to_owned(),
                migrated_from: Some(ROLE_TENANT_ADMIN.to_owned()),
            })
        })
        .await;
        match done {
            Ok(_) => appended += 1,
            Err(AppError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if appended > 0 {
        tracing::info!(
            appended,
            "carried tenant_admin over to assignments of the admin role"
        );
    }
    Ok(appended)
}
