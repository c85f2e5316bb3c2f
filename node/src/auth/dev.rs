//! The `--dev` token issuer: signs HS256 tokens for any `sub`, with the
//! node's `--hs256-secret` when it has one (so a fleet shares dev tokens),
//! else with a key made at start-up; the node's authenticator trusts it.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sumu_shared::claims::{Audience, Claims};

use super::keys::Key;

pub(crate) const DEV_KID: &str = "sumu-dev";
pub(crate) const DEV_TOKEN_TTL_SECS: u64 = 3600;

pub(crate) struct DevIssuer {
    secret: Vec<u8>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl DevIssuer {
    /// An issuer signing with `shared_secret` when one is given (every node
    /// of a fleet started with the same `--hs256-secret` then accepts every
    /// node's dev tokens), else with a key made now, for this process only.
    pub(crate) fn new(
        audience: Option<String>,
        issuer: Option<String>,
        shared_secret: Option<&str>,
    ) -> DevIssuer {
        let secret = match shared_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let mut secret = Vec::with_capacity(32);
                secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
                secret
            }
        };
        DevIssuer {
            secret,
            audience,
            issuer,
        }
    }

    pub(crate) fn verification_key(&self) -> Key {
        Key::hmac(&self.secret)
    }

    pub(crate) fn issue(&self, sub: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: sub.to_string(),
            exp: Some(now + DEV_TOKEN_TTL_SECS),
            iat: Some(now),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            client_id: None,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(DEV_KID.to_string());
        encode(&header, &claims, &EncodingKey::from_secret(&self.secret))
    }
}
