//! Token verification before the WebSocket upgrade.

pub(crate) mod dev;
pub(crate) mod keys;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use sumu_shared::claims::Claims;

use crate::config::AuthConfig;
use keys::{Key, KeyError, KeySet};

/// Why a token was refused. `reason()` is the short code in the 401 body and
/// the `reason` label of the auth-failure metric.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    #[error("no token: pass ?authorization=<JWT> or an Authorization header")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} is not allowed for this key")]
    AlgorithmNotAllowed(String),
    #[error("unknown key id {0}")]
    UnknownKid(String),
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("audience not allowed")]
    WrongAudience,
    #[error("issuer not allowed")]
    WrongIssuer,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl AuthError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::AlgorithmNotAllowed(_) => "alg_not_allowed",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }

    /// Every refusal is 401 but an outage of the key source, which is ours.
    pub(crate) fn status(&self) -> u16 {
        if matches!(self, AuthError::KeysUnavailable) {
            503
        } else {
            401
        }
    }
}

/// The token of an upgrade request: `?authorization=` first, then the
/// `Authorization` header (`Bearer <JWT>` or the bare token).
pub(crate) fn extract_token<'a>(
    query_token: Option<&'a str>,
    header: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(t) = query_token.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(t.strip_prefix("Bearer ").unwrap_or(t).trim());
    }
    let h = header?.trim();
    let token = match h.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if h.eq_ignore_ascii_case("bearer") => "",
        _ => h,
    };
    (!token.is_empty()).then_some(token)
}

struct Remote {
    uri: String,
    client: reqwest::Client,
    state: RwLock<RemoteState>,
    refresh: tokio::sync::Mutex<()>,
}

struct RemoteState {
    keys: Arc<KeySet>,
    expires_at: Instant,
    last_fetch: Option<Instant>,
}

pub(crate) struct Authenticator {
    cfg: AuthConfig,
    local: Arc<KeySet>,
    remote: Option<Remote>,
}

/// The header fields we route on, read before any verification so that
/// `alg: none` gets its own answer.
struct PeekedHeader {
    alg: Algorithm,
    kid: Option<String>,
}

fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    if token.split('.').count() != 3 {
        return Err(AuthError::Malformed);
    }
    let first = token.split('.').next().unwrap_or_default();
    let raw = base64url_decode(first).ok_or(AuthError::Malformed)?;
    let v: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
    let alg_name = v
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(AuthError::Malformed)?;
    let alg = alg_name
        .parse::<Algorithm>()
        .map_err(|_| AuthError::AlgorithmNotAllowed(alg_name.to_string()))?;
    let kid = v.get("kid").and_then(|k| k.as_str()).map(str::to_string);
    Ok(PeekedHeader { alg, kid })
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

impl Authenticator {
    /// Loads the local key sources (file, secret, the dev key) now; a JWKS
    /// URI is fetched by [`Authenticator::warm_up`] and then on demand.
    pub(crate) fn new(
        cfg: AuthConfig,
        extra: Option<(String, Key)>,
    ) -> Result<Authenticator, KeyError> {
        let mut local = KeySet::default();
        if let Some(path) = &cfg.jwks_file {
            local.extend(KeySet::from_file(path)?);
        }
        if let Some(secret) = &cfg.hs256_secret {
            local.anonymous.push(Key::hmac(secret.as_bytes()));
        }
        if let Some((kid, key)) = extra {
            local.by_kid.insert(kid, key);
        }
        let remote = cfg.jwks_uri.clone().map(|uri| Remote {
            uri,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            state: RwLock::new(RemoteState {
                keys: Arc::new(KeySet::default()),
                expires_at: Instant::now(),
                last_fetch: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
        });
        Ok(Authenticator {
            cfg,
            local: Arc::new(local),
            remote,
        })
    }

    /// Fetches the JWKS URI once at start; a failure is logged, not fatal
    /// (the next token retries).
    pub(crate) async fn warm_up(&self) {
        if let Some(remote) = &self.remote {
            if let Err(e) = self.refresh(remote, None).await {
                tracing::warn!(error = %e, "initial JWKS fetch failed; will retry on demand");
            }
        }
    }

    fn remote_keys(remote: &Remote) -> (Arc<KeySet>, bool, Option<Instant>) {
        let s = remote.state.read().unwrap_or_else(|e| e.into_inner());
        (s.keys.clone(), Instant::now() >= s.expires_at, s.last_fetch)
    }

    /// Refetches unless another caller did since `seen` (single flight).
    async fn refresh(&self, remote: &Remote, seen: Option<Instant>) -> Result<(), KeyError> {
        let _guard = remote.refresh.lock().await;
        let (_, _, last) = Self::remote_keys(remote);
        if last.is_some() && last != seen {
            return Ok(());
        }
        let result = keys::fetch(&remote.client, &remote.uri, self.cfg.cache_ttl).await;
        let mut s = remote.state.write().unwrap_or_else(|e| e.into_inner());
        s.last_fetch = Some(Instant::now());
        match result {
            Ok(fetched) => {
                tracing::info!(uri = %remote.uri, keys = fetched.keys.len(), "fetched signing keys");
                s.keys = Arc::new(fetched.keys);
                s.expires_at = fetched.expires_at;
                Ok(())
            }
            Err(e) => {
                // Keep serving the old keys; try again after the refetch interval.
                s.expires_at = Instant::now() + self.cfg.refetch_interval;
                Err(e)
            }
        }
    }

    async fn candidate_keys(&self, kid: Option<&str>) -> Result<Vec<Key>, AuthError> {
        let mut remote_set = None;
        if let Some(remote) = &self.remote {
            let (mut set, expired, last) = Self::remote_keys(remote);
            let unknown = kid
                .is_some_and(|k| !set.by_kid.contains_key(k) && !self.local.by_kid.contains_key(k));
            let may_refetch = last.is_none_or(|t| t.elapsed() >= self.cfg.refetch_interval);
            if expired || (unknown && may_refetch) {
                if let Err(e) = self.refresh(remote, last).await {
                    tracing::warn!(error = %e, "signing key refresh failed");
                }
                set = Self::remote_keys(remote).0;
            }
            remote_set = Some(set);
        }
        let sets: Vec<&KeySet> = std::iter::once(self.local.as_ref())
            .chain(remote_set.as_deref())
            .collect();
        if sets.iter().all(|s| s.is_empty()) {
            return Err(AuthError::KeysUnavailable);
        }
        if let Some(kid) = kid {
            if let Some(key) = sets.iter().find_map(|s| s.by_kid.get(kid)) {
                return Ok(vec![key.clone()]);
            }
            let anonymous: Vec<Key> = sets.iter().flat_map(|s| s.anonymous.clone()).collect();
            if anonymous.is_empty() {
                return Err(AuthError::UnknownKid(kid.to_string()));
            }
            return Ok(anonymous);
        }
        Ok(sets
            .iter()
            .flat_map(|s| s.anonymous.iter().chain(s.by_kid.values()).cloned())
            .collect())
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = peek_header(token)?;
        let keys = self.candidate_keys(header.kid.as_deref()).await?;
        let usable: Vec<&Key> = keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .collect();
        if usable.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        let validation = self.validation(header.alg);
        let mut last = AuthError::BadSignature;
        for key in usable {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation) {
                Ok(data) => return self.check_claims(data.claims),
                Err(e) => {
                    last = map_jwt_error(e.kind());
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.validate_exp = self.cfg.verify_expiration;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.leeway = self.cfg.leeway.as_secs();
        v.required_spec_claims = if self.cfg.verify_expiration {
            ["exp", "sub"].iter().map(|s| s.to_string()).collect()
        } else {
            ["sub"].iter().map(|s| s.to_string()).collect()
        };
        if let Some(iss) = &self.cfg.issuer {
            v.set_issuer(&[iss]);
        }
        v
    }

    fn check_claims(&self, claims: Claims) -> Result<Claims, AuthError> {
        if claims.sub.is_empty() {
            return Err(AuthError::MissingClaim("sub".into()));
        }
        if !self.cfg.audiences.is_empty() && !claims.audience_allowed(&self.cfg.audiences) {
            return Err(AuthError::WrongAudience);
        }
        Ok(claims)
    }
}

fn map_jwt_error(kind: &jsonwebtoken::errors::ErrorKind) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => AuthError::BadSignature,
        K::ExpiredSignature => AuthError::Expired,
        K::ImmatureSignature => AuthError::NotYetValid,
        K::InvalidIssuer => AuthError::WrongIssuer,
        K::InvalidAudience => AuthError::WrongAudience,
        K::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed("mismatch".into())
        }
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn cfg() -> AuthConfig {
        AuthConfig {
            hs256_secret: Some("s3cret".into()),
            audiences: vec!["app".into()],
            verify_expiration: true,
            leeway: Duration::from_secs(0),
            cache_ttl: Duration::from_secs(60),
            refetch_interval: Duration::from_secs(30),
            ..AuthConfig::default()
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn extracts_from_query_then_header() {
        assert_eq!(
            extract_token(Some("a.b.c"), Some("Bearer x")),
            Some("a.b.c")
        );
        assert_eq!(extract_token(None, Some("Bearer x.y.z")), Some("x.y.z"));
        assert_eq!(extract_token(None, Some("bearer x.y.z")), Some("x.y.z"));
        assert_eq!(extract_token(None, Some("x.y.z")), Some("x.y.z"));
        assert_eq!(extract_token(Some(""), None), None);
        assert_eq!(extract_token(None, Some("Bearer ")), None);
    }

    #[test]
    fn decodes_base64url() {
        assert_eq!(base64url_decode("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        assert!(base64url_decode("*").is_none());
    }

    #[tokio::test]
    async fn verifies_and_classifies_failures() {
        let auth = Authenticator::new(cfg(), None).unwrap();
        let exp = now() + 60;
        let ok = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"app","exp":exp}),
        );
        assert_eq!(auth.verify(&ok).await.unwrap().sub, "u1");
        let cid = token(
            "s3cret",
            serde_json::json!({"sub":"u1","client_id":"app","exp":exp}),
        );
        assert!(auth.verify(&cid).await.is_ok());
        let bad = token(
            "other",
            serde_json::json!({"sub":"u1","aud":"app","exp":exp}),
        );
        assert_eq!(
            auth.verify(&bad).await.unwrap_err(),
            AuthError::BadSignature
        );
        let old = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"app","exp":now()-100}),
        );
        assert_eq!(auth.verify(&old).await.unwrap_err(), AuthError::Expired);
        let aud = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"x","exp":exp}),
        );
        assert_eq!(
            auth.verify(&aud).await.unwrap_err(),
            AuthError::WrongAudience
        );
        assert_eq!(auth.verify("abc").await.unwrap_err(), AuthError::Malformed);
        // alg: none
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.";
        assert_eq!(
            auth.verify(none).await.unwrap_err().reason(),
            "alg_not_allowed"
        );
    }

    #[tokio::test]
    async fn expiration_check_is_switchable() {
        let mut c = cfg();
        c.verify_expiration = false;
        let auth = Authenticator::new(c, None).unwrap();
        let old = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"app","exp":now()-100}),
        );
        assert!(auth.verify(&old).await.is_ok());
        let noexp = token("s3cret", serde_json::json!({"sub":"u1","aud":"app"}));
        assert!(auth.verify(&noexp).await.is_ok());
    }
}
