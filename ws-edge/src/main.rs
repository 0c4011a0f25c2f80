//! ws-edge: parses configuration, sets up logging and signals, and calls [`run`].

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use ws_edge::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    logi::logging::init();
    if let Err(e) = config.validate() {
        eprintln!("ws-edge: {e}");
        return ExitCode::from(2);
    }
    let listener = match ws_edge::server::bind(
        config.listen,
        config.reuse_port,
        config.socket_send_buffer(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "ws-edge: cannot listen on {} (LOGI_WS_ADDR): {e}",
                config.listen
            );
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(logi::shutdown::on_signal(shutdown.clone()));
    match run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ws-edge: {e}");
            ExitCode::FAILURE
        }
    }
}
