//! The reads a sequenced hub needs from the store: the head of each topic that
//! gains its first subscriber, and the events missing where a topic's sequence
//! has a gap that outlasted [`super::GAP_GRACE`] (a commit whose announcement
//! was lost or is very late). Events read here go through the same ordering as
//! the rest, so one that arrives twice goes out once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::store::Store;

/// Topic heads read in one query at most.
const HEADS_PER_READ: usize = 512;
/// Events read per gap and round.
const FILL_PAGE: usize = 512;
/// Gaps read at once.
const FILLS_AT_ONCE: usize = 8;
/// The pause after a failed read before the next round.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Serves `hub`'s reads from `store` until `shutdown`.
pub async fn run(hub: Arc<Hub>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        let work = hub.work(Instant::now());
        if work.heads.is_empty() && work.gaps.is_empty() {
            let due = async {
                match work.next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = hub.work_added() => {}
                () = due => {}
            }
            continue;
        }
        let mut failed = false;
        for topics in work.heads.chunks(HEADS_PER_READ) {
            match store.topic_states(topics.to_vec()).await {
                Ok(states) => {
                    for (topic, state) in topics.iter().zip(states) {
                        hub.head_read(topic, Some(state.last_seq));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, topics = topics.len(), "cannot read topic heads; retrying");
                    failed = true;
                    for topic in topics {
                        hub.head_read(topic, None);
                    }
                }
            }
        }
        let mut reads = futures::stream::iter(work.gaps)
            .map(|(topic, after)| {
                let store = store.clone();
                async move {
                    let read = store.events_after(topic.clone(), after, FILL_PAGE).await;
                    (topic, after, read)
                }
            })
            .buffer_unordered(FILLS_AT_ONCE);
        while let Some((topic, after, read)) = reads.next().await {
            match read {
                Ok(events) => {
                    tracing::debug!(
                        topic,
                        after,
                        events = events.len(),
                        "gap filled from the store"
                    );
                    hub.gap_read(&topic, after, Some(events));
                }
                Err(e) => {
                    tracing::warn!(topic, error = %e, "cannot read missing events; retrying");
                    failed = true;
                    hub.gap_read(&topic, after, None);
                }
            }
        }
        if failed {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }
}
