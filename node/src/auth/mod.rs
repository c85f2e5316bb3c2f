//! Token verification before the WebSocket upgrade: where the token is
//! taken from, which keys may verify it, and which claims it must carry.
//! Every refusal is an [`AuthError`] whose `reason()` is a stable value.

pub(crate) mod dev;
pub(crate) mod keys;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use sumu_shared::claims::Claims;

use crate::config::AuthConfig;
use keys::{Key, KeyError, KeySet};

pub(crate) use crate::config::{DEFAULT_JWKS_MIN_CACHE, DEFAULT_MAX_SUBJECT_BYTES};

/// Why a `sub` claim cannot be a user id.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SubjectError {
    #[error("it is {len} bytes long, more than the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("it contains a control character")]
    ControlCharacter,
}

/// Why a token was refused. `reason()` is the short code in the 401 body and
/// the `reason` label of the auth-failure metric.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    #[error("no token: pass ?authorization=<JWT> or an Authorization header")]
    Missing,
    #[error("more than one ?authorization= parameter")]
    DuplicateToken,
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
    #[error("the subject (sub) cannot be a user id: {0}")]
    InvalidSubject(#[source] SubjectError),
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl AuthError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::DuplicateToken => "duplicate_token",
            AuthError::Malformed => "malformed_token",
            AuthError::AlgorithmNotAllowed(_) => "alg_not_allowed",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::InvalidSubject(_) => "invalid_subject",
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

/// `Bearer <JWT>` (any case) or a bare token; None when empty.
fn token_from_header(h: &str) -> Option<&str> {
    let h = h.trim();
    let token = match h.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ if h.eq_ignore_ascii_case("bearer") => "",
        _ => h,
    };
    (!token.is_empty()).then_some(token)
}

/// A decoded `authorization` query value; a `Bearer ` prefix is tolerated.
fn token_from_query_value(v: &str) -> Option<&str> {
    let t = v.trim();
    let t = t.strip_prefix("Bearer ").unwrap_or(t).trim();
    (!t.is_empty()).then_some(t)
}

/// The token of an upgrade request from its raw query string and its
/// `Authorization` header, in SUMU's order (header first, then the query).
/// More than one `authorization` query parameter is refused
/// ([`AuthError::DuplicateToken`]) whether or not a header is present: a
/// request that carries two tokens in the same place is ambiguous.
pub(crate) fn token_from_request<'a>(
    query: &'a str,
    header: Option<&'a str>,
) -> Result<Cow<'a, str>, AuthError> {
    let mut from_query: Option<Cow<'a, str>> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(key).as_deref() != Some("authorization") {
            continue;
        }
        if from_query.is_some() {
            return Err(AuthError::DuplicateToken);
        }
        from_query = Some(form_decode(value).ok_or(AuthError::Malformed)?);
    }
    if let Some(t) = header.and_then(token_from_header) {
        return Ok(Cow::Borrowed(t));
    }
    match from_query {
        Some(Cow::Borrowed(v)) => token_from_query_value(v).map(Cow::Borrowed),
        Some(Cow::Owned(v)) => token_from_query_value(&v).map(|t| Cow::Owned(t.to_string())),
        None => None,
    }
    .ok_or(AuthError::Missing)
}

/// `application/x-www-form-urlencoded` decoding of one key or value (`+` is
/// a space, `%XX` a byte); None when a `%` escape is invalid or the bytes
/// are not UTF-8.
fn form_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// A `sub` that can be a user id: at most `max` bytes, no control characters.
pub(crate) fn check_subject(sub: &str, max: usize) -> Result<(), SubjectError> {
    if sub.len() > max {
        return Err(SubjectError::TooLong {
            len: sub.len(),
            max,
        });
    }
    if sub.chars().any(char::is_control) {
        return Err(SubjectError::ControlCharacter);
    }
    Ok(())
}

/// A JWKS URI and its cached key set.
struct Remote {
    uri: String,
    client: reqwest::Client,
    state: RwLock<RemoteState>,
    refresh: tokio::sync::Mutex<()>,
    /// A background refresh is running (at most one).
    refreshing: AtomicBool,
    /// The lifetime of a fetched set without `Cache-Control: max-age`.
    default_ttl: Duration,
    /// The shortest lifetime of a fetched set, whatever its header says.
    min_ttl: Duration,
    /// How soon a failed or unknown-kid fetch may be retried.
    refetch_interval: Duration,
}

struct RemoteState {
    keys: Arc<KeySet>,
    expires_at: Instant,
    last_fetch: Option<Instant>,
}

impl Remote {
    /// The cached keys, whether they are past their lifetime, and when they
    /// were fetched.
    fn keys(&self) -> (Arc<KeySet>, bool, Option<Instant>) {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        (s.keys.clone(), Instant::now() >= s.expires_at, s.last_fetch)
    }

    /// Refetches unless another caller did since `seen` (single flight).
    async fn refresh(&self, seen: Option<Instant>) -> Result<(), KeyError> {
        let _guard = self.refresh.lock().await;
        let (_, _, last) = self.keys();
        if last.is_some() && last != seen {
            return Ok(());
        }
        let result = keys::fetch(&self.client, &self.uri, self.default_ttl, self.min_ttl).await;
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        s.last_fetch = Some(Instant::now());
        match result {
            Ok(fetched) => {
                tracing::info!(uri = %self.uri, keys = fetched.keys.len(), "fetched signing keys");
                s.keys = Arc::new(fetched.keys);
                s.expires_at = fetched.expires_at;
                Ok(())
            }
            Err(e) => {
                // Keep serving the old keys; try again after the refetch interval.
                s.expires_at = keys::instant_after(Instant::now(), self.refetch_interval);
                Err(e)
            }
        }
    }

    /// Refreshes expired keys in the background while the current ones go
    /// on serving, so no handshake waits on the identity provider.
    fn refresh_in_background(self: &Arc<Self>, seen: Option<Instant>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let remote = self.clone();
        tokio::spawn(async move {
            if let Err(e) = remote.refresh(seen).await {
                tracing::warn!(error = %crate::logging::chain(&e), "signing key refresh failed");
            }
            remote.refreshing.store(false, Ordering::Release);
        });
    }
}

pub(crate) struct Authenticator {
    cfg: AuthConfig,
    local: Arc<KeySet>,
    remote: Option<Arc<Remote>>,
    max_subject_bytes: usize,
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
        let remote = cfg.jwks_uri.clone().map(|uri| {
            Arc::new(Remote {
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
                refreshing: AtomicBool::new(false),
                default_ttl: cfg.cache_ttl,
                min_ttl: DEFAULT_JWKS_MIN_CACHE,
                refetch_interval: cfg.refetch_interval,
            })
        });
        Ok(Authenticator {
            cfg,
            local: Arc::new(local),
            remote,
            max_subject_bytes: DEFAULT_MAX_SUBJECT_BYTES,
        })
    }

    /// The longest `sub` accepted, in bytes (default
    /// [`DEFAULT_MAX_SUBJECT_BYTES`]).
    pub(crate) fn with_max_subject_bytes(mut self, max: usize) -> Authenticator {
        self.max_subject_bytes = max;
        self
    }

    /// The shortest lifetime of a fetched JWKS (default
    /// [`DEFAULT_JWKS_MIN_CACHE`]); a `max-age` below it is raised to it.
    /// Set it right after [`Authenticator::new`], before any background
    /// refresh can hold the remote state.
    pub(crate) fn with_jwks_min_cache(mut self, min: Duration) -> Authenticator {
        if let Some(remote) = self.remote.as_mut().and_then(Arc::get_mut) {
            remote.min_ttl = min;
        }
        self
    }

    /// Fetches the JWKS URI once at start; a failure is logged, not fatal
    /// (the next token retries).
    pub(crate) async fn warm_up(&self) {
        if let Some(remote) = &self.remote {
            if let Err(e) = remote.refresh(None).await {
                tracing::warn!(error = %crate::logging::chain(&e), "initial JWKS fetch failed; will retry on demand");
            }
        }
    }

    async fn candidate_keys(&self, kid: Option<&str>) -> Result<Vec<Key>, AuthError> {
        let mut remote_set = None;
        if let Some(remote) = &self.remote {
            let (mut set, expired, last) = remote.keys();
            let unknown = kid
                .is_some_and(|k| !set.by_kid.contains_key(k) && !self.local.by_kid.contains_key(k));
            let may_refetch = last.is_none_or(|t| t.elapsed() >= remote.refetch_interval);
            // Wait for a fetch only when the cached keys cannot answer this
            // token; otherwise an expired set is refreshed behind it.
            if (unknown && may_refetch) || (expired && set.is_empty()) {
                if let Err(e) = remote.refresh(last).await {
                    tracing::warn!(error = %crate::logging::chain(&e), "signing key refresh failed");
                }
                set = remote.keys().0;
            } else if expired {
                remote.refresh_in_background(last);
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
        v.required_spec_claims = ["sub"].iter().map(|s| s.to_string()).collect();
        if self.cfg.verify_expiration {
            v.required_spec_claims.insert("exp".into());
        }
        if let Some(iss) = &self.cfg.issuer {
            // A required issuer must be present: jsonwebtoken checks `iss`
            // only when the token has one, unless it is a required claim.
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        v
    }

    fn check_claims(&self, claims: Claims) -> Result<Claims, AuthError> {
        if claims.sub.is_empty() {
            return Err(AuthError::MissingClaim("sub".into()));
        }
        check_subject(&claims.sub, self.max_subject_bytes).map_err(AuthError::InvalidSubject)?;
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
    fn extracts_from_header_then_query() {
        let t = |q: &str, h: Option<&str>| token_from_request(q, h).ok().map(|c| c.into_owned());
        // SUMU's authorizer order: the header wins over the query.
        assert_eq!(
            t("authorization=a.b.c", Some("Bearer x.y.z")),
            Some("x.y.z".into())
        );
        assert_eq!(
            t("authorization=a.b.c", Some("Bearer ")),
            Some("a.b.c".into())
        );
        assert_eq!(
            t("authorization=Bearer%20a.b.c", None),
            Some("a.b.c".into())
        );
        assert_eq!(t("", Some("Bearer x.y.z")), Some("x.y.z".into()));
        assert_eq!(t("", Some("bearer x.y.z")), Some("x.y.z".into()));
        assert_eq!(t("", Some("x.y.z")), Some("x.y.z".into()));
        assert_eq!(t("authorization=", None), None);
        assert_eq!(t("", Some("Bearer ")), None);
    }

    #[test]
    fn token_from_request_follows_sumu_and_refuses_duplicates() {
        let t = |q, h| token_from_request(q, h).map(|c| c.into_owned());
        assert_eq!(t("authorization=a.b.c", None), Ok("a.b.c".into()));
        assert_eq!(t("x=1&authorization=a.b.c&y", None), Ok("a.b.c".into()));
        assert_eq!(
            t("authorization=a.b.c", Some("Bearer x.y.z")),
            Ok("x.y.z".into())
        );
        assert_eq!(t("", Some("x.y.z")), Ok("x.y.z".into()));
        assert_eq!(t("authorization=Bearer+a.b.c", None), Ok("a.b.c".into()));
        assert_eq!(t("authorization=a%2Eb.c", None), Ok("a.b.c".into()));
        assert_eq!(t("%61uthorization=a.b.c", None), Ok("a.b.c".into()));
        assert_eq!(
            t("authorization=a.b.c&authorization=d.e.f", None),
            Err(AuthError::DuplicateToken)
        );
        assert_eq!(
            t(
                "authorization=a.b.c&authorization=a.b.c",
                Some("Bearer x.y.z")
            ),
            Err(AuthError::DuplicateToken)
        );
        assert_eq!(t("authorization=", None), Err(AuthError::Missing));
        assert_eq!(t("authorization", None), Err(AuthError::Missing));
        assert_eq!(t("", None), Err(AuthError::Missing));
        assert_eq!(t("", Some("Bearer")), Err(AuthError::Missing));
        assert_eq!(t("authorization=%zz", None), Err(AuthError::Malformed));
        assert_eq!(t("authorization=%+1", None), Err(AuthError::Malformed));
        assert_eq!(t("authorization=%ff", None), Err(AuthError::Malformed));
        assert_eq!(AuthError::DuplicateToken.reason(), "duplicate_token");
    }

    #[test]
    fn subjects_are_bounded_and_printable() {
        assert_eq!(check_subject("alice", 256), Ok(()));
        assert_eq!(check_subject("auth0|5f7c8ec7c33c6c004bbafe82", 256), Ok(()));
        assert_eq!(check_subject(&"é".repeat(128), 256), Ok(()));
        assert_eq!(
            check_subject(&"é".repeat(129), 256),
            Err(SubjectError::TooLong { len: 258, max: 256 })
        );
        for bad in ["a\nb", "a\u{0}", "\u{7f}", "x\u{85}y", "tab\t"] {
            assert_eq!(
                check_subject(bad, 256),
                Err(SubjectError::ControlCharacter),
                "{bad:?}"
            );
        }
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
    async fn required_issuer_must_be_present() {
        let mut c = cfg();
        c.issuer = Some("https://issuer.example".into());
        let auth = Authenticator::new(c, None).unwrap();
        let exp = now() + 60;
        let ok = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"app","exp":exp,"iss":"https://issuer.example"}),
        );
        assert!(auth.verify(&ok).await.is_ok());
        let none = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"app","exp":exp}),
        );
        assert_eq!(
            auth.verify(&none).await.unwrap_err(),
            AuthError::MissingClaim("iss".into())
        );
        let wrong = token(
            "s3cret",
            serde_json::json!({"sub":"u1","aud":"app","exp":exp,"iss":"https://evil.example"}),
        );
        assert_eq!(
            auth.verify(&wrong).await.unwrap_err(),
            AuthError::WrongIssuer
        );
        // Without a configured issuer, `iss` stays optional.
        let auth = Authenticator::new(cfg(), None).unwrap();
        assert!(auth.verify(&none).await.is_ok());
    }

    #[tokio::test]
    async fn long_or_control_subjects_are_refused() {
        let auth = Authenticator::new(cfg(), None).unwrap();
        let exp = now() + 60;
        let sub = |s: String| token("s3cret", serde_json::json!({"sub":s,"aud":"app","exp":exp}));
        assert!(auth.verify(&sub("a".repeat(256))).await.is_ok());
        let err = auth.verify(&sub("a".repeat(10_000))).await.unwrap_err();
        assert_eq!(err.reason(), "invalid_subject");
        assert_eq!(
            err,
            AuthError::InvalidSubject(SubjectError::TooLong {
                len: 10_000,
                max: 256
            })
        );
        assert_eq!(
            auth.verify(&sub("bob\r\nX-Admin: 1".into()))
                .await
                .unwrap_err(),
            AuthError::InvalidSubject(SubjectError::ControlCharacter)
        );
        let auth = Authenticator::new(cfg(), None)
            .unwrap()
            .with_max_subject_bytes(8);
        assert_eq!(
            auth.verify(&sub("123456789".into()))
                .await
                .unwrap_err()
                .reason(),
            "invalid_subject"
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

    /// Property tests of the parsers that read a token from outside.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn b64url(bytes: &[u8]) -> String {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let mut n = 0u32;
                for (i, b) in chunk.iter().enumerate() {
                    n |= u32::from(*b) << (16 - 8 * i);
                }
                for i in 0..=chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }

        fn percent_encode(s: &str) -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        }

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        }

        proptest! {
            #[test]
            fn base64url_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                prop_assert_eq!(base64url_decode(&b64url(&bytes)), Some(bytes));
            }

            #[test]
            fn base64url_decode_never_panics(s in any::<String>()) {
                let _ = base64url_decode(&s);
            }

            #[test]
            fn peek_header_never_panics(s in any::<String>()) {
                let _ = peek_header(&s);
            }

            #[test]
            fn peek_header_reads_alg_and_kid(
                alg in prop::sample::select(vec!["HS256", "RS256", "ES256", "EdDSA", "PS512"]),
                kid in prop::option::of(any::<String>()),
            ) {
                let header = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
                let token = format!("{}.e30.sig", b64url(header.to_string().as_bytes()));
                let peeked = peek_header(&token).unwrap();
                prop_assert_eq!(peeked.alg, alg.parse::<Algorithm>().unwrap());
                prop_assert_eq!(peeked.kid, kid);
            }

            #[test]
            fn token_from_request_never_panics(q in any::<String>(), h in prop::option::of(any::<String>())) {
                let _ = token_from_request(&q, h.as_deref());
            }

            /// A token percent-encoded among other parameters comes back
            /// unchanged; the header, when present, wins.
            #[test]
            fn query_token_round_trips(
                token in "[A-Za-z0-9_.~-]{1,64}",
                before in "[a-z]{1,8}=[a-z]{0,8}",
                header in prop::option::of("[A-Za-z0-9_.-]{1,32}"),
            ) {
                let q = format!("{before}&authorization={}&x=1", percent_encode(&token));
                let got = token_from_request(&q, header.as_deref().map(|h| h.trim()))
                    .map(|t| t.into_owned());
                prop_assert_eq!(got, Ok(header.unwrap_or(token)));
            }

            #[test]
            fn check_subject_bounds_length_and_controls(s in any::<String>()) {
                let ok = s.len() <= DEFAULT_MAX_SUBJECT_BYTES && !s.chars().any(char::is_control);
                prop_assert_eq!(check_subject(&s, DEFAULT_MAX_SUBJECT_BYTES).is_ok(), ok);
            }

            /// Whatever a client sends as a token, verification answers
            /// with a refusal and never panics.
            #[test]
            fn verify_never_panics(s in any::<String>()) {
                let auth = Authenticator::new(cfg(), None).unwrap();
                prop_assert!(runtime().block_on(auth.verify(&s)).is_err());
            }

            #[test]
            fn verify_never_panics_on_token_shaped_input(
                header in prop::collection::btree_map(
                    prop::sample::select(vec!["alg", "kid", "typ", "jwk", "crit"]),
                    prop_oneof![
                        any::<String>().prop_map(serde_json::Value::from),
                        Just(serde_json::Value::from("HS256")),
                        Just(serde_json::Value::from("none")),
                        any::<i64>().prop_map(serde_json::Value::from),
                    ],
                    0..4,
                ),
                claims in prop::collection::btree_map(
                    prop::sample::select(vec!["sub", "exp", "nbf", "iss", "aud", "client_id"]),
                    prop_oneof![
                        any::<String>().prop_map(serde_json::Value::from),
                        any::<i64>().prop_map(serde_json::Value::from),
                        Just(serde_json::Value::Null),
                    ],
                    0..6,
                ),
                signature in "[A-Za-z0-9_-]{0,16}",
            ) {
                let token = format!(
                    "{}.{}.{signature}",
                    b64url(serde_json::to_string(&header).unwrap().as_bytes()),
                    b64url(serde_json::to_string(&claims).unwrap().as_bytes()),
                );
                let auth = Authenticator::new(cfg(), None).unwrap();
                prop_assert!(runtime().block_on(auth.verify(&token)).is_err());
            }
        }
    }
}
