//! The upgrade request as ws-edge reads it: the request target's path picks the
//! route and its query, parsed by axum's `Query<HashMap<String, String>>`, holds the
//! token; then `handshake::check`.
//!
//! Input: the request target, then optionally a newline and a claims JSON. With
//! claims, every `$JWT` in the target is replaced by a token of those claims signed
//! with the right key, so the fuzzer reaches the role check.
#![no_main]

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use logi::auth::Verifier;
use logi_fuzz::{HEADER, SECRET, sign};
use ws_edge::{handshake, route};

fuzz_target!(|data: &[u8]| {
    let (target, claims) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let target = match claims {
        Some(claims) => {
            let jwt = sign(HEADER.as_bytes(), claims);
            String::from_utf8_lossy(target).replace("$JWT", &jwt)
        }
        None => String::from_utf8_lossy(target).into_owned(),
    };
    // hyper answers 400 to a request target that is not a URI; none reaches us.
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri);
    let token = query
        .as_ref()
        .ok()
        .and_then(|q| q.get("token"))
        .map(String::as_str);
    let verifier = Verifier::hs256(SECRET).expect("the secret is not empty");
    let path = uri.path();
    match handshake::check(path, token, &verifier) {
        Ok((route, principal)) => {
            assert_eq!(Some(route), route::find(path));
            assert!(route.admits(principal.role));
            let token = token.expect("admitted without a token");
            assert_eq!(verifier.verify(token).as_ref(), Ok(&principal));
        }
        Err(rejection) => {
            assert!(!rejection.message.is_empty());
            let expected = if route::find(path).is_none() {
                vec![StatusCode::NOT_FOUND]
            } else {
                vec![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]
            };
            assert!(expected.contains(&rejection.status), "{rejection:?}");
            // The message may hold the token's text only where it would hold it
            // anyway (a token that reads like the path or a route's name).
            if let Some(t) = token.filter(|t| t.len() >= 16) {
                let other = handshake::check(path, Some("placeholder.token.text"), &verifier);
                let anyway = other.is_err_and(|r| r.message.contains(t)) || path.contains(t);
                assert!(
                    anyway || !rejection.message.contains(t),
                    "the token was echoed"
                );
            }
        }
    }
});
