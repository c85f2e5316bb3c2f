//! Frames the node sends to a client (besides notification `data`, which is
//! forwarded byte-for-byte).

use serde::Serialize;
use serde_json::value::RawValue;

/// A frame the node sends, tagged by `type`: `"pong"`, `"ack"` or `"error"`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    /// The answer to a `ping` frame.
    Pong {
        /// `statusCode`: 200.
        #[serde(rename = "statusCode")]
        status_code: u16,
        /// `connectionId`: the id the node gave this connection.
        #[serde(rename = "connectionId")]
        connection_id: &'a str,
    },
    /// A `publish` or `send` frame carrying an `id` was accepted.
    Ack {
        /// `statusCode`: 200.
        #[serde(rename = "statusCode")]
        status_code: u16,
        /// The client's `id`, echoed as the raw JSON it sent.
        id: &'a RawValue,
    },
    /// A frame was refused or could not be forwarded.
    Error {
        /// `statusCode`: HTTP-style (400 bad frame, 429 rate limit, 502 not forwarded).
        #[serde(rename = "statusCode")]
        status_code: u16,
        /// Why, in words.
        message: &'a str,
        /// The client's `id`, when known; omitted otherwise.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
}

impl ServerFrame<'_> {
    /// The frame as compact JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `{"type":"pong","statusCode":200,"connectionId":..}`.
pub fn pong(connection_id: &str) -> String {
    ServerFrame::Pong {
        status_code: 200,
        connection_id,
    }
    .to_json()
}

/// `{"type":"ack","statusCode":200,"id":..}`.
pub fn ack(id: &RawValue) -> String {
    ServerFrame::Ack {
        status_code: 200,
        id,
    }
    .to_json()
}

/// `{"type":"error","statusCode":..,"message":..}`, plus `id` when given.
pub fn error(status_code: u16, message: &str, id: Option<&RawValue>) -> String {
    ServerFrame::Error {
        status_code,
        message,
        id,
    }
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_sumu_contract() {
        assert_eq!(
            pong("abc"),
            r#"{"type":"pong","statusCode":200,"connectionId":"abc"}"#
        );
        let id = RawValue::from_string("\"x1\"".into()).unwrap();
        assert_eq!(ack(&id), r#"{"type":"ack","statusCode":200,"id":"x1"}"#);
        assert_eq!(
            error(400, "bad \"frame\"", None),
            r#"{"type":"error","statusCode":400,"message":"bad \"frame\""}"#
        );
    }
}
