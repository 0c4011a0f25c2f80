//! The end-to-end tests: core-svc and ws-edge started in-process on real sockets
//! with a real database, driven by real gRPC and WebSocket clients.
//!
//! One test binary, so the whole workspace links once for all of them. Most
//! tests run on every store (see [`support::db`]): SQLite always, PostgreSQL when
//! `LOGI_TEST_POSTGRES_URL` is set.

mod support;

mod cluster;
mod cluster_kill;
mod core_attach;
mod core_durability;
mod core_lifecycle;
mod core_limits;
mod core_liveness;
mod core_relay;
mod core_retries;
mod core_rules;
mod edge_attach;
mod edge_channels;
mod edge_failover;
mod edge_gps;
mod edge_limits;
mod edge_logi;
mod edge_public_key;
mod edge_recover;
mod edge_resilience;
mod fleet;
mod metrics;
mod ops_page;
mod readme_grpcurl;
