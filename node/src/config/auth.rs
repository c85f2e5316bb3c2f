//! Tokens and the backend API's key: where the node's keys come from
//! (`--jwks-uri`, `--jwks-file`, `--hs256-secret`), what a token must carry,
//! and `--api-key`. Invariant: `--dev` always has an API key (`dev` unless
//! one is given); the longest user id fits a DynamoDB key.

use std::path::PathBuf;
use std::time::Duration;

use super::options::{clean_list, secs, ConfigError, Options};

/// The longest `sub` (user id) accepted by default, in bytes. It becomes a
/// DynamoDB hash key (at most 2048 bytes) and is copied into every row,
/// message attribute and presence event of the user; 256 bytes hold any
/// e-mail address (RFC 5321: at most 254), UUIDs and provider-prefixed ids.
pub(crate) const DEFAULT_MAX_SUBJECT_BYTES: usize = 256;

/// The shortest time a fetched JWKS is kept, whatever its `Cache-Control`
/// says: an identity provider answering `max-age=0` would otherwise turn
/// every handshake into a key fetch.
pub(crate) const DEFAULT_JWKS_MIN_CACHE: Duration = Duration::from_secs(60);

/// Where the node's keys come from.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub hs256_secret: Option<String>,
    pub audiences: Vec<String>,
    pub issuer: Option<String>,
    pub verify_expiration: bool,
    pub leeway: Duration,
    pub cache_ttl: Duration,
    pub refetch_interval: Duration,
    /// The floor under a JWKS response's `max-age`.
    pub jwks_min_cache: Duration,
    /// The longest `sub` accepted, in bytes.
    pub max_user_id_bytes: usize,
}

/// The key `--dev` uses for the API when no --api-key is given.
pub const DEV_API_KEY: &str = "dev";

/// The backend API's key: `--api-key`, or [`DEV_API_KEY`] under `--dev`;
/// `None`: the API is off.
pub(super) fn resolve_api_key(o: &Options, dev: bool) -> Option<String> {
    let mut api_key = o.api_key.clone().filter(|k| !k.is_empty());
    if dev && api_key.is_none() {
        api_key = Some(DEV_API_KEY.to_string());
    }
    api_key
}

/// The token settings of `o`, checked.
pub(super) fn resolve_auth(o: &Options) -> Result<AuthConfig, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let auth = AuthConfig {
        jwks_uri: o.jwks_uri.clone().filter(|s| !s.is_empty()),
        jwks_file: o.jwks_file.clone(),
        hs256_secret: o.hs256_secret.clone().filter(|s| !s.is_empty()),
        audiences: clean_list(o.jwt_audiences.clone()),
        issuer: o.jwt_issuer.clone().filter(|s| !s.is_empty()),
        verify_expiration: o.verify_token_expiration.unwrap_or(true),
        leeway: secs(o.jwt_leeway_secs, Duration::from_secs(10)),
        cache_ttl: secs(o.jwks_cache_secs, Duration::from_secs(3600)),
        refetch_interval: secs(o.jwks_refetch_secs, Duration::from_secs(30)),
        jwks_min_cache: secs(o.jwks_min_cache_secs, DEFAULT_JWKS_MIN_CACHE),
        max_user_id_bytes: o.max_user_id_bytes.unwrap_or(DEFAULT_MAX_SUBJECT_BYTES),
    };
    if auth.max_user_id_bytes == 0 || auth.max_user_id_bytes > 1024 {
        return invalid(
            "--max-user-id-bytes must be within 1..=1024 (DynamoDB keys hold 2048 bytes)".into(),
        );
    }
    Ok(auth)
}
