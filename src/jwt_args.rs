//! The JWT flags both processes share, and the verifier they configure.

use std::path::PathBuf;

use crate::auth::{Signer, Verifier};

/// The shortest HS256 secret accepted, in bytes (the hash's own size).
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct JwtArgs {
    /// HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "LOGI_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "LOGI_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Required `iss` claim; not checked when unset.
    #[arg(long, env = "LOGI_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim; not checked when unset.
    #[arg(long, env = "LOGI_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl JwtArgs {
    /// The verifier these flags configure.
    ///
    /// # Errors
    /// A one-line message saying what to set or fix.
    pub fn verifier(&self) -> Result<Verifier, String> {
        let verifier = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err("set only one of LOGI_JWT_SECRET and LOGI_JWT_PUBLIC_KEY".into());
            }
            (None, None) => {
                return Err(
                    "no JWT key: set LOGI_JWT_SECRET (HS256 secret) or LOGI_JWT_PUBLIC_KEY (PEM file)".into()
                );
            }
            (Some(secret), None) => {
                if secret.len() < MIN_SECRET_LEN {
                    return Err(format!(
                        "LOGI_JWT_SECRET is too short: use at least {MIN_SECRET_LEN} bytes"
                    ));
                }
                Verifier::hs256(secret.as_bytes()).map_err(|e| format!("LOGI_JWT_SECRET: {e}"))?
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!(
                        "cannot read LOGI_JWT_PUBLIC_KEY file {}: {e}",
                        path.display()
                    )
                })?;
                Verifier::public_key_pem(&pem)
                    .map_err(|e| format!("LOGI_JWT_PUBLIC_KEY file {}: {e}", path.display()))?
            }
        };
        let verifier = match &self.jwt_issuer {
            Some(iss) => verifier.require_issuer(iss),
            None => verifier,
        };
        Ok(match &self.jwt_audience {
            Some(aud) => verifier.require_audience(aud),
            None => verifier,
        })
    }

    /// A signer for the configured HS256 secret, if there is one (an empty secret
    /// signs nothing; [`JwtArgs::verifier`] says why).
    pub fn signer(&self) -> Option<Signer> {
        let secret = self.jwt_secret.as_ref()?;
        Some(
            Signer::hs256(secret.as_bytes())
                .ok()?
                .issuer(self.jwt_issuer.clone())
                .audience(self.jwt_audience.clone()),
        )
    }
}
