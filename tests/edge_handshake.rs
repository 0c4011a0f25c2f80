//! ws-edge refuses bad handshakes before the upgrade, with the right HTTP status,
//! and never writes a token to its logs.
//!
//! A test binary of its own: it installs a global log subscriber to read every
//! line the edge writes, which the other end-to-end tests must not share.

#[path = "e2e/support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::edge::spawn_edge;
use support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    s.as_bytes()
        .chunks(3)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x)) << (8 * (3 - c.len()));
            (0..=c.len()).map(move |i| A[((n >> (18 - 6 * i)) & 63) as usize] as char)
        })
        .collect()
}

/// Captures everything logged, at every level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_bad_handshake_is_refused_before_the_upgrade_and_no_token_is_logged() {
    let logs = Capture::default();
    let writer = logs.clone();
    // Everything the servers log at TRACE. Only the test's own WebSocket client is left
    // out: it traces its request line, token included, which is not the edge's doing.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "trace,tungstenite::handshake::client=off",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let db = Db::sqlite();
    let core = spawn_core(&db, &["--jwt-issuer", "logi", "--jwt-audience", "apps"]).await;
    let edge = spawn_edge(
        core.addr,
        &["--jwt-issuer", "logi", "--jwt-audience", "apps"],
    )
    .await;
    let claims = |extra: serde_json::Value| {
        let mut c =
            json!({"sub": "12", "role": "user", "exp": now() + 600, "iss": "logi", "aud": "apps"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let good = signed(Algorithm::HS256, SECRET, claims(json!({})));
    let rider = "/regular_user/ws/bookings/";
    let url = |path: &str, token: &str| edge.url(path, token);

    let mut refused = Vec::new();
    let mut expect = |status: u16, url: String| refused.push((status, url));
    expect(401, format!("ws://{}{rider}", edge.addr));
    expect(401, url(rider, ""));
    expect(401, url(rider, "not-a-jwt"));
    expect(
        401,
        url(
            rider,
            &signed(
                Algorithm::HS256,
                "another-secret-another-secret-00",
                claims(json!({})),
            ),
        ),
    );
    let body = b64(&claims(json!({})).to_string());
    expect(
        401,
        url(
            rider,
            &format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
        ),
    );
    expect(
        401,
        url(rider, &signed(Algorithm::HS384, SECRET, claims(json!({})))),
    );
    expect(
        401,
        url(
            rider,
            &signed(Algorithm::HS256, SECRET, claims(json!({"exp": now() - 10}))),
        ),
    );
    let mut no_exp = claims(json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    expect(401, url(rider, &signed(Algorithm::HS256, SECRET, no_exp)));
    expect(
        401,
        url(
            rider,
            &signed(
                Algorithm::HS256,
                SECRET,
                claims(json!({"iss": "someone-else"})),
            ),
        ),
    );
    expect(
        401,
        url(
            rider,
            &signed(Algorithm::HS256, SECRET, claims(json!({"aud": "web"}))),
        ),
    );
    let driver = signed(
        Algorithm::HS256,
        SECRET,
        claims(json!({"sub": "45", "role": "driver"})),
    );
    expect(403, url(rider, &driver));
    expect(403, url("/driver/ws/bookings/", &good));
    expect(
        403,
        url(
            "/ws",
            &signed(Algorithm::HS256, SECRET, claims(json!({"role": "service"}))),
        ),
    );
    expect(404, url("/socket", &good));
    expect(404, url("/regular_user/ws/", &good));
    for (status, url) in &refused {
        assert_eq!(edge.refused(url).await.0, *status, "{url}");
    }
    let (_, body) = edge.refused(&url(rider, &driver)).await;
    assert_eq!(
        body,
        "a driver token may not use /regular_user/ws/bookings/: it is for user tokens\n"
    );

    // The good ones: `sub`, and SimpleJWT's numeric `user_id`.
    edge.connect(rider, &good).await.close().await;
    let simplejwt = signed(
        Algorithm::HS256,
        SECRET,
        json!({"user_id": 12, "role": "user", "exp": now() + 600, "iss": "logi", "aud": "apps", "token_type": "access"}),
    );
    edge.connect(rider, &simplejwt).await.close().await;
    edge.connect("/driver/ws/available_bookings/", &driver)
        .await
        .close()
        .await;

    // Health: the process, and whether core-svc answers.
    assert_eq!(edge.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(edge.get("/readyz").await, (200, "ready\n".into()));
    core.stop().await;
    assert_eq!(
        edge.get("/readyz").await,
        (503, "core-svc is not reachable\n".into())
    );
    assert_eq!(edge.get("/healthz").await.0, 200);
    // With core-svc down, a connecting app gets a plain 503 rather than a dead socket.
    assert_eq!(edge.refused(&url(rider, &good)).await.0, 503);
    edge.stop().await;

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("handshake refused"),
        "the refusals are logged"
    );
    for (_, url) in &refused {
        if let Some((_, token)) = url.split_once("token=").filter(|(_, t)| t.len() > 20) {
            let lines: Vec<&str> = logged.lines().filter(|l| l.contains(token)).collect();
            assert!(
                lines.is_empty(),
                "a token reached the logs:\n{}",
                lines.join("\n")
            );
        }
    }
    assert!(
        !logged.contains(&good) && !logged.contains(&driver),
        "a token reached the logs"
    );
}
