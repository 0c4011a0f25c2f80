//! ws-edge: the thin, stateless WebSocket process of Logi realtime.
//!
//! A mobile app connects to one of the routes with its JWT in `?token=`. The edge
//! checks the token before the upgrade, opens ONE `EventService.Subscribe` stream on
//! core-svc for the topics that principal may see (its first events are the app's
//! snapshot, read at the cursor the live events follow), and turns each event into
//! the exact JSON frame of the route's dialect. Drivers may push their position up the
//! same socket. The edge keeps no state of its own beyond each connection.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - [`server`]: [`run`] serves HTTP: the WebSocket routes, `/healthz`, `/readyz`.
//! - [`accept`]: the accept loop: handshake deadline, header limit, connection limit.
//! - [`admission`]: the connection slots and the per-principal WebSocket cap.
//! - [`route`]: the route table (path → dialect, allowed roles, topics).
//! - [`handshake`]: token check before the upgrade (401/403/404).
//! - [`dialect`]: pure event → frame mapping, one module per dialect, and the
//!   parsing of inbound frames.
//! - [`upstream`]: the core-svc side: the service credential, Subscribe (snapshot
//!   first) with resume and jittered backoff, location forwarding.
//! - [`resume`]: the opt-in resume of apps: the cursor in their frames, `?since=`.
//! - [`session`]: one connection, one task: the select loop over client frames,
//!   upstream events, the outbox, pings, token expiry and shutdown.
//! - [`timers`]: the heartbeat and the token's expiry.
//! - [`outbox`]: a connection's bounded queue of frames, written in batches with
//!   one flush each.
//! - [`close`]: the close codes, and the one place a gRPC status becomes a close
//!   code or an error frame.
//!
//! # Data flow
//! ```text
//! core-svc ──Subscribe──▶ upstream ──Event──▶ session ──dialect::render──▶ outbox ──batch, flush──▶ socket
//! socket ──▶ session ──dialect::parse_inbound──▶ upstream::forward_location ──UpdateDriverLocation──▶ core-svc
//! ```

pub mod accept;
pub mod admission;
pub mod close;
pub mod config;
pub mod dialect;
pub mod handshake;
pub mod outbox;
pub mod resume;
pub mod route;
pub mod server;
pub mod session;
pub mod timers;
pub mod upstream;

pub use config::Config;
pub use server::run;
