//! Compiles what replicas tell each other (`proto/logi/cluster/v1`) with protox, as
//! the root crate compiles the public contract: a fresh machine needs no `protoc`.
//! Its messages refer to the contract's (`logi.v1`), which the `logi` crate has.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let fds = protox::compile(["logi/cluster/v1/cluster.proto"], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .extern_path(".logi.v1", "::logi::pb")
        .compile_fds(fds)?;
    Ok(())
}
