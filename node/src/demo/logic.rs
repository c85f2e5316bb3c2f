//! SUMU's demo backend logic, pure: what a backend answers to each message it
//! reads from the messages topic/queue, as notification requests. No I/O, so
//! the same code runs in-process beside the memory engine and in the
//! standalone `sumu-demo-backend` against SNS/SQS (or against SUMU itself).
//!
//! Invariants:
//! - `user_id` and `timestamp` of a delivered chat message come from the
//!   trusted message attributes set by the gateway, never from the body.
//! - Only a message whose `source` attribute is the presence watchdog's is
//!   treated as presence; a client cannot publish presence for someone else.
//! - A MULTICAST with no target users produces nothing (an empty `users`
//!   list would mean *broadcast* in a notification request).
//!
//! What clients send (`publish` or `send`) and what comes back:
//!
//! | client message | notification request |
//! | --- | --- |
//! | `{"type":"message","message":{"text","push_mode":"UNICAST"}}` | to the sender |
//! | `... "push_mode":"MULTICAST","users":["u2"]` | to those users |
//! | `... "push_mode":"BROADCAST"` | to everyone but the sender |
//! | `{"type":"get_connected_users"}` | to the sender: `{"type":"connected_users","message":{"users":[..]}}` |
//!
//! Chat data is `{"type":"message","message":{"text","user_id","timestamp"}}`.
//! Presence events are re-broadcast unchanged to everyone but their subject.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use sumu_shared::attributes::{SOURCE_PRESENCE, SOURCE_PUBLISH, SOURCE_SEND};
use sumu_shared::notification::{NotificationError, NotificationRequest};
use sumu_shared::presence::{PresenceEvent, PresenceStatus};

/// One message as a backend receives it: the body and its attributes.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// The `source` attribute.
    pub source: &'a str,
    /// The `user_id` attribute: the sender (or, for presence, the subject).
    pub user_id: &'a str,
    /// The `timestamp` attribute, ms since the epoch.
    pub timestamp: u64,
    /// The message body (JSON text).
    pub body: &'a str,
}

/// A notification request to send (SUMU format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Target users; empty = broadcast.
    pub users: Vec<String>,
    /// Users left out of a broadcast.
    pub exclude_users: Vec<String>,
    /// The `data` every target receives, as JSON text.
    pub data: String,
}

impl Notification {
    /// The request as JSON text, as sent to the notifications queue or topic:
    /// `users` and `exclude_users` only when non-empty, then `data` verbatim.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 64);
        out.push('{');
        for (key, list) in [
            ("users", &self.users),
            ("exclude_users", &self.exclude_users),
        ] {
            if !list.is_empty() {
                out.push_str(&format!("\"{key}\":"));
                out.push_str(&serde_json::to_string(list).unwrap_or_else(|_| "[]".into()));
                out.push(',');
            }
        }
        out.push_str("\"data\":");
        out.push_str(&self.data);
        out.push('}');
        out
    }

    /// The request as the node's router takes it (for in-process use).
    pub fn to_request(&self) -> Result<NotificationRequest, NotificationError> {
        NotificationRequest::parse(self.to_json().as_bytes())
    }
}

/// Why a message produced no notification. None of these is a failure of the
/// backend: they are logged and counted, and the message is consumed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Ignored {
    /// The body is not a JSON object (the parser's reason).
    #[error("message body is not a JSON object: {0}")]
    NotJson(String),
    /// A `type` the demo does not handle.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A `source` attribute that is neither a client route nor presence.
    #[error("unknown source {0:?}")]
    UnknownSource(String),
    /// A required field of `message` is missing or not a string.
    #[error("message.{0} is missing or not a string")]
    BadField(&'static str),
    /// A `push_mode` other than UNICAST, MULTICAST or BROADCAST.
    #[error("unknown push_mode {0:?} (UNICAST, MULTICAST or BROADCAST)")]
    UnknownPushMode(String),
    /// A MULTICAST that names no user.
    #[error("MULTICAST without target users")]
    EmptyMulticast,
    /// A presence event that does not parse.
    #[error("bad presence event: {0}")]
    BadPresence(String),
}

/// What to do with one inbound message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this notification request.
    Notify(Notification),
    /// A presence change: update the connected-users book, then send the
    /// re-broadcast.
    Presence {
        /// Whose presence changed.
        user_id: String,
        /// ONLINE or OFFLINE.
        status: PresenceStatus,
        /// The stream record's time, ms since the epoch.
        timestamp: u64,
        /// The event for everyone but its subject.
        rebroadcast: Notification,
    },
    /// Answer `requester` with the connected users: look them up in your
    /// source, then send [`connected_users_reply`].
    ConnectedUsers {
        /// The user who asked.
        requester: String,
    },
}

#[derive(Deserialize)]
struct ClientWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    message: Option<ChatWire>,
}

#[derive(Deserialize)]
struct ChatWire {
    text: Option<serde_json::Value>,
    push_mode: Option<serde_json::Value>,
    users: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ChatData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: ChatMessage<'a>,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    text: &'a str,
    user_id: &'a str,
    timestamp: u64,
}

#[derive(Serialize)]
struct UsersData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: UsersMessage<'a>,
}

#[derive(Serialize)]
struct UsersMessage<'a> {
    users: &'a [String],
}

/// Decides what one inbound message needs.
pub fn handle(inbound: &Inbound<'_>) -> Result<Outcome, Ignored> {
    match inbound.source {
        SOURCE_PRESENCE => presence(inbound),
        SOURCE_PUBLISH | SOURCE_SEND => client_message(inbound),
        other => Err(Ignored::UnknownSource(other.to_string())),
    }
}

/// The answer to `get_connected_users`: `users` sorted, duplicates removed.
pub fn connected_users_reply<I>(requester: &str, users: I) -> Notification
where
    I: IntoIterator<Item = String>,
{
    let users: Vec<String> = users
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let data = serde_json::to_string(&UsersData {
        kind: "connected_users",
        message: UsersMessage { users: &users },
    })
    .unwrap_or_default();
    Notification {
        users: vec![requester.to_string()],
        exclude_users: Vec::new(),
        data,
    }
}

fn presence(inbound: &Inbound<'_>) -> Result<Outcome, Ignored> {
    let event: PresenceEvent =
        serde_json::from_str(inbound.body).map_err(|e| Ignored::BadPresence(e.to_string()))?;
    if event.kind != "presence" {
        return Err(Ignored::BadPresence(format!("type {:?}", event.kind)));
    }
    let m = event.message;
    Ok(Outcome::Presence {
        rebroadcast: Notification {
            users: Vec::new(),
            exclude_users: vec![m.user_id.clone()],
            data: inbound.body.trim().to_string(),
        },
        user_id: m.user_id,
        status: m.status,
        timestamp: m.timestamp,
    })
}

fn client_message(inbound: &Inbound<'_>) -> Result<Outcome, Ignored> {
    if !inbound.body.trim_start().starts_with('{') {
        return Err(Ignored::NotJson("expected an object".into()));
    }
    let wire: ClientWire<'_> =
        serde_json::from_str(inbound.body).map_err(|e| Ignored::NotJson(e.to_string()))?;
    let kind = wire.kind.as_deref().unwrap_or("");
    match kind {
        "get_connected_users" => {
            return Ok(Outcome::ConnectedUsers {
                requester: inbound.user_id.to_string(),
            })
        }
        "message" => {}
        other => return Err(Ignored::UnknownType(other.to_string())),
    }
    let chat = wire.message.ok_or(Ignored::BadField("text"))?;
    let Some(serde_json::Value::String(text)) = &chat.text else {
        return Err(Ignored::BadField("text"));
    };
    let Some(serde_json::Value::String(mode)) = &chat.push_mode else {
        return Err(Ignored::BadField("push_mode"));
    };
    let data = serde_json::to_string(&ChatData {
        kind: "message",
        message: ChatMessage {
            text,
            user_id: inbound.user_id,
            timestamp: inbound.timestamp,
        },
    })
    .unwrap_or_default();
    let sender = inbound.user_id.to_string();
    let (users, exclude_users) = match mode.as_str() {
        "UNICAST" => (vec![sender], Vec::new()),
        "BROADCAST" => (Vec::new(), vec![sender]),
        "MULTICAST" => {
            let users = match &chat.users {
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .map(|u| u.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or(Ignored::BadField("users"))?,
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => return Err(Ignored::BadField("users")),
            };
            let mut seen = BTreeSet::new();
            let users: Vec<String> = users
                .into_iter()
                .filter(|u| seen.insert(u.clone()))
                .collect();
            if users.is_empty() {
                return Err(Ignored::EmptyMulticast);
            }
            (users, Vec::new())
        }
        other => return Err(Ignored::UnknownPushMode(other.to_string())),
    };
    Ok(Outcome::Notify(Notification {
        users,
        exclude_users,
        data,
    }))
}

/// The connected users as presence events tell them, for a backend with no
/// other source. Events may arrive twice or out of order (a new presence
/// leader resumes from a checkpoint): per user, an event older than the
/// newest one applied is ignored.
#[derive(Debug, Default)]
pub struct PresenceBook {
    users: HashMap<String, (PresenceStatus, u64)>,
}

impl PresenceBook {
    /// Applies one presence change; false if it was older than what is known.
    pub fn observe(&mut self, user_id: &str, status: PresenceStatus, timestamp: u64) -> bool {
        if matches!(self.users.get(user_id), Some((_, newest)) if *newest > timestamp) {
            return false;
        }
        self.users.insert(user_id.to_string(), (status, timestamp));
        true
    }

    /// The users whose latest known status is ONLINE, sorted.
    pub fn online(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .users
            .iter()
            .filter(|(_, (s, _))| *s == PresenceStatus::Online)
            .map(|(u, _)| u.clone())
            .collect();
        v.sort();
        v
    }
}

/// The whole demo backend for callers whose only source of connected users
/// is presence events (the standalone binary).
#[derive(Debug, Default)]
pub struct DemoBackend {
    /// Who is online, as the presence events told it.
    pub book: PresenceBook,
}

impl DemoBackend {
    /// The notification request one inbound message needs, if any.
    pub fn handle(&mut self, inbound: &Inbound<'_>) -> Result<Notification, Ignored> {
        match handle(inbound)? {
            Outcome::Notify(n) => Ok(n),
            Outcome::Presence {
                user_id,
                status,
                timestamp,
                rebroadcast,
            } => {
                self.book.observe(&user_id, status, timestamp);
                Ok(rebroadcast)
            }
            Outcome::ConnectedUsers { requester } => {
                Ok(connected_users_reply(&requester, self.book.online()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<'a>(user: &'a str, body: &'a str) -> Inbound<'a> {
        Inbound {
            source: SOURCE_PUBLISH,
            user_id: user,
            timestamp: 1700000000123,
            body,
        }
    }

    fn notify(i: &Inbound<'_>) -> Notification {
        match handle(i).unwrap() {
            Outcome::Notify(n) => n,
            other => panic!("expected a notification, got {other:?}"),
        }
    }

    #[test]
    fn unicast_goes_back_to_the_sender_with_trusted_attributes() {
        let n = notify(&from(
            "alice",
            r#"{"type":"message","message":{"text":"hi","push_mode":"UNICAST","user_id":"mallory","timestamp":1}}"#,
        ));
        assert_eq!(
            n.to_json(),
            r#"{"users":["alice"],"data":{"type":"message","message":{"text":"hi","user_id":"alice","timestamp":1700000000123}}}"#
        );
    }

    #[test]
    fn broadcast_excludes_the_sender_and_send_route_works_too() {
        let mut i = from(
            "bob",
            r#"{"type":"message","message":{"text":"all","push_mode":"BROADCAST"}}"#,
        );
        i.source = SOURCE_SEND;
        assert_eq!(
            notify(&i).to_json(),
            r#"{"exclude_users":["bob"],"data":{"type":"message","message":{"text":"all","user_id":"bob","timestamp":1700000000123}}}"#
        );
    }

    #[test]
    fn multicast_targets_the_listed_users_once_each() {
        let n = notify(&from(
            "carol",
            r#"{"type":"message","message":{"text":"psst","push_mode":"MULTICAST","users":["dave","erin","dave"]}}"#,
        ));
        assert_eq!(n.users, vec!["dave", "erin"]);
        assert!(n.exclude_users.is_empty());
        let req = NotificationRequest::parse(n.to_json().as_bytes()).unwrap();
        assert_eq!(req.users, vec!["dave", "erin"]);
        assert_eq!(req.data.get(), n.data);
        assert_eq!(n.to_request().unwrap().data.get(), n.data);
    }

    #[test]
    fn a_multicast_without_users_is_never_a_broadcast() {
        for body in [
            r#"{"type":"message","message":{"text":"x","push_mode":"MULTICAST"}}"#,
            r#"{"type":"message","message":{"text":"x","push_mode":"MULTICAST","users":[]}}"#,
        ] {
            assert_eq!(handle(&from("a", body)), Err(Ignored::EmptyMulticast));
        }
        assert_eq!(
            handle(&from(
                "a",
                r#"{"type":"message","message":{"text":"x","push_mode":"MULTICAST","users":[1]}}"#
            )),
            Err(Ignored::BadField("users"))
        );
    }

    #[test]
    fn text_is_escaped_not_interpreted() {
        let n = notify(&from(
            "<img src=x onerror=alert(1)>",
            r#"{"type":"message","message":{"text":"a\"b\u2028</script>","push_mode":"UNICAST"}}"#,
        ));
        let v: serde_json::Value = serde_json::from_str(&n.data).unwrap();
        assert_eq!(v["message"]["text"], "a\"b\u{2028}</script>");
        assert_eq!(v["message"]["user_id"], "<img src=x onerror=alert(1)>");
        assert_eq!(n.users, vec!["<img src=x onerror=alert(1)>"]);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        assert!(matches!(
            handle(&from("a", "[1]")),
            Err(Ignored::NotJson(_))
        ));
        assert!(matches!(
            handle(&from("a", "{bad")),
            Err(Ignored::NotJson(_))
        ));
        assert_eq!(
            handle(&from("a", r#"{"type":"dance"}"#)),
            Err(Ignored::UnknownType("dance".into()))
        );
        assert_eq!(
            handle(&from("a", r#"{"type":"message"}"#)),
            Err(Ignored::BadField("text"))
        );
        assert_eq!(
            handle(&from(
                "a",
                r#"{"type":"message","message":{"text":5,"push_mode":"UNICAST"}}"#
            )),
            Err(Ignored::BadField("text"))
        );
        assert_eq!(
            handle(&from("a", r#"{"type":"message","message":{"text":"t"}}"#)),
            Err(Ignored::BadField("push_mode"))
        );
        assert_eq!(
            handle(&from(
                "a",
                r#"{"type":"message","message":{"text":"t","push_mode":"ANYCAST"}}"#
            )),
            Err(Ignored::UnknownPushMode("ANYCAST".into()))
        );
        let mut i = from("a", "{}");
        i.source = "somewhere.else";
        assert_eq!(
            handle(&i),
            Err(Ignored::UnknownSource("somewhere.else".into()))
        );
    }

    #[test]
    fn presence_is_rebroadcast_to_everyone_but_its_subject() {
        let body = PresenceEvent::new("zoe", PresenceStatus::Online, 77).to_json();
        let i = Inbound {
            source: SOURCE_PRESENCE,
            user_id: "zoe",
            timestamp: 77,
            body: &body,
        };
        match handle(&i).unwrap() {
            Outcome::Presence {
                user_id,
                status,
                timestamp,
                rebroadcast,
            } => {
                assert_eq!(
                    (user_id.as_str(), status, timestamp),
                    ("zoe", PresenceStatus::Online, 77)
                );
                assert_eq!(
                    rebroadcast.to_json(),
                    format!(r#"{{"exclude_users":["zoe"],"data":{body}}}"#)
                );
            }
            other => panic!("{other:?}"),
        }
        // A client publishing a presence-shaped message is just an unknown type.
        assert_eq!(
            handle(&from("mallory", &body)),
            Err(Ignored::UnknownType("presence".into()))
        );
    }

    #[test]
    fn connected_users_come_from_presence_and_are_answered_to_the_requester() {
        let mut demo = DemoBackend::default();
        for (user, status, t) in [
            ("b", PresenceStatus::Online, 10),
            ("a", PresenceStatus::Online, 11),
            ("c", PresenceStatus::Online, 12),
            ("c", PresenceStatus::Offline, 13),
            ("a", PresenceStatus::Online, 14),
            // late duplicate of an older event: ignored
            ("c", PresenceStatus::Online, 12),
        ] {
            let body = PresenceEvent::new(user, status, t).to_json();
            demo.handle(&Inbound {
                source: SOURCE_PRESENCE,
                user_id: user,
                timestamp: t,
                body: &body,
            })
            .unwrap();
        }
        let n = demo
            .handle(&from("b", r#"{"type":"get_connected_users"}"#))
            .unwrap();
        assert_eq!(
            n.to_json(),
            r#"{"users":["b"],"data":{"type":"connected_users","message":{"users":["a","b"]}}}"#
        );
    }

    #[test]
    fn reply_lists_distinct_users() {
        let n = connected_users_reply("r", ["y".to_string(), "x".into(), "y".into()]);
        assert_eq!(
            n.data,
            r#"{"type":"connected_users","message":{"users":["x","y"]}}"#
        );
    }
}
