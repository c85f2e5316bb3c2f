//! Presence events: `{"type":"presence","message":{"user_id":..,"status":..,"timestamp":..}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PresenceStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMessage {
    pub user_id: String,
    pub status: PresenceStatus,
    /// Milliseconds since the Unix epoch when the change happened.
    pub timestamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: PresenceMessage,
}

impl PresenceEvent {
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
