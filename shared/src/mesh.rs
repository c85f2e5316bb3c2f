//! Node ↔ node envelopes carried by the per-node SQS inboxes and the mesh
//! SNS topic.
//!
//! An envelope of a request recorded in the recovery history carries its
//! positions (`history`); a node of an older build ignores the field, and an
//! envelope without it is delivered as before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::recovery::Position;

/// What a router asks another node (or every node) to deliver.
#[derive(Debug, Serialize, Deserialize)]
pub struct MeshEnvelope {
    /// The notification request id, for deduplicating redeliveries.
    pub request_id: String,
    /// The node that routed the request.
    pub from_node: String,
    /// When the router started routing the request, ms since the Unix epoch
    /// by its clock: the receiver measures the mesh path's latency from it
    /// (`sumu_route_seconds{path="mesh"}`). Absent from older routers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed_at: Option<u64>,
    /// Who receives `data`; flattened, so its `target` tag and fields sit
    /// at the top level of the envelope.
    #[serde(flatten)]
    pub target: MeshTarget,
    /// The notification `data` as raw JSON, delivered byte-for-byte.
    pub data: Box<RawValue>,
    /// Where the request sits in the recovery history, when it was
    /// recorded; absent otherwise (and from nodes without recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<MeshHistory>,
}

/// The positions of a recorded request: in the broadcast stream, or in the
/// streams of the users of this envelope. Each is `[epoch, seq, at_ms]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshHistory {
    /// The broadcast stream's position (a broadcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast: Option<[u64; 3]>,
    /// Each user's stream position (a multicast), by user id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, [u64; 3]>,
}

impl MeshHistory {
    /// `[epoch, seq, at_ms]` of a position.
    pub fn pack(p: Position) -> [u64; 3] {
        [p.epoch, p.seq, p.at_ms]
    }

    /// The position of `[epoch, seq, at_ms]`.
    pub fn unpack(v: [u64; 3]) -> Position {
        Position {
            epoch: v[0],
            seq: v[1],
            at_ms: v[2],
        }
    }
}

/// The recipients of a [`MeshEnvelope`], tagged `"target": "connections"`
/// or `"target": "broadcast"`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum MeshTarget {
    /// Deliver to these connections (held by the receiving node).
    Connections {
        /// The connections, each with the user it belongs to.
        connections: Vec<MeshConnection>,
    },
    /// Deliver to every local connection but those of the excluded users.
    Broadcast {
        /// Users whose connections are skipped; absent means none.
        #[serde(default)]
        exclude_users: Vec<String>,
    },
    /// Not a delivery: the sending node (re)joined the mesh with this inbox
    /// (published on the mesh topic; `data` is `null`). A node that cached
    /// another inbox of it looks it up again.
    Joined {
        /// The sender's inbox queue URL now.
        inbox_url: String,
    },
}

/// One connection held by the receiving node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshConnection {
    /// The user (token `sub`) the connection belongs to.
    pub user_id: String,
    /// The node-assigned connection id (the `connectionId` of `pong`).
    pub connection_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_raw_data() {
        let env = MeshEnvelope {
            request_id: "r1".into(),
            from_node: "n1".into(),
            routed_at: Some(1_700_000_000_000),
            target: MeshTarget::Connections {
                connections: vec![MeshConnection {
                    user_id: "u".into(),
                    connection_id: "c".into(),
                }],
            },
            data: RawValue::from_string(r#"{"k": [1, 2]}"#.into()).unwrap(),
            history: None,
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(
            !text.contains("history"),
            "no field when nothing was recorded"
        );
        let back: MeshEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.data.get(), r#"{"k": [1, 2]}"#);
        assert!(matches!(back.target, MeshTarget::Connections { .. }));
        assert_eq!(back.routed_at, Some(1_700_000_000_000));
    }

    #[test]
    fn reads_envelopes_without_a_routing_time() {
        let text = r#"{"request_id":"r","from_node":"n","target":"broadcast","data":1}"#;
        let env: MeshEnvelope = serde_json::from_str(text).unwrap();
        assert_eq!(env.routed_at, None);
        assert!(!serde_json::to_string(&env).unwrap().contains("routed_at"));
    }

    /// The history field is pinned, and an envelope with it is still read
    /// by the fields older nodes know.
    #[test]
    fn history_positions_ride_along_and_are_optional() {
        let text = r#"{"request_id":"r","from_node":"n1","target":"broadcast","exclude_users":[],"data":1,"history":{"broadcast":[7,42,1700000000000]}}"#;
        let env: MeshEnvelope = serde_json::from_str(text).unwrap();
        let h = env.history.clone().unwrap();
        assert_eq!(
            MeshHistory::unpack(h.broadcast.unwrap()),
            Position {
                epoch: 7,
                seq: 42,
                at_ms: 1_700_000_000_000
            }
        );
        assert_eq!(serde_json::to_string(&env).unwrap(), text);
        let users = MeshHistory {
            broadcast: None,
            users: BTreeMap::from([("u".to_string(), [1, 2, 3])]),
        };
        assert_eq!(
            serde_json::to_string(&users).unwrap(),
            r#"{"users":{"u":[1,2,3]}}"#
        );
    }

    #[test]
    fn a_join_notice_is_one_flat_object() {
        let env = MeshEnvelope {
            request_id: "join#n2#1".into(),
            from_node: "n2".into(),
            routed_at: None,
            target: MeshTarget::Joined {
                inbox_url: "https://sqs/q-r1".into(),
            },
            data: RawValue::from_string("null".into()).unwrap(),
            history: None,
        };
        assert_eq!(
            serde_json::to_string(&env).unwrap(),
            r#"{"request_id":"join#n2#1","from_node":"n2","target":"joined","inbox_url":"https://sqs/q-r1","data":null}"#
        );
    }
}
