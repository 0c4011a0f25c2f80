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

/// How many of `counter` (`handshakes`: requests with `Upgrade: websocket`,
/// `plain_requests`: others) the edge's metrics show answered `outcome`.
async fn counted(edge: &crate::support::edge::Edge, counter: &str, outcome: &str) -> u32 {
    let (status, text) = edge.get("/metrics").await;
    assert_eq!(status, 200);
    let sample = format!("logi_ws_{counter}_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&sample))
        .unwrap_or_else(|| panic!("{sample} not in\n{text}"))
        .parse()
        .unwrap()
}

/// The edge's metrics count `n` handshakes answered `outcome`.
async fn assert_handshakes(edge: &crate::support::edge::Edge, outcome: &str, n: u32) {
    assert_eq!(counted(edge, "handshakes", outcome).await, n, "{outcome}");
}

async fn silent_and_slow_clients_are_dropped_at_the_handshake_deadline(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--handshake-timeout", "1s"]).await;

    // A kept-alive connection idling after its request (a scraper, a browser) is
    // closed at the same deadline, but it did send a head: not a timeout. First,
    // so that a count of it would have long shown below.
    let mut idle = TcpStream::connect(edge.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));

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
    // The silent and the slowloris sockets; not the kept-alive one.
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
    let (status, body) = edge
        .refused(&edge.url("/ws", &token(Role::User, "3")))
        .await;
    assert_eq!(status, 503, "{body}");

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
    // The plain GETs at the limit (the first, and any of the loop's) are not
    // handshakes; the WebSocket refused there is.
    assert_handshakes(&edge, "503", 1).await;
    assert!(counted(&edge, "plain_requests", "503").await >= 1);
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
