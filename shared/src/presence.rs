//! Presence events: `{"type":"presence","message":{"user_id":..,"status":..,"timestamp":..}}`.

use serde::{Deserialize, Serialize};

/// A user's presence, serialized as `"ONLINE"` or `"OFFLINE"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PresenceStatus {
    /// The user opened their first live connection.
    Online,
    /// The user's last connection closed.
    Offline,
}

/// The `message` object of a [`PresenceEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMessage {
    /// The user (token `sub`) whose presence changed.
    pub user_id: String,
    /// `"ONLINE"` or `"OFFLINE"`.
    pub status: PresenceStatus,
    /// Milliseconds since the Unix epoch when the change happened.
    pub timestamp: u64,
}

/// A presence event, shaped like those of SUMU's presence watchdog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// The `type` field: always `"presence"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who changed, to what, and when.
    pub message: PresenceMessage,
}

impl PresenceEvent {
    /// A `"presence"` event; `timestamp` is milliseconds since the Unix epoch.
    pub fn new(user_id: &str, status: PresenceStatus, timestamp: u64) -> PresenceEvent {
        PresenceEvent {
            kind: "presence".to_string(),
            message: PresenceMessage {
                user_id: user_id.to_string(),
                status,
                timestamp,
            },
        }
    }

    /// The event as JSON text, the body the node publishes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_the_sumu_watchdog() {
        let e = PresenceEvent::new("u1", PresenceStatus::Offline, 42);
        assert_eq!(
            e.to_json(),
            r#"{"type":"presence","message":{"user_id":"u1","status":"OFFLINE","timestamp":42}}"#
        );
    }
}
