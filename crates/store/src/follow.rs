//! Following the log: catch up from a position, then wait for new commits, without polling.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use custodian_domain::EventRecord;
use futures::Stream;
use tokio::sync::watch;

use crate::{EventStore, StoreError};

const PAGE: usize = 512;
/// A safety net for a missed notification (a dropped PostgreSQL LISTEN connection): an idle
/// follower re-reads this often. Every commit this process learns of wakes it at once.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

struct Follower {
    store: Arc<dyn EventStore>,
    next: u64,
    buffer: VecDeque<EventRecord>,
    head: watch::Receiver<u64>,
}

/// Every event from `from_position` on, in position order, each exactly once: first those already
/// committed, then each new one as it commits. The stream never ends while the store is open; a read
/// error is yielded and the next poll retries from the same position.
pub fn follow(
    store: Arc<dyn EventStore>,
    from_position: u64,
) -> impl Stream<Item = Result<EventRecord, StoreError>> + Send + 'static {
    follow_rechecking(store, from_position, IDLE_RECHECK)
}

/// [`follow`], with an idle follower re-reading the log every `idle_recheck` instead of every
/// 5 s. Only the store's head watch wakes it sooner; a test that sets this very long shows that
/// commits reach the follower through the watch alone.
pub fn follow_rechecking(
    store: Arc<dyn EventStore>,
    from_position: u64,
    idle_recheck: Duration,
) -> impl Stream<Item = Result<EventRecord, StoreError>> + Send + 'static {
    let state = Follower {
        head: store.watch_head(),
        store,
        next: from_position.max(1),
        buffer: VecDeque::new(),
    };
    futures::stream::unfold(state, move |mut s| async move {
        loop {
            if let Some(record) = s.buffer.pop_front() {
                s.next = record.position + 1;
                return Some((Ok(record), s));
            }
            // Mark the current head as seen before reading, so a commit that lands after the read
            // still wakes us.
            s.head.borrow_and_update();
            match s.store.read_all(s.next, PAGE).await {
                Ok(page) if !page.is_empty() => s.buffer.extend(page),
                Ok(_) => {
                    if let Ok(Err(_)) = tokio::time::timeout(idle_recheck, s.head.changed()).await {
                        // The store was dropped: nothing more will ever come.
                        return None;
                    }
                }
                Err(e) => return Some((Err(e), s)),
            }
        }
    })
}
