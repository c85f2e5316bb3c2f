//! Limits (issue 12, items 9 and 12): how deep a client frame may nest,
//! error frames that name the request they answer, sockets per user, per
//! client address and per node, the connect rate per address, and the
//! client address a PROXY protocol v2 header names.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use sumu_testkit::proxy::{v2_header, v2_local};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// A `send` frame whose message nests `levels` arrays (the frame's own
/// object is one more level).
fn nested_send(id: &str, levels: usize) -> String {
    format!(
        r#"{{"action":"send","id":"{id}","message":{}1{}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("a JSON frame")
}

#[tokio::test]
async fn a_deeply_nested_frame_is_refused_with_its_id() {
    // 30,000 levels fit one 64 KiB frame; SUMU's Python backends fail past ~1,000.
    let node = InProcessNode::dev(&["--max-frame-bytes", "65536"]);
    let mut ws = node.connect("deep").await;
    send_text(&mut ws, &nested_send("d1", 30_000)).await;
    let answer = json(&next_text(&mut ws, WAIT).await.expect("an answer"));
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["statusCode"], 400, "{answer}");
    assert_eq!(answer["id"], "d1", "{answer}");
    assert_eq!(answer["message"], "JSON nested deeper than 64 levels");
    // The socket stays usable, and the default limit lets 64 levels through.
    send_text(&mut ws, &nested_send("d2", 63)).await;
    let answer = json(&next_text(&mut ws, WAIT).await.expect("an answer"));
    assert_eq!(answer["type"], "ack", "{answer}");
    assert_eq!(answer["id"], "d2");
}

#[tokio::test]
async fn max_json_depth_is_configurable() {
    let node = InProcessNode::dev(&["--max-json-depth", "4"]);
    let mut ws = node.connect("shallow").await;
    send_text(&mut ws, &nested_send("ok", 3)).await;
    let answer = json(&next_text(&mut ws, WAIT).await.expect("an answer"));
    assert_eq!(answer["type"], "ack", "{answer}");
    send_text(&mut ws, &nested_send("deep", 4)).await;
    let answer = json(&next_text(&mut ws, WAIT).await.expect("an answer"));
    assert_eq!(answer["statusCode"], 400, "{answer}");
    assert_eq!(answer["id"], "deep", "{answer}");
}

#[tokio::test]
async fn refused_frames_echo_the_client_id() {
    // One token in the bucket, refilled every 1,000 s: the second frame is over.
    let node = InProcessNode::dev(&["--rate-limit-burst", "1", "--rate-limit-per-sec", "0.001"]);
    let mut ws = node.connect("eager").await;
    send_text(&mut ws, r#"{"action":"dance","id":"a"}"#).await;
    let answer = json(&next_text(&mut ws, WAIT).await.expect("an answer"));
    assert_eq!(answer["statusCode"], 400, "{answer}");
    assert_eq!(answer["id"], "a", "a 400 names its request: {answer}");
    send_text(&mut ws, r#"{"action":"send","message":1,"id":42}"#).await;
    let answer = json(&next_text(&mut ws, WAIT).await.expect("an answer"));
    assert_eq!(answer["statusCode"], 429, "{answer}");
    assert_eq!(answer["id"], 42, "a 429 names its request: {answer}");
}

/// The reason of a refused upgrade for `sub` (its status and `reason`).
async fn refusal(node: &NodeClient, sub: &str) -> (u16, String) {
    let token = node.dev_token(sub).await;
    let (status, body) = refused(&node.ws_url(&token)).await;
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| b["reason"].as_str().map(str::to_string))
        .unwrap_or(body);
    (status, reason)
}

async fn readyz(node: &NodeClient) -> u16 {
    reqwest::get(node.url("/readyz"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn one_user_holds_at_most_max_sockets_per_user() {
    let node = InProcessNode::dev(&["--max-sockets-per-user", "2"]);
    let a = node.connect("greedy").await;
    let _b = node.connect("greedy").await;
    assert_eq!(
        refusal(&node, "greedy").await,
        (429, "too_many_sockets_for_user".to_string())
    );
    assert!(node
        .metrics()
        .await
        .contains(r#"sumu_upgrades_limited_total{reason="too_many_sockets_for_user"} 1"#));
    // Other users are not affected; a closed socket frees its place.
    let _other = node.connect("modest").await;
    drop(a);
    eventually("a closed socket gives its place back", WAIT, || async {
        refusal(&node, "greedy").await.0 == 101
    })
    .await;
}

#[tokio::test]
async fn a_full_node_answers_503_and_is_not_ready() {
    let node = InProcessNode::dev(&["--max-sockets", "2"]);
    assert_eq!(readyz(&node).await, 200);
    let a = node.connect("u1").await;
    let _b = node.connect("u2").await;
    assert_eq!(refusal(&node, "u3").await, (503, "node_full".to_string()));
    assert_eq!(readyz(&node).await, 503, "a full node tells the balancer");
    drop(a);
    eventually("ready again once a socket went", WAIT, || async {
        readyz(&node).await == 200
    })
    .await;
    let _c = node.connect("u3").await;
}

#[tokio::test]
async fn one_address_holds_at_most_max_sockets_per_address() {
    // Loopback is exempt by default; an empty list limits it like any address.
    let node = InProcessNode::dev(&[
        "--address-limits-exempt",
        "",
        "--max-sockets-per-address",
        "2",
    ]);
    let _a = node.connect("a1").await;
    let _b = node.connect("a2").await;
    assert_eq!(
        refusal(&node, "a3").await,
        (429, "too_many_sockets_for_address".to_string())
    );
}

#[tokio::test]
async fn connects_per_address_are_rate_limited_loopback_exempt_by_default() {
    let limited = [
        "--max-connects-per-address-burst",
        "3",
        "--max-connects-per-address-per-sec",
        "0.01",
    ];
    let node = InProcessNode::dev(&[&limited[..], &["--address-limits-exempt", ""]].concat());
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(node.connect(&format!("r{i}")).await);
    }
    assert_eq!(
        refusal(&node, "r3").await,
        (429, "connect_rate_exceeded".to_string())
    );
    // Closing sockets gives no connect back: the bucket refills with time.
    held.clear();
    assert_eq!(refusal(&node, "r4").await.0, 429);
    // The default exempts loopback (the load tester and a same-host proxy).
    let node = InProcessNode::dev(&limited);
    for i in 0..10 {
        held.push(node.connect(&format!("l{i}")).await);
    }
}

/// Writes `bytes` on `s`; the status of the answer, or None if the node
/// closed without one.
pub(crate) async fn status_of(s: &mut TcpStream, bytes: &[u8]) -> Option<u16> {
    s.write_all(bytes).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(8), s.read(&mut b)).await {
            Ok(Ok(1)) => head.push(b[0]),
            Ok(_) => break,
            Err(_) => panic!("no answer and no close within 8 s"),
        }
    }
    std::str::from_utf8(&head)
        .ok()
        .and_then(|h| h.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
}

/// An HS256 token for `sub` (the PROXY tests' nodes have no dev issuer
/// reachable without a header).
fn token(sub: &str) -> String {
    let claims = serde_json::json!({"sub": sub, "exp": now_secs() + 600});
    sign(jsonwebtoken::Algorithm::HS256, SECRET, None, claims)
}

const SECRET: &[u8] = b"limits-secret";

pub(crate) fn upgrade_request(host: SocketAddr, sub: &str) -> Vec<u8> {
    format!(
        "GET /push?authorization={} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        token(sub)
    )
    .into_bytes()
}

/// A node that takes PROXY v2 and limits every address to one socket.
pub(crate) fn proxied_node() -> InProcessNode {
    let secret = std::str::from_utf8(SECRET).unwrap();
    InProcessNode::start(
        &[
            "--hs256-secret",
            secret,
            "--proxy-protocol",
            "--address-limits-exempt",
            "",
            "--max-sockets-per-address",
            "1",
        ],
        "",
    )
}

#[tokio::test]
async fn proxy_v2_names_the_client_for_the_address_limits() {
    let node = proxied_node();
    let to = node.addr;
    let v6_to: SocketAddr = format!("[::1]:{}", to.port()).parse().unwrap();
    // Upgrades whose header names `client`, each on its own connection.
    let upgrade = |client: &str, sub: &str| {
        let header = v2_header(
            client.parse().unwrap(),
            if client.starts_with('[') { v6_to } else { to },
        );
        [header, upgrade_request(to, sub)].concat()
    };
    let mut held = Vec::new();
    for (client, sub, want) in [
        ("192.0.2.1:40000", "a", 101),
        // Same client address, another port: over its one socket.
        ("192.0.2.1:40001", "b", 429),
        ("192.0.2.2:40000", "c", 101),
        ("[2001:db8:1:2::1]:40000", "d", 101),
        // Same IPv6 /64.
        ("[2001:db8:1:2::ff]:40000", "e", 429),
    ] {
        let mut s = TcpStream::connect(to).await.unwrap();
        assert_eq!(
            status_of(&mut s, &upgrade(client, sub)).await,
            Some(want),
            "{client}"
        );
        held.push(s);
    }
    // The proxy's health check (LOCAL) is served as the TCP peer's.
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut s = TcpStream::connect(to).await.unwrap();
    let local = [v2_local(), get("/readyz").into_bytes()].concat();
    assert_eq!(status_of(&mut s, &local).await, Some(200));
    // No header, a v1 text header, a bad signature: closed without an answer.
    for bytes in [
        get("/readyz").into_bytes(),
        format!(
            "PROXY TCP4 192.0.2.1 127.0.0.1 1 {}\r\n{}",
            to.port(),
            get("/readyz")
        )
        .into_bytes(),
        [
            &b"\r\n\r\n\0\r\nQUIT\x0b"[..],
            &[0x21, 0x11, 0, 12],
            &[0; 12],
        ]
        .concat(),
    ] {
        let mut s = TcpStream::connect(to).await.unwrap();
        assert_eq!(status_of(&mut s, &bytes).await, None, "{bytes:?}");
    }
    // A connection that never sends its header is closed after 5 s.
    let mut s = TcpStream::connect(to).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(status_of(&mut s, b"").await, None);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
