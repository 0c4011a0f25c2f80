//! With only a public key configured (EdDSA here), ws-edge verifies apps' tokens
//! with it and calls core-svc with the service token it is given.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::edge::spawn_edge;
use crate::support::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const PRIVATE: &[u8] = include_bytes!("../fixtures/ed25519.key");
const PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ed25519.pub");

fn ed25519(sub: &str, role: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": sub, "role": role, "exp": exp});
    jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(PRIVATE).unwrap(),
    )
    .unwrap()
}

async fn public_key_mode_end_to_end(db: Db) {
    let core = spawn_core(&db, &["--jwt-public-key", PUBLIC]).await;
    let service_token = ed25519("ws-edge", "service");
    let edge = spawn_edge(
        core.addr,
        &["--jwt-public-key", PUBLIC, "--core-token", &service_token],
    )
    .await;

    let mut service = Client::new(core.channel().await, &ed25519("backend", "service"));
    service.driver_online("45", "car", PICKUP.0, PICKUP.1).await;
    let mut rider = edge
        .connect("/regular_user/ws/bookings/", &ed25519("12", "user"))
        .await;
    let id = service.book("12", "car").await.unwrap().id;
    assert_eq!(rider.next().await["message"]["booking_id"], id);
    service.accept(id, "45").await.unwrap();
    assert_eq!(rider.next().await["message"]["status"], "accepted");

    // An HS256 token, whatever its secret, is not accepted when the key is pinned.
    let hs = logi::auth::Signer::hs256(SECRET.as_bytes())
        .unwrap()
        .mint("12", logi::auth::Role::User, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        edge.refused(&edge.url("/regular_user/ws/bookings/", &hs))
            .await
            .0,
        401
    );
    edge.stop().await;
    core.stop().await;
}

crate::on_every_store!(public_key_mode_end_to_end,);
