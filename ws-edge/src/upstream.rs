//! The core-svc side of the edge.
//!
//! `--core-url` names one core-svc or several replicas on one database. For each
//! replica [`Upstream`] holds its URL and one lazily connected gRPC channel (HTTP/2
//! multiplexes every recover-mode app's stream over it), and for all of them the
//! edge's service credential: with an HS256 secret it mints a `service` token and
//! renews it at half its life; a configured token is sent as it is, and one read
//! from a file is read again when the file changes.
//!
//! [`Feed`] is one connection's event stream: it subscribes on the replica new
//! streams go to (the snapshot comes as the stream's first events), and when the
//! stream breaks it subscribes again on the next replica from the last cursor it
//! handed out ([`Rotation`]: round robin, jittered backoff after each full round),
//! until the outage limit. The replica new streams go to stays where it is until
//! one fails there, then moves to the next: every replica serves the same
//! database, so nothing is gained by spreading these few streams, and an app's
//! call meets a dead replica only if it is the first to find it dead. The session
//! polls the feed in its own task. The attachments' and location relays' streams
//! are opened here too, each attachment on a connection of its own to each
//! replica it uses ([`Upstream::connections`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::Stream;
use futures::stream::{FuturesUnordered, StreamExt};
use logi::auth::{Role, Signer};
use logi::pb::location_service_client::LocationServiceClient;
use logi::pb::{self, event_service_client::EventServiceClient};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status, Streaming};

use crate::close::{self, StreamEnd};

/// The largest message of an event stream the edge takes: a batch with the
/// fleet's snapshot (up to core-svc's 20,000 drivers, a few MB) must fit, with
/// room for the batch's other events (tonic's default is 4 MiB).
const MAX_EVENTS_MESSAGE: usize = 16 * 1024 * 1024;
/// Lifetime of a minted service token; core-svc does not end `service` streams when
/// it expires, so only new calls need a fresh one.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How often a token file is looked at for a change.
const TOKEN_FILE_CHECK: Duration = Duration::from_secs(5);
/// Cancelled streams remembered on the connection to core-svc (see `Upstream::new`).
const MAX_REMEMBERED_RESETS: usize = 100_000;
/// Deadline of unary calls to core-svc.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub enum Credential {
    /// Mint a `service` token, renewed at half its life.
    Mint(Signer),
    /// Send this token.
    Static(String),
    /// Send the token in this file, read again when the file changes (so an operator
    /// or a secret manager can rotate it without restarting the edge).
    File(PathBuf),
}

/// An `authorization` value, when to look at it again, and for a token file the
/// modification time it was read at.
type Header = (MetadataValue<Ascii>, Option<Instant>, Option<SystemTime>);

/// A token file's contents and modification time.
///
/// # Errors
/// When it cannot be read or holds no token.
pub fn read_token_file(path: &std::path::Path) -> Result<(String, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("LOGI_CORE_TOKEN_FILE {}: {e}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!(
            "LOGI_CORE_TOKEN_FILE {} holds no token",
            path.display()
        ));
    }
    Ok((token.to_owned(), modified))
}

fn header_value(token: &str) -> Result<MetadataValue<Ascii>, Status> {
    format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::internal("the service token is not a valid header value"))
}

/// Every `--core-url` entry checked and made an endpoint, in the order given.
///
/// # Errors
/// One line naming the first bad entry: empty, not `http://` or `https://`, not a
/// URI, or given twice.
pub fn endpoints(urls: &[String]) -> Result<Vec<(String, Endpoint)>, String> {
    let mut out: Vec<(String, Endpoint)> = Vec::with_capacity(urls.len());
    if urls.is_empty() {
        return Err("LOGI_CORE_URL names no core-svc".into());
    }
    for url in urls {
        let url = url.trim();
        if url.is_empty() {
            return Err("LOGI_CORE_URL has an empty entry: separate URLs with one comma".into());
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "LOGI_CORE_URL {url:?} must start with http:// or https://"
            ));
        }
        if out.iter().any(|(seen, _)| seen == url) {
            return Err(format!("LOGI_CORE_URL names {url:?} twice"));
        }
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("LOGI_CORE_URL {url:?}: {e}"))?;
        out.push((url.to_owned(), tuned(endpoint)));
    }
    Ok(out)
}

/// The connection settings of every connection to core-svc.
fn tuned(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        // Recover-mode apps' streams share a replica's connection (each attachment
        // has one of its own): a generous connection window keeps a few briefly
        // stalled streams from holding up the others, a modest stream window
        // bounds what each may hold.
        .initial_connection_window_size(32 * 1024 * 1024)
        .initial_stream_window_size(1024 * 1024)
        // Each app that leaves cancels its stream. h2 remembers only a few
        // cancelled streams (so frames still in flight on them are ignored); when
        // thousands leave at once the rest count as protocol errors, and after 1024
        // of those h2 tears the whole connection down, forcing every session to
        // resubscribe at once. This connection carries a stream per app in recover
        // mode, so it remembers as many cancellations as an edge holds apps.
        .http2_max_concurrent_reset_streams(MAX_REMEMBERED_RESETS)
        .http2_max_local_error_reset_streams(MAX_REMEMBERED_RESETS)
}

/// A handle to core-svc, one pointer wide: every session and its feed hold one.
#[derive(Clone)]
pub struct Upstream(Arc<Inner>);

/// One core-svc replica.
struct Replica {
    url: String,
    /// Where it is, for the attachments' connections of their own.
    endpoint: Endpoint,
    /// The connection recover-mode apps' streams and health checks share.
    channel: Channel,
}

struct Inner {
    replicas: Box<[Replica]>,
    /// The replica new recover-mode streams go to; moved to the next when one
    /// fails there.
    preferred: AtomicUsize,
    credential: Credential,
    /// The `authorization` value in use, and when a minted one is renewed. Minting
    /// (HMAC, JSON, base64) is not done per call: every GPS ping is one.
    header: Mutex<Option<Header>>,
    outage_limit: Duration,
}

impl Upstream {
    /// # Errors
    /// When an entry of `core_urls` is not a valid URL (see [`endpoints`]).
    pub fn new(
        core_urls: &[String],
        credential: Credential,
        outage_limit: Duration,
    ) -> Result<Self, String> {
        let replicas = endpoints(core_urls)?
            .into_iter()
            .map(|(url, endpoint)| Replica {
                url,
                channel: endpoint.connect_lazy(),
                endpoint,
            })
            .collect();
        Ok(Self(Arc::new(Inner {
            replicas,
            preferred: AtomicUsize::new(0),
            credential,
            header: Mutex::default(),
            outage_limit,
        })))
    }

    /// How many replicas `--core-url` names (at least one).
    pub fn replicas(&self) -> usize {
        self.0.replicas.len()
    }

    /// The URL of `replica`, for log lines.
    pub fn url(&self, replica: usize) -> &str {
        &self.0.replicas[replica].url
    }

    /// The replica a new recover-mode stream goes to first.
    fn preferred(&self) -> usize {
        self.0.preferred.load(Ordering::Relaxed)
    }

    /// A stream failed on `replica`: new ones go to the next, unless another
    /// failure moved them on already.
    fn failed(&self, replica: usize) {
        let next = (replica + 1) % self.replicas();
        let _ =
            self.0
                .preferred
                .compare_exchange(replica, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The `authorization` value: a configured token, a minted one renewed when half
    /// its lifetime has passed, or a token file's, read again when it changed.
    fn header(&self) -> Result<MetadataValue<Ascii>, Status> {
        let mut cached = self.0.header.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((value, check_at, _)) = cached.as_ref()
            && check_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(value.clone());
        }
        let fresh = match &self.0.credential {
            Credential::Mint(signer) => {
                let token = signer
                    .mint("ws-edge", Role::Service, SERVICE_TOKEN_TTL)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let renew_at = Instant::now() + SERVICE_TOKEN_TTL / 2;
                (header_value(&token)?, Some(renew_at), None)
            }
            Credential::Static(token) => (header_value(token)?, None, None),
            Credential::File(path) => {
                let check_at = Some(Instant::now() + TOKEN_FILE_CHECK);
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                match cached.take() {
                    // Unchanged since it was read: look again later.
                    Some((value, _, read_at)) if read_at.is_some() && read_at == modified => {
                        (value, check_at, read_at)
                    }
                    previous => match read_token_file(path) {
                        Ok((token, modified)) => {
                            tracing::info!(path = %path.display(), "read the service token file");
                            (header_value(&token)?, check_at, modified)
                        }
                        // Mid-rotation (emptied, being rewritten): keep the last good one.
                        Err(e) => match previous {
                            Some((value, _, read_at)) => {
                                tracing::warn!(error = %e, "keeping the service token read before");
                                (value, check_at, read_at)
                            }
                            None => return Err(Status::unauthenticated(e)),
                        },
                    },
                }
            }
        };
        let value = fresh.0.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    fn request<T>(&self, body: T) -> Result<Request<T>, Status> {
        let mut req = Request::new(body);
        req.metadata_mut().insert("authorization", self.header()?);
        Ok(req)
    }

    async fn subscribe(
        &self,
        replica: usize,
        topics: &[String],
        resume: &HashMap<String, pb::Cursor>,
    ) -> Result<Streaming<pb::Event>, Status> {
        let req = self.request(pb::SubscribeRequest {
            topics: topics.to_vec(),
            resume: resume.clone(),
            heads: true,
            snapshots: true,
        })?;
        let mut client = EventServiceClient::new(self.0.replicas[replica].channel.clone())
            .max_decoding_message_size(MAX_EVENTS_MESSAGE);
        opened("Subscribe", client.subscribe(req)).await
    }

    /// A connection of its own to each replica (each made when first used), for
    /// an attachment: its streams then do not share a connection's window and
    /// socket with everything else. Indexed like the replicas.
    pub fn connections(&self) -> Arc<[Channel]> {
        self.0
            .replicas
            .iter()
            .map(|r| r.endpoint.connect_lazy())
            .collect()
    }

    /// Opens an `EventService.Attach` stream on `channel`, sending `requests`.
    ///
    /// # Errors
    /// The status core-svc answered, or UNAVAILABLE when it did not in time.
    pub async fn attach(
        &self,
        channel: Channel,
        requests: impl Stream<Item = pb::AttachRequest> + Send + 'static,
    ) -> Result<Streaming<pb::EventBatch>, Status> {
        let req = self.request(requests)?;
        let mut client =
            EventServiceClient::new(channel).max_decoding_message_size(MAX_EVENTS_MESSAGE);
        opened("Attach", client.attach(req)).await
    }

    /// Opens a `LocationService.RelayDriverLocations` stream on `channel`,
    /// sending `batches`.
    ///
    /// # Errors
    /// The status core-svc answered, or UNAVAILABLE when it did not in time.
    pub async fn relay_locations(
        &self,
        channel: Channel,
        batches: impl Stream<Item = pb::LocationBatch> + Send + 'static,
    ) -> Result<Streaming<pb::LocationBatchResult>, Status> {
        let req = self.request(batches)?;
        let mut client = LocationServiceClient::new(channel);
        opened("RelayDriverLocations", client.relay_driver_locations(req)).await
    }

    /// Whether some replica answers its health check SERVING within a second
    /// (all are asked at once).
    pub async fn ready(&self) -> bool {
        let mut checks: FuturesUnordered<_> = self
            .0
            .replicas
            .iter()
            .map(|r| serving(r.channel.clone()))
            .collect();
        while let Some(serving) = checks.next().await {
            if serving {
                return true;
            }
        }
        false
    }
}

/// Whether the core-svc on `channel` answers its health check SERVING within a
/// second.
async fn serving(channel: Channel) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = health.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(r)) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

/// Why a [`Feed`] ended.
#[derive(Debug, Clone)]
pub enum FeedEnd {
    /// core-svc stayed unreachable past the outage limit.
    Outage(Status),
    /// core-svc refused in a way retrying cannot fix.
    Refused(Status),
}

impl FeedEnd {
    pub fn close_code(&self) -> u16 {
        match self {
            FeedEnd::Outage(_) => close::SERVICE_RESTART,
            FeedEnd::Refused(_) => close::INTERNAL,
        }
    }
}

/// One connection's events, across core-svc restarts, failed replicas and broken
/// streams.
///
/// Every topic has a cursor from the start (core-svc begins each topic with a
/// Snapshot, or replays after the app's own cursor), so a resubscription resumes
/// exactly after the last event handed out, on whichever replica: they share the
/// database, and with it the cursors.
pub struct Feed {
    upstream: Upstream,
    topics: Vec<String>,
    cursors: HashMap<String, pb::Cursor>,
    stream: Option<Streaming<pb::Event>>,
    /// Set on the first failure of the current outage; cleared by a subscription.
    down_since: Option<Instant>,
    rotation: Rotation,
}

impl Feed {
    /// A feed of `topics`, resuming those in `cursors` right after them.
    pub fn new(
        upstream: Upstream,
        topics: Vec<String>,
        cursors: HashMap<String, pb::Cursor>,
    ) -> Self {
        let rotation = Rotation::new(upstream.preferred(), upstream.replicas());
        Self {
            upstream,
            topics,
            cursors,
            stream: None,
            down_since: None,
            rotation,
        }
    }

    /// Subscribes for the handshake, on each replica at most once: a failure is
    /// answered at once (HTTP 503) rather than waited out, but a replica that is
    /// down does not fail it while another answers.
    ///
    /// # Errors
    /// The status core-svc answered last.
    pub async fn subscribe_now(&mut self) -> Result<(), Status> {
        let mut tries = self.upstream.replicas();
        loop {
            let replica = self.rotation.replica();
            match self.open().await {
                Ok(stream) => {
                    self.subscribed(stream);
                    return Ok(());
                }
                Err(status) => {
                    tries -= 1;
                    if tries == 0 || close::on_stream_end(&status) != StreamEnd::Resubscribe {
                        return Err(status);
                    }
                    tracing::debug!(replica = self.upstream.url(replica), code = ?status.code(), message = status.message(), "core-svc did not take the subscription; trying the next replica");
                    self.upstream.failed(replica);
                    self.rotation.failed();
                }
            }
        }
    }

    /// Subscribes on the current replica, from the cursors.
    async fn open(&self) -> Result<Streaming<pb::Event>, Status> {
        let replica = self.rotation.replica();
        self.upstream
            .subscribe(replica, &self.topics, &self.cursors)
            .await
    }

    fn subscribed(&mut self, stream: Streaming<pb::Event>) {
        self.stream = Some(stream);
        self.down_since = None;
        self.rotation.up();
    }

    /// Subscribes if not subscribed, waiting out failures with backoff.
    async fn connect(&mut self) -> Result<(), FeedEnd> {
        while self.stream.is_none() {
            match self.open().await {
                Ok(stream) => self.subscribed(stream),
                Err(status) => self.failed(status).await?,
            }
        }
        Ok(())
    }

    /// The stream on the current replica broke or was not opened: on to the next.
    async fn failed(&mut self, status: Status) -> Result<(), FeedEnd> {
        self.stream = None;
        if let StreamEnd::Close(_) = close::on_stream_end(&status) {
            return Err(FeedEnd::Refused(status));
        }
        let since = *self.down_since.get_or_insert_with(Instant::now);
        let left = self.upstream.0.outage_limit.saturating_sub(since.elapsed());
        if left.is_zero() {
            return Err(FeedEnd::Outage(status));
        }
        let replica = self.rotation.replica();
        tracing::debug!(replica = self.upstream.url(replica), code = ?status.code(), message = status.message(), "core-svc stream broke; resubscribing");
        self.upstream.failed(replica);
        let wait = self.rotation.failed();
        if !wait.is_zero() {
            tokio::time::sleep(wait.min(left)).await;
        }
        Ok(())
    }

    /// The next event to hand out; its cursor becomes the resume point.
    async fn next(&mut self) -> Result<pb::Event, FeedEnd> {
        loop {
            if self.stream.is_none() {
                // Boxed, here and below: a session's task holds this future for
                // its whole life, and should not be sized for a Subscribe call and
                // a backoff timer that it is only rarely in.
                Box::pin(self.connect()).await?;
            }
            let stream = self.stream.as_mut().expect("connected above");
            let status = match stream.message().await {
                Ok(Some(event)) => {
                    let Some(cursor) = event.cursor else { continue };
                    match &event.kind {
                        // Where the stream starts: remember it, nothing to show.
                        Some(pb::event::Kind::StreamHead(_)) => {
                            self.cursors.insert(event.topic.clone(), cursor);
                            continue;
                        }
                        // Never deduplicated: their cursor replaces ours whatever it is.
                        Some(pb::event::Kind::ResyncRequired(_) | pb::event::Kind::Snapshot(_)) => {
                        }
                        _ => {
                            let seen = self.cursors.get(&event.topic).is_some_and(|c| {
                                c.epoch == cursor.epoch && c.offset >= cursor.offset
                            });
                            if seen {
                                continue;
                            }
                        }
                    }
                    // In place: no copy of the topic name for every event.
                    match self.cursors.get_mut(&event.topic) {
                        Some(ours) => *ours = cursor,
                        None => {
                            self.cursors.insert(event.topic.clone(), cursor);
                        }
                    }
                    return Ok(event);
                }
                Ok(None) => Status::unavailable("core-svc ended the stream"),
                Err(status) => status,
            };
            Box::pin(self.failed(status)).await?;
        }
    }

    /// The feed as a stream, polled by the session itself: the retrying [`Feed::next`]
    /// is not cancel-safe, but the stream keeps an unfinished call inside itself, so
    /// the session's `select!` may drop its `next()` and poll again later. The
    /// stream ends after handing out the [`FeedEnd`].
    ///
    /// A stream rather than a task and a channel per connection: a channel's first
    /// block holds 32 events (14 KiB of them) from the moment it is made.
    pub fn into_stream(self) -> impl Stream<Item = Result<pb::Event, FeedEnd>> + Send {
        futures::stream::unfold(Some(self), |mut feed| async move {
            match feed.as_mut()?.next().await {
                Ok(event) => Some((Ok(event), feed)),
                Err(end) => Some((Err(end), None)),
            }
        })
    }
}

/// A stream's opening call, answered within [`CALL_TIMEOUT`] or UNAVAILABLE.
async fn opened<T>(
    rpc: &str,
    call: impl Future<Output = Result<tonic::Response<Streaming<T>>, Status>>,
) -> Result<Streaming<T>, Status> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| Status::unavailable(format!("core-svc did not answer {rpc} in time")))??
        .into_inner())
}

/// A wait between `d / 2` and `d`, drawn afresh each time.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// The waits between attempts to reach core-svc again: 50 ms doubling up to 2 s,
/// each jittered (an edge's streams all break at the same moment, and should not
/// all come back in the same one).
#[derive(Debug)]
pub struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(2);

    /// The wait before the next attempt; the one after is twice as long.
    pub fn wait(&mut self) -> Duration {
        let wait = jitter(self.0);
        self.0 = (self.0 * 2).min(Self::MAX);
        wait
    }

    /// An attempt succeeded: the next outage starts from the first wait.
    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self(Self::FIRST)
    }
}

/// Which replica a stream goes to next: the one after the replica that failed it
/// (round robin from where it started), at once within a round and after a
/// [`Backoff`] wait once every replica failed in turn. With one replica every
/// failure ends a round, so it waits after each, as it always did.
#[derive(Debug)]
pub struct Rotation {
    replica: usize,
    replicas: usize,
    /// Failures in a row since the stream was last up, within the current round.
    failures: usize,
    backoff: Backoff,
}

impl Rotation {
    /// Starting on replica `first` (taken modulo `replicas`) of `replicas`.
    pub fn new(first: usize, replicas: usize) -> Self {
        let replicas = replicas.max(1);
        Self {
            replica: first % replicas,
            replicas,
            failures: 0,
            backoff: Backoff::default(),
        }
    }

    /// The replica to use now.
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// The stream is up: the next failure starts a new round, with the first wait.
    pub fn up(&mut self) {
        self.failures = 0;
        self.backoff.reset();
    }

    /// The stream broke or could not be opened on the current replica: moves to
    /// the next, and says how long to wait before trying it (zero within a round).
    pub fn failed(&mut self) -> Duration {
        self.replica = (self.replica + 1) % self.replicas;
        self.failures += 1;
        if self.failures < self.replicas {
            return Duration::ZERO;
        }
        self.failures = 0;
        self.backoff.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_service_token_is_minted_once_not_per_call() {
        let signer = Signer::hs256(b"0123456789abcdef0123456789abcdef").unwrap();
        let minted = Upstream::new(
            &["http://127.0.0.1:1".into()],
            Credential::Mint(signer),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(
            minted
                .header()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer ey")
        );
        // A value planted in the cache comes back while fresh: nothing was minted...
        let planted: MetadataValue<Ascii> = "Bearer planted".parse().unwrap();
        let fresh = Instant::now() + Duration::from_secs(60);
        *minted.0.header.lock().unwrap() = Some((planted.clone(), Some(fresh), None));
        assert_eq!(minted.header().unwrap(), planted);
        // ...and once due for renewal a new token replaces it.
        *minted.0.header.lock().unwrap() = Some((planted.clone(), Some(Instant::now()), None));
        assert!(
            minted
                .header()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer ey")
        );
        let fixed = Upstream::new(
            &["http://127.0.0.1:1".into()],
            Credential::Static("abc".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(fixed.header().unwrap(), "Bearer abc");
    }

    #[tokio::test]
    async fn a_token_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core-token");
        std::fs::write(&path, "first\n").unwrap();
        let up = Upstream::new(
            &["http://127.0.0.1:1".into()],
            Credential::File(path.clone()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(up.header().unwrap(), "Bearer first");
        std::fs::write(&path, "second").unwrap();
        // Not looked at again before the check interval...
        assert_eq!(up.header().unwrap(), "Bearer first");
        // ...then read again, with a new modification time.
        let later = SystemTime::now() + Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        up.0.header.lock().unwrap().as_mut().unwrap().1 = Some(Instant::now());
        assert_eq!(up.header().unwrap(), "Bearer second");
        // Emptied mid-rotation: the last good token stays in use.
        std::fs::write(&path, "").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later + Duration::from_secs(10))
            .unwrap();
        up.0.header.lock().unwrap().as_mut().unwrap().1 = Some(Instant::now());
        assert_eq!(up.header().unwrap(), "Bearer second");
    }

    #[test]
    fn backoff_is_jittered_within_half_to_whole() {
        let d = Duration::from_millis(800);
        let waits: Vec<Duration> = (0..64).map(|_| jitter(d)).collect();
        assert!(waits.iter().all(|w| *w >= d / 2 && *w <= d));
        assert!(waits.iter().any(|w| *w != waits[0]), "not all the same");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_when_reset() {
        let mut backoff = Backoff::default();
        let ceilings = [50, 100, 200, 400, 800, 1600, 2000, 2000].map(Duration::from_millis);
        for ceiling in ceilings {
            let wait = backoff.wait();
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} for {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.wait() <= Duration::from_millis(50));
    }

    #[test]
    fn a_rotation_moves_round_robin_and_waits_only_after_a_full_round() {
        let mut rotation = Rotation::new(4, 3);
        assert_eq!(rotation.replica(), 1, "started modulo the replicas");
        assert_eq!(rotation.failed(), Duration::ZERO);
        assert_eq!(rotation.replica(), 2);
        assert_eq!(rotation.failed(), Duration::ZERO);
        assert_eq!(rotation.replica(), 0);
        let first = rotation.failed();
        assert!(first > Duration::ZERO && first <= Duration::from_millis(50));
        assert_eq!(rotation.replica(), 1, "back where it started");
        // The next round waits longer; a stream that was up starts over.
        rotation.failed();
        rotation.failed();
        assert!(rotation.failed() >= Duration::from_millis(50));
        rotation.up();
        assert_eq!(rotation.replica(), 1);
        assert_eq!(rotation.failed(), Duration::ZERO);
        assert_eq!(rotation.replica(), 2);

        // One replica: a wait after every failure, as without a list.
        let mut single = Rotation::new(0, 1);
        assert!(single.failed() > Duration::ZERO);
        assert_eq!(single.replica(), 0);
    }

    #[test]
    fn every_entry_of_the_list_is_checked() {
        let urls = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
        let ok = endpoints(&urls("http://a:50051, https://b:50051")).unwrap();
        let names: Vec<&str> = ok.iter().map(|(url, _)| url.as_str()).collect();
        assert_eq!(names, ["http://a:50051", "https://b:50051"]);
        assert_eq!(
            endpoints(&urls("http://a:50051,b:50051")).unwrap_err(),
            r#"LOGI_CORE_URL "b:50051" must start with http:// or https://"#
        );
        assert_eq!(
            endpoints(&urls("http://a:50051,,http://b:50051")).unwrap_err(),
            "LOGI_CORE_URL has an empty entry: separate URLs with one comma"
        );
        assert_eq!(
            endpoints(&urls("http://a:50051,http://a:50051")).unwrap_err(),
            r#"LOGI_CORE_URL names "http://a:50051" twice"#
        );
        assert!(
            endpoints(&urls("http://a b:1"))
                .unwrap_err()
                .starts_with(r#"LOGI_CORE_URL "http://a b:1": "#)
        );
    }

    #[tokio::test]
    async fn a_failure_moves_new_streams_to_the_next_replica_once() {
        let urls = [
            "http://127.0.0.1:1".to_owned(),
            "http://127.0.0.1:2".to_owned(),
        ];
        let up = Upstream::new(
            &urls,
            Credential::Static("abc".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((up.replicas(), up.preferred()), (2, 0));
        up.failed(0);
        assert_eq!(up.preferred(), 1);
        // A second stream that failed on replica 0 does not move them back.
        up.failed(0);
        assert_eq!(up.preferred(), 1);
        up.failed(1);
        assert_eq!(up.preferred(), 0);
    }
}
