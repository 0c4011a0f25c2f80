//! ws-edge: the thin, stateless WebSocket process of Logi realtime.
//!
//! A mobile app connects to one of the routes with its JWT in `?token=`. The edge
//! checks the token before the upgrade, registers the app on the topics that
//! principal may see, and answers 101 once the app's snapshot is in (so whatever is
//! committed after it is connected reaches it). Every topic the edge's apps read
//! comes over a few `EventService.Attach` streams, ONE copy of each event per
//! edge; each event is rendered once per dialect and audience and the same bytes
//! go to every app that gets it. Drivers may push their position up the same
//! socket. The edge keeps no state of its own beyond its connections.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - [`server`]: [`run`] serves HTTP: the WebSocket routes, `/healthz`, `/readyz`,
//!   `/metrics`.
//! - [`ops`]: the operations page at `/ops/`, its files built into the binary.
//! - [`accept`]: the accept loop: handshake deadline, header limit, connection limit.
//! - [`admission`]: the connection slots and the per-principal WebSocket cap.
//! - [`route`]: the route table (path → dialect, allowed roles, topics).
//! - [`handshake`]: token check before the upgrade (401/403/404).
//! - [`dialect`]: pure event → frame mapping, one module per dialect, and the
//!   parsing of inbound frames.
//! - [`attach`]: the attachments to core-svc and their registry (topic → sessions).
//! - [`inbox`]: a session's bounded inbox, filled by the attachments.
//! - [`upstream`]: the core-svc side: the replicas (`--core-url a,b,…`) and the
//!   connections to them, the service credential, the order streams fail over in
//!   (round robin, jittered backoff between rounds), a recover-mode app's own
//!   Subscribe feed.
//! - [`resume`]: the opt-in resume of apps: the cursor in their frames, `?since=`.
//! - [`session`]: one connection, one task: the select loop over client frames,
//!   the inbox, the outbox, pings, token expiry and shutdown.
//! - [`timers`]: the heartbeat and the token's expiry.
//! - [`outbox`]: a connection's bounded queue of frames, written in batches with
//!   one flush each.
//! - [`close`]: the close codes, and the one place a gRPC status becomes a close
//!   code or an error frame.
//! - [`metrics`]: the edge's Prometheus metrics, handles made once at start.
//!
//! # Data flow
//! ```text
//! core-svc ──Attach──▶ attach::link ──registry: render once──▶ inbox ──▶ session ──▶ outbox ──batch, flush──▶ socket
//! socket ──▶ session ──dialect::parse_inbound──▶ attach::relay ──RelayDriverLocations──▶ core-svc
//! ```
//! An app that asks to resume (`?recover=1`, `?since=`) has a Subscribe stream of
//! its own instead of the attachment: its replay and cursors are its own.

pub mod accept;
pub mod admission;
pub mod attach;
pub mod close;
pub mod config;
pub mod dialect;
pub mod handshake;
pub mod inbox;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod resume;
pub mod route;
pub mod server;
pub mod session;
pub mod timers;
pub mod upstream;

pub use config::Config;
pub use server::run;
