//! `Verifier::verify`, the one check behind every WebSocket handshake and gRPC call.
//!
//! Input starting with `{`: a header JSON, a newline and a claims JSON (or only
//! claims, under the header `Signer` writes), signed with the right HS256 key so
//! that the fuzzer gets past the signature to the header and claims checks. Any
//! other input is taken as the token itself.
//!
//! A refusal must say something and never echo the token. An accepted token is
//! re-read here, independently, and must satisfy every rule of `logi::auth`.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use logi::auth::{IAT_LEEWAY, Principal, Role, Verifier};
use logi_fuzz::{HEADER, SECRET, now, sign};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let token = if data.first() == Some(&b'{') {
        match data.iter().position(|b| *b == b'\n') {
            Some(i) => sign(&data[..i], &data[i + 1..]),
            None => sign(HEADER.as_bytes(), data),
        }
    } else {
        match std::str::from_utf8(data) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    };
    let plain = Verifier::hs256(SECRET).expect("the secret is not empty");
    let strict = plain
        .clone()
        .require_issuer("logi")
        .require_audience("apps");
    for (verifier, strict) in [(&plain, false), (&strict, true)] {
        let before = now();
        match verifier.verify(&token) {
            Ok(principal) => accepted(&token, &principal, strict, before),
            Err(e) => {
                let message = e.to_string();
                assert!(!message.is_empty(), "{e:?}");
                if token.len() >= 16 {
                    assert!(!message.contains(&token), "the token was echoed");
                }
            }
        }
    }
});

/// Re-reads an accepted token and checks it against the rules.
fn accepted(token: &str, p: &Principal, strict: bool, before: u64) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token of {} parts", parts.len());
    let json = |part: &str| -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("accepted bad base64");
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            // Invalid UTF-8, or a lone surrogate escape, inside a claim nobody reads:
            // serde skips it unchecked, but no `Value` can hold it.
            Err(e) if e.to_string().starts_with("invalid unicode code point") => None,
            Err(e) => panic!("accepted bad JSON: {e}"),
        }
    };
    let (Some(header), Some(claims)) = (json(parts[0]), json(parts[1])) else {
        return;
    };
    assert_eq!(header["alg"], "HS256", "{header}");
    if let Some(crit) = header.get("crit") {
        // The only extension jsonwebtoken understands, with its only accepted value.
        assert_eq!(crit, &serde_json::json!(["b64"]), "{header}");
        assert_eq!(header["b64"], true, "{header}");
    }
    let exp = claims["exp"]
        .as_u64()
        .expect("accepted without an integer exp");
    assert!(exp >= before, "accepted an expired token: {claims}");
    assert_eq!(p.expires_at, exp);
    let after = now();
    if let Some(nbf) = claims.get("nbf").filter(|v| !v.is_null()) {
        let nbf = nbf.as_f64().expect("accepted a non-numeric nbf");
        assert!(nbf <= after as f64 + 0.5, "accepted before nbf: {claims}");
    }
    if let Some(iat) = claims.get("iat").filter(|v| !v.is_null()) {
        let iat = iat.as_f64().expect("accepted a non-numeric iat");
        let latest = (after + IAT_LEEWAY.as_secs()) as f64;
        assert!(
            iat < latest + 1.0,
            "accepted an iat in the future: {claims}"
        );
    }
    let role = claims["role"].as_str().expect("accepted without a role");
    assert_eq!(Role::parse(role), Ok(p.role));
    match claims.get("token_type") {
        None | Some(Value::Null) => {}
        Some(kind) => assert_eq!(kind, "access", "accepted a non-access token"),
    }
    let sub = match claims.get("sub").filter(|v| !v.is_null()) {
        Some(sub) => sub,
        None => &claims["user_id"],
    };
    let id = match sub {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("accepted a subject {other}"),
    };
    assert_eq!(p.id.as_str(), id);
    assert!(logi::id::validate(&id).is_ok());
    if strict {
        let names = |v: &Value, want: &str| match v {
            Value::String(s) => s == want,
            Value::Array(a) => a.iter().any(|x| x == want),
            _ => false,
        };
        assert!(
            names(&claims["iss"], "logi"),
            "wrong iss accepted: {claims}"
        );
        assert!(
            names(&claims["aud"], "apps"),
            "wrong aud accepted: {claims}"
        );
    }
}
