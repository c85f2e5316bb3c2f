//! Verification keys: parsing the supported key formats and fetching a set
//! from a JWKS URI with its cache lifetime (never below a floor).

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
    #[error("key fetch from {0} failed: {1}")]
    Fetch(String, String),
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

/// Fetches a key set; its lifetime is the response's `max-age` (else
/// `default_ttl`), never shorter than `min_ttl`.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    uri: &str,
    default_ttl: Duration,
    min_ttl: Duration,
) -> Result<Fetched, KeyError> {
    let fail = |e: String| KeyError::Fetch(uri.to_string(), e);
    let resp = client
        .get(uri)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let ttl = max_age(
        resp.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
    )
    .unwrap_or(default_ttl)
    .max(min_ttl);
    let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
    let keys = KeySet::parse(&text, uri)?;
    Ok(Fetched {
        keys,
        expires_at: Instant::now() + ttl,
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
