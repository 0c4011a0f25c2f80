//! The check made BEFORE the upgrade: the path must be a route (else 404), the
//! `?token=` must verify (else 401), and its role must be allowed on the route
//! (else 403). Messages never contain the token. What makes a request a handshake
//! at all: [`asks_upgrade`].

use axum::http::{HeaderMap, StatusCode, header};
use logi::auth::{Principal, Role, Verifier};

use crate::route::{self, Dialect, Route};

/// Why a handshake is refused, as an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Whether a request asks to become a WebSocket (`Upgrade: websocket`, in any
/// case, among other protocols or not): what makes it a handshake rather than a
/// plain GET, whether or not the rest of it is right.
pub fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// The route and principal of an upgrade request for `path` with `token`.
///
/// # Errors
/// 404 for an unknown path, 401 for a missing or invalid token, 403 for a role the
/// route does not admit.
pub fn check(
    path: &str,
    token: Option<&str>,
    verifier: &Verifier,
) -> Result<(Route, Principal), Rejection> {
    let route = route::find(path).ok_or_else(|| {
        Rejection::new(
            StatusCode::NOT_FOUND,
            "no such route: /regular_user/ws/bookings/, /driver/ws/available_bookings/, /driver/ws/bookings/ or /ws",
        )
    })?;
    let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            "no token: connect with ?token=<JWT>",
        )
    })?;
    let principal = verifier
        .verify(token)
        .map_err(|e| Rejection::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    if !route.admits(principal.role) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            format!(
                "a {} token may not use {path}: it is for {} tokens",
                principal.role.as_str(),
                route.roles()
            ),
        ));
    }
    Ok((route, principal))
}

/// `route` with the fleet's positions, as `?fleet=1` asks.
///
/// # Errors
/// 403 for any but an admin on `/ws`: the fleet is for operations consoles.
pub fn fleet(route: Route, principal: &Principal) -> Result<Route, Rejection> {
    if route.dialect != Dialect::Logi || principal.role != Role::Admin {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            format!(
                "fleet=1 is for admin tokens on /ws: this is a {} token",
                principal.role.as_str()
            ),
        ));
    }
    Ok(Route {
        fleet: true,
        ..route
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use logi::auth::{Role, Signer};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(role: Role) -> String {
        Signer::hs256(SECRET)
            .unwrap()
            .mint("45", role, Duration::from_secs(60))
            .unwrap()
    }

    #[test]
    fn only_an_upgrade_to_websocket_is_a_handshake() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::UPGRADE, v.parse().unwrap());
            }
            asks_upgrade(&headers)
        };
        assert!(with(&["websocket"]));
        assert!(with(&["WebSocket"]));
        assert!(with(&["h2c, websocket"]));
        assert!(with(&["h2c", "websocket"]));
        assert!(!with(&[]));
        assert!(!with(&["h2c"]));
        assert!(!with(&["websockets"]));
    }

    #[test]
    fn path_then_token_then_role() {
        let v = Verifier::hs256(SECRET).unwrap();
        let status = |r: Result<(Route, Principal), Rejection>| r.unwrap_err().status;
        assert_eq!(status(check("/nope", None, &v)), StatusCode::NOT_FOUND);
        assert_eq!(status(check("/ws", None, &v)), StatusCode::UNAUTHORIZED);
        assert_eq!(status(check("/ws", Some(""), &v)), StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(check("/ws", Some("x.y.z"), &v)),
            StatusCode::UNAUTHORIZED
        );
        let err = check("/regular_user/ws/bookings/", Some(&token(Role::Driver)), &v).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert_eq!(
            err.message,
            "a driver token may not use /regular_user/ws/bookings/: it is for user tokens"
        );
        let (route, p) = check("/driver/ws/bookings/", Some(&token(Role::Driver)), &v).unwrap();
        assert_eq!(
            (route, p.id.as_str()),
            (route::find("/driver/ws/bookings/").unwrap(), "45")
        );
        assert_eq!(
            status(check("/ws", Some(&token(Role::Service)), &v)),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn only_an_admin_on_ws_watches_the_fleet() {
        let v = Verifier::hs256(SECRET).unwrap();
        let (route, admin) = check("/ws", Some(&token(Role::Admin)), &v).unwrap();
        assert!(fleet(route, &admin).unwrap().fleet);
        let (route, driver) = check("/ws", Some(&token(Role::Driver)), &v).unwrap();
        let err = fleet(route, &driver).unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert_eq!(
            err.message,
            "fleet=1 is for admin tokens on /ws: this is a driver token"
        );
    }

    #[test]
    fn a_token_issued_in_the_future_is_401() {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "sub": "45", "role": "driver", "exp": now + 7200, "iat": now + 3600,
        });
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let later = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        let err = check("/ws", Some(&later), &Verifier::hs256(SECRET).unwrap()).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert!(
            err.message
                .starts_with("the token was issued in the future (iat is "),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_token_never_appears_in_a_message() {
        let v = Verifier::hs256(b"another-secret-another-secret-00").unwrap();
        let t = token(Role::User);
        let err = check("/ws", Some(&t), &v).unwrap_err();
        assert!(!err.message.contains(&t));
    }
}
