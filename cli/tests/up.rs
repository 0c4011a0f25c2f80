//! The real `logi` binary: `up` runs the whole system, `token` mints tokens it
//! accepts, Ctrl-C stops both services.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;

mod support;
use support::{interrupt, logi, wait};

#[tokio::test]
async fn up_runs_both_services_with_a_generated_secret_and_token_mints_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(
        !logi(&data)
            .args(["token", "--role", "user", "--sub", "1"])
            .output()
            .unwrap()
            .status
            .success()
    );

    let mut up = logi(&data)
        .args([
            "up",
            "--grpc-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(up.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut metrics = Vec::new();
    let mut ops_page = None;
    let rider_url = loop {
        let line = banner.next().expect("the banner names the rider URL");
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [_, "metrics", url] => metrics.push(url.to_string()),
            ["operations", "page", url] => ops_page = Some(url.to_string()),
            ["rider", url, ..] => break url.to_string(),
            _ => {}
        }
    };
    assert_eq!(metrics.len(), 2, "core-svc's and ws-edge's: {metrics:?}");
    assert!(
        data.join("jwt-secret").exists(),
        "the secret is generated before anything starts"
    );

    // A token minted afterwards with the same data folder opens the rider route.
    let minted = logi(&data)
        .args(["token", "--role", "user", "--sub", "12", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(minted.status.success());
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let url = rider_url.replace("$RIDER_TOKEN", &token);
    let (mut ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the edge accepts the minted token");
    assert_eq!(response.status(), 101);
    assert!(
        data.join("logi.db").exists(),
        "the embedded database lives in the data folder"
    );
    // Both metrics URLs answer: the edge counts the rider, core-svc the edge's
    // attachment that carries the rider's topic (the other may still be opening).
    let core = scrape(&metrics[0]).await;
    let attached = core.lines().find_map(|l| {
        l.strip_prefix(
            r#"logi_grpc_calls_total{service="logi.v1.EventService",method="Attach",code="OK"} "#,
        )
    });
    assert!(
        matches!(attached, Some("1" | "2")),
        "{attached:?} in\n{core}"
    );
    let edge = scrape(&metrics[1]).await;
    assert!(
        edge.lines().any(|l| l
            == r#"logi_ws_connections{route="/regular_user/ws/bookings/",dialect="channels",role="user"} 1"#),
        "{edge}"
    );

    // The operations page it names loads, and its token is an admin's: the page's
    // own connection (the fleet) is admitted.
    let ops_page = ops_page.expect("the banner names the operations page");
    let (page, admin) = ops_page.split_once("#token=").unwrap();
    assert!(scrape(page).await.contains("<title>"), "{page}");
    let fleet = format!(
        "{}/ws?token={admin}&fleet=1",
        page.replace("http://", "ws://").trim_end_matches("/ops/")
    );
    let (_console, response) = tokio_tungstenite::connect_async(&fleet)
        .await
        .expect("the page's token watches the fleet");
    assert_eq!(response.status(), 101);

    // Ctrl-C stops both; the connected app is told the server is going away.
    interrupt(&up);
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                    return u16::from(frame.code);
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close, got {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(close, 1001);
    assert_eq!(wait(&mut up, Duration::from_secs(15)).code(), Some(0));
}

/// The body of a GET of `url` (`http://host:port/path`).
async fn scrape(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host.replace("localhost", "127.0.0.1"))
        .await
        .unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn token_refuses_unknown_roles_and_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        logi(dir.path())
            .env("LOGI_JWT_SECRET", "0123456789abcdef0123456789abcdef")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = run(&["token", "--role", "driver", "--sub", "45", "--ttl", "1h"]);
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8(ok.stdout)
            .unwrap()
            .trim()
            .split('.')
            .count(),
        3
    );
    let bad_role = run(&["token", "--role", "root", "--sub", "45"]);
    assert!(String::from_utf8(bad_role.stderr).unwrap().contains("role"));
    let bad_sub = run(&["token", "--role", "user", "--sub", "a_b"]);
    assert!(!bad_sub.status.success());
}

#[tokio::test]
async fn up_cluster_runs_replicas_on_postgres_and_nats_behind_edges_sharing_one_port() {
    let (Ok(admin), Ok(nats)) = (
        std::env::var("LOGI_TEST_POSTGRES_URL"),
        std::env::var("LOGI_TEST_NATS_URL"),
    ) else {
        return;
    };
    use core_svc::store::postgres::admin;
    // A database that does not exist yet: `up` creates it.
    let name = format!(
        "logi_test_up_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let url = admin::with_database(&admin, &name);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = logi(&data)
        .args([
            "up",
            "--cluster",
            "2",
            "--grpc-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--postgres-url", &url, "--nats-url", &nats])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(up.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut replicas = Vec::new();
    let rider_url = loop {
        let line = banner
            .next()
            .expect("the banner names the replicas and the rider URL");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["core-svc", "gRPC", addr, ..] => replicas.push(addr.to_string()),
            ["rider", url, ..] => break url.to_string(),
            _ => {}
        }
    };
    assert_eq!(replicas.len(), 2, "{replicas:?}");

    let mint = |role: &str, sub: &str| {
        let out = logi(&data)
            .args(["token", "--role", role, "--sub", sub, "--ttl", "5m"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let url = rider_url.replace("$RIDER_TOKEN", &mint("user", "12"));
    let (mut rider, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Booked through the second replica; the rider, on whichever edge took it,
    // hears of it.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", replicas[1]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer =
        logi::client::Bearer::header(Some(&format!("Bearer {}", mint("service", "backend"))))
            .unwrap();
    let mut clients = logi::client::Clients::new(channel, bearer);
    let place = |address: &str| logi::pb::Place {
        latitude: 37.7955,
        longitude: -122.3937,
        address: address.into(),
    };
    let booking = clients
        .bookings
        .create_booking(logi::pb::CreateBookingRequest {
            user_id: "12".into(),
            pickup: Some(place("123 Main St")),
            dropoff: Some(place("456 Elm St")),
            vehicle_type: "car".into(),
            phone_number: "+1234567890".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let frame = tokio::time::timeout(Duration::from_secs(10), rider.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let frame: serde_json::Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(frame["type"], "booking_status_update");
    assert_eq!(frame["message"]["booking_id"], booking.id);

    interrupt(&up);
    assert_eq!(wait(&mut up, Duration::from_secs(15)).code(), Some(0));
    admin::run_admin(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
