//! Client `publish`/`send` through the aws engine against the emulator, at
//! AWS's limits: batches split by bytes as well as count (issue 17 item 4),
//! and what a stalled AWS may cost (issue 17 item 8: a socket's messages in
//! flight and the node's bytes in flight are bounded, the client is told at
//! once with an error frame carrying its `id`, memory stays bounded).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::aws::{backend_queue, Cluster};
use crate::common::*;

const LONG: Duration = Duration::from_secs(15);
const KIB: usize = 1024;

/// A `publish` or `send` frame of about `bytes` bytes with the given `id`.
fn big_frame(action: &str, id: &str, bytes: usize) -> String {
    format!(
        r#"{{"action":"{action}","id":"{id}","message":{{"pad":"{}"}}}}"#,
        "p".repeat(bytes)
    )
}

/// The answers (`ack` 200, error frames with their status) to the ids in
/// `want`, read from `ws` until each has one or `within` passed; an id
/// answered twice fails the test.
async fn answers(ws: &mut Ws, want: usize, within: Duration) -> HashMap<String, u16> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = HashMap::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(text) = next_text(ws, left).await else {
            break;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Some(id) = v["id"].as_str() else {
            panic!("a frame without an id: {text}");
        };
        let status = v["statusCode"].as_u64().unwrap() as u16;
        assert!(
            got.insert(id.to_string(), status).is_none(),
            "{id} answered twice"
        );
    }
    got
}

/// Messages with the `source` attribute `source` on `url` until `want`
/// arrived (or `within` passed): their bodies' sizes. Others (presence
/// events) are dropped.
async fn drain_queue(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    source: &str,
    want: usize,
    within: Duration,
) -> Vec<usize> {
    let deadline = tokio::time::Instant::now() + within;
    let mut sizes = Vec::new();
    while sizes.len() < want && tokio::time::Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let from = m
                .message_attributes()
                .and_then(|a| a.get("source"))
                .and_then(|v| v.string_value());
            if from == Some(source) {
                sizes.push(m.body().unwrap_or_default().len());
            }
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    sizes
}

/// How long a batch waits for companions in these tests: long enough that
/// everything sent while the first call hangs joins one batch (of ten, the
/// count limit), as under load.
const LINGER_MS: &str = "300";

/// Holds AWS (the emulator is SIGSTOPped) while `send` runs, after a first
/// message went out alone and hangs: so everything `send` writes waits for
/// a batch together. AWS answers again when it returns.
async fn with_a_call_in_flight<F: std::future::Future<Output = ()>>(
    cluster: &Cluster,
    first: &mut Ws,
    send: F,
) {
    cluster.emulator.signal(libc::SIGSTOP);
    send_text(first, r#"{"action":"send","id":"first","message":{}}"#).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    send.await;
    // The linger ends, the batches go out (and hang), then AWS is back.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.emulator.signal(libc::SIGCONT);
}

/// The issue's scenario: four clients publish 120 KiB at once beside 20
/// small publishes. Batches of ten reached 361-481 KiB, over SNS's 256 KiB
/// per `PublishBatch`, and whole batches (small messages included) were
/// refused by AWS. Every one must be acked and reach the backend. The
/// emulator does not check SNS's total (only each message's 256 KiB), so
/// this passes without the split too; the split is pinned against the
/// documented limit by `engine::aws::output`'s and `batcher`'s unit tests.
#[tokio::test]
async fn big_publishes_beside_small_ones_are_all_acked() {
    let cluster = Cluster::new("Out1", 5);
    let sdk = sdk(&cluster.emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let backend = backend_queue(&cluster, &sqs, &sns, "out1-backend").await;
    let node = cluster.node(&["--batch-linger-ms", LINGER_MS]);
    let mut first = node.connect("first").await;
    let mut bigs = Vec::new();
    for i in 0..4 {
        bigs.push(node.connect(&format!("big{i}")).await);
    }
    // Twenty small ones from two sockets (each within its 16 in flight).
    let mut smalls = [node.connect("small0").await, node.connect("small1").await];
    with_a_call_in_flight(&cluster, &mut first, async {
        for (i, ws) in bigs.iter_mut().enumerate() {
            let frame = big_frame("publish", &format!("b{i}"), 120 * KIB);
            send_fragmented(ws, &frame, 30 * KIB).await;
        }
        for j in 0..20 {
            send_text(
                &mut smalls[j % 2],
                &format!(r#"{{"action":"publish","id":"s{j}","message":{{"n":{j}}}}}"#),
            )
            .await;
        }
    })
    .await;
    let mut statuses = Vec::new();
    for ws in bigs.iter_mut() {
        statuses.extend(answers(ws, 1, LONG).await);
    }
    for ws in smalls.iter_mut() {
        statuses.extend(answers(ws, 10, LONG).await);
    }
    statuses.extend(answers(&mut first, 1, LONG).await);
    let refused: Vec<_> = statuses.iter().filter(|(_, s)| *s != 200).collect();
    assert_eq!(statuses.len(), 25, "answers: {statuses:?}");
    assert!(refused.is_empty(), "not acked: {refused:?}");
    let sizes = drain_queue(&sqs, &backend, "apigw.route.publish", 24, LONG).await;
    assert_eq!(sizes.len(), 24, "{sizes:?}");
    assert_eq!(sizes.iter().filter(|s| **s > 120 * KIB).count(), 4);
}

/// Twelve `send`s of 120 KiB at once: a batch of ten of them is 1.2 MiB,
/// over SQS's 1 MiB per `SendMessageBatch`, which the emulator refuses as a
/// whole (`BatchRequestTooLong`): ten error frames before the split.
#[tokio::test]
async fn twelve_big_sends_are_all_acked() {
    let cluster = Cluster::new("Out2", 5);
    let sdk = sdk(&cluster.emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let node = cluster.node(&["--batch-linger-ms", LINGER_MS]);
    let mut first = node.connect("first").await;
    let mut ws = node.connect("sender").await;
    with_a_call_in_flight(&cluster, &mut first, async {
        for i in 0..12 {
            let frame = big_frame("send", &format!("q{i}"), 120 * KIB);
            send_fragmented(&mut ws, &frame, 30 * KIB).await;
        }
    })
    .await;
    let statuses = answers(&mut ws, 12, LONG).await;
    assert_eq!(answers(&mut first, 1, LONG).await["first"], 200);
    assert_eq!(statuses.len(), 12, "{statuses:?}");
    assert!(
        statuses.values().all(|s| *s == 200),
        "not acked: {statuses:?}"
    );
    let queue = cluster.var("SUMU_MESSAGES_QUEUE_URL").to_string();
    let sizes = drain_queue(&sqs, &queue, "apigw.route.send", 13, LONG).await;
    assert_eq!(sizes.len(), 13, "{sizes:?}");
}

/// AWS stops answering (the emulator is SIGSTOPped) while ten clients each
/// push 90 messages of 100 KiB (90 MB in all). A socket may have 4 messages
/// waiting for AWS and the node 1 MiB: the rest are refused at once, 429
/// (the socket's bound) or 503 (the node's) with their `id`, and counted; the
/// node's memory stays bounded. Once AWS is back, every message has had
/// exactly one answer. Before the bounds, nothing was answered during the
/// stall and the node held every message (RSS grew by the 90 MB).
#[tokio::test]
async fn a_stalled_aws_gets_clear_refusals_and_bounded_memory() {
    const CLIENTS: usize = 10;
    const EACH: usize = 90;
    const PER_SOCKET: usize = 4;
    let cluster = Cluster::new("Out3", 5);
    let node = cluster.node(&[
        "--max-messages-in-flight",
        "4",
        "--max-output-bytes-in-flight",
        "1048576",
        "--max-frame-bytes",
        "65536",
        "--rate-limit-per-sec",
        "100000",
        "--rate-limit-burst",
        "100000",
    ]);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(node.connect(&format!("c{i}")).await);
    }
    // One message through, so lazy allocations are in the baseline.
    send_text(
        &mut clients[0],
        r#"{"action":"publish","id":"warm","message":{}}"#,
    )
    .await;
    assert_eq!(answers(&mut clients[0], 1, LONG).await["warm"], 200);
    let before = node.rss_bytes();

    cluster.emulator.signal(libc::SIGSTOP);
    let stalled = Instant::now();
    let rss_peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(before));
    let sampler = {
        let (peak, pid) = (rss_peak.clone(), node.child.id());
        tokio::spawn(async move {
            loop {
                let rss = sumu_testkit::node::rss_bytes(pid);
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let frame = |c: usize, m: usize| big_frame("publish", &format!("c{c}-{m}"), 100 * KIB);
    let mut during = Vec::new();
    for (c, ws) in clients.iter_mut().enumerate() {
        for m in 0..EACH {
            send_fragmented(ws, &frame(c, m), 60 * KIB).await;
        }
    }
    // During the stall: all but the socket's 4 are answered at once.
    for ws in clients.iter_mut() {
        during.push(answers(ws, EACH - PER_SOCKET, Duration::from_secs(10)).await);
    }
    let stall = stalled.elapsed();
    let peak = rss_peak.load(std::sync::atomic::Ordering::Relaxed);
    let (mut too_many, mut overloaded) = (0, 0);
    for got in &during {
        assert!(
            got.len() >= EACH - PER_SOCKET,
            "only {} of {} answered during the stall: {got:?}",
            got.len(),
            EACH - PER_SOCKET
        );
        too_many += got.values().filter(|s| **s == 429).count();
        overloaded += got.values().filter(|s| **s == 503).count();
    }
    println!(
        "stall of {stall:?}: {too_many} x 429, {overloaded} x 503; RSS {} -> peak {} KiB",
        before / KIB,
        peak / KIB
    );
    // Which bound refuses a message depends on the order the node handles
    // them in; every one of them is refused by one of the two.
    assert!(
        during
            .iter()
            .all(|got| got.values().all(|s| matches!(s, 429 | 503))),
        "{during:?}"
    );
    assert!(too_many >= 1, "no socket was held to its 4 in flight");
    assert!(overloaded >= 1, "the node's 1 MiB never refused anything");
    assert!(
        peak.saturating_sub(before) < 40 << 20,
        "RSS grew by {} KiB during the stall (90 MB offered)",
        peak.saturating_sub(before) / KIB
    );
    assert!(
        node.metric(r#"sumu_client_messages_refused_total{reason="too_many_in_flight"}"#)
            .await as usize
            >= too_many
    );
    assert!(
        node.metric(r#"sumu_client_messages_refused_total{reason="overloaded"}"#)
            .await as usize
            >= overloaded
    );

    // AWS is back: every message has exactly one answer, and the ones that
    // waited for AWS are acked (or 502 if their calls timed out meanwhile).
    cluster.emulator.signal(libc::SIGCONT);
    for (c, ws) in clients.iter_mut().enumerate() {
        let waiting = EACH - during[c].len();
        let rest = answers(ws, waiting, Duration::from_secs(40)).await;
        assert_eq!(rest.len(), waiting, "client {c}: {rest:?}");
        for (id, status) in &rest {
            assert!(!during[c].contains_key(id), "{id} answered twice");
            assert!(matches!(status, 200 | 502 | 503), "{id}: {status}");
        }
        let total = during[c].len() + rest.len();
        assert_eq!(total, EACH, "client {c}");
    }
    sampler.abort();
}
