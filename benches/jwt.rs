//! JWT verification, as done once per WebSocket handshake and per gRPC call.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use logi::auth::{Role, Signer, Verifier};

fn verify(c: &mut Criterion) {
    let secret = b"bench-secret-bench-secret-bench-secret";
    let token = Signer::hs256(secret)
        .unwrap()
        .mint("12", Role::User, Duration::from_secs(3600))
        .unwrap();
    let hs256 = Verifier::hs256(secret).unwrap();
    c.bench_function("jwt verify HS256", |b| {
        b.iter(|| hs256.verify(black_box(&token)).unwrap())
    });

    let private = include_bytes!("../tests/fixtures/ed25519.key");
    let public = include_bytes!("../tests/fixtures/ed25519.pub");
    let claims = serde_json::json!({"sub": "12", "role": "user", "exp": 4_000_000_000u64});
    let key = jsonwebtoken::EncodingKey::from_ed_pem(private).unwrap();
    let ed_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &key,
    )
    .unwrap();
    let eddsa = Verifier::public_key_pem(public).unwrap();
    c.bench_function("jwt verify EdDSA", |b| {
        b.iter(|| eddsa.verify(black_box(&ed_token)).unwrap())
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
