//! The wire contract on a node served in process (memory engine): client
//! frames, the in-process bus, notification fan-out, limits.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub(crate) const SHORT: Duration = Duration::from_millis(300);

pub(crate) const LONG: Duration = Duration::from_secs(5);

#[tokio::test]
async fn ping_gets_the_exact_pong() {
    let node = InProcessNode::dev(&[]);
    let mut ws = node.connect("alice").await;
    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    let pong = next_text(&mut ws, LONG).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&pong).unwrap();
    assert_eq!(v["type"], "pong");
    assert_eq!(v["statusCode"], 200);
    let id = v["connectionId"].as_str().unwrap();
    assert!(id.len() >= 32, "connection id should be unguessable: {id}");
    assert_eq!(
        pong,
        format!(r#"{{"type":"pong","statusCode":200,"connectionId":"{id}"}}"#)
    );
    // Each socket gets its own id.
    let mut other = node.connect("alice").await;
    send_text(&mut other, r#"{"action":"ping"}"#).await;
    let pong2 = next_text(&mut other, LONG).await.unwrap();
    assert!(!pong2.contains(id));
}

/// Reads the SSE bus until `n` data events arrived.
async fn bus_events(resp: &mut reqwest::Response, n: usize) -> Vec<serde_json::Value> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(LONG, resp.chunk())
            .await
            .expect("bus event in time")
            .unwrap()
            .expect("stream open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.strip_prefix("data: ") {
                out.push(serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
    out
}

#[tokio::test]
async fn publish_and_send_reach_the_bus_with_trusted_attributes() {
    let node = InProcessNode::dev(&[]);
    let mut bus = reqwest::Client::new()
        .get(node.url("/api/events"))
        .header("authorization", "Bearer dev")
        .send()
        .await
        .unwrap();
    assert_eq!(bus.status(), 200);
    let before = now_secs() * 1000;
    let mut ws = node.connect("alice").await;
    send_text(
        &mut ws,
        r#"{"action":"publish","message":{"user_id":"mallory","text":"hi"},"id":"p1"}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut ws, LONG).await.unwrap(),
        r#"{"type":"ack","statusCode":200,"id":"p1"}"#
    );
    send_text(&mut ws, r#"{"action":"send","message":[1,2,3]}"#).await;
    let events = bus_events(&mut bus, 3).await;
    // ONLINE presence, then the publish, then the send.
    assert_eq!(events[0]["source"], "lambda.presence.watchdog");
    assert!(events[0]["message"].as_str().unwrap().contains("ONLINE"));
    let publish = &events[1];
    assert_eq!(publish["source"], "apigw.route.publish");
    assert_eq!(publish["destination"], "topic");
    assert_eq!(publish["user_id"], "alice");
    assert_eq!(publish["message"], r#"{"user_id":"mallory","text":"hi"}"#);
    let ts = publish["timestamp"].as_u64().unwrap();
    assert!(ts >= before && ts <= now_secs() * 1000 + 1000);
    let send = &events[2];
    assert_eq!(send["source"], "apigw.route.send");
    assert_eq!(send["destination"], "queue");
    assert_eq!(send["user_id"], "alice");
    assert_eq!(send["message"], "[1,2,3]");
    drop(ws);
    let offline = bus_events(&mut bus, 1).await;
    assert!(offline[0]["message"].as_str().unwrap().contains("OFFLINE"));
}

#[tokio::test]
async fn invalid_frames_get_error_frames_and_the_socket_stays_open() {
    let node = InProcessNode::dev(&[]);
    let mut ws = node.connect("alice").await;
    for bad in [
        "not json",
        r#"{"action":"dance"}"#,
        r#"{"action":"publish"}"#,
        r#"{"nothing":1}"#,
        "[]",
    ] {
        send_text(&mut ws, bad).await;
        let reply = next_text(&mut ws, LONG).await.unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["type"], "error", "{bad} -> {reply}");
        assert_eq!(v["statusCode"], 400, "{bad} -> {reply}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert!(next_text(&mut ws, LONG)
        .await
        .unwrap()
        .contains("\"error\""));
    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    assert!(next_text(&mut ws, LONG).await.unwrap().contains("pong"));
}

#[tokio::test]
async fn unicast_multicast_broadcast_and_exclusion_deliver_data_unchanged() {
    let node = InProcessNode::dev(&[]);
    let mut alice = [
        node.connect("alice").await,
        node.connect("alice").await,
        node.connect("alice").await,
    ];
    let mut bob = node.connect("bob").await;
    let mut carol = node.connect("carol").await;
    // Odd spacing and key order must survive byte-for-byte.
    let data = r#"{"type":"chat", "message":{"z":1,"a":[true,null,"é"]}}"#;

    // Unicast with a duplicated user id: 3 sockets, 3 copies, no extra.
    let (status, body) = node
        .notify(&format!(r#"{{"users":["alice","alice"],"data":{data}}}"#))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 3);
    for ws in alice.iter_mut() {
        assert_eq!(next_text(ws, LONG).await.unwrap(), data);
        assert_eq!(next_text(ws, SHORT).await, None, "duplicate copy");
    }
    assert_eq!(next_text(&mut bob, SHORT).await, None);

    // Multicast.
    let (_, body) = node
        .notify(&format!(
            r#"{{"users":["bob","carol","nobody"],"data":{data}}}"#
        ))
        .await;
    assert_eq!(body["deliveries"], 2);
    assert_eq!(next_text(&mut bob, LONG).await.unwrap(), data);
    assert_eq!(next_text(&mut carol, LONG).await.unwrap(), data);
    assert_eq!(next_text(&mut alice[0], SHORT).await, None);

    // Broadcast with exclusion.
    let (_, body) = node
        .notify(&format!(r#"{{"exclude_users":["alice"],"data":{data}}}"#))
        .await;
    assert_eq!(body["deliveries"], 2);
    assert_eq!(next_text(&mut bob, LONG).await.unwrap(), data);
    assert_eq!(next_text(&mut carol, LONG).await.unwrap(), data);
    for ws in alice.iter_mut() {
        assert_eq!(next_text(ws, SHORT).await, None);
    }

    // Plain broadcast reaches all five.
    let (_, body) = node.notify(r#"{"users":[],"data":"plain"}"#).await;
    assert_eq!(body["deliveries"], 5);
    for ws in alice.iter_mut().chain([&mut bob, &mut carol]) {
        assert_eq!(next_text(ws, LONG).await.unwrap(), "\"plain\"");
    }
}

#[tokio::test]
async fn api_refuses_bad_requests_and_keys_and_lists_users() {
    let node = InProcessNode::dev(&[]);
    let _ws = node.connect("zed").await;
    let (status, body) = node.notify("{not json").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("invalid JSON"));
    let (status, body) = node.notify(r#"{"users":["a"]}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "missing field 'data'");
    let r = reqwest::Client::new()
        .post(node.url("/api/notify"))
        .header("authorization", "Bearer wrong")
        .body(r#"{"data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(node.users().await, vec!["zed".to_string()]);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(reqwest::get(node.url(path)).await.unwrap().status(), 200);
    }
    let metrics = node.metrics().await;
    assert!(metrics.contains("sumu_connections 1"), "{metrics}");
}

#[tokio::test]
async fn oversized_frames_and_messages_close_with_1009() {
    let node = InProcessNode::dev(&["--max-frame-bytes", "1024", "--max-message-bytes", "4096"]);
    let mut ws = node.connect("alice").await;
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(2000));
    send_text(&mut ws, &big).await;
    assert_eq!(close_code(&mut ws, LONG).await, Some(1009));

    // Over the codec's hard limit too.
    let mut ws = node.connect("alice").await;
    let huge = "y".repeat(100_000);
    let _ = ws.send(Message::text(huge)).await;
    assert_eq!(close_code(&mut ws, LONG).await, Some(1009));

    // Fragments each under the frame limit whose sum passes the message limit.
    let mut ws = node.connect("alice").await;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame, FrameHeader,
    };
    let part = |op: OpCode, fin: bool| {
        let header = FrameHeader {
            is_final: fin,
            opcode: op,
            ..FrameHeader::default()
        };
        Message::Frame(Frame::from_payload(header, vec![b'a'; 1000].into()))
    };
    let _ = ws.send(part(OpCode::Data(Data::Text), false)).await;
    for _ in 0..5 {
        let _ = ws.send(part(OpCode::Data(Data::Continue), false)).await;
    }
    assert_eq!(close_code(&mut ws, LONG).await, Some(1009));
}

#[tokio::test]
async fn idle_timeout_and_max_duration_close_the_socket() {
    let node = InProcessNode::dev(&["--idle-timeout-secs", "1", "--max-connection-secs", "3"]);
    let mut idle = node.connect("idle").await;
    let t0 = Instant::now();
    assert_eq!(close_code(&mut idle, LONG).await, Some(1001));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );

    // A chatty client outlives the idle timeout but not the max duration.
    let mut chatty = node.connect("chatty").await;
    let t0 = Instant::now();
    let code = 'outer: loop {
        send_text(&mut chatty, r#"{"action":"ping"}"#).await;
        let tick = tokio::time::Instant::now() + Duration::from_millis(400);
        loop {
            match tokio::time::timeout_at(tick, chatty.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => break 'outer u16::from(f.code),
                Ok(Some(Ok(_))) => {}
                Err(_) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(6), "never closed");
    };
    assert_eq!(
        code, 4000,
        "max duration closes with --max-duration-close-code"
    );
    assert!(t0.elapsed() >= Duration::from_millis(2800));
}

#[tokio::test]
async fn rate_limit_errors_then_closes_with_1008() {
    let node = InProcessNode::dev(&[
        "--rate-limit-per-sec",
        "1",
        "--rate-limit-burst",
        "3",
        "--rate-limit-strikes",
        "3",
    ]);
    let mut ws = node.connect("spammer").await;
    for _ in 0..6 {
        send_text(&mut ws, r#"{"action":"ping"}"#).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(LONG, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) if t.contains("pong") => pongs += 1,
            Some(Ok(Message::Text(t))) if t.contains("\"statusCode\":429") => limited += 1,
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((pongs, limited, code), (3, 2, 1008));
}

#[tokio::test]
async fn a_reader_that_never_reads_is_cut_off_while_others_keep_receiving() {
    let node = InProcessNode::dev(&["--outbound-buffer-bytes", "262144"]);
    let token = node.dev_token("sloth").await;
    // A raw client that completes the handshake and then never reads.
    let sloth = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(node.addr).unwrap();
        // A tiny receive buffer so the kernel holds little for it.
        sumu_testkit::sys::set_recv_buffer(std::os::fd::AsRawFd::as_raw_fd(&s), 4096);
        write!(
            s,
            "GET /push?authorization={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        s
    };
    let mut reader = node.connect("reader").await;
    let payload = format!(r#""{}""#, "z".repeat(30_000));
    let body = format!(r#"{{"data":{payload}}}"#);
    let rounds = 600; // ~18 MB to each socket
    let mut received = 0;
    for i in 0..rounds {
        let (status, _) = node.notify(&body).await;
        assert_eq!(status, 202);
        // Keep up as a healthy client would.
        while let Ok(Some(Ok(m))) = tokio::time::timeout(
            Duration::from_millis(if i + 1 == rounds { 5000 } else { 1 }),
            reader.next(),
        )
        .await
        {
            if let Message::Text(t) = m {
                assert_eq!(t.len(), payload.len());
                received += 1;
                if received == rounds {
                    break;
                }
            }
        }
    }
    while received < rounds {
        match tokio::time::timeout(LONG, reader.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => received += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("reader lost messages at {received}: {other:?}"),
        }
    }
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("sumu_connections_closed_total{reason=\"slow_reader\"} 1"),
        "{metrics}"
    );
    assert_eq!(node.users().await, vec!["reader".to_string()]);
    drop(sloth);
}

#[tokio::test]
async fn origin_allow_list() {
    let node = InProcessNode::dev(&["--allowed-origins", "https://ok.example"]);
    let token = node.dev_token("o").await;
    for (origin, want) in [("https://ok.example", 101), ("https://evil.example", 403)] {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                node.ws_url(&token),
            )
            .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        let got = match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(got, want, "{origin}");
    }
}

#[tokio::test]
async fn large_upgrade_requests_and_frames_pass_the_small_read_buffer() {
    // The patched actix-http reads 1 KiB at a time (node/vendor/actix-http):
    // a 9 KB upgrade request and a 30 KB frame must still go through whole.
    let node = InProcessNode::start(&["--hs256-secret", "s", "--api-key", "k"], "k");
    let pad = "p".repeat(9000);
    let token = sign(
        jsonwebtoken::Algorithm::HS256,
        b"s",
        None,
        serde_json::json!({"sub": "big", "exp": now_secs() + 60, "pad": pad}),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url(&token))
        .await
        .expect("large upgrade request accepted");
    let frame = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(30_000));
    send_text(&mut ws, &frame).await;
    assert!(next_text(&mut ws, LONG).await.unwrap().contains("\"pong\""));
}

#[tokio::test]
async fn dev_tokens_signed_with_the_shared_secret_work_on_every_node() {
    let a = InProcessNode::dev(&["--hs256-secret", "fleet-secret"]);
    let b = InProcessNode::dev(&["--hs256-secret", "fleet-secret"]);
    let token = a.dev_token("alice").await;
    let (status, body) = refused(&b.ws_url(&token)).await;
    assert_eq!(
        status, 101,
        "a fleet node refused a fleet dev token: {body}"
    );
    // A node with its own per-process dev key does not accept it.
    let lone = InProcessNode::dev(&[]);
    let (status, body) = refused(&lone.ws_url(&token)).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("bad_signature"), "{body}");
}

#[tokio::test]
async fn dev_config_never_shows_an_operator_api_key() {
    let get = |node: &InProcessNode| {
        let url = node.url("/dev/config");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let builtin = InProcessNode::dev(&[]);
    assert_eq!(get(&builtin).await["api_key"], "dev");
    let operator = InProcessNode::start(
        &["--dev", "--api-key", "s3cret-operator-key"],
        "s3cret-operator-key",
    );
    let body = get(&operator).await;
    assert!(body["api_key"].is_null(), "{body}");
    assert!(!body.to_string().contains("s3cret"), "{body}");
}

#[tokio::test]
async fn the_server_closes_tcp_right_after_the_closing_handshake() {
    // RFC 6455 §7.1.1: after the Close handshake the server closes the TCP
    // connection first, at once (it used to linger about 1 s).
    let node = InProcessNode::dev(&[]);
    let mut ws = node.connect("closer").await;
    ws.send(Message::Close(None)).await.expect("send close");
    let t0 = Instant::now();
    let mut saw_close = false;
    loop {
        match tokio::time::timeout(LONG, ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) => saw_close = true,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => break,
            Err(_) => panic!("the connection stayed open"),
        }
    }
    let took = t0.elapsed();
    assert!(saw_close, "no close frame echoed");
    assert!(
        took < Duration::from_millis(300),
        "TCP closed {took:?} after the handshake"
    );
}
