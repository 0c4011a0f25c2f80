//! The metrics an operator alerts on, scraped over HTTP from a real core-svc and
//! ws-edge after a booking's whole lifecycle with apps connected.

use std::time::Duration;

use logi::auth::{Role, Signer};
use logi::pb;

use crate::support::edge::{Edge, spawn_edge};
use crate::support::*;

/// The scraped text of `/metrics`, failing the test unless it is a 200.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Fails unless every one of `lines` is a line of `text`.
fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.lines().any(|l| l == *line), "{line} not in\n{text}");
    }
}

/// The value of the sample `name{labels}` (without the value), as a number.
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{sample} not in\n{text}"))
        .parse()
        .unwrap()
}

/// Scrapes the edge until all of `lines` show: an app leaves the connection
/// count when its session's task ends, which is after the app saw the close
/// (the edge waits a moment for the app's close reply).
async fn edge_shows(edge: &Edge, lines: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(edge.addr).await;
        if lines.iter().all(|line| text.lines().any(|l| l == *line)) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{lines:?} never all showed in\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_lifecycle_shows_in_both_processes_metrics(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service
        .driver_online("45", "car", PICKUP.0 + 0.001, PICKUP.1)
        .await;

    // One bad token; one app whose token runs out while connected.
    let (status, _) = edge.refused(&edge.url("/ws", "not-a-token")).await;
    assert_eq!(status, 401);
    // Plain GETs, not handshakes: a bad token, a browser's favicon, and the
    // operations page's preflight with a good one.
    assert_eq!(edge.get("/ws?token=not-a-token").await.0, 401);
    assert_eq!(edge.get("/favicon.ico").await.0, 404);
    let preflight = format!("/ws?token={}", token(Role::Admin, "ops"));
    assert_eq!(edge.get(&preflight).await.0, 426);
    let short = Signer::hs256(SECRET.as_bytes())
        .unwrap()
        .mint("77", Role::User, Duration::from_secs(2))
        .unwrap();
    let mut expiring = edge.connect("/ws", &short).await;

    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &token(Role::User, "12"))
        .await;
    let mut driver = edge
        .connect("/driver/ws/available_bookings/", &token(Role::Driver, "45"))
        .await;
    let admin = edge.connect("/ws", &token(Role::Admin, "ops")).await;
    let connected = scrape(edge.addr).await;
    assert_lines(
        &connected,
        &[
            r#"logi_ws_connections{route="/regular_user/ws/bookings/",dialect="channels",role="user"} 1"#,
            r#"logi_ws_connections{route="/driver/ws/available_bookings/",dialect="channels",role="driver"} 1"#,
            r#"logi_ws_connections{route="/ws",dialect="logi",role="admin"} 1"#,
            r#"logi_ws_connections{route="/ws",dialect="logi",role="user"} 1"#,
            "logi_ws_attachments_up 2",
            "logi_ws_attachments_down 0",
        ],
    );
    // The rider's, the driver's two, the admins' and rider 77's.
    assert_eq!(value(&connected, "logi_ws_watched_topics"), 5.0);

    let id = service.book("12", "car").await.unwrap().id;
    assert_eq!(rider.next().await["message"]["status"], "pending");
    assert_eq!(driver.next().await["message"]["status"], "pending");
    service.accept(id, "45").await.unwrap();
    let otp = service.get(id).await.unwrap().otp;
    assert_eq!(rider.take(2).await[1]["type"], "send_otp_update");
    let missing = service.get(id + 100).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    driver.send(r#"{"type": "location_update", "current_latitude": "37.7749", "current_longitude": "-122.4194"}"#).await;
    driver.send(r#"{"type": "hello"}"#).await;
    assert_eq!(rider.next().await["type"], "location_update");
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    let refused = service.verify(id, "45", wrong).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    service.verify(id, "45", otp).await.unwrap();
    service.complete(id, "45").await.unwrap();
    assert_eq!(rider.take(2).await[1]["message"]["status"], "completed");

    assert_eq!(expiring.closed().await, (4001, "token expired".to_owned()));
    for app in [rider, driver, admin] {
        app.close().await;
    }
    drop(expiring);
    let edge_text = edge_shows(
        &edge,
        &[
            r#"logi_ws_connections{route="/regular_user/ws/bookings/",dialect="channels",role="user"} 0"#,
            r#"logi_ws_connections{route="/driver/ws/available_bookings/",dialect="channels",role="driver"} 0"#,
            r#"logi_ws_connections{route="/ws",dialect="logi",role="admin"} 0"#,
            r#"logi_ws_connections{route="/ws",dialect="logi",role="user"} 0"#,
        ],
    )
    .await;
    assert_lines(
        &edge_text,
        &[
            r#"logi_ws_handshakes_total{outcome="401"} 1"#,
            r#"logi_ws_handshakes_total{outcome="101"} 4"#,
            r#"logi_ws_handshakes_total{outcome="503"} 0"#,
            r#"logi_ws_handshakes_total{outcome="404"} 0"#,
            r#"logi_ws_plain_requests_total{outcome="401"} 1"#,
            r#"logi_ws_plain_requests_total{outcome="404"} 1"#,
            r#"logi_ws_plain_requests_total{outcome="426"} 1"#,
            r#"logi_ws_closes_total{code="4001"} 1"#,
            // The edge's answers to the apps' own closes.
            r#"logi_ws_closes_total{code="1000"} 3"#,
            // To the rider only: its OTP and its driver's one position.
            r#"logi_ws_frames_sent_total{type="otp_issued"} 1"#,
            r#"logi_ws_frames_sent_total{type="driver_location"} 1"#,
            // The answer to the unknown frame.
            r#"logi_ws_frames_sent_total{type="error"} 1"#,
            r#"logi_ws_frames_received_total{result="location"} 1"#,
            r#"logi_ws_frames_received_total{result="error"} 1"#,
            r#"logi_ws_slow_closes_total{queue="outbox"} 0"#,
            "logi_ws_outbox_backlog_frames 0",
            "logi_ws_watched_topics 0",
            "# TYPE process_resident_memory_bytes gauge",
        ],
    );
    assert!(value(&edge_text, "process_open_fds") > 0.0);

    let core_text = scrape(core.metrics).await;
    assert_lines(
        &core_text,
        &[
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="CreateBooking",code="OK"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="AcceptBooking",code="OK"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="GetBooking",code="OK"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="GetBooking",code="NOT_FOUND"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="VerifyOtp",code="INVALID_ARGUMENT"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="VerifyOtp",code="OK"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="CompleteTrip",code="OK"} 1"#,
            // The edge's two attachments, counted as they opened.
            r#"logi_grpc_calls_total{service="logi.v1.EventService",method="Attach",code="OK"} 2"#,
            r#"logi_grpc_call_seconds_count{service="logi.v1.BookingService",method="VerifyOtp"} 2"#,
            r#"logi_dispatch_total{outcome="offered"} 1"#,
            r#"logi_dispatch_total{outcome="accepted"} 1"#,
            r#"logi_dispatch_total{outcome="expired"} 0"#,
            r#"logi_dispatch_total{outcome="cancelled"} 0"#,
            "logi_dispatch_time_to_accept_seconds_count 1",
            "logi_otp_failures_total 1",
            "logi_otp_lockouts_total 0",
            r#"logi_drivers{status="available"} 1"#,
            r#"logi_drivers{status="on_trip"} 0"#,
            r#"logi_streams_lagged_total{stream="attach"} 0"#,
            "logi_store_commit_failures_total 0",
            "# TYPE process_cpu_seconds_total counter",
        ],
    );
    // The attachments sent batches, each sampling how far behind the edge was.
    assert!(value(&core_text, "logi_attach_queued_events_count") >= 1.0);
    // Driver online, booking, accept, wrong OTP, start, complete: at least these.
    assert!(value(&core_text, "logi_store_writes_total") >= 6.0);
    assert_eq!(
        value(&core_text, "logi_store_batch_writes_count"),
        value(&core_text, "logi_store_commit_seconds_count"),
        "one batch size per successful commit"
    );
    edge.stop().await;
    core.stop().await;
}

async fn dispatch_outcomes_count_cancels_and_expiries(db: Db) {
    let core = spawn_core(
        &db,
        &["--offer-timeout", "1s", "--dispatch-widen-every", "300ms"],
    )
    .await;
    let mut service = core.as_(Role::Service, "backend").await;
    service
        .driver_online("45", "car", PICKUP.0 + 0.001, PICKUP.1)
        .await;
    let cancelled = service.book("12", "car").await.unwrap().id;
    service.cancel(cancelled, "plans changed").await.unwrap();
    // Nobody near enough at first; a later round finds the driver, then it expires.
    let mut admins = service.subscribe(&["admins"]).await;
    let far = pb::CreateBookingRequest {
        pickup: Some(pb::Place {
            latitude: PICKUP.0 + 0.04,
            longitude: PICKUP.1,
            address: "4 km north".into(),
        }),
        ..booking_request("13", "car")
    };
    let expired = service
        .bookings
        .create_booking(far)
        .await
        .unwrap()
        .into_inner()
        .id;
    loop {
        let event = admins.next().await;
        if summary(&event) == format!("admins booking_changed #{expired} pending->expired") {
            break;
        }
    }
    let text = scrape(core.metrics).await;
    assert_lines(
        &text,
        &[
            // The first booking's one offer, and the second's after widening.
            r#"logi_dispatch_total{outcome="offered"} 2"#,
            r#"logi_dispatch_total{outcome="widened"} 1"#,
            r#"logi_dispatch_total{outcome="cancelled"} 1"#,
            r#"logi_dispatch_total{outcome="expired"} 1"#,
            r#"logi_dispatch_total{outcome="accepted"} 0"#,
        ],
    );
    core.stop().await;
}

/// Refused writes change nothing, so they count as no committed writes and no
/// commit; the next write that succeeds counts as one.
async fn refused_writes_are_not_counted_as_committed(db: Db) {
    let core = spawn_core(&db, &[]).await;
    let mut service = core.as_(Role::Service, "backend").await;
    service
        .driver_online("45", "car", PICKUP.0 + 0.001, PICKUP.1)
        .await;
    service.driver_online("47", "car", 0.0, 0.0).await;
    let id = service.book("12", "car").await.unwrap().id;
    service.accept(id, "45").await.unwrap();
    let otp = service.get(id).await.unwrap().otp;
    let samples = [
        "logi_store_writes_total",
        "logi_store_batch_writes_count",
        "logi_store_commit_seconds_count",
    ];
    let counted = |text: &str| samples.map(|sample| value(text, sample));
    let before = counted(&scrape(core.metrics).await);
    assert!(before[0] >= 4.0, "{before:?}");

    for (refused, code) in [
        (
            service.accept(id, "45").await,
            tonic::Code::FailedPrecondition,
        ),
        (
            service.accept(id, "47").await,
            tonic::Code::FailedPrecondition,
        ),
        (
            service.complete(id, "45").await,
            tonic::Code::FailedPrecondition,
        ),
    ] {
        assert_eq!(refused.unwrap_err().code(), code);
    }
    assert_eq!(counted(&scrape(core.metrics).await), before);

    service.verify(id, "45", otp).await.unwrap();
    let after = counted(&scrape(core.metrics).await);
    assert_eq!(after, [before[0] + 1.0, before[1] + 1.0, before[2] + 1.0]);
    core.stop().await;
}

crate::on_every_store!(
    a_lifecycle_shows_in_both_processes_metrics,
    dispatch_outcomes_count_cancels_and_expiries,
    refused_writes_are_not_counted_as_committed,
);
