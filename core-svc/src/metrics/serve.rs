//! The HTTP server of `/metrics` on `--metrics-addr`: one route, the registry's
//! text at each scrape.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `registry` at `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the metrics server stopped");
    }
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, logi::metrics::CONTENT_TYPE)],
        logi::metrics::encode(&registry),
    )
}
