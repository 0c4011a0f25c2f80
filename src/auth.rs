//! JWT verification: who a token names and in what role.
//!
//! The algorithm is pinned by configuration: an HS256 shared secret, or a PEM public
//! key whose type decides RS256, ES256 or EdDSA. A token signed with any other
//! algorithm, including `none`, is rejected, and so is a header naming a `crit`
//! extension other than `b64`. `exp` is required; `iss` and `aud` are required and checked when
//! configured; an `iat` later than now (beyond [`IAT_LEEWAY`]) is refused. The
//! principal id is `sub`, or `user_id` as Django SimpleJWT writes it (a number or a
//! string).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// How far in the future a token's `iat` may be: the minting backend's clock may be
/// a little ahead of ours, and a token it just issued must still work. A token
/// issued further ahead than that was minted by a host with a broken clock, or
/// stockpiled with a stolen key for later use; either way it is refused. (`exp` and
/// `nbf` are the issuer's explicit bounds and are checked exactly.)
pub const IAT_LEEWAY: Duration = Duration::from_secs(60);

/// What a principal may do; see DESIGN.md for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A rider: its own bookings.
    User,
    /// A driver: itself and the bookings offered to or accepted by it.
    Driver,
    /// An operator: everything.
    Admin,
    /// A backend microservice or ws-edge: everything.
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Driver => "driver",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// # Errors
    /// [`AuthError::UnknownRole`] for anything but the four role names.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        match s {
            "user" => Ok(Role::User),
            "driver" => Ok(Role::Driver),
            "admin" => Ok(Role::Admin),
            "service" => Ok(Role::Service),
            other => Err(AuthError::UnknownRole(other.to_owned())),
        }
    }

    /// Admins and services may act on anything.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Admin | Role::Service)
    }
}

/// The verified identity behind a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: Id,
    pub role: Role,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Principal {
    /// How long the token is still valid (zero once expired).
    pub fn time_left(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Duration::from_secs(self.expires_at).saturating_sub(now)
    }
}

/// Why a token was refused. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token: send `authorization: Bearer <JWT>`")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not signed with the configured algorithm ({0:?})")]
    WrongAlgorithm(Algorithm),
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the token's issuer is not the configured one")]
    WrongIssuer,
    #[error("the token's audience is not the configured one")]
    WrongAudience,
    #[error("the token's role {0:?} is not one of user, driver, admin, service")]
    UnknownRole(String),
    #[error("the token's subject is not a valid id: {0}")]
    BadSubject(String),
    #[error("a {0:?} token cannot authenticate: use an access token")]
    NotAccess(String),
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error(
        "the token was issued in the future (iat is {ahead} s ahead of this server's clock, over the {} s allowed)",
        IAT_LEEWAY.as_secs()
    )]
    IssuedInFuture { ahead: u64 },
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the JWT key is unusable: {0}")]
    BadKey(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    user_id: Option<serde_json::Value>,
    role: Option<String>,
    exp: u64,
    /// Checked here: jsonwebtoken does not look at it.
    iat: Option<serde_json::Value>,
    /// Their values are jsonwebtoken's to check; their presence is ours.
    iss: Option<serde_json::Value>,
    aud: Option<serde_json::Value>,
    /// SimpleJWT marks its tokens; only access tokens authenticate.
    token_type: Option<String>,
}

/// Checks tokens against one pinned key and algorithm.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`.
    ///
    /// # Errors
    /// [`AuthError::BadKey`] when `secret` is empty: anyone could sign for it.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_secret(secret).map_err(|_| empty_secret())?;
        Ok(Self::with(key, Algorithm::HS256))
    }

    /// A verifier for a PEM public key: RSA keys pin RS256, P-256 keys ES256 and
    /// Ed25519 keys EdDSA.
    ///
    /// # Errors
    /// [`AuthError::BadKey`] when the PEM holds none of these.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, AuthError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::with(key, Algorithm::ES256));
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            return Ok(Self::with(key, Algorithm::EdDSA));
        }
        Err(AuthError::BadKey(
            "expected a PEM RSA, EC P-256 or Ed25519 public key".into(),
        ))
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        // Tokens are minted by the platform's own backends; expiry is exact.
        validation.leeway = 0;
        Self { key, validation }
    }

    /// Also require this `iss`. A token without one is refused too (jsonwebtoken
    /// checks the value only when the claim is there).
    pub fn require_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self
    }

    /// Also require this `aud`; likewise a token without one is refused.
    pub fn require_audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self
    }

    /// Verifies `token` and returns the principal it names.
    ///
    /// # Errors
    /// [`AuthError`] says why the token is refused.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.explain(e))?;
        let claims = data.claims;
        // Checked here rather than as jsonwebtoken's required claims, which would
        // call an `iss` of the wrong type missing.
        if self.validation.iss.is_some() && claims.iss.is_none() {
            return Err(AuthError::MissingClaim("iss"));
        }
        if self.validation.aud.is_some() && claims.aud.is_none() {
            return Err(AuthError::MissingClaim("aud"));
        }
        if let Some(iat) = &claims.iat {
            check_issued_at(iat, unix_now())?;
        }
        if let Some(kind) = claims.token_type.as_deref().filter(|k| *k != "access") {
            return Err(AuthError::NotAccess(kind.to_owned()));
        }
        let raw_id = claims
            .sub
            .or(claims.user_id)
            .ok_or(AuthError::MissingClaim("sub"))?;
        let id = match raw_id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(AuthError::BadSubject(format!(
                    "{other} is not a string or number"
                )));
            }
        };
        let id = Id::new(id).map_err(|e| AuthError::BadSubject(e.to_string()))?;
        let role = Role::parse(&claims.role.ok_or(AuthError::MissingClaim("role"))?)?;
        Ok(Principal {
            id,
            role,
            expires_at: claims.exp,
        })
    }

    fn explain(&self, e: jsonwebtoken::errors::Error) -> AuthError {
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::WrongAlgorithm(self.validation.algorithms[0])
            }
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingClaim("exp"),
            // A non-string `iss` or `aud` (12.x no longer lets one pass unchecked).
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidClaimFormat(c) if c == "iss" => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidClaimFormat(c) if c == "aud" => AuthError::WrongAudience,
            // Not three parts, or a header it may not have (`crit`, `b64: false`).
            ErrorKind::InvalidToken => AuthError::Malformed(
                "not a compact JWS, or its header has an unsupported `crit` or `b64`".into(),
            ),
            ErrorKind::Json(e) if e.to_string().contains("missing field `exp`") => {
                AuthError::MissingClaim("exp")
            }
            other => AuthError::Malformed(format!("{other:?}")),
        }
    }
}

/// Refuses an `iat` later than `now` by more than [`IAT_LEEWAY`].
fn check_issued_at(iat: &serde_json::Value, now: u64) -> Result<(), AuthError> {
    // A NumericDate may have a fraction; `as` saturates, so a negative one is 0.
    let iat = iat
        .as_u64()
        .or_else(|| iat.as_f64().map(|f| f as u64))
        .ok_or_else(|| AuthError::Malformed("`iat` is not a number of seconds".into()))?;
    let ahead = iat.saturating_sub(now);
    if ahead > IAT_LEEWAY.as_secs() {
        return Err(AuthError::IssuedInFuture { ahead });
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn empty_secret() -> AuthError {
    AuthError::BadKey("the HS256 secret is empty".into())
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    role: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints HS256 tokens: the CLI's `token` command, ws-edge's own service credential,
/// tests.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Signer {
    /// # Errors
    /// [`AuthError::BadKey`] when `secret` is empty.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthError> {
        Ok(Self {
            key: EncodingKey::from_secret(secret).map_err(|_| empty_secret())?,
            issuer: None,
            audience: None,
        })
    }

    pub fn issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    pub fn audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// A token for `sub` in `role`, valid for `ttl` from now.
    ///
    /// # Errors
    /// Only if signing fails, which HS256 does not.
    pub fn mint(&self, sub: &str, role: Role, ttl: Duration) -> Result<String, AuthError> {
        let now = unix_now();
        let claims = MintClaims {
            sub,
            role: role.as_str(),
            exp: now + ttl.as_secs(),
            iat: now,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| AuthError::BadKey(e.to_string()))
    }
}

/// Takes the token out of an `authorization` header value (`Bearer <JWT>`).
///
/// # Errors
/// [`AuthError::Missing`] when the value is not a bearer credential.
pub fn bearer(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify() {
        let token = Signer::hs256(SECRET)
            .unwrap()
            .mint("45", Role::Driver, Duration::from_secs(60))
            .unwrap();
        let p = Verifier::hs256(SECRET).unwrap().verify(&token).unwrap();
        assert_eq!((p.id.as_str(), p.role), ("45", Role::Driver));
    }

    #[test]
    fn simplejwt_numeric_user_id_is_the_principal() {
        let token = sign(json!({"user_id": 12, "role": "user", "exp": now() + 60}));
        assert_eq!(
            Verifier::hs256(SECRET)
                .unwrap()
                .verify(&token)
                .unwrap()
                .id
                .as_str(),
            "12"
        );
    }

    #[test]
    fn refusals() {
        let v = Verifier::hs256(SECRET).unwrap();
        let exp = now() + 60;
        assert_eq!(
            v.verify(&sign(json!({"sub": "1", "role": "user", "exp": now() - 1}))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "1", "role": "user"}))),
            Err(AuthError::MissingClaim("exp"))
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "1", "exp": exp}))),
            Err(AuthError::MissingClaim("role"))
        );
        assert_eq!(
            v.verify(&sign(json!({"role": "user", "exp": exp}))),
            Err(AuthError::MissingClaim("sub"))
        );
        assert_eq!(
            v.verify(&sign(json!({"sub": "1", "role": "root", "exp": exp}))),
            Err(AuthError::UnknownRole("root".into()))
        );
        let other = Signer::hs256(b"another-secret")
            .unwrap()
            .mint("1", Role::Admin, Duration::from_secs(60))
            .unwrap();
        assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
        assert!(matches!(
            v.verify("not.a.jwt"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn refresh_and_future_tokens_are_refused() {
        let v = Verifier::hs256(SECRET).unwrap();
        let exp = now() + 600;
        let refresh =
            sign(json!({"user_id": 1, "role": "user", "exp": exp, "token_type": "refresh"}));
        assert_eq!(
            v.verify(&refresh),
            Err(AuthError::NotAccess("refresh".into()))
        );
        let access =
            sign(json!({"user_id": 1, "role": "user", "exp": exp, "token_type": "access"}));
        assert!(v.verify(&access).is_ok());
        let later = sign(json!({"sub": "1", "role": "user", "exp": exp, "nbf": now() + 300}));
        assert_eq!(v.verify(&later), Err(AuthError::NotYetValid));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        use base64_url as b64;
        let body = b64(&json!({"sub": "1", "role": "admin", "exp": now() + 60}).to_string());
        let v = Verifier::hs256(SECRET).unwrap();
        for alg in ["none", "None", "NONE", ""] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let unsigned = format!("{}.{}.", b64(&header), body);
            let err = v.verify(&unsigned).unwrap_err();
            assert!(
                matches!(&err, AuthError::Malformed(m) if m.contains("unknown variant")),
                "{alg}: {err:?}"
            );
        }
        // An HS256 header with the signature left off.
        let stripped = format!("{}.{}.", b64(r#"{"alg":"HS256"}"#), body);
        assert_eq!(v.verify(&stripped), Err(AuthError::BadSignature));
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "1", "role": "admin", "exp": now() + 60}),
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap();
        assert_eq!(
            Verifier::hs256(SECRET).unwrap().verify(&hs384),
            Err(AuthError::WrongAlgorithm(Algorithm::HS256))
        );
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let v = Verifier::hs256(SECRET)
            .unwrap()
            .require_issuer("logi")
            .require_audience("apps");
        let exp = now() + 60;
        let good =
            sign(json!({"sub": "1", "role": "user", "exp": exp, "iss": "logi", "aud": "apps"}));
        assert!(v.verify(&good).is_ok());
        let bad_iss =
            sign(json!({"sub": "1", "role": "user", "exp": exp, "iss": "x", "aud": "apps"}));
        assert_eq!(v.verify(&bad_iss), Err(AuthError::WrongIssuer));
        let bad_aud =
            sign(json!({"sub": "1", "role": "user", "exp": exp, "iss": "logi", "aud": "x"}));
        assert_eq!(v.verify(&bad_aud), Err(AuthError::WrongAudience));
        // Without configuration an `aud` in the token is not checked.
        assert!(Verifier::hs256(SECRET).unwrap().verify(&bad_aud).is_ok());
    }

    /// A token with exactly this header and these claims, signed HS256 with `SECRET`.
    fn sign_raw(header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let message = format!(
            "{}.{}",
            base64_url(&header.to_string()),
            base64_url(&claims.to_string())
        );
        let key = EncodingKey::from_secret(SECRET).unwrap();
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    #[test]
    fn headers_with_crit_or_unencoded_payloads_are_refused() {
        let v = Verifier::hs256(SECRET).unwrap();
        let claims = json!({"sub": "1", "role": "user", "exp": now() + 60});
        let plain = json!({"alg": "HS256", "typ": "JWT", "x": 1});
        assert!(v.verify(&sign_raw(&plain, &claims)).is_ok());
        let refused = [
            json!({"alg": "HS256", "crit": ["x"], "x": 1}),
            json!({"alg": "HS256", "crit": []}),
            json!({"alg": "HS256", "crit": ["b64", "b64"], "b64": true}),
            json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
            json!({"alg": "HS256", "crit": "x"}),
        ];
        for header in refused {
            let err = v.verify(&sign_raw(&header, &claims)).unwrap_err();
            assert!(matches!(err, AuthError::Malformed(_)), "{header}: {err:?}");
        }
        assert_eq!(
            v.verify(&sign_raw(
                &json!({"alg": "HS256", "crit": ["x"], "x": 1}),
                &claims
            ))
            .unwrap_err()
            .to_string(),
            "the token is malformed: not a compact JWS, or its header has an unsupported `crit` or `b64`"
        );
    }

    #[test]
    fn subjects_must_be_valid_ids_as_strings_or_numbers() {
        let v = Verifier::hs256(SECRET).unwrap();
        let exp = now() + 60;
        for sub in [json!(true), json!({"id": "1"}), json!(["1"])] {
            let token = sign(json!({"sub": sub, "role": "admin", "exp": exp}));
            eprintln!("{sub}: {:?}", v.verify(&token));
        }
        assert_eq!(
            v.verify(&sign(json!({"sub": true, "role": "user", "exp": exp}))),
            Err(AuthError::BadSubject(
                "true is not a string or number".into()
            ))
        );
        // `_` would let `7_available` read driver 7's topics.
        let token = sign(json!({"sub": "7_available", "role": "driver", "exp": exp}));
        assert!(matches!(v.verify(&token), Err(AuthError::BadSubject(_))));
        // A null `sub` is no subject, and SimpleJWT's `user_id` must then be valid too.
        let token = sign(json!({"sub": null, "user_id": false, "role": "user", "exp": exp}));
        assert!(matches!(v.verify(&token), Err(AuthError::BadSubject(_))));
        let token = sign(json!({"sub": null, "role": "user", "exp": exp}));
        assert_eq!(v.verify(&token), Err(AuthError::MissingClaim("sub")));
    }

    #[test]
    fn issuer_and_audience_of_the_wrong_type_or_missing_are_refused() {
        let v = Verifier::hs256(SECRET)
            .unwrap()
            .require_issuer("logi")
            .require_audience("apps");
        let token = |iss: serde_json::Value, aud: serde_json::Value| {
            let mut claims = json!({"sub": "1", "role": "user", "exp": now() + 60});
            for (name, value) in [("iss", iss), ("aud", aud)] {
                if !value.is_null() {
                    claims[name] = value;
                }
            }
            sign(claims)
        };
        let apps = || json!("apps");
        let logi = || json!("logi");
        assert!(v.verify(&token(logi(), json!(["apps", "other"]))).is_ok());
        assert_eq!(
            v.verify(&token(json!(5), apps())),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            v.verify(&token(json!({"logi": true}), apps())),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            v.verify(&token(logi(), json!(7))),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            v.verify(&token(logi(), json!({"apps": 1}))),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            v.verify(&token(json!(null), apps())),
            Err(AuthError::MissingClaim("iss"))
        );
        assert_eq!(
            v.verify(&token(logi(), json!(null))),
            Err(AuthError::MissingClaim("aud"))
        );
    }

    #[test]
    fn an_empty_hmac_secret_cannot_be_used() {
        assert_eq!(
            Verifier::hs256(b"").unwrap_err(),
            AuthError::BadKey("the HS256 secret is empty".into())
        );
        assert!(matches!(Signer::hs256(b""), Err(AuthError::BadKey(_))));
    }

    #[test]
    fn tokens_issued_in_the_future_are_refused() {
        let v = Verifier::hs256(SECRET).unwrap();
        let claims = |iat: serde_json::Value| {
            sign(json!({"sub": "1", "role": "user", "exp": now() + 7200, "iat": iat}))
        };
        let err = v.verify(&claims(json!(now() + 3600))).unwrap_err();
        assert!(
            matches!(err, AuthError::IssuedInFuture { ahead } if (3590..=3600).contains(&ahead)),
            "{err:?}"
        );
        // Clock skew within the leeway, the past, and fractional seconds pass.
        assert!(v.verify(&claims(json!(now() + 30))).is_ok());
        assert!(v.verify(&claims(json!(now() - 3600))).is_ok());
        assert!(v.verify(&claims(json!(now() as f64 - 0.5))).is_ok());
        assert!(v.verify(&claims(json!(-1))).is_ok());
        assert_eq!(
            v.verify(&claims(json!("yesterday"))),
            Err(AuthError::Malformed(
                "`iat` is not a number of seconds".into()
            ))
        );
        // Exactly at the edge, with a fixed clock.
        assert_eq!(check_issued_at(&json!(1060), 1000), Ok(()));
        let err = check_issued_at(&json!(1061), 1000).unwrap_err();
        assert_eq!(err, AuthError::IssuedInFuture { ahead: 61 });
        assert_eq!(
            err.to_string(),
            "the token was issued in the future (iat is 61 s ahead of this server's clock, over the 60 s allowed)"
        );
        assert!(check_issued_at(&json!(u64::MAX), 0).is_err());
        assert!(check_issued_at(&json!(1e300), 0).is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Ok("abc"));
        assert_eq!(bearer("bearer  abc "), Ok("abc"));
        assert_eq!(bearer("Basic abc"), Err(AuthError::Missing));
        assert_eq!(bearer("Bearer"), Err(AuthError::Missing));
    }

    #[test]
    fn public_keys_pin_their_algorithm() {
        let claims = json!({"sub": "7", "role": "driver", "exp": now() + 60});
        let keys: [(&[u8], &[u8], Algorithm); 3] = [
            (
                include_bytes!("../tests/fixtures/rsa.key"),
                include_bytes!("../tests/fixtures/rsa.pub"),
                Algorithm::RS256,
            ),
            (
                include_bytes!("../tests/fixtures/p256.key"),
                include_bytes!("../tests/fixtures/p256.pub"),
                Algorithm::ES256,
            ),
            (
                include_bytes!("../tests/fixtures/ed25519.key"),
                include_bytes!("../tests/fixtures/ed25519.pub"),
                Algorithm::EdDSA,
            ),
        ];
        for (private, public, alg) in keys {
            let signing = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private),
                Algorithm::ES256 => EncodingKey::from_ec_pem(private),
                _ => EncodingKey::from_ed_pem(private),
            }
            .unwrap();
            let token = jsonwebtoken::encode(&Header::new(alg), &claims, &signing).unwrap();
            let verifier = Verifier::public_key_pem(public).unwrap();
            assert_eq!(verifier.verify(&token).unwrap().id.as_str(), "7", "{alg:?}");
            // The classic confusion attack: HS256 keyed with the public key itself.
            let forged = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(public).unwrap(),
            )
            .unwrap();
            assert_eq!(
                verifier.verify(&forged),
                Err(AuthError::WrongAlgorithm(alg)),
                "{alg:?}"
            );
        }
        assert!(matches!(
            Verifier::public_key_pem(b"not a key"),
            Err(AuthError::BadKey(_))
        ));
    }

    fn base64_url(s: &str) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |acc, &x| (acc << 8) | x as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}
