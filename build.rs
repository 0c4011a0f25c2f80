//! Compiles `proto/` with protox, a protobuf compiler written in Rust, so a fresh
//! machine needs no system `protoc`. The encoded descriptor set is kept for gRPC
//! server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "logi/v1/common.proto",
    "logi/v1/booking.proto",
    "logi/v1/location.proto",
    "logi/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("logi_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small per-call buffers: a ws-edge holds a stream per connected app.
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
