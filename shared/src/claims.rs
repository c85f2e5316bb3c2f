//! JWT claims the gateway reads.

use serde::{Deserialize, Serialize};

/// `aud` may be one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "app"`: a single audience.
    One(String),
    /// `"aud": ["x", "app"]`: a list of audiences.
    Many(Vec<String>),
}

impl Audience {
    /// True when `wanted` is the audience, or one of the listed audiences.
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

/// The claims of an access or id token. `sub` becomes the `user_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject (required, non-empty): the verified user id, used as `user_id`.
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Expiry, seconds since the Unix epoch (JWT `NumericDate`).
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Issued-at time, seconds since the Unix epoch.
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Not-before time, seconds since the Unix epoch.
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Issuer (e.g. the Cognito user pool URL).
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Audience: one string or a list (id tokens carry the app client id here).
    pub aud: Option<Audience>,
    /// Cognito access tokens carry the app client id here instead of `aud`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl Claims {
    /// True when `aud` or `client_id` names one of `allowed`.
    pub fn audience_allowed(&self, allowed: &[String]) -> bool {
        allowed.iter().any(|wanted| {
            self.aud.as_ref().is_some_and(|a| a.contains(wanted))
                || self.client_id.as_deref() == Some(wanted.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_from_aud_string_list_or_client_id() {
        let allowed = vec!["app".to_string()];
        let c: Claims = serde_json::from_str(r#"{"sub":"u","aud":"app"}"#).unwrap();
        assert!(c.audience_allowed(&allowed));
        let c: Claims = serde_json::from_str(r#"{"sub":"u","aud":["x","app"]}"#).unwrap();
        assert!(c.audience_allowed(&allowed));
        let c: Claims = serde_json::from_str(r#"{"sub":"u","client_id":"app"}"#).unwrap();
        assert!(c.audience_allowed(&allowed));
        let c: Claims = serde_json::from_str(r#"{"sub":"u","aud":"other"}"#).unwrap();
        assert!(!c.audience_allowed(&allowed));
        let c: Claims = serde_json::from_str(r#"{"sub":"u"}"#).unwrap();
        assert!(!c.audience_allowed(&allowed));
    }
}
