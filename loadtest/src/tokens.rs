//! Tokens for the sockets: minted locally from an operator-given key (HS256 secret or an
//! RS256/ES256 private key PEM), or fetched from the node's dev issuer (`--dev`).
//!
//! User `i` has the subject `PREFIX{i}`; socket `s` belongs to user `s mod U`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::cli::{KeyAlgorithm, TokenArgs};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("choose how sockets authenticate: --dev, --hs256-secret SECRET or --private-key FILE")]
    NoTokenSource,
    #[error("cannot read private key {path}: {source}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the private key is not a usable {alg} PEM: {reason} (RSA: PKCS#1 or PKCS#8; EC: PKCS#8 only, convert with `openssl pkcs8 -topk8 -nocrypt -in KEY`)")]
    BadKey { alg: &'static str, reason: String },
    #[error("cannot tell the key type of the PEM; pass --alg RS256 or --alg ES256")]
    UnknownKeyType,
    #[error("minting a token failed: {0}")]
    Mint(#[from] jsonwebtoken::errors::Error),
    #[error("dev token request for {sub:?} failed: {reason}")]
    Dev { sub: String, reason: String },
    #[error("minting task failed: {0}")]
    Join(String),
}

/// Claims of a minted token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iss: Option<String>,
}

/// Claim settings shared by every minted token.
#[derive(Debug, Clone, Default)]
pub struct ClaimOptions {
    pub aud: Option<String>,
    pub iss: Option<String>,
    pub kid: Option<String>,
    pub ttl: Duration,
}

/// Signs tokens with one key.
#[derive(Clone)]
pub struct Minter {
    header: Header,
    key: EncodingKey,
    options: ClaimOptions,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("alg", &self.header.alg)
            .field("kid", &self.header.kid)
            .finish_non_exhaustive()
    }
}

fn alg_name(alg: KeyAlgorithm) -> &'static str {
    match alg {
        KeyAlgorithm::Rs256 => "RS256",
        KeyAlgorithm::Es256 => "ES256",
    }
}

/// The subject of user `index`.
pub fn user_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

impl Minter {
    pub fn hs256(secret: &[u8], options: ClaimOptions) -> Self {
        Self::with_key(Algorithm::HS256, EncodingKey::from_secret(secret), options)
    }

    fn with_key(alg: Algorithm, key: EncodingKey, options: ClaimOptions) -> Self {
        let mut header = Header::new(alg);
        header.kid = options.kid.clone();
        Minter {
            header,
            key,
            options,
        }
    }

    /// Builds a minter from a private key PEM; the algorithm is taken from `alg` or guessed
    /// from the PEM (PKCS#1 RSA, or PKCS#8 tried as RSA then EC; SEC1 EC keys are refused).
    pub fn from_private_pem(
        pem: &[u8],
        alg: Option<KeyAlgorithm>,
        options: ClaimOptions,
    ) -> Result<Self, TokenError> {
        let candidates: Vec<KeyAlgorithm> = match alg {
            Some(a) => vec![a],
            None => {
                let text = String::from_utf8_lossy(pem);
                if text.contains("BEGIN RSA PRIVATE KEY") {
                    vec![KeyAlgorithm::Rs256]
                } else if text.contains("BEGIN EC PRIVATE KEY") {
                    vec![KeyAlgorithm::Es256]
                } else if text.contains("BEGIN PRIVATE KEY") {
                    vec![KeyAlgorithm::Rs256, KeyAlgorithm::Es256]
                } else {
                    return Err(TokenError::UnknownKeyType);
                }
            }
        };
        let mut last_error = TokenError::UnknownKeyType;
        for candidate in candidates {
            let built = match candidate {
                KeyAlgorithm::Rs256 => EncodingKey::from_rsa_pem(pem)
                    .map(|k| Self::with_key(Algorithm::RS256, k, options.clone())),
                KeyAlgorithm::Es256 => EncodingKey::from_ec_pem(pem)
                    .map(|k| Self::with_key(Algorithm::ES256, k, options.clone())),
            };
            // A PEM may parse as the wrong family; only a successful signature proves the key.
            let probed = built
                .map_err(TokenError::from)
                .and_then(|m| m.mint("probe", 0).map(|_| m));
            match probed {
                Ok(minter) => return Ok(minter),
                Err(e) => {
                    last_error = TokenError::BadKey {
                        alg: alg_name(candidate),
                        reason: e.to_string(),
                    }
                }
            }
        }
        Err(last_error)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.header.alg
    }

    /// Claims of the token for `sub` minted at `now_unix` seconds.
    pub fn claims(&self, sub: &str, now_unix: u64) -> Claims {
        Claims {
            sub: sub.to_string(),
            iat: now_unix,
            exp: now_unix.saturating_add(self.options.ttl.as_secs().max(1)),
            aud: self.options.aud.clone(),
            iss: self.options.iss.clone(),
        }
    }

    pub fn mint(&self, sub: &str, now_unix: u64) -> Result<String, TokenError> {
        Ok(jsonwebtoken::encode(
            &self.header,
            &self.claims(sub, now_unix),
            &self.key,
        )?)
    }
}

/// Where the tokens come from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Mint(Arc<Minter>),
    Dev { http_base: String },
}

#[derive(Deserialize)]
struct DevTokenResponse {
    token: String,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl TokenSource {
    pub fn from_args(args: &TokenArgs, http_base: &str) -> Result<Self, TokenError> {
        let options = ClaimOptions {
            aud: args.aud.clone(),
            iss: args.iss.clone(),
            kid: args.kid.clone(),
            ttl: args.token_ttl,
        };
        if args.dev {
            return Ok(TokenSource::Dev {
                http_base: http_base.to_string(),
            });
        }
        if let Some(secret) = &args.hs256_secret {
            return Ok(TokenSource::Mint(Arc::new(Minter::hs256(
                secret.as_bytes(),
                options,
            ))));
        }
        if let Some(path) = &args.private_key {
            let pem = std::fs::read(path).map_err(|source| TokenError::ReadKey {
                path: path.display().to_string(),
                source,
            })?;
            return Ok(TokenSource::Mint(Arc::new(Minter::from_private_pem(
                &pem, args.alg, options,
            )?)));
        }
        Err(TokenError::NoTokenSource)
    }

    /// One token per user `0..users`, in user order. Minting runs on all cores; dev tokens
    /// are fetched with bounded concurrency. `on_done` is called once per token.
    pub async fn tokens_for_users(
        &self,
        users: usize,
        prefix: &str,
        on_done: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Vec<Arc<str>>, TokenError> {
        match self {
            TokenSource::Mint(minter) => mint_parallel(minter, users, prefix, on_done).await,
            TokenSource::Dev { http_base } => fetch_dev(http_base, users, prefix, on_done).await,
        }
    }
}

async fn mint_parallel(
    minter: &Arc<Minter>,
    users: usize,
    prefix: &str,
    on_done: Arc<dyn Fn() + Send + Sync>,
) -> Result<Vec<Arc<str>>, TokenError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let chunk = users.div_ceil(workers).max(1);
    let now = unix_now().as_secs();
    let mut handles = Vec::new();
    let mut start = 0;
    while start < users {
        let end = (start + chunk).min(users);
        let minter = Arc::clone(minter);
        let prefix = prefix.to_string();
        let on_done = Arc::clone(&on_done);
        handles.push(tokio::task::spawn_blocking(move || {
            (start..end)
                .map(|i| {
                    let token = minter.mint(&user_name(&prefix, i), now)?;
                    on_done();
                    Ok(Arc::<str>::from(token))
                })
                .collect::<Result<Vec<_>, TokenError>>()
        }));
        start = end;
    }
    let mut tokens = Vec::with_capacity(users);
    for handle in handles {
        let part = handle
            .await
            .map_err(|e| TokenError::Join(e.to_string()))??;
        tokens.extend(part);
    }
    Ok(tokens)
}

async fn fetch_dev(
    http_base: &str,
    users: usize,
    prefix: &str,
    on_done: Arc<dyn Fn() + Send + Sync>,
) -> Result<Vec<Arc<str>>, TokenError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| TokenError::Dev {
            sub: String::new(),
            reason: e.to_string(),
        })?;
    let results: Vec<Result<Arc<str>, TokenError>> = futures_util::stream::iter(0..users)
        .map(|i| {
            let client = client.clone();
            let sub = user_name(prefix, i);
            let url = format!("{http_base}/dev/token?sub={}", encode_query_value(&sub));
            let on_done = Arc::clone(&on_done);
            async move {
                let fail = |reason: String| TokenError::Dev {
                    sub: sub.clone(),
                    reason,
                };
                let response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(fail(format!(
                        "HTTP {status} (is the node running with --dev?)"
                    )));
                }
                let body: DevTokenResponse =
                    response.json().await.map_err(|e| fail(e.to_string()))?;
                on_done();
                Ok(Arc::<str>::from(body.token))
            }
        })
        .buffered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/rsa-private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/rsa-public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/ec-private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/ec-public.pem");

    fn options() -> ClaimOptions {
        ClaimOptions {
            aud: Some("sumu-test".into()),
            iss: Some("https://issuer.test".into()),
            kid: Some("k1".into()),
            ttl: Duration::from_secs(600),
        }
    }

    fn validation(alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_audience(&["sumu-test"]);
        v.set_issuer(&["https://issuer.test"]);
        v
    }

    #[test]
    fn hs256_token_verifies() {
        let minter = Minter::hs256(b"s3cret", options());
        let now = unix_now().as_secs();
        let token = minter.mint("user-7", now).unwrap();
        let data = decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &validation(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims.sub, "user-7");
        assert_eq!(data.claims.exp, now + 600);
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        // The wrong secret must fail.
        assert!(decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"other"),
            &validation(Algorithm::HS256)
        )
        .is_err());
    }

    #[test]
    fn rs256_token_verifies_with_public_key() {
        let minter = Minter::from_private_pem(RSA_PRIVATE, None, options()).unwrap();
        assert_eq!(minter.algorithm(), Algorithm::RS256);
        let token = minter.mint("user-1", unix_now().as_secs()).unwrap();
        let data = decode::<Claims>(
            &token,
            &DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap(),
            &validation(Algorithm::RS256),
        )
        .unwrap();
        assert_eq!(data.claims.sub, "user-1");
        assert_eq!(data.claims.aud.as_deref(), Some("sumu-test"));
    }

    #[test]
    fn es256_token_verifies_with_public_key() {
        let minter = Minter::from_private_pem(EC_PRIVATE, None, options()).unwrap();
        assert_eq!(minter.algorithm(), Algorithm::ES256);
        let token = minter.mint("user-2", unix_now().as_secs()).unwrap();
        let data = decode::<Claims>(
            &token,
            &DecodingKey::from_ec_pem(EC_PUBLIC).unwrap(),
            &validation(Algorithm::ES256),
        )
        .unwrap();
        assert_eq!(data.claims.sub, "user-2");
    }

    #[test]
    fn wrong_audience_is_rejected_by_verifier() {
        let minter = Minter::hs256(
            b"k",
            ClaimOptions {
                aud: Some("elsewhere".into()),
                ..options()
            },
        );
        let token = minter.mint("u", unix_now().as_secs()).unwrap();
        assert!(decode::<Claims>(
            &token,
            &DecodingKey::from_secret(b"k"),
            &validation(Algorithm::HS256)
        )
        .is_err());
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        assert!(matches!(
            Minter::from_private_pem(b"hello", None, options()),
            Err(TokenError::UnknownKeyType)
        ));
        let garbage = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            Minter::from_private_pem(garbage, None, options()),
            Err(TokenError::BadKey { .. })
        ));
        // An EC key forced as RS256 is refused.
        assert!(
            Minter::from_private_pem(EC_PRIVATE, Some(KeyAlgorithm::Rs256), options()).is_err()
        );
    }

    #[tokio::test]
    async fn mints_distinct_subjects_in_user_order() {
        let source = TokenSource::Mint(Arc::new(Minter::hs256(b"x", options())));
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = Arc::clone(&counter);
        let tokens = source
            .tokens_for_users(
                37,
                "u-",
                Arc::new(move || {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }),
            )
            .await
            .unwrap();
        assert_eq!(tokens.len(), 37);
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 37);
        for (i, token) in tokens.iter().enumerate() {
            let data = decode::<Claims>(
                token.as_ref(),
                &DecodingKey::from_secret(b"x"),
                &validation(Algorithm::HS256),
            )
            .unwrap();
            assert_eq!(data.claims.sub, format!("u-{i}"));
        }
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query_value("user-1"), "user-1");
        assert_eq!(encode_query_value("a b&c=d"), "a%20b%26c%3Dd");
    }
}
