//! Frames a client sends: JSON text, route chosen by `action`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::depth::{json_depth, DEFAULT_MAX_JSON_DEPTH};

/// The routes of SUMU's API Gateway WebSocket API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Liveness check; the node answers with a `pong` frame.
    Ping,
    /// SNS `Publish` to the messages topic.
    Publish,
    /// SQS `SendMessage` to the messages queue.
    Send,
}

/// A parsed client frame. `message` is kept as the raw JSON text the client
/// sent, so it is forwarded without re-serialization.
#[derive(Debug)]
pub struct ClientFrame {
    /// The route named by the frame's `action` field: `ping`, `publish` or `send`.
    pub action: ClientAction,
    /// The `message` field as raw JSON; `None` when absent or `null`, which
    /// `publish` and `send` refuse.
    pub message: Option<Box<RawValue>>,
    /// Optional client correlation id, echoed in the `ack` frame.
    pub id: Option<Box<RawValue>>,
}

/// Why a frame was refused. The text becomes the error frame's `message`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The text is not a JSON object; carries the parser's reason.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The object has no `action` field.
    #[error("missing field 'action'")]
    MissingAction,
    /// `action` is not `"ping"`, `"publish"` or `"send"`; carries the name
    /// (or the raw JSON when it is not a string).
    #[error("unknown action '{0}'")]
    UnknownAction(String),
    /// A `publish` or `send` frame without a non-null `message`.
    #[error("missing field 'message'")]
    MissingMessage,
    /// `id` is present but not a JSON string or number (`null` included).
    #[error("field 'id' must be a string or a number")]
    BadId,
    /// Arrays and objects nest deeper than the limit (the frame's own
    /// object is level 1); checked before the text is parsed.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The limit that was passed.
        max: usize,
    },
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "crate::raw::present")]
    message: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "crate::raw::present")]
    id: Option<Box<RawValue>>,
}

/// The most of a client's `action` an error frame echoes back, in chars.
pub const MAX_ECHOED_ACTION: usize = 64;

/// What an error echoes of a client's value: at most [`MAX_ECHOED_ACTION`]
/// chars, then `…` (a 120 KB action must not come back as a 120 KB error).
fn echo(mut value: String) -> String {
    if let Some((cut, _)) = value.char_indices().nth(MAX_ECHOED_ACTION) {
        value.truncate(cut);
        value.push('…');
    }
    value
}

/// An `id` an answer may echo: a JSON string or number.
fn echoable(id: &RawValue) -> bool {
    let first = id.get().as_bytes().first().copied().unwrap_or(b' ');
    first == b'"' || first == b'-' || first.is_ascii_digit()
}

impl ClientFrame {
    /// Parses and validates one text frame, e.g.
    /// `{"action":"send","message":{..},"id":"c1"}`, nested at most
    /// [`DEFAULT_MAX_JSON_DEPTH`] levels.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        ClientFrame::parse_within(text, DEFAULT_MAX_JSON_DEPTH)
    }

    /// [`ClientFrame::parse`] with arrays and objects nested at most
    /// `max_depth` levels (the frame's own object is level 1). The depth is
    /// measured first, in one pass without recursion, so a frame nested
    /// 50,000 levels deep costs its length and is refused, never forwarded.
    pub fn parse_within(text: &str, max_depth: usize) -> Result<ClientFrame, FrameError> {
        if json_depth(text.as_bytes(), max_depth) > max_depth {
            return Err(FrameError::TooDeep { max: max_depth });
        }
        if !text.trim_start().starts_with('{') {
            return Err(FrameError::InvalidJson("expected a JSON object".into()));
        }
        let wire: Wire<'_> =
            serde_json::from_str(text).map_err(|e| FrameError::InvalidJson(e.to_string()))?;
        let action_raw = wire.action.ok_or(FrameError::MissingAction)?;
        let action_name: String = serde_json::from_str(action_raw.get())
            .map_err(|_| FrameError::UnknownAction(echo(action_raw.get().to_string())))?;
        let action = match action_name.as_str() {
            "ping" => ClientAction::Ping,
            "publish" => ClientAction::Publish,
            "send" => ClientAction::Send,
            _ => return Err(FrameError::UnknownAction(echo(action_name))),
        };
        let message = wire.message.filter(|m| m.get() != "null");
        if matches!(action, ClientAction::Publish | ClientAction::Send) && message.is_none() {
            return Err(FrameError::MissingMessage);
        }
        if wire.id.as_deref().is_some_and(|id| !echoable(id)) {
            return Err(FrameError::BadId);
        }
        Ok(ClientFrame {
            action,
            message,
            id: wire.id,
        })
    }

    /// The `id` of a frame that was refused (bad, too deep or over the rate
    /// limit), when the text is a JSON object with a string or number `id`,
    /// so the error frame can name the request it answers. Linear in the
    /// text and without recursion at any depth (nested values are skipped
    /// as raw text).
    pub fn peek_id(text: &str) -> Option<Box<RawValue>> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let wire: Wire<'_> = serde_json::from_str(text).ok()?;
        wire.id.filter(|id| echoable(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_action_and_keeps_message_raw() {
        let f = ClientFrame::parse(r#"{"action":"publish","message":{"b": 1,"a":[2]}}"#).unwrap();
        assert_eq!(f.action, ClientAction::Publish);
        assert_eq!(f.message.unwrap().get(), r#"{"b": 1,"a":[2]}"#);
        let f = ClientFrame::parse(r#"{"action":"ping"}"#).unwrap();
        assert_eq!(f.action, ClientAction::Ping);
        let f = ClientFrame::parse(r#"{"action":"send","message":"hi","id":"c1"}"#).unwrap();
        assert_eq!(f.action, ClientAction::Send);
        assert_eq!(f.id.unwrap().get(), r#""c1""#);
    }

    #[test]
    fn refuses_bad_frames_with_a_reason() {
        assert!(matches!(
            ClientFrame::parse("{nope"),
            Err(FrameError::InvalidJson(_))
        ));
        assert_eq!(
            ClientFrame::parse(r#"{"message":1}"#).unwrap_err(),
            FrameError::MissingAction
        );
        assert_eq!(
            ClientFrame::parse(r#"{"action":"dance"}"#).unwrap_err(),
            FrameError::UnknownAction("dance".into())
        );
        assert_eq!(
            ClientFrame::parse(r#"{"action":5}"#).unwrap_err(),
            FrameError::UnknownAction("5".into())
        );
    }

    #[test]
    fn an_unknown_action_is_echoed_truncated() {
        let long = "x".repeat(120_000);
        let frame = format!(r#"{{"action":"{long}"}}"#);
        let FrameError::UnknownAction(echoed) = ClientFrame::parse(&frame).unwrap_err() else {
            panic!("expected UnknownAction");
        };
        assert_eq!(echoed.chars().count(), MAX_ECHOED_ACTION + 1);
        assert!(echoed.ends_with('…'));
        // Multi-byte characters are cut on a char boundary.
        let wide = format!(r#"{{"action":"{}"}}"#, "é".repeat(100));
        let FrameError::UnknownAction(echoed) = ClientFrame::parse(&wide).unwrap_err() else {
            panic!("expected UnknownAction");
        };
        assert_eq!(echoed.chars().count(), MAX_ECHOED_ACTION + 1);
        assert_eq!(
            ClientFrame::parse(r#"{"action":"publish"}"#).unwrap_err(),
            FrameError::MissingMessage
        );
        assert_eq!(
            ClientFrame::parse(r#"{"action":"send","message":null}"#).unwrap_err(),
            FrameError::MissingMessage
        );
        assert_eq!(
            ClientFrame::parse(r#"{"action":"send","message":1,"id":{}}"#).unwrap_err(),
            FrameError::BadId
        );
        assert!(matches!(
            ClientFrame::parse(r#"[1,2]"#),
            Err(FrameError::InvalidJson(_))
        ));
    }

    #[test]
    fn a_frame_nested_past_the_limit_is_refused() {
        let nested = |levels: usize| {
            format!(
                r#"{{"action":"send","id":7,"message":{}1{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // The frame's object is level 1, so `message` may nest 3 more.
        assert!(ClientFrame::parse_within(&nested(3), 4).is_ok());
        assert_eq!(
            ClientFrame::parse_within(&nested(4), 4).unwrap_err(),
            FrameError::TooDeep { max: 4 }
        );
        let deep = nested(50_000);
        assert_eq!(
            ClientFrame::parse(&deep).unwrap_err(),
            FrameError::TooDeep {
                max: DEFAULT_MAX_JSON_DEPTH
            }
        );
        // Its id is still readable for the error frame, without recursion.
        assert_eq!(ClientFrame::peek_id(&deep).unwrap().get(), "7");
    }

    #[test]
    fn peek_id_reads_only_echoable_ids() {
        let id = |t: &str| ClientFrame::peek_id(t).map(|r| r.get().to_string());
        assert_eq!(
            id(r#"{"action":"dance","id":"c1"}"#).as_deref(),
            Some(r#""c1""#)
        );
        assert_eq!(id(r#"{"id":-3}"#).as_deref(), Some("-3"));
        assert_eq!(id(r#"{"id":{"x":1}}"#), None);
        assert_eq!(id(r#"{"id":null}"#), None);
        assert_eq!(id(r#"{"action":"send""#), None);
        assert_eq!(id(r#"[{"id":1}]"#), None);
    }
}
