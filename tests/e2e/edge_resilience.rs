//! What ws-edge does when things go wrong: core-svc restarts, long outages, expiring
//! tokens, oversized or malformed frames, silent and slow clients.

use std::time::Duration;

use crate::support::edge::{Ws, spawn_edge};
use crate::support::*;
use futures::StreamExt;
use logi::auth::{Role, Signer};
use logi::pb;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Driver 45 streams `n` positions as fast as core-svc takes them.
async fn drive(service: &mut Client, n: u32) {
    let positions = (0..n).map(|i| pb::UpdateDriverLocationRequest {
        driver_id: "45".into(),
        latitude: 37.7 + f64::from(i % 1000) * 1e-4,
        longitude: -122.4,
        heading: 0.0,
        speed_mps: 5.0,
    });
    service
        .locations
        .stream_driver_locations(tokio_stream::iter(positions))
        .await
        .unwrap();
}

async fn trip(service: &mut Client) -> u64 {
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let id = service.book("12", "car").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    id
}

async fn a_core_restart_mid_trip_goes_unnoticed_by_the_rider(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let addr = core.addr;
    let edge = spawn_edge(addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let id = trip(&mut service).await;
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    assert_eq!(rider.take(2).await[1]["type"], "send_otp_update");
    service.move_driver("45", 37.79, -122.40).await.unwrap();
    assert_eq!(rider.next().await["current_latitude"], "37.79");

    // core-svc goes away and comes back on the same address and database.
    core.stop().await;
    let core = spawn_core_on(&addr.to_string(), &db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    let otp = service.get(id).await.unwrap().otp;
    service
        .bookings
        .verify_otp(pb::VerifyOtpRequest {
            booking_id: id,
            driver_id: "45".into(),
            otp,
        })
        .await
        .unwrap();

    // The same socket carries on: no close, no gap, no repeat.
    assert_eq!(rider.next().await["message"]["status"], "on_trip");
    service.move_driver("45", 37.78, -122.41).await.unwrap();
    assert_eq!(
        rider.next().await,
        json!({"type": "location_update", "driver_id": 45, "current_latitude": "37.78", "current_longitude": "-122.41", "status": "on_trip"})
    );
    service.complete(id, "45").await.unwrap();
    assert_eq!(rider.next().await["message"]["status"], "completed");
    rider.assert_quiet().await;
    edge.stop().await;
    core.stop().await;
}

async fn an_outage_past_the_limit_closes_with_1012(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--upstream-outage-limit", "300ms"]).await;
    let mut rider = edge.connect("/ws", &token(Role::User, "12")).await;
    core.stop().await;
    let (code, reason) = rider.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (1012, "core-svc is unavailable, reconnect")
    );
    edge.stop().await;
}

async fn a_token_that_expires_while_connected_closes_with_4001(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let short = Signer::hs256(SECRET.as_bytes())
        .unwrap()
        .mint("12", Role::User, Duration::from_secs(2))
        .unwrap();
    let mut rider = edge.connect("/ws", &short).await;
    assert_eq!(rider.closed().await, (4001, "token expired".to_owned()));
    edge.stop().await;
    core.stop().await;
}

async fn bad_frames_get_an_error_frame_and_the_connection_stays(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--max-frame-bytes", "2048"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    trip(&mut service).await;
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    rider.take(2).await;
    let mut driver = edge
        .connect("/driver/ws/bookings/", &token(Role::Driver, "45"))
        .await;
    driver.next().await;

    let error = |m: &str| json!({"type": "error", "message": m});
    driver.send("hello").await;
    assert_eq!(driver.next().await["type"], "error");
    driver.send(r#"{"type": "chat", "text": "hi"}"#).await;
    assert_eq!(
        driver.next().await,
        error("unknown frame type \"chat\": this route accepts \"location_update\"")
    );
    driver
        .send(
            r#"{"type": "location_update", "current_latitude": "north", "current_longitude": "1"}"#,
        )
        .await;
    assert_eq!(
        driver.next().await,
        error("current_latitude must be a number or a numeric string")
    );
    driver
        .send(r#"{"type": "location_update", "current_latitude": "91", "current_longitude": "1"}"#)
        .await;
    assert_eq!(
        driver.next().await,
        error("location_update refused: location.latitude must be a number from -90 to 90, got 91")
    );
    driver.0.send_binary().await;
    assert_eq!(
        driver.next().await,
        error("binary frames are not supported: send JSON text")
    );
    rider
        .send(r#"{"type": "location_update", "current_latitude": "1", "current_longitude": "1"}"#)
        .await;
    assert_eq!(
        rider.next().await,
        error("only drivers may send their location")
    );

    // Still open: a good position goes through, and the rider sees it.
    driver.send(r#"{"type": "location_update", "current_latitude": "37.7749", "current_longitude": "-122.4194"}"#).await;
    assert_eq!(rider.next().await["current_longitude"], "-122.4194");

    // A frame over the limit closes with 1009.
    let huge = format!(
        r#"{{"type": "location_update", "pad": "{}"}}"#,
        "x".repeat(4096)
    );
    driver.send(&huge).await;
    assert_eq!(driver.closed().await.0, 1009);
    edge.stop().await;
    core.stop().await;
}

#[tokio::test]
async fn a_client_that_closes_gets_its_close_answered() {
    use futures::SinkExt;
    let db = Db::sqlite();
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut app = edge.connect("/ws", &token(Role::User, "12")).await;
    app.0.send(Message::Close(None)).await.unwrap();
    // The initiator sees the handshake complete as a clean end of stream; a close
    // left unanswered would end in an error (reset without closing handshake).
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match app.0.next().await {
                None => return Ok(()),
                Some(Ok(Message::Close(_) | Message::Ping(_) | Message::Pong(_))) => continue,
                Some(other) => return Err(format!("{other:?}")),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end, Ok(()));
    edge.stop().await;
    core.stop().await;
}

async fn a_client_that_answers_no_pings_is_closed_with_4002(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &["--ping-interval", "100ms"]).await;
    let mut silent = edge.connect("/ws", &token(Role::User, "12")).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        silent.closed().await,
        (4002, "no answer to two pings".to_owned())
    );

    // One that reads answers them and stays.
    let mut lively = edge.connect("/ws", &token(Role::User, "12")).await;
    lively.assert_quiet().await;
    lively.assert_quiet().await;
    edge.stop().await;
    assert_eq!(lively.closed().await.0, 1001, "shutdown closes with 1001");
    core.stop().await;
}

async fn a_client_that_keeps_up_is_not_closed_by_a_burst(db: Db) {
    let core = spawn_core(&db, &[]).await;
    // A small outbox, and socket buffers the kernel sizes (up to 4 MiB, far more
    // than the burst below): the socket always takes what the edge writes, so a
    // burst of events buffered upstream must go out as fast as it comes in, not
    // pile up in the outbox while the socket writes wait their turn.
    let edge = spawn_edge(core.addr, &["--outbound-queue", "8", "--send-buffer", "0"]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    trip(&mut service).await;
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    // The rider reads on a thread of its own, so it keeps up whatever the edge does.
    let reader = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut locations = 0;
                loop {
                    match tokio::time::timeout(Duration::from_secs(2), rider.0.next()).await {
                        Err(_) => return Ok(locations),
                        Ok(Some(Ok(Message::Text(text)))) => {
                            if text.contains("location_update") {
                                locations += 1;
                            }
                        }
                        Ok(Some(Ok(Message::Close(frame)))) => {
                            return Err(format!("closed: {frame:?}"));
                        }
                        Ok(Some(Ok(_))) => {}
                        Ok(other) => return Err(format!("ended: {other:?}")),
                    }
                }
            })
    });
    drive(&mut service, 5_000).await;
    let locations = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap()
        .expect("the rider stays connected");
    assert!(locations > 0, "the rider saw the driver move");
    edge.stop().await;
    core.stop().await;
}

/// Rider 12 on a socket whose receive buffer is small, so that once it stops
/// reading the edge's own queue soon holds what it cannot send.
async fn small_window_rider(edge: &crate::support::edge::Edge) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(edge.addr).await.unwrap();
    let url = edge.url("/regular_user/ws/bookings/", &token(Role::User, "12"));
    let (stream, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    Ws(stream)
}

async fn a_client_that_does_not_keep_up_is_closed_with_1013(db: Db) {
    let core = spawn_core(&db, &[]).await;
    // A small socket send buffer, so that a few dozen frames fill what the kernel
    // takes: how many of the pings below reach the edge depends on how far its
    // subscription falls behind (locations are latest-wins), not on this test.
    let edge = spawn_edge(
        core.addr,
        &["--outbound-queue", "8", "--send-buffer", "8192"],
    )
    .await;
    let mut service = core.as_(Role::Service, "backend").await;
    trip(&mut service).await;

    // A rider whose socket takes in little and who stops reading.
    let mut slow = small_window_rider(&edge).await;

    // Far more than the kernel's buffers on both sides of the socket hold, so the
    // edge's own queue must fill.
    drive(&mut service, 20_000).await;

    // What was already on the wire arrives, then the close.
    let code = loop {
        match tokio::time::timeout(PATIENCE, slow.0.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(code, 1013);
    // Counted as a close by code and as a slow app, by whichever queue filled.
    let (_, text) = edge.get("/metrics").await;
    assert!(
        text.lines()
            .any(|l| l == r#"logi_ws_closes_total{code="1013"} 1"#),
        "{text}"
    );
    let slow: u32 = text
        .lines()
        .filter_map(|l| l.strip_prefix("logi_ws_slow_closes_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(slow, 1, "{text}");
    edge.stop().await;
    core.stop().await;
}

/// The edge's `logi_ws_outbox_backlog_frames`, and its closes of stalled sockets.
async fn backlog_and_stalls(edge: &crate::support::edge::Edge) -> (u64, u64) {
    let (_, text) = edge.get("/metrics").await;
    // A close code shows once the first such close is counted.
    let sample = |prefix: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.parse().unwrap())
    };
    (
        sample("logi_ws_outbox_backlog_frames ").expect("the backlog gauge"),
        sample(r#"logi_ws_closes_total{code="none"} "#).unwrap_or(0),
    )
}

async fn a_client_that_stops_reading_shows_in_the_backlog_until_dropped(db: Db) {
    let core = spawn_core(&db, &[]).await;
    // An outbox far larger than what comes below, so the app is not closed as
    // slow but waits, its frames queued, until its socket is dropped as stalled.
    let edge = spawn_edge(
        core.addr,
        &["--outbound-queue", "100000", "--send-buffer", "8192"],
    )
    .await;
    let mut service = core.as_(Role::Service, "backend").await;
    trip(&mut service).await;
    let _stuck = small_window_rider(&edge).await;
    // The driver moves steadily: a write that completes leaves a frame or two
    // behind, while the socket fills and then takes nothing.
    let moving = tokio::spawn(async move {
        for i in 0u32.. {
            let lat = 37.7 + f64::from(i % 1000) * 1e-4;
            if service.move_driver("45", lat, -122.4).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // More than a batch (64 frames) shows while the app waits: counted during the
    // wait, not left over from a write. Then it is dropped as stalled, and its
    // backlog goes with it (just after the close counts).
    let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
    let mut shown = 0;
    loop {
        let (backlog, stalls) = backlog_and_stalls(&edge).await;
        if stalls == 0 {
            shown = shown.max(backlog);
        } else if backlog == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog {backlog}, stalled closes {stalls}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        shown > 64,
        "the backlog while the app waited: at most {shown}"
    );
    moving.abort();
    edge.stop().await;
    core.stop().await;
}

trait SendBinary {
    async fn send_binary(&mut self);
}

impl SendBinary
    for tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
{
    async fn send_binary(&mut self) {
        use futures::SinkExt;
        self.send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
    }
}

async fn edges_can_share_a_port(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let first = ws_edge::server::bind("127.0.0.1:0".parse().unwrap(), true, None).unwrap();
    let addr = first.local_addr().unwrap();
    // Without SO_REUSEPORT a second bind to the same port is refused.
    assert!(ws_edge::server::bind(addr, false, None).is_err());
    let second = ws_edge::server::bind(addr, true, None).unwrap();
    let start = |listener| {
        let config = <ws_edge::Config as clap::Parser>::try_parse_from([
            "ws-edge",
            "--core-url",
            &format!("http://{}", core.addr),
            "--jwt-secret",
            SECRET,
        ])
        .unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        (
            tokio::spawn(ws_edge::run(config, listener, shutdown.clone())),
            shutdown,
        )
    };
    let (a, stop_a) = start(first);
    let (b, stop_b) = start(second);
    let url = format!("ws://{addr}/ws?token={}", token(Role::User, "12"));
    tokio_tungstenite::connect_async(&url).await.unwrap();
    // With the first edge gone, the port still answers: the second serves it.
    stop_a.cancel();
    a.await.unwrap().unwrap();
    for _ in 0..5 {
        tokio_tungstenite::connect_async(&url)
            .await
            .expect("the other edge answers");
    }
    stop_b.cancel();
    b.await.unwrap().unwrap();
    core.stop().await;
}

crate::on_every_store!(
    a_core_restart_mid_trip_goes_unnoticed_by_the_rider,
    an_outage_past_the_limit_closes_with_1012,
    a_token_that_expires_while_connected_closes_with_4001,
    bad_frames_get_an_error_frame_and_the_connection_stays,
    a_client_that_answers_no_pings_is_closed_with_4002,
    a_client_that_keeps_up_is_not_closed_by_a_burst,
    a_client_that_does_not_keep_up_is_closed_with_1013,
    a_client_that_stops_reading_shows_in_the_backlog_until_dropped,
    edges_can_share_a_port,
);
