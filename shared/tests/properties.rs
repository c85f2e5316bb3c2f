//! Property tests (proptest) of every parser in `sumu-shared` that reads
//! bytes from outside: client frames, notification requests, mesh envelopes,
//! JWT claims and presence events. Each parser must never panic on any input,
//! and what a well-formed message carries must come back unchanged (raw JSON
//! fields byte for byte).

use proptest::prelude::*;
use serde_json::Value;
use sumu_shared::claims::{Audience, Claims};
use sumu_shared::mesh::{MeshConnection, MeshEnvelope, MeshTarget};
use sumu_shared::presence::{PresenceEvent, PresenceStatus};
use sumu_shared::{json_depth, server, ClientAction, ClientFrame, FrameError, NotificationRequest};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// How deeply `v` nests arrays and objects (0 for a scalar), by recursion
/// over the parsed value: the reference the byte scanner must agree with.
fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// Text that is mostly JSON-shaped: a JSON value with some bytes replaced,
/// cut or repeated, to reach deeper into the parsers than random strings do.
fn mangled_json() -> impl Strategy<Value = Vec<u8>> {
    (
        json_value(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(v, edits, cut)| {
            let mut bytes = serde_json::to_vec(&serde_json::json!({
                "action": "publish", "users": ["u"], "data": v.clone(), "message": v,
            }))
            .unwrap_or_default();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let keep = cut.index(bytes.len() + 1);
            bytes.truncate(keep.max(bytes.len() / 2));
            bytes
        })
}

fn action() -> impl Strategy<Value = (ClientAction, &'static str)> {
    prop_oneof![
        Just((ClientAction::Ping, "ping")),
        Just((ClientAction::Publish, "publish")),
        Just((ClientAction::Send, "send")),
    ]
}

/// A client `id`: a string or a number.
fn client_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
    ]
}

proptest! {
    #[test]
    fn client_frame_parse_never_panics(text in any::<String>()) {
        let _ = ClientFrame::parse(&text);
    }

    #[test]
    fn client_frame_parse_never_panics_on_mangled_json(bytes in mangled_json()) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = ClientFrame::parse(text);
        }
    }

    /// A well-formed frame routes by its action and keeps `message` and
    /// `id` byte for byte.
    #[test]
    fn client_frame_round_trips(
        (kind, name) in action(),
        message in json_value().prop_filter("message is not null", |m| !m.is_null()),
        id in prop::option::of(client_id()),
        spaces in "[ \t\n]{0,3}",
    ) {
        let message_text = serde_json::to_string(&message).unwrap();
        let mut text = format!(r#"{{{spaces}"action"{spaces}:{spaces}"{name}","message":{message_text}"#);
        if let Some(id) = &id {
            text.push_str(&format!(r#","id":{}"#, serde_json::to_string(id).unwrap()));
        }
        text.push('}');
        let frame = ClientFrame::parse(&text).unwrap();
        prop_assert_eq!(frame.action, kind);
        prop_assert_eq!(frame.message.as_ref().map(|m| m.get()), Some(message_text.as_str()));
        prop_assert_eq!(
            frame.id.as_ref().map(|i| i.get().to_string()),
            id.map(|i| serde_json::to_string(&i).unwrap())
        );
    }

    /// Any other action is refused with its own name (never panics, never
    /// routes).
    #[test]
    fn unknown_actions_are_refused(name in any::<String>()) {
        prop_assume!(!["ping", "publish", "send"].contains(&name.as_str()));
        let text = serde_json::json!({"action": name.clone(), "message": 1}).to_string();
        prop_assert_eq!(ClientFrame::parse(&text).unwrap_err(), FrameError::UnknownAction(name));
    }

    #[test]
    fn notification_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = NotificationRequest::parse(&bytes);
    }

    #[test]
    fn notification_parse_never_panics_on_mangled_json(bytes in mangled_json()) {
        let _ = NotificationRequest::parse(&bytes);
    }

    /// `users` and `exclude_users` come back de-duplicated in first-seen
    /// order, `data` byte for byte, and the targets are the users minus the
    /// excluded ones.
    #[test]
    fn notification_round_trips(
        users in prop::collection::vec("[a-c]{1,2}", 0..8),
        exclude in prop::collection::vec("[a-c]{1,2}", 0..4),
        data in json_value().prop_filter("data is not null", |d| !d.is_null()),
    ) {
        let data_text = serde_json::to_string(&data).unwrap();
        let body = format!(
            r#"{{"users":{},"exclude_users":{},"data":{data_text}}}"#,
            serde_json::to_string(&users).unwrap(),
            serde_json::to_string(&exclude).unwrap(),
        );
        let req = NotificationRequest::parse(body.as_bytes()).unwrap();
        let mut unique: Vec<String> = Vec::new();
        for u in &users {
            if !unique.contains(u) {
                unique.push(u.clone());
            }
        }
        prop_assert_eq!(&req.users, &unique);
        prop_assert_eq!(req.is_broadcast(), users.is_empty());
        prop_assert_eq!(req.data.get(), data_text.as_str());
        let targets: Vec<&String> = req.targets().collect();
        let expected: Vec<&String> = unique.iter().filter(|u| !exclude.contains(u)).collect();
        prop_assert_eq!(targets, expected);
    }

    #[test]
    fn mesh_envelope_parse_never_panics(bytes in mangled_json()) {
        let _ = serde_json::from_slice::<MeshEnvelope>(&bytes);
    }

    #[test]
    fn mesh_envelope_round_trips(
        request_id in any::<String>(),
        from_node in any::<String>(),
        connections in prop::option::of(prop::collection::vec(
            (any::<String>(), any::<String>()), 0..4)),
        exclude_users in prop::collection::vec(any::<String>(), 0..4),
        data in json_value(),
    ) {
        let data_text = serde_json::to_string(&data).unwrap();
        let target = match &connections {
            Some(list) => MeshTarget::Connections {
                connections: list
                    .iter()
                    .map(|(u, c)| MeshConnection { user_id: u.clone(), connection_id: c.clone() })
                    .collect(),
            },
            None => MeshTarget::Broadcast { exclude_users: exclude_users.clone() },
        };
        let env = MeshEnvelope {
            request_id: request_id.clone(),
            from_node: from_node.clone(),
            routed_at: None,
            target,
            data: serde_json::value::RawValue::from_string(data_text.clone()).unwrap(),
            history: None,
        };
        let text = serde_json::to_string(&env).unwrap();
        let back: MeshEnvelope = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back.request_id, request_id);
        prop_assert_eq!(back.from_node, from_node);
        prop_assert_eq!(back.data.get(), data_text.as_str());
        match (back.target, connections) {
            (MeshTarget::Connections { connections: got }, Some(list)) => {
                let got: Vec<(String, String)> =
                    got.into_iter().map(|c| (c.user_id, c.connection_id)).collect();
                prop_assert_eq!(got, list);
            }
            (MeshTarget::Broadcast { exclude_users: got }, None) => {
                prop_assert_eq!(got, exclude_users);
            }
            _ => prop_assert!(false, "target kind changed"),
        }
    }

    #[test]
    fn claims_parse_never_panics(bytes in mangled_json()) {
        let _ = serde_json::from_slice::<Claims>(&bytes);
    }

    #[test]
    fn claims_round_trip(
        sub in any::<String>(),
        exp in prop::option::of(any::<u64>()),
        iat in prop::option::of(any::<u64>()),
        nbf in prop::option::of(any::<u64>()),
        iss in prop::option::of(any::<String>()),
        aud in prop::option::of(prop_oneof![
            any::<String>().prop_map(Audience::One),
            prop::collection::vec(any::<String>(), 0..3).prop_map(Audience::Many),
        ]),
        client_id in prop::option::of(any::<String>()),
    ) {
        let claims = Claims { sub, exp, iat, nbf, iss, aud, client_id };
        let text = serde_json::to_string(&claims).unwrap();
        let back: Claims = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(&back, &claims);
        // An audience a token names is allowed when it is configured.
        if let Some(Audience::One(a)) = &claims.aud {
            prop_assert!(claims.audience_allowed(std::slice::from_ref(a)));
        }
    }

    #[test]
    fn presence_event_round_trips(user in any::<String>(), online in any::<bool>(), ts in any::<u64>()) {
        let status = if online { PresenceStatus::Online } else { PresenceStatus::Offline };
        let event = PresenceEvent::new(&user, status, ts);
        let back: PresenceEvent = serde_json::from_str(&event.to_json()).unwrap();
        prop_assert_eq!(back, event);
    }

    /// Server error frames are valid JSON that carry the message unchanged,
    /// whatever it contains.
    #[test]
    fn server_error_frames_escape_any_message(status in 100u16..600, message in any::<String>()) {
        let v: Value = serde_json::from_str(&server::error(status, &message, None)).unwrap();
        prop_assert_eq!(&v["type"], "error");
        prop_assert_eq!(v["statusCode"].as_u64(), Some(u64::from(status)));
        prop_assert_eq!(v["message"].as_str(), Some(message.as_str()));
    }

    #[test]
    fn json_depth_agrees_with_the_parsed_value(v in json_value(), limit in 0usize..8) {
        let depth = depth_of(&v);
        for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
            prop_assert_eq!(json_depth(text.as_bytes(), 64), depth);
            prop_assert_eq!(json_depth(text.as_bytes(), limit), depth.min(limit + 1));
        }
        let frame = format!(r#"{{"action":"send","id":1,"message":{}}}"#, serde_json::to_string(&v).unwrap());
        let too_deep = depth + 1 > limit;
        prop_assert_eq!(
            matches!(ClientFrame::parse_within(&frame, limit), Err(FrameError::TooDeep { .. })),
            too_deep
        );
        let id = ClientFrame::peek_id(&frame).map(|id| id.get().to_string());
        prop_assert_eq!(id.as_deref(), Some("1"));
    }

    #[test]
    fn json_depth_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), limit in 0usize..100) {
        prop_assert!(json_depth(&bytes, limit) <= limit + 1);
    }
}
