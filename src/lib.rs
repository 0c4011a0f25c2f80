//! Logi realtime: what core-svc and ws-edge share.
//!
//! # Layout
//! - [`pb`]: the generated protobuf types and gRPC clients and servers of `proto/logi/v1`.
//! - [`auth`]: JWT verification and the principal a token names.
//! - [`caps`]: at most so many per key (connections, streams per principal).
//! - [`client`]: gRPC clients that carry a bearer token.
//! - [`codec`]: the protobuf codec of the services, with small per-call buffers.
//! - [`topic`]: the topic names of the event log and who may read them.
//! - [`id`]: validation of rider and driver ids.
//! - [`jwt_args`]: the JWT flags both processes share.
//! - [`logging`]: the binaries' log set-up.
//! - [`metrics`]: the Prometheus text of a registry, the process collector, handles
//!   resolved once per label set.
//! - [`procfs`]: CPU, memory, open files and start time of a process, from `/proc`.
//! - [`shutdown`]: the binaries' shutdown signal.

pub mod pb {
    //! Generated from `proto/logi/v1/*.proto`.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("logi.v1");

    /// The encoded `FileDescriptorSet` of the contract, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("logi_descriptor");
}

pub mod auth;
pub mod caps;
pub mod client;
pub mod codec;
pub mod id;
pub mod jwt_args;
pub mod logging;
pub mod metrics;
pub mod procfs;
pub mod shutdown;
pub mod topic;
