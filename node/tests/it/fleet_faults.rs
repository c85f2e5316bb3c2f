//! Faults between nodes of the `aws` engine (issue 17), with real nodes, the
//! real emulator and real signals: a request routed twice (its first router
//! frozen past its visibility timeout) reaches each socket once.

use std::time::{Duration, Instant};

use crate::aws::Cluster;
use crate::common::*;

const LONG: Duration = Duration::from_secs(20);

/// `sumu_aws_calls_total` of one operation on a node.
async fn calls(node: &Node, service: &str, operation: &str) -> f64 {
    node.metric(&format!(
        "sumu_aws_calls_total{{operation=\"{operation}\",service=\"{service}\"}}"
    ))
    .await
}

/// Every text frame `ws` receives within `within`.
async fn frames_within(ws: &mut Ws, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match next_text(ws, left).await {
            Some(t) => got.push(t),
            None => break,
        }
    }
    got
}

/// Issue 17, item 6: node A takes a request off the queue and is frozen (SIGSTOP, a
/// VM pause) while it looks up the targets, past the request's visibility timeout;
/// node B takes the request again and routes it whole (A's share through A's inbox);
/// then A resumes and finishes its own routing (B's share through B's inbox). Each
/// socket gets the request once: the router's own delivery and the inbox's share of
/// another router are one record per node.
#[tokio::test]
async fn a_request_routed_by_two_nodes_reaches_each_socket_once() {
    let cluster = Cluster::new("Twice", 5);
    let fast = ["--notification-visibility-secs", "2"];
    let a = cluster.named("node-a", &fast);
    let b = cluster.named("node-b", &fast);
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    let sqs = aws_sdk_sqs::Client::new(&sdk(&cluster.emulator).await);

    // Only A may take the request: B frozen, and its long polls (10 s) answered.
    b.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Many targets (all but two offline): A's lookups take a while.
    let mut users: Vec<String> = (0..3000).map(|i| format!("\"ghost-{i}\"")).collect();
    users.push("\"alice\"".into());
    users.push("\"bob\"".into());
    let data = r#"{"twice":"?"}"#;
    let queries_before = calls(&a, "dynamodb", "Query").await;
    sqs.send_message()
        .queue_url(cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL"))
        .message_body(format!(
            r#"{{"users":[{}],"data":{data}}}"#,
            users.join(",")
        ))
        .send()
        .await
        .unwrap();
    eventually("node A is looking the targets up", LONG, || async {
        calls(&a, "dynamodb", "Query").await >= queries_before + 50.0
    })
    .await;
    a.signal(libc::SIGSTOP);
    b.signal(libc::SIGCONT);
    // B routes it whole once the visibility (2 s) ran out: bob gets it from B itself.
    assert_eq!(
        next_text(&mut bob, LONG).await.as_deref(),
        Some(data),
        "node B routed the request again"
    );
    a.signal(libc::SIGCONT);
    // A finishes its routing; B's share for alice waits in A's inbox.
    let alice_got = frames_within(&mut alice, Duration::from_secs(12)).await;
    let bob_more = frames_within(&mut bob, Duration::from_secs(2)).await;
    println!(
        "[routed_twice] alice got {} copies, bob {}",
        alice_got.len(),
        1 + bob_more.len()
    );
    assert_eq!(alice_got, vec![data.to_string()], "alice: once");
    assert!(
        bob_more.is_empty(),
        "bob: once, got {} more",
        bob_more.len()
    );
}
