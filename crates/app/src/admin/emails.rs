//! Per-tenant email reservations: at most one user of a tenant holds an address.
//!
//! A reservation lives in the stream `{tenant}/email/{blind index}`. A user's creation claims the
//! address before the user's stream exists; a change of address claims the new one and releases
//! the old one; an erasure releases it. A claim left by a user who was erased, or by a creation
//! that failed half-way, is taken over by the next claimant.

use custodian_domain::email::{self, EmailCommand, EmailEvent, Reservation};
use custodian_domain::user::UserStatus;
use custodian_domain::{DomainEvent, StreamName};

use crate::commands::{self, Context};
use crate::error::AppError;
use crate::users::load_user;
use crate::{App, stream};

/// How long a reservation claimed by a user whose stream does not exist is left to its claimant:
/// a creation appends the user's stream right after claiming, so a claim older than this without
/// a user is the remains of a creation that failed half-way, and may be taken over.
const ABANDONED_CLAIM_SECONDS: i64 = 30;

/// The answer for an address another user of the tenant holds.
pub fn taken() -> AppError {
    AppError::conflict("the email address is already in use in this tenant")
}

/// Claims the email with blind index `index` in `tenant` for `user_id`; returns the position
/// written (0 when `user_id` held it already). A claim held by a user who was erased, or by one
/// whose stream never came to exist (a creation that failed half-way), is taken over. Another
/// holder is a `Conflict`.
pub async fn claim(
    app: &App,
    ctx: &Context,
    tenant: &str,
    index: &str,
    user_id: &str,
) -> Result<u64, AppError> {
    let s = stream(tenant, "email", index)?;
    let records = commands::read_stream(app.store.as_ref(), &s, 1).await?;
    let mut reservation = Reservation::default();
    for r in &records {
        let event = EmailEvent::decode(r.event_type.as_str(), r.schema, &r.data)
            .map_err(|e| AppError::internal(format!("corrupt reservation {s}: {e}")))?;
        reservation = email::evolve(reservation, &event);
    }
    let mut gone = None;
    if let Some(holder) = reservation.holder.as_deref().filter(|h| *h != user_id) {
        let claimed_at = records.last().map(|r| r.occurred_at);
        let abandoned = match load_user(app, tenant, holder).await {
            Ok(Some(u)) => u.status == UserStatus::Deleted,
            Ok(None) => claimed_at
                .is_some_and(|at| at.until(&ctx.now).whole_seconds() > ABANDONED_CLAIM_SECONDS),
            Err(_) => false,
        };
        if abandoned {
            gone = Some(holder.to_owned());
        }
    }
    run_reservation(app, ctx, &s, |r| EmailCommand::Claim {
        user_id: user_id.to_owned(),
        holder_gone: gone.is_some() && r.holder == gone,
    })
    .await
}

/// Releases the email with blind index `index` in `tenant` if `user_id` holds it; returns the
/// position written (0 when `user_id` did not hold it).
pub async fn release(
    app: &App,
    ctx: &Context,
    tenant: &str,
    index: &str,
    user_id: &str,
) -> Result<u64, AppError> {
    let s = stream(tenant, "email", index)?;
    run_reservation(app, ctx, &s, |_| EmailCommand::Release {
        user_id: user_id.to_owned(),
    })
    .await
}

/// Runs a reservation command, built from the reservation's current state, on stream `s`;
/// returns the position written (0 when nothing changed). Any refusal means another user holds
/// the address.
async fn run_reservation(
    app: &App,
    ctx: &Context,
    s: &StreamName,
    command: impl Fn(&Reservation) -> EmailCommand,
) -> Result<u64, AppError> {
    let done = commands::execute(
        &app.store,
        Some(&app.states),
        s,
        ctx,
        Reservation::default(),
        email::evolve,
        |r: &Reservation| email::decide(r, command(r)),
    )
    .await
    .map_err(|e| AppError::from_failed(e, |_| taken()))?;
    Ok(done.position.unwrap_or_default())
}

/// Undoes a claim after the command it was for failed. A failure here is only logged: the first
/// failure is what the caller hears about.
pub async fn abandon(app: &App, ctx: &Context, tenant: &str, index: &str, user_id: &str) {
    if let Err(e) = release(app, ctx, tenant, index, user_id).await {
        tracing::warn!(tenant, user_id, error = %e, "cannot release an email claim");
    }
}
