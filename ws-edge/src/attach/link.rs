//! One attachment's task: holds its `Attach` stream for as long as the edge runs.
//!
//! While the stream is up it selects over the registry's wish to ask for
//! something (sent when the request channel has room) and the next batch from
//! core-svc (dispatched at once). When the stream breaks, or its replica does not
//! answer, the link attaches on the next replica ([`Rotation`]: at once within a
//! round of the replicas, jittered backoff between rounds) and watches every topic
//! again from its cursor, so the sessions see nothing of it. Until a whole round
//! of the replicas failed the attachment counts as connecting (new apps wait for
//! it rather than being refused); from then on it is down until attached. A break
//! that retrying cannot fix (the service token refused), or an outage longer than
//! the limit, ends every session's inbox: the apps are closed (1011, 1012) and
//! reconnect.

use std::sync::Arc;
use std::time::Duration;

use logi::pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;

use super::{CONNECTING, DOWN, Shard, UP};
use crate::close::{self, StreamEnd};
use crate::inbox::Ended;
use crate::upstream::{Backoff, FeedEnd, Rotation, Upstream};

/// Requests in flight to the stream; more wait in the registry, coalesced.
const REQUESTS: usize = 4;

pub struct Link {
    pub index: usize,
    pub shard: Arc<Shard>,
    pub upstream: Upstream,
    /// This attachment's own connection to each replica.
    pub channels: Arc<[Channel]>,
    pub outage_limit: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The current outage, from its first failure.
struct Outage {
    since: Instant,
    /// The sessions were told (their inboxes ended).
    told: bool,
    /// A whole round of the replicas failed: down until attached again.
    waited: bool,
}

impl Link {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut rotation = Rotation::new(self.index, self.upstream.replicas());
        let mut outage: Option<Outage> = None;
        loop {
            let replica = rotation.replica();
            let (status, was_up) = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = self.attached(replica) => ended,
            };
            self.metrics.attachment_breaks.inc();
            if was_up {
                rotation.up();
                outage = None;
            }
            let current = outage.get_or_insert_with(|| Outage {
                since: Instant::now(),
                told: false,
                waited: false,
            });
            let mut wait = rotation.failed();
            let (left, next) = (
                self.upstream.url(replica),
                self.upstream.url(rotation.replica()),
            );
            match close::on_stream_end(&status) {
                StreamEnd::Close(_) => {
                    tracing::error!(attachment = self.index, replica = left, code = ?status.code(), message = status.message(), "core-svc refused the attachment");
                    if !current.told {
                        current.told = true;
                        let why = Ended::Feed(FeedEnd::Refused(status));
                        self.shard.registry().end_all(&why);
                    }
                    wait = Backoff::MAX;
                }
                StreamEnd::Resubscribe => {
                    let remaining = self.outage_limit.saturating_sub(current.since.elapsed());
                    if remaining.is_zero() && !current.told {
                        current.told = true;
                        tracing::warn!(attachment = self.index, replica = left, code = ?status.code(), message = status.message(), "core-svc unreachable past the outage limit: closing its apps");
                        let why = Ended::Feed(FeedEnd::Outage(status));
                        self.shard.registry().end_all(&why);
                    } else if was_up {
                        tracing::info!(attachment = self.index, replica = left, next, code = ?status.code(), message = status.message(), "attachment left its replica; attaching to the next");
                    } else {
                        tracing::debug!(attachment = self.index, replica = left, next, code = ?status.code(), message = status.message(), "could not attach; trying the next replica");
                    }
                    // Woken at the limit, so the apps hear of it then, not later.
                    if !current.told {
                        wait = wait.min(remaining.max(Duration::from_millis(1)));
                    }
                }
            }
            // Until a whole round failed there is another replica to try at once:
            // new apps wait for it, as at start-up, rather than being refused.
            current.waited |= !wait.is_zero();
            let down = current.waited || current.told;
            self.shard.set_status(if down { DOWN } else { CONNECTING });
            if !wait.is_zero() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Attaches on `replica` and serves the stream until it breaks: the status it
    /// broke with, and whether it was up at all.
    async fn attached(&self, replica: usize) -> (Status, bool) {
        let (tx, rx) = mpsc::channel::<pb::AttachRequest>(REQUESTS);
        let mut stream = match self
            .upstream
            .attach(self.channels[replica].clone(), ReceiverStream::new(rx))
            .await
        {
            Ok(stream) => stream,
            Err(status) => return (status, false),
        };
        self.shard.registry().reattached();
        self.shard.set_status(UP);
        tracing::info!(
            attachment = self.index,
            replica = self.upstream.url(replica),
            "attached"
        );
        let mut pending = true;
        loop {
            tokio::select! {
                biased;
                () = self.shard.wanted.notified(), if !pending => pending = true,
                permit = tx.reserve(), if pending => {
                    let Ok(permit) = permit else {
                        return (Status::unavailable("the attachment's requests were closed"), true);
                    };
                    let mut registry = self.shard.registry();
                    if let Some(request) = registry.take_request() {
                        permit.send(request);
                    }
                    pending = registry.has_requests();
                }
                message = stream.message() => match message {
                    Ok(Some(batch)) => {
                        if self.shard.registry().dispatch(batch.events) {
                            pending = true;
                        }
                    }
                    Ok(None) => return (Status::unavailable("core-svc ended the attachment"), true),
                    Err(status) => return (status, true),
                },
            }
        }
    }
}
