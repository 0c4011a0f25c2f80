//! core-svc: parses configuration, sets up logging and signals, and calls [`run`].

use std::process::ExitCode;

use clap::Parser;
use core_svc::server::Listeners;
use core_svc::{Config, run};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    logi::logging::init();
    if let Err(e) = config.validate() {
        eprintln!("core-svc: {e}");
        return ExitCode::from(2);
    }
    let listeners = match Listeners::bind(&config).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("core-svc: {}", core_svc::error::chain(&e));
            return ExitCode::from(2);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(logi::shutdown::on_signal(shutdown.clone()));
    match run(config, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("core-svc: {e}");
            ExitCode::FAILURE
        }
    }
}
