//! Verification keys: parsing the supported key formats and fetching a set
//! from a JWKS URI with its cache lifetime (never below a floor, never above
//! [`MAX_JWKS_CACHE`]). A fetch reads at most [`MAX_JWKS_BYTES`] and can
//! neither panic nor hold unbounded memory, whatever the URI answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("cannot read key file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("no usable key in {0}")]
    NoKeys(String),
    #[error("key fetch from {uri} failed")]
    Fetch {
        uri: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("key fetch from {uri}: HTTP {status}")]
    Status {
        uri: String,
        status: reqwest::StatusCode,
    },
    #[error("key fetch from {uri}: the response is over {MAX_JWKS_BYTES} bytes")]
    TooLarge { uri: String },
    #[error("key fetch from {uri}: the response is not UTF-8")]
    NotText {
        uri: String,
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// The longest a fetched key set is kept, whatever the response's
/// `Cache-Control` says: identity providers rotate keys, and a `max-age`
/// of u64::MAX seconds used to overflow the expiry instant (a panic).
pub(crate) const MAX_JWKS_CACHE: Duration = Duration::from_secs(24 * 3600);

/// The largest JWKS response read (a provider's set is a few KiB; Google's
/// and Firebase's are under 4 KiB): a larger one is refused, not buffered.
pub(crate) const MAX_JWKS_BYTES: usize = 1 << 20;

/// `now + after`, saturating at a far instant instead of overflowing.
pub(crate) fn instant_after(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .or_else(|| now.checked_add(MAX_JWKS_CACHE))
        .unwrap_or(now)
}

/// How long a fetched set is kept: its `max-age` (else `default_ttl`), at
/// most [`MAX_JWKS_CACHE`], never less than `min_ttl`.
pub(crate) fn lifetime(
    max_age: Option<Duration>,
    default_ttl: Duration,
    min_ttl: Duration,
) -> Duration {
    max_age
        .unwrap_or(default_ttl)
        .min(MAX_JWKS_CACHE)
        .max(min_ttl)
}

/// One verification key and the algorithms it may verify.
#[derive(Clone)]
pub(crate) struct Key {
    pub(crate) decoding: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}

impl Key {
    /// Algorithms follow the key's family (an RSA key never verifies HS*),
    /// narrowed to the declared `alg` when the source names one.
    fn new(decoding: DecodingKey, declared: Option<Algorithm>) -> Key {
        let family = decoding.family().algorithms().to_vec();
        let algorithms = match declared {
            Some(alg) if family.contains(&alg) => vec![alg],
            Some(_) => Vec::new(),
            None => family,
        };
        Key {
            decoding,
            algorithms,
        }
    }

    pub(crate) fn hmac(secret: &[u8]) -> Key {
        Key::new(DecodingKey::from_secret(secret), Some(Algorithm::HS256))
    }
}

/// Keys by `kid`, plus keys that have none (a PEM file, a shared secret).
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    pub(crate) by_kid: HashMap<String, Key>,
    pub(crate) anonymous: Vec<Key>,
}

impl KeySet {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub(crate) fn extend(&mut self, other: KeySet) {
        self.by_kid.extend(other.by_kid);
        self.anonymous.extend(other.anonymous);
    }

    /// Parses a standard JWKS (`{"keys":[...]}`), Firebase's x509 map
    /// (`{"kid": "-----BEGIN CERTIFICATE-----..."}`) or PEM text.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<KeySet, KeyError> {
        let trimmed = text.trim_start();
        let set = if trimmed.starts_with("-----BEGIN") {
            let mut set = KeySet::default();
            if let Some(key) = pem_key(trimmed.as_bytes()) {
                set.anonymous.push(key);
            }
            set
        } else if let Ok(jwks) = serde_json::from_str::<JwkSet>(text) {
            let mut set = KeySet::default();
            for jwk in &jwks.keys {
                let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                    tracing::warn!(origin, kid = ?jwk.common.key_id, "skipping unsupported JWK");
                    continue;
                };
                let declared = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                let key = Key::new(decoding, declared);
                match &jwk.common.key_id {
                    Some(kid) => {
                        set.by_kid.insert(kid.clone(), key);
                    }
                    None => set.anonymous.push(key),
                }
            }
            set
        } else if let Ok(map) = serde_json::from_str::<HashMap<String, String>>(text) {
            let mut set = KeySet::default();
            for (kid, pem) in map {
                match pem_key(pem.as_bytes()) {
                    Some(key) => {
                        set.by_kid.insert(kid, key);
                    }
                    None => tracing::warn!(origin, kid, "skipping unparsable certificate"),
                }
            }
            set
        } else {
            KeySet::default()
        };
        if set.is_empty() {
            return Err(KeyError::NoKeys(origin.to_string()));
        }
        Ok(set)
    }

    pub(crate) fn from_file(path: &std::path::Path) -> Result<KeySet, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyError::Read(path.display().to_string(), e))?;
        KeySet::parse(&text, &path.display().to_string())
    }
}

/// A public key or certificate PEM: RSA, then EC, then Ed25519.
fn pem_key(pem: &[u8]) -> Option<Key> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Some(Key::new(k, None));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Some(Key::new(k, None));
    }
    DecodingKey::from_ed_pem(pem)
        .ok()
        .map(|k| Key::new(k, None))
}

/// `Cache-Control: max-age=N` (or `s-maxage`), if present.
pub(crate) fn max_age(cache_control: Option<&str>) -> Option<Duration> {
    cache_control?
        .split(',')
        .filter_map(|d| d.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("max-age") || k.eq_ignore_ascii_case("s-maxage"))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse().ok())
        .map(Duration::from_secs)
}

/// A key set fetched from a URI, with its expiry.
pub(crate) struct Fetched {
    pub(crate) keys: KeySet,
    pub(crate) expires_at: Instant,
}

/// Fetches a key set; its lifetime is [`lifetime`] of the response's
/// `max-age`. The body is read up to [`MAX_JWKS_BYTES`].
pub(crate) async fn fetch(
    client: &reqwest::Client,
    uri: &str,
    default_ttl: Duration,
    min_ttl: Duration,
) -> Result<Fetched, KeyError> {
    let fetch_err = |source| KeyError::Fetch {
        uri: uri.to_string(),
        source,
    };
    let too_large = || KeyError::TooLarge {
        uri: uri.to_string(),
    };
    let mut resp = client.get(uri).send().await.map_err(fetch_err)?;
    if !resp.status().is_success() {
        return Err(KeyError::Status {
            uri: uri.to_string(),
            status: resp.status(),
        });
    }
    let ttl = lifetime(
        max_age(
            resp.headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        ),
        default_ttl,
        min_ttl,
    );
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|source| KeyError::NotText {
        uri: uri.to_string(),
        source,
    })?;
    let keys = KeySet::parse(&text, uri)?;
    Ok(Fetched {
        keys,
        expires_at: instant_after(Instant::now(), ttl),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age(Some("public, max-age=19845, must-revalidate")),
            Some(Duration::from_secs(19845))
        );
        assert_eq!(max_age(Some("no-cache")), None);
        assert_eq!(max_age(None), None);
    }

    #[test]
    fn lifetimes_are_bounded_both_ways_and_never_overflow() {
        let (default, min) = (Duration::from_secs(3600), Duration::from_secs(60));
        let huge = max_age(Some("max-age=18446744073709551615"));
        assert_eq!(huge, Some(Duration::from_secs(u64::MAX)));
        assert_eq!(lifetime(huge, default, min), MAX_JWKS_CACHE);
        assert_eq!(lifetime(Some(Duration::ZERO), default, min), min);
        assert_eq!(lifetime(None, default, min), default);
        // Past u64 seconds the header does not parse: the default applies.
        assert_eq!(max_age(Some("max-age=99999999999999999999")), None);
        let now = Instant::now();
        assert!(instant_after(now, Duration::from_secs(u64::MAX)) > now);
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn hmac_key_allows_only_hs256() {
        assert_eq!(Key::hmac(b"s").algorithms, vec![Algorithm::HS256]);
    }

    #[test]
    fn rejects_text_without_keys() {
        assert!(KeySet::parse("{\"keys\":[]}", "x").is_err());
        assert!(KeySet::parse("garbage", "x").is_err());
        assert!(KeySet::parse("{\"kid\":\"not a pem\"}", "x").is_err());
    }

    #[test]
    fn octet_jwk_is_hmac_only() {
        let set =
            KeySet::parse(r#"{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"}]}"#, "x").unwrap();
        let key = &set.by_kid["k1"];
        assert!(key
            .algorithms
            .iter()
            .all(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)));
    }
}
