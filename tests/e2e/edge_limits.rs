//! The edge's limits, against a real socket: the handshake deadline (silent and
//! slowloris clients), the header-size limit, the connection limit and the cap on
//! WebSockets per principal.

use std::time::Duration;

use crate::support::edge::spawn_edge;
use crate::support::*;
use logi::auth::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the edge closes the connection; what it wrote meanwhile.
async fn until_closed(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got))
        .await
        .expect("the edge closes the connection")
        .ok();
    String::from_utf8_lossy(&got).into_owned()
}

/// The edge's metrics count `n` handshakes that ended with `outcome`.
async fn assert_handshakes(edge: &crate::support::edge::Edge, outcome: &str, n: u32) {
    let (status, text) = edge.get("/metrics").await;
    assert_eq!(status, 200);
    let line = format!("logi_ws_handshakes_total{{outcome=\"{outcome}\"}} {n}");
    assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
}

async fn silent_and_slow_clients_are_dropped_at_the_handshake_deadline(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--handshake-timeout", "1s"]).await;

    let mut silent = TcpStream::connect(edge.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(until_closed(&mut silent).await, "");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Slowloris: a byte at a time, never finishing the head.
    let mut slow = TcpStream::connect(edge.addr).await.unwrap();
    let trickle = async {
        for b in b"GET /ws?token=x HTTP/1.1\r\nHost: edge\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PATIENCE, trickle)
        .await
        .expect("the edge stops reading a head that never ends");
    assert_handshakes(&edge, "timeout", 2).await;
    edge.stop().await;
    core.stop().await;
}

async fn an_oversized_request_head_gets_431(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut tcp = TcpStream::connect(edge.addr).await.unwrap();
    let big = "a".repeat(20 * 1024);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Big: {big}\r\n\r\n");
    let _ = tcp.write_all(req.as_bytes()).await;
    let answer = until_closed(&mut tcp).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 "),
        "{}",
        answer.lines().next().unwrap_or_default()
    );
    // A normal request still works.
    assert_eq!(edge.get("/healthz").await, (200, "ok\n".to_owned()));
    assert_handshakes(&edge, "431", 1).await;
    edge.stop().await;
    core.stop().await;
}

async fn past_the_connection_limit_the_edge_answers_503_with_retry_after(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--max-connections", "2"]).await;
    let a = edge.connect("/ws", &token(Role::User, "1")).await;
    let _b = edge.connect("/ws", &token(Role::User, "2")).await;

    let mut tcp = TcpStream::connect(edge.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with(
        "this edge holds as many connections as it may: retry shortly, or another edge\n"
    ));

    // A slot comes back when a session ends.
    a.close().await;
    let back = async {
        loop {
            let (status, _) = edge.get("/healthz").await;
            if status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, back).await.unwrap();
    assert_handshakes(&edge, "503", 1).await;
    edge.stop().await;
    core.stop().await;
}

async fn a_principal_may_hold_only_so_many_websockets(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--max-connections-per-principal", "2"]).await;
    let driver = token(Role::Driver, "45");
    let first = edge.connect("/ws", &driver).await;
    let _second = edge.connect("/driver/ws/bookings/", &driver).await;
    assert_eq!(
        edge.refused(&edge.url("/ws", &driver)).await,
        (
            429,
            "driver 45 already has 2 connections open on this edge: close one first\n".to_owned()
        )
    );
    // Others are not affected, and a closed socket gives its place back.
    let _rider = edge.connect("/ws", &token(Role::User, "45")).await;
    first.close().await;
    let again = async {
        loop {
            if let Ok((_, r)) = tokio_tungstenite::connect_async(edge.url("/ws", &driver)).await
                && r.status() == 101
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, again).await.unwrap();
    assert_handshakes(&edge, "429", 1).await;
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(
    silent_and_slow_clients_are_dropped_at_the_handshake_deadline,
    an_oversized_request_head_gets_431,
    past_the_connection_limit_the_edge_answers_503_with_retry_after,
    a_principal_may_hold_only_so_many_websockets,
);
