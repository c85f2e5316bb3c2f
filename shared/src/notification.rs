//! The notification request a backend sends (SUMU format):
//! `{"users": ["u1"], "exclude_users": ["u3"], "data": {...}}`.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A parsed notification request. `data` stays the exact JSON text the
/// backend sent: every target connection receives it byte-for-byte.
#[derive(Debug)]
pub struct NotificationRequest {
    /// Target users, duplicates removed, order kept. Empty = broadcast.
    pub users: Vec<String>,
    /// Users left out of a broadcast (or of a multicast).
    pub exclude_users: Vec<String>,
    /// The `data` field (required, not `null`) as raw JSON text.
    pub data: Box<RawValue>,
}

/// Why a notification request was refused (the HTTP API answers 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    /// Not a JSON object, or a field of the wrong type; carries the reason.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The object has no `data` field.
    #[error("missing field 'data'")]
    MissingData,
    /// `data` is JSON `null`.
    #[error("field 'data' must not be null")]
    NullData,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    exclude_users: Option<Vec<String>>,
    #[serde(default, deserialize_with = "crate::raw::present")]
    data: Option<Box<RawValue>>,
}

impl NotificationRequest {
    /// Parses and validates a request body; `users` and `exclude_users`
    /// may be absent (empty) and are deduplicated.
    pub fn parse(body: &[u8]) -> Result<NotificationRequest, NotificationError> {
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(NotificationError::InvalidJson(
                "expected a JSON object".into(),
            ));
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| NotificationError::InvalidJson(e.to_string()))?;
        let data = wire.data.ok_or(NotificationError::MissingData)?;
        if data.get() == "null" {
            return Err(NotificationError::NullData);
        }
        Ok(NotificationRequest {
            users: dedup(wire.users.unwrap_or_default()),
            exclude_users: dedup(wire.exclude_users.unwrap_or_default()),
            data,
        })
    }

    /// True when `users` is absent or empty: deliver to every connection
    /// except those of `exclude_users`.
    pub fn is_broadcast(&self) -> bool {
        self.users.is_empty()
    }

    /// The multicast targets minus the excluded users.
    pub fn targets(&self) -> impl Iterator<Item = &String> {
        // A set, so 21,000 users minus 21,000 exclusions is linear, not
        // 441 million comparisons.
        let excluded: std::collections::HashSet<&str> =
            self.exclude_users.iter().map(String::as_str).collect();
        self.users
            .iter()
            .filter(move |u| !excluded.contains(u.as_str()))
    }
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    list.into_iter()
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multicast_and_keeps_data_raw() {
        let r = NotificationRequest::parse(
            br#"{"users":["a","b","a"],"data":{"type":"t", "message":{"z":1}}}"#,
        )
        .unwrap();
        assert_eq!(r.users, vec!["a", "b"]);
        assert!(!r.is_broadcast());
        assert_eq!(r.data.get(), r#"{"type":"t", "message":{"z":1}}"#);
    }

    #[test]
    fn broadcast_when_users_absent_or_empty() {
        let r = NotificationRequest::parse(br#"{"exclude_users":["x"],"data":1}"#).unwrap();
        assert!(r.is_broadcast());
        assert_eq!(r.exclude_users, vec!["x"]);
        let r = NotificationRequest::parse(br#"{"users":[],"data":"s"}"#).unwrap();
        assert!(r.is_broadcast());
    }

    #[test]
    fn exclusion_applies_to_multicast_targets() {
        let r =
            NotificationRequest::parse(br#"{"users":["a","b"],"exclude_users":["b"],"data":1}"#)
                .unwrap();
        assert_eq!(r.targets().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn refuses_malformed_requests() {
        assert!(matches!(
            NotificationRequest::parse(b"not json"),
            Err(NotificationError::InvalidJson(_))
        ));
        assert_eq!(
            NotificationRequest::parse(br#"{"users":["a"]}"#).unwrap_err(),
            NotificationError::MissingData
        );
        assert_eq!(
            NotificationRequest::parse(br#"{"data":null}"#).unwrap_err(),
            NotificationError::NullData
        );
        assert!(matches!(
            NotificationRequest::parse(b"[1]"),
            Err(NotificationError::InvalidJson(_))
        ));
        assert!(matches!(
            NotificationRequest::parse(br#"{"users":"a","data":1}"#),
            Err(NotificationError::InvalidJson(_))
        ));
    }
}
