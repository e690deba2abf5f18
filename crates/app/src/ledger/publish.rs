//! Checkpoint publishing: every N events or M seconds (see [`super::LedgerOptions`]), a checkpoint
//! of the tree as applied is signed and appended as `ledger.checkpointed`, where the relay also
//! publishes its note on NATS for witnesses.
//!
//! A checkpoint is due only when the log grew by something other than the ledger stream's own
//! events, so an idle log does not checkpoint its own checkpoints forever. The time cadence counts
//! from the last checkpoint's time (before the first one, from the server's start), on the
//! injected clock. A server never appends at start: the first look is at the first new event or
//! after the first tick. The append expects the stream's exact version, so when two servers race
//! for the same interval one appends and the other drops its attempt.

use custodian_domain::Actor;
use custodian_domain::checkpoint::Checkpoint;
use custodian_domain::ledger::{self, LedgerCommand, LedgerError, LedgerState, NewKey};
use custodian_store::{ExpectedVersion, StoreError};
use tokio_util::sync::CancellationToken;

use super::{Published, ledger_stream, sign};
use crate::App;
use crate::commands::{self, Context};
use crate::error::AppError;

/// How long the publisher waits at most between two looks at the clock.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes a checkpoint of the tree as applied if one is due (or, with `force`, whenever the
/// log grew since the last one). Answers what it appended, or `None` when nothing was due or
/// another server appended first.
pub async fn publish(app: &App, force: bool) -> Result<Option<Published>, AppError> {
    let ledger = &app.ledger;
    let _one_at_a_time = ledger.publishing.lock().await;
    let size = ledger.tree.size();
    if size == 0 {
        return Ok(None);
    }
    let stream = ledger_stream()?;
    let (state, version) = commands::load(
        app.store.as_ref(),
        None,
        &stream,
        LedgerState::default(),
        ledger::evolve,
    )
    .await?;
    let last_size = state.last.as_ref().map_or(0, |l| l.tree_size);
    if size <= last_size {
        return Ok(None);
    }
    let grown = ledger.tree.grown_since(last_size);
    if grown == 0 {
        return Ok(None);
    }
    let now = app.now();
    if !force {
        let options = &ledger.options;
        let by_events = options.checkpoint_events > 0 && grown >= options.checkpoint_events;
        let since = state.last.as_ref().map_or(ledger.started, |l| l.time);
        let by_time = !options.checkpoint_interval.is_zero()
            && since.until(&now) >= options.checkpoint_interval;
        if !(by_events || by_time) {
            return Ok(None);
        }
    }
    let (signer, issue_key) = match &state.key {
        Some(key) => (ledger.keys.signer(&key.key_id).await?, None),
        None => {
            let signer = ledger.keys.generate(&ledger.options.origin, now).await?;
            let key = NewKey {
                key_name: signer.name().to_owned(),
                verifier_key: signer.verifier_key(),
            };
            (signer, Some(key))
        }
    };
    let note = sign(
        &signer,
        &Checkpoint {
            origin: ledger.options.origin.clone(),
            size,
            root: ledger.tree.root(size).map_err(|e| {
                AppError::internal(format!("the tree cannot give its own root: {e}"))
            })?,
            time: Some(now),
        },
    )?;
    let events = match ledger::decide(
        &state,
        LedgerCommand::Checkpoint {
            note: note.clone(),
            issue_key,
        },
    ) {
        Ok(events) => events,
        Err(LedgerError::NotNewer { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let ctx = Context {
        actor: Actor::system(),
        now,
        correlation_id: None,
    };
    let new = events.iter().map(|e| ctx.event(e)).collect();
    match app
        .store
        .append(&stream, ExpectedVersion::Exact(version), new)
        .await
    {
        Ok(outcome) => {
            tracing::info!(
                tree_size = size,
                position = outcome.last_position,
                "published a checkpoint"
            );
            Ok(Some(Published {
                position: outcome.last_position,
                tree_size: size,
                key_id: hex::encode(signer.key_id()),
                note,
            }))
        }
        Err(StoreError::WrongExpectedVersion { .. }) => {
            tracing::debug!(
                tree_size = size,
                "another server published a checkpoint first"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Spawns the publisher of `app`, if its options publish on a cadence: it looks whether a
/// checkpoint is due at every new commit and at least once a second, and stops with `shutdown`.
pub(crate) fn spawn(app: App, shutdown: CancellationToken) {
    if !app.ledger.options.publishes() {
        return;
    }
    tokio::spawn(async move {
        let mut head = app.store.watch_head();
        head.mark_unchanged();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = head.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Look at the tree once it has the commit.
                    let wanted = *head.borrow_and_update();
                    if app.ledger.tree.wait_for(wanted).await.is_err() {
                        continue;
                    }
                }
                () = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = publish(&app, false).await {
                tracing::warn!(error = %e, "cannot publish a checkpoint; trying again later");
            }
        }
    });
}
