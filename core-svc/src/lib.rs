//! core-svc: the state-owning half of Logi realtime.
//!
//! It owns bookings and their lifecycle, drivers' status and latest positions,
//! dispatch, OTPs and a per-topic event log, and serves them over gRPC.
//!
//! # Layout
//! - [`config`]: flags and environment variables, tariffs and dispatch settings.
//! - [`server`]: [`run`] wires everything and serves gRPC (and metrics) until
//!   shutdown.
//! - [`model`]: domain types. Requests and replies are converted to and from them
//!   in [`api`]; events are protobuf messages from [`fanout`] on, as they are stored
//!   and streamed.
//! - [`lifecycle`]: the booking state machine, as pure functions.
//! - [`otp`], [`tariff`], [`geo`]: OTP rules, pricing, great-circle geometry and the
//!   R*-tree over drivers' positions.
//! - [`drivers`]: the in-memory driver registry (status, vehicle type, position,
//!   active trip) with one spatial index per vehicle type.
//! - [`dispatch`]: widens the search radius for pending bookings and expires them.
//! - [`liveness`]: drivers who go silent leave dispatch; positions are saved behind.
//! - [`fanout`]: which topics each change is told to, and with what event.
//! - [`hub`]: live fan-out of events to subscribers, with bounded queues.
//! - [`cursor`]: whether a subscriber's resume cursor can be honoured.
//! - [`live`]: the commit sink feeding the hub and the registry.
//! - [`store`]: the storage interface and its SQLite and PostgreSQL implementations.
//! - [`cluster`]: in a cluster of replicas, what each tells the others over NATS
//!   (commits, positions) and how a lost message is made good from the store.
//! - [`api`]: the tonic services; converts requests to domain types and checks roles.
//! - [`error`]: the domain error and the one table that maps it to gRPC codes.
//! - [`metrics`]: the Prometheus metrics on `--metrics-addr`, and the tower layer
//!   that counts and times every RPC.
//!
//! # Data flow
//! A mutating RPC is validated and authorised in [`api`], then becomes ONE storage
//! transaction that changes state and appends the events it causes. The SQLite store
//! runs every write on one writer thread; right after a commit, still on that thread,
//! it hands the committed [`store::Effects`] to the [`store::CommitSink`], which
//! publishes the events to the [`hub`] and applies driver changes to the
//! [`drivers`] registry. Publishing in commit order is what makes per-topic offsets
//! reach subscribers in order.
//!
//! GPS positions do not touch the database on their way: the registry keeps the
//! latest one, moves the driver in the spatial index, and, during a trip, the hub
//! publishes an ephemeral event to the rider's topic. [`liveness`] saves them
//! behind, a batch every few seconds. Edges relay their drivers' positions in
//! batches on one `RelayDriverLocations` stream each.
//!
//! Edges read events on `EventService.Attach`: one stream per edge attachment,
//! one hub subscription behind it for every topic the edge watches, each topic's
//! events sent once (see the `attach` module of [`api`]).
//!
//! # Offsets
//! Durable events of a topic are numbered 1, 2, 3… in the `topics` table; their
//! offset is that number times [`hub::EPHEMERAL_SPAN`]. Ephemeral events take the
//! offsets in between, so offsets increase strictly across restarts without writing
//! positions to disk. The epoch is drawn once per database.

pub mod api;
pub mod cluster;
pub mod config;
pub mod cursor;
pub mod dispatch;
pub mod drivers;
pub mod error;
pub mod fanout;
pub mod geo;
pub mod hub;
pub mod lifecycle;
pub mod live;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod otp;
pub mod server;
pub mod store;
pub mod tariff;

pub use config::Config;
pub use server::run;
