//! The operations page at `/ops/`: its files as served, the plain GET of `/ws` it
//! makes before opening its socket, and the page itself in headless chromium
//! (driven by `tests/browser/ops.mjs`, one command a line) watching a fleet and
//! bookings that real gRPC calls make.

use std::net::SocketAddr;
use std::time::Duration;

use logi::auth::{Role, Signer};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::support::edge::{spawn_edge, spawn_edge_at};
use crate::support::{Client, Db, SECRET, spawn_core, token, tools};

/// An admin token that expired an hour ago, correctly signed.
fn expired_admin_token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ops", "role": "admin", "exp": now - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_page_is_served_from_the_binary() {
    let db = Db::sqlite();
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;

    let moved = edge.request("/ops", &[]).await;
    assert_eq!(
        (moved.status, moved.header("location")),
        (308, Some("/ops/"))
    );

    let page = edge.request("/ops/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.body.contains("<title>Logi · Operations</title>"));
    assert!(
        page.body
            .contains(r#"<script src="ops.js" defer></script>"#)
    );

    for (path, content_type) in [
        ("/ops/ops.js", "text/javascript; charset=utf-8"),
        ("/ops/ops.css", "text/css; charset=utf-8"),
    ] {
        let file = edge.request(path, &[]).await;
        assert_eq!(
            (file.status, file.header("content-type")),
            (200, Some(content_type)),
            "{path}"
        );
        assert!(!file.body.is_empty(), "{path}");
    }
    assert!(edge.get("/ops/ops.js").await.1.contains("window.opsState"));

    // A browser revalidates and gets no body when nothing changed.
    let etag = page.header("etag").unwrap().to_owned();
    let again = edge.request("/ops/", &[("If-None-Match", &etag)]).await;
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    let stale = edge
        .request("/ops/", &[("If-None-Match", "\"0000000000000000\"")])
        .await;
    assert_eq!(stale.status, 200);

    assert_eq!(edge.get("/ops/nothing.js").await.0, 404);

    edge.stop().await;
    core.stop().await;
}

/// The page asks `/ws` with a plain GET first, since a browser's WebSocket
/// cannot read a refused handshake: the same status and reason as the
/// handshake, and 426 for a token that may connect.
#[tokio::test]
async fn a_plain_get_of_ws_answers_as_the_handshake_would() {
    let db = Db::sqlite();
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;

    let expired = edge
        .request(&format!("/ws?token={}&fleet=1", expired_admin_token()), &[])
        .await;
    assert_eq!(
        (expired.status, expired.body.as_str()),
        (401, "the token has expired\n")
    );
    assert_eq!(
        edge.get("/ws?fleet=1").await,
        (401, "no token: connect with ?token=<JWT>\n".to_owned())
    );
    assert_eq!(
        edge.get(&format!("/ws?token={}", token(Role::Service, "edge")))
            .await,
        (
            403,
            "a service token may not use /ws: it is for user, driver or admin tokens\n".to_owned()
        )
    );
    assert_eq!(
        edge.get(&format!("/ws?token={}&fleet=1", token(Role::User, "12")))
            .await,
        (
            403,
            "fleet=1 is for admin tokens on /ws: this is a user token\n".to_owned()
        )
    );
    let good = edge
        .request(
            &format!("/ws?token={}&fleet=1", token(Role::Admin, "ops")),
            &[],
        )
        .await;
    assert_eq!(
        (good.status, good.header("upgrade"), good.body.as_str()),
        (
            426,
            Some("websocket"),
            "this admin token may connect here: open it as a WebSocket (Upgrade: websocket)\n"
        )
    );

    edge.stop().await;
    core.stop().await;
}

/// How long the node script may take to answer one command (each of its own
/// waits is 10 s; starting chromium on a busy machine takes a few).
const ANSWER: Duration = Duration::from_secs(30);

/// `tests/browser/ops.mjs`, driven a command at a time.
struct Page {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Page {
    async fn start(browser: &tools::Browser, edge: SocketAddr) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/ops.mjs");
        let mut child = tokio::process::Command::new(&browser.node)
            .arg(script)
            .arg(format!("http://{edge}"))
            .env("LOGI_PLAYWRIGHT_CORE", &browser.playwright_core)
            .env("LOGI_CHROMIUM", &browser.chromium)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut page = Self {
            child,
            stdin,
            stdout,
        };
        page.answer("starting chromium").await;
        page
    }

    /// Sends one command and returns what the page showed.
    async fn run(&mut self, command: &str) -> String {
        let line = format!("{command}\n");
        if self.stdin.write_all(line.as_bytes()).await.is_err() {
            self.died(command).await;
        }
        let name = command.split(' ').next().unwrap_or_default();
        self.answer(name).await
    }

    async fn answer(&mut self, what: &str) -> String {
        match tokio::time::timeout(ANSWER, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => match line.strip_prefix("ok ") {
                Some(seen) => seen.to_owned(),
                None => panic!("{what}: ops.mjs said {line:?}"),
            },
            Ok(_) => self.died(what).await,
            Err(_) => panic!("{what}: ops.mjs did not answer within {ANSWER:?}"),
        }
    }

    /// Fails the test with what the script said on its way out.
    async fn died(&mut self, what: &str) -> ! {
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = tokio::time::timeout(ANSWER, pipe.read_to_string(&mut stderr)).await;
        }
        let status = tokio::time::timeout(ANSWER, self.child.wait()).await;
        panic!("{what}: ops.mjs ended ({status:?}): {}", stderr.trim());
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        match tokio::time::timeout(ANSWER, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            _ => self.died("quit").await,
        }
    }
}

/// Where the fleet stands: a dozen drivers around San Francisco's Ferry Building
/// (the pickup of every booking here), far enough apart to be told apart on the
/// map; 45 is nearest the pickup and 46 next.
const FLEET: [(&str, f64, f64); 12] = [
    ("45", 37.7962, -122.3945),
    ("46", 37.7930, -122.3990),
    ("47", 37.8010, -122.4100),
    ("48", 37.7880, -122.4050),
    ("49", 37.7990, -122.4230),
    ("50", 37.7840, -122.3960),
    ("51", 37.8050, -122.4000),
    ("52", 37.7760, -122.4010),
    ("53", 37.7900, -122.4300),
    ("54", 37.8080, -122.4180),
    ("55", 37.7820, -122.4120),
    ("56", 37.8020, -122.3880),
];

async fn set_offline(service: &mut Client, driver: &str) {
    service
        .locations
        .set_driver_status(logi::pb::SetDriverStatusRequest {
            driver_id: driver.into(),
            status: logi::pb::DriverStatus::Offline as i32,
            vehicle_type: "car".into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_page_in_a_browser_shows_the_fleet_and_a_trip() {
    let Some(browser) = tools::browser("the browser test of the operations page") else {
        return;
    };
    let db = Db::sqlite();
    let core = spawn_core(&db, &[]).await;
    let edge = spawn_edge(core.addr, &[]).await;
    let mut page = Page::start(&browser, edge.addr).await;

    // Tokens the page must refuse, each with what it says, and a way to paste another.
    let user = token(Role::User, "12");
    page.run(&format!(
        "refused {user} Not an admin token: this is a user token. The operations page needs an admin token."
    ))
    .await;
    page.run(&format!(
        "refused {} Token refused: the token has expired. Paste a fresh admin token.",
        expired_admin_token()
    ))
    .await;

    page.run(&format!("open {}", token(Role::Admin, "ops")))
        .await;

    let mut service = core.as_(Role::Service, "backend").await;
    for (driver, lat, lon) in FLEET {
        service.driver_online(driver, "car", lat, lon).await;
    }
    for driver in ["55", "56"] {
        set_offline(&mut service, driver).await;
    }

    // A whole trip by 45, which ends near the dropoff.
    let trip = service.book("12", "car").await.unwrap().id;
    service.accept(trip, "45").await.unwrap();
    service.move_driver("45", 37.7900, -122.4080).await.unwrap();
    let otp = service.get(trip).await.unwrap().otp;
    service.verify(trip, "45", otp).await.unwrap();
    service.move_driver("45", 37.7795, -122.4190).await.unwrap();
    service.complete(trip, "45").await.unwrap();
    // 46 is on its way with another rider; a third rider cancels, a fourth waits.
    let riding = service.book("13", "car").await.unwrap().id;
    service.accept(riding, "46").await.unwrap();
    let otp = service.get(riding).await.unwrap().otp;
    service.verify(riding, "46", otp).await.unwrap();
    service.move_driver("46", 37.7905, -122.4075).await.unwrap();
    let cancelled = service.book("14", "car").await.unwrap().id;
    service.cancel(cancelled, "plans changed").await.unwrap();
    let waiting = service.book("15", "car").await.unwrap().id;

    let expected = json!({
        "drivers": {
            "45": {"status": "Available", "latitude": 37.7795, "longitude": -122.4190},
            "46": {"status": "On Trip", "latitude": 37.7905, "longitude": -122.4075},
            "55": {"status": "Offline", "latitude": 37.7820, "longitude": -122.4120},
            "47": {"status": "Available", "latitude": 37.8010, "longitude": -122.4100},
        },
        "bookings": {
            trip.to_string(): ["Pending", "Accepted", "In Transit", "Completed"],
            riding.to_string(): ["Pending", "Accepted", "In Transit"],
            cancelled.to_string(): ["Pending", "Cancelled"],
            waiting.to_string(): ["Pending"],
        },
        "counters": {
            "Available": 9, "On Trip": 1, "Offline": 2,
            "Pending": 1, "Accepted": 0, "In Transit": 1, "Completed": 1, "Cancelled": 1, "Expired": 0,
        },
        "events": [
            format!("Booking #{trip} Completed"),
            "Driver 45 is Available",
            "Driver 46 is On Trip",
        ],
    });
    page.run(&format!("expect {expected}")).await;
    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ops-page.png");
    page.run(&format!("screenshot {shot}")).await;

    // A lost edge: the page says it reconnects, and does once an edge is back
    // where it was; the new connection's snapshot shows the same fleet.
    let addr = edge.addr;
    edge.stop().await;
    page.run("reconnecting").await;
    let edge = spawn_edge_at(addr, &[core.addr], &[]).await;
    page.run("live").await;
    page.run(&format!("expect {expected}")).await;

    // A token that expires while connected: the page says so and asks for another.
    let brief = Signer::hs256(SECRET.as_bytes())
        .unwrap()
        .mint("ops", Role::Admin, Duration::from_secs(3))
        .unwrap();
    page.run(&format!("expiring {brief}")).await;

    page.quit().await;
    edge.stop().await;
    core.stop().await;
}
