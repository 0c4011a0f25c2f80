//! The WebSocket edge is not built yet; this skeleton keeps its place in the workspace.

fn main() {
    eprintln!("ws-edge is not implemented yet");
    std::process::exit(2);
}
