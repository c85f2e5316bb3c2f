//! `sumu-demo-backend` end to end against the AWS emulator: a real
//! `sumu-node` with the aws engine, the backend reading the messages queue
//! and its own queue subscribed to the messages topic, and real WebSocket
//! clients. Proves the SUMU contract from the backend's side: it sees only
//! SNS/SQS messages with SUMU's attributes and answers with notification
//! requests on the notifications queue.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Long enough for the presence leader's first lease and stream read.
const PRESENCE: Duration = Duration::from_secs(30);
const DELIVERY: Duration = Duration::from_secs(10);
/// How long a negative check waits for a frame that must not come.
const QUIET: Duration = Duration::from_millis(1500);

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        // SIGTERM first: it removes its subscription and queue.
        sumu_testkit::sys::signal(self.0.id(), libc::SIGTERM);
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bootstrap(env: &[(String, String)]) -> HashMap<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_sumu-node"))
        .arg("bootstrap")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SUMU_LOG", "warn")
        .output()
        .expect("run bootstrap");
    assert!(
        out.status.success(),
        "bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn start_backend(env: &[(String, String)], topic_arn: &str) -> Backend {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sumu-demo-backend"))
        .args(["--subscribe-topic", topic_arn, "--wait-secs", "2"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SUMU_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sumu-demo-backend");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let backend = Backend(child);
    loop {
        let line = lines
            .next()
            .expect("backend exited before it was ready")
            .expect("read stdout");
        if line.starts_with("sumu-demo-backend ready") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    backend
}

/// The next data frame that is not one of the node's own (pong/ack/error).
async fn next_data(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let text = next_text(ws, left).await?;
        let v: Value = serde_json::from_str(&text).ok()?;
        if v.get("statusCode").is_none() {
            return Some(v);
        }
    }
}

/// Skips data until one frame satisfies `pred`.
async fn wait_for(
    ws: &mut Ws,
    what: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_data(ws, left).await {
            Some(v) if pred(&v) => return v,
            Some(_) => continue,
            None => panic!("timed out waiting for {what}"),
        }
    }
}

fn chat(action: &str, text: &str, mode: &str, users: Option<&[&str]>) -> String {
    let mut message = json!({"text": text, "push_mode": mode});
    if let Some(u) = users {
        message["users"] = json!(u);
    }
    json!({"action": action, "message": {"type": "message", "message": message}}).to_string()
}

fn is_chat(v: &Value, from: &str, text: &str) -> bool {
    v["type"] == "message" && v["message"]["user_id"] == from && v["message"]["text"] == text
}

fn is_presence(v: &Value, user: &str, status: &str) -> bool {
    v["type"] == "presence" && v["message"]["user_id"] == user && v["message"]["status"] == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_backend_answers_through_sns_and_sqs() {
    let emulator = Emulator::start();
    let env = emulator.env("Demo");
    let vars = bootstrap(&env);
    let topic = vars
        .get("SUMU_MESSAGES_TOPIC_ARN")
        .expect("bootstrap prints SUMU_MESSAGES_TOPIC_ARN")
        .clone();
    let node_env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let node = Node::start_with_env(&["--dev", "--node-id", "demo-a"], "dev", &node_env);
    let _backend = start_backend(&env, &topic);

    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    // Presence from the leader's stream reader, re-broadcast by the backend
    // to everyone but its subject.
    wait_for(&mut alice, "bob ONLINE at alice", PRESENCE, |v| {
        is_presence(v, "bob", "ONLINE")
    })
    .await;

    // BROADCAST (publish: topic -> the backend's subscribed queue).
    send_text(&mut alice, &chat("publish", "hi all", "BROADCAST", None)).await;
    let got = wait_for(&mut bob, "alice's broadcast at bob", DELIVERY, |v| {
        is_chat(v, "alice", "hi all")
    })
    .await;
    let ts = got["message"]["timestamp"]
        .as_u64()
        .expect("a numeric timestamp");
    assert!(ts > 1_600_000_000_000, "timestamp in ms: {ts}");
    assert_eq!(got["message"].as_object().map(|m| m.len()), Some(3));

    // UNICAST (send: the messages queue): only the sender gets it.
    send_text(&mut bob, &chat("send", "echo me", "UNICAST", None)).await;
    wait_for(&mut bob, "bob's unicast echo", DELIVERY, |v| {
        is_chat(v, "bob", "echo me")
    })
    .await;

    // MULTICAST to bob only.
    send_text(
        &mut alice,
        &chat("publish", "for bob", "MULTICAST", Some(&["bob"])),
    )
    .await;
    wait_for(&mut bob, "alice's multicast at bob", DELIVERY, |v| {
        is_chat(v, "alice", "for bob")
    })
    .await;

    // Connected users, answered to the requester only.
    send_text(
        &mut bob,
        &json!({"action": "send", "message": {"type": "get_connected_users"}}).to_string(),
    )
    .await;
    let users = wait_for(&mut bob, "connected users", DELIVERY, |v| {
        v["type"] == "connected_users"
    })
    .await;
    assert_eq!(users["message"]["users"], json!(["alice", "bob"]));

    // Nothing of the above reached alice: not her own broadcast, not bob's
    // unicast, not the multicast for bob, not bob's user list.
    tokio::time::sleep(QUIET).await;
    while let Some(v) = next_data(&mut alice, Duration::from_millis(200)).await {
        assert!(
            !(v["type"] == "message" || v["type"] == "connected_users"),
            "alice got {v}"
        );
    }

    // A client cannot fake presence: a presence-shaped publish is ignored.
    send_text(
        &mut alice,
        &json!({"action": "publish", "message": {"type": "presence", "message": {"user_id": "ghost", "status": "ONLINE", "timestamp": 1}}})
            .to_string(),
    )
    .await;
    // OFFLINE when bob leaves reaches alice.
    drop(bob);
    let v = wait_for(&mut alice, "bob OFFLINE at alice", PRESENCE, |v| {
        assert_ne!(v["message"]["user_id"], "ghost", "a client faked presence");
        v["type"] == "presence" && v["message"]["status"] == "OFFLINE"
    })
    .await;
    assert!(is_presence(&v, "bob", "OFFLINE"), "unexpected {v}");
}
