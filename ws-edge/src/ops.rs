//! The live operations page at `/ops/`: static files built into the binary (from
//! `ws-edge/ops/`), so an edge needs nothing on disk and nothing from the internet
//! to serve it. The page itself connects to `/ws?fleet=1` with an admin token the
//! operator gives it; these routes hand out files only and need no token.
//!
//! - `/ops` redirects to `/ops/`, so the page's relative URLs resolve.
//! - Every file is sent with `Cache-Control: no-cache` and an `ETag` of its bytes:
//!   a browser revalidates (304, no body) and picks up a new edge's page at once.
//! - The headers keep the page to itself: its own scripts only
//!   (`Content-Security-Policy`), no framing, and no `Referer` (its URL may carry
//!   `?token=`).

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One file of the page.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: &'static str,
}

/// A strong validator for `bytes`, fixed at compile time: FNV-1a, 64 bits, as 16
/// hex digits in quotes.
const fn etag_of(bytes: &[u8]) -> [u8; 18] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        out[1 + d] = HEX[((hash >> (60 - 4 * d)) & 0xf) as usize];
        d += 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $content_type:literal) => {{
        const BYTES: &[u8] = include_bytes!(concat!("../ops/", $file));
        const ETAG: [u8; 18] = etag_of(BYTES);
        Asset {
            bytes: BYTES,
            content_type: $content_type,
            // Quotes and hex digits only: always UTF-8.
            etag: match std::str::from_utf8(&ETAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static SCRIPT: Asset = asset!("ops.js", "text/javascript; charset=utf-8");
static STYLE: Asset = asset!("ops.css", "text/css; charset=utf-8");

/// `connect-src 'self'` admits the page's own host over `ws:`/`wss:` too.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ops", get(|| async { Redirect::permanent("/ops/") }))
        .route(
            "/ops/",
            get(|h: HeaderMap| async move { serve(&INDEX, &h) }),
        )
        .route(
            "/ops/ops.js",
            get(|h: HeaderMap| async move { serve(&SCRIPT, &h) }),
        )
        .route(
            "/ops/ops.css",
            get(|h: HeaderMap| async move { serve(&STYLE, &h) }),
        )
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == asset.etag || tag.trim() == "*");
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, asset.bytes).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_with_the_bytes_and_are_quoted_hex() {
        assert_eq!(INDEX.etag.len(), 18);
        assert!(INDEX.etag.starts_with('"') && INDEX.etag.ends_with('"'));
        assert!(INDEX.etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(INDEX.etag, SCRIPT.etag);
        assert_eq!(etag_of(b"a"), etag_of(b"a"));
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
    }
}
