//! ws-edge started in-process on 127.0.0.1:0 against a core-svc, and a real
//! WebSocket client.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::{PATIENCE, SECRET};

pub struct Edge {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), ws_edge::server::ServeError>>,
}

/// Starts ws-edge for the core-svc at `core` with extra flags.
pub async fn spawn_edge(core: SocketAddr, extra: &[&str]) -> Edge {
    spawn_edge_on(&[core], extra).await
}

/// Starts ws-edge for the core-svc replicas at `cores`, in that order (one
/// `--core-url` list), with extra flags.
pub async fn spawn_edge_on(cores: &[SocketAddr], extra: &[&str]) -> Edge {
    spawn_edge_at("127.0.0.1:0".parse().unwrap(), cores, extra).await
}

/// Starts ws-edge listening on `listen` (to start one again where another was).
pub async fn spawn_edge_at(listen: SocketAddr, cores: &[SocketAddr], extra: &[&str]) -> Edge {
    let core_url = cores
        .iter()
        .map(|core| format!("http://{core}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec!["ws-edge", "--core-url", &core_url];
    if !extra.contains(&"--jwt-public-key") {
        args.extend_from_slice(&["--jwt-secret", SECRET]);
    }
    args.extend_from_slice(extra);
    let config = <ws_edge::Config as clap::Parser>::try_parse_from(args).unwrap();
    let listener = ws_edge::server::bind(listen, false, config.socket_send_buffer()).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(ws_edge::run(config, listener, shutdown.clone()));
    Edge {
        addr,
        shutdown,
        handle,
    }
}

impl Edge {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("ws-edge stops")
            .unwrap()
            .unwrap();
    }

    pub fn url(&self, path: &str, token: &str) -> String {
        format!("ws://{}{path}?token={token}", self.addr)
    }

    /// Connects; panics if the handshake is refused.
    pub async fn connect(&self, path: &str, token: &str) -> Ws {
        self.connect_with(path, token, "").await
    }

    /// Connects with more of a query (`"&recover=1"`); panics if refused.
    pub async fn connect_with(&self, path: &str, token: &str, query: &str) -> Ws {
        let url = format!("{}{query}", self.url(path, token));
        let (stream, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(response.status(), 101);
        Ws(stream)
    }

    /// The HTTP status and body a refused handshake gets.
    pub async fn refused(&self, url: &str) -> (u16, String) {
        match tokio_tungstenite::connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                (response.status().as_u16(), body)
            }
            other => panic!(
                "expected the handshake to be refused, got {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }

    /// A plain HTTP GET on the edge's port: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        super::http_get(self.addr, path).await
    }

    /// A plain HTTP GET on the edge's port with extra request headers.
    pub async fn request(&self, path: &str, headers: &[(&str, &str)]) -> super::Answer {
        super::http_request(self.addr, path, headers).await
    }
}

pub struct Ws(pub WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Ws {
    /// The next text frame as JSON (pings are answered by reading).
    pub async fn next(&mut self) -> Value {
        loop {
            match tokio::time::timeout(PATIENCE, self.0.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    pub async fn send(&mut self, text: &str) {
        self.0.send(Message::Text(text.into())).await.unwrap();
    }

    /// The close code and reason the server ends with.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(PATIENCE, self.0.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Ok(Some(Ok(Message::Text(t)))) => panic!("expected a close, got {t}"),
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Nothing arrives within a short wait.
    pub async fn assert_quiet(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        loop {
            match tokio::time::timeout_at(deadline, self.0.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected nothing more, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .0
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}
