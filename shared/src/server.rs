//! Frames the node sends to a client (besides notification `data`, which is
//! forwarded byte-for-byte).

use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Pong {
        #[serde(rename = "statusCode")]
        status_code: u16,
        #[serde(rename = "connectionId")]
        connection_id: &'a str,
    },
    Ack {
        #[serde(rename = "statusCode")]
        status_code: u16,
        id: &'a RawValue,
    },
    Error {
        #[serde(rename = "statusCode")]
        status_code: u16,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RawValue>,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub fn pong(connection_id: &str) -> String {
    ServerFrame::Pong {
        status_code: 200,
        connection_id,
    }
    .to_json()
}

pub fn ack(id: &RawValue) -> String {
    ServerFrame::Ack {
        status_code: 200,
        id,
    }
    .to_json()
}

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
