//! The recovery window on a real node (memory engine): plain sockets see
//! today's frames byte for byte; a `recover=1` socket gets envelopes with a
//! cursor, `recovered` / `recovery_failed`, and what it missed while it was
//! away, exactly once, in order, across the seam between replay and live.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use sumu_shared::recovery::Cursor;

const WAIT: Duration = Duration::from_secs(10);

/// A `recover=1` socket of `sub`, resuming from `since` when given.
async fn recovering(node: &Node, sub: &str, since: Option<&str>) -> Ws {
    let token = node.dev_token(sub).await;
    let mut url = format!("{}&recover=1", node.ws_url(&token));
    if let Some(c) = since {
        url.push_str(&format!("&since={c}"));
    }
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

async fn frame(ws: &mut Ws) -> Value {
    let text = next_text(ws, WAIT).await.expect("a frame");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Frames up to and including the `recovered` / `recovery_failed` one.
async fn until_outcome(ws: &mut Ws) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    loop {
        let f = frame(ws).await;
        match f["type"].as_str() {
            Some("recovered") | Some("recovery_failed") => return (before, f),
            _ => before.push(f),
        }
    }
}

fn cursor_of(f: &Value) -> String {
    f["cursor"].as_str().expect("cursor").to_string()
}

#[tokio::test]
async fn plain_sockets_see_todays_frames_and_recovering_ones_get_envelopes() {
    let node = Node::dev(&[]);
    let mut plain = node.connect("alice").await;
    let mut rec = recovering(&node, "alice", None).await;
    let (replayed, outcome) = until_outcome(&mut rec).await;
    assert!(replayed.is_empty());
    assert_eq!(outcome["type"], "recovered");
    assert_eq!(outcome["replayed"], 0);
    let cursor = cursor_of(&outcome);
    assert_eq!(cursor.len(), 72);
    let data = r#"{"type":"t", "message": {"k": [1, 2]}}"#;
    let (status, _) = node
        .notify(&format!(r#"{{"users":["alice"],"data":{data}}}"#))
        .await;
    assert_eq!(status, 202);
    // Byte for byte what the backend sent, as today.
    assert_eq!(next_text(&mut plain, WAIT).await.as_deref(), Some(data));
    let text = next_text(&mut rec, WAIT).await.expect("envelope");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "notification");
    assert_ne!(cursor_of(&v), cursor);
    assert_eq!(
        text,
        format!(
            r#"{{"type":"notification","cursor":"{}","data":{data}}}"#,
            cursor_of(&v)
        )
    );
    send_text(&mut plain, r#"{"action":"ping"}"#).await;
    let pong = next_text(&mut plain, WAIT).await.unwrap();
    assert!(pong.starts_with(r#"{"type":"pong","statusCode":200,"connectionId":""#));
}

#[tokio::test]
async fn a_resume_replays_exactly_what_targeted_the_user_then_live() {
    let node = Node::dev(&[]);
    let mut ws = recovering(&node, "alice", None).await;
    let (_, outcome) = until_outcome(&mut ws).await;
    let cursor = cursor_of(&outcome);
    drop(ws);
    let sent = [
        r#"{"users":["alice"],"data":"u1"}"#,
        r#"{"users":["bob","alice"],"data":"m2"}"#,
        r#"{"users":["bob"],"data":"not-for-alice"}"#,
        r#"{"data":"b3"}"#,
        r#"{"exclude_users":["alice"],"data":"excluded"}"#,
        r#"{"users":["alice"],"exclude_users":["alice"],"data":"excluded-too"}"#,
        r#"{"exclude_users":["bob"],"data":"b4"}"#,
        r#"{"users":["alice"],"data":"u5"}"#,
    ];
    for body in sent {
        assert_eq!(node.notify(body).await.0, 202);
    }
    let mut ws = recovering(&node, "alice", Some(&cursor)).await;
    let (replayed, outcome) = until_outcome(&mut ws).await;
    let data: Vec<&str> = replayed
        .iter()
        .map(|f| f["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["u1", "m2", "b3", "b4", "u5"]);
    assert_eq!(outcome["type"], "recovered");
    assert_eq!(outcome["replayed"], 5);
    // Resuming from the last cursor again replays nothing.
    // The last replayed frame and `recovered` name the same positions
    // (`recovered`'s time may be later: it is when the heads were read).
    let seqs = |f: &Value| {
        let c = Cursor::decode(&cursor_of(f)).unwrap();
        (c.user.epoch, c.user.seq, c.broadcast.epoch, c.broadcast.seq)
    };
    assert_eq!(seqs(replayed.last().unwrap()), seqs(&outcome));
    assert_eq!(node.notify(r#"{"data":"live"}"#).await.0, 202);
    let live = frame(&mut ws).await;
    assert_eq!(live["data"], "live");
    drop(ws);
    let mut again = recovering(&node, "alice", Some(&cursor_of(&live))).await;
    let (replayed, outcome) = until_outcome(&mut again).await;
    assert!(replayed.is_empty(), "{replayed:?}");
    assert_eq!(outcome["replayed"], 0);
}

#[tokio::test]
async fn bad_cursors_limits_and_recovery_off_fail_with_their_codes() {
    let node = Node::dev(&["--recovery-max-messages", "3"]);
    let code = |f: &Value| f["code"].as_str().unwrap_or("").to_string();
    let mut ws = recovering(&node, "alice", Some("garbage")).await;
    let (_, f) = until_outcome(&mut ws).await;
    assert_eq!(
        (f["type"].as_str(), code(&f).as_str()),
        (Some("recovery_failed"), "invalid_cursor")
    );
    // The failure still hands out a valid position: live deliveries follow.
    let fresh = cursor_of(&f);
    assert_eq!(node.notify(r#"{"users":["alice"],"data":1}"#).await.0, 202);
    assert_eq!(frame(&mut ws).await["data"], 1);
    drop(ws);
    // Another user's cursor is not alice's.
    let mut bob = recovering(&node, "bob", Some(&fresh)).await;
    assert_eq!(code(&until_outcome(&mut bob).await.1), "invalid_cursor");
    // More to replay than the limit.
    for i in 0..4 {
        node.notify(&format!(r#"{{"users":["alice"],"data":{i}}}"#))
            .await;
    }
    let mut ws = recovering(&node, "alice", Some(&fresh)).await;
    let (replayed, f) = until_outcome(&mut ws).await;
    assert!(replayed.is_empty(), "a partial replay: {replayed:?}");
    assert_eq!(code(&f), "too_far_behind");
    assert_eq!(
        node.metric("sumu_recoveries_total{code=\"too_far_behind\",outcome=\"failed\"}")
            .await,
        1.0
    );
    // A cursor of another node process (its streams are gone): expired.
    let other = Node::dev(&[]);
    let mut ws = recovering(&other, "alice", Some(&fresh)).await;
    assert_eq!(code(&until_outcome(&mut ws).await.1), "position_expired");
    // Recovery off: disabled, and envelopes still (the client opted in).
    let off = Node::dev(&["--recovery-window-secs", "0"]);
    let mut ws = recovering(&off, "alice", None).await;
    let (_, f) = until_outcome(&mut ws).await;
    assert_eq!(code(&f), "disabled");
    assert_eq!(off.notify(r#"{"data":"x"}"#).await.0, 202);
    let v = frame(&mut ws).await;
    assert_eq!(
        (v["type"].as_str(), v["data"].as_str()),
        (Some("notification"), Some("x"))
    );
}

/// The seam under load: requests keep coming while the client drops and
/// comes back again and again; at the end it has every one, once, in order.
#[tokio::test]
async fn the_seam_holds_under_a_steady_stream_with_repeated_reconnects() {
    let node = Node::dev(&[]);
    let total = 600;
    let mut ws = recovering(&node, "alice", None).await;
    let (_, f) = until_outcome(&mut ws).await;
    let mut cursor = cursor_of(&f);
    let sender = {
        let url = node.url("/api/notify");
        let key = node.api_key.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..total {
                // Alternate the user's stream and the broadcast stream.
                let body = if i % 2 == 0 {
                    format!(r#"{{"users":["alice"],"data":{i}}}"#)
                } else {
                    format!(r#"{{"data":{i}}}"#)
                };
                let r = client
                    .post(&url)
                    .header("authorization", format!("Bearer {key}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mut got: Vec<i64> = Vec::new();
    let mut reconnects = 0;
    while got.len() < total {
        // Read a few frames, then drop the socket mid-stream and resume.
        let take = 7 + reconnects % 13;
        for _ in 0..take {
            let Some(text) = next_text(&mut ws, WAIT).await else {
                break;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == "notification" {
                got.push(v["data"].as_i64().unwrap());
                cursor = cursor_of(&v);
            } else {
                assert_eq!(v["type"], "recovered", "{v}");
                cursor = cursor_of(&v);
            }
            if got.len() == total {
                break;
            }
        }
        if got.len() == total {
            break;
        }
        drop(ws);
        reconnects += 1;
        ws = recovering(&node, "alice", Some(&cursor)).await;
    }
    sender.await.unwrap();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "duplicates");
    assert_eq!(sorted, (0..total as i64).collect::<Vec<_>>(), "missing");
    // Per stream, in order.
    let evens: Vec<i64> = got.iter().copied().filter(|i| i % 2 == 0).collect();
    let odds: Vec<i64> = got.iter().copied().filter(|i| i % 2 == 1).collect();
    assert!(
        evens.windows(2).all(|w| w[0] < w[1]),
        "user stream out of order"
    );
    assert!(
        odds.windows(2).all(|w| w[0] < w[1]),
        "broadcast stream out of order"
    );
    assert!(reconnects >= 20, "only {reconnects} reconnects");
}
