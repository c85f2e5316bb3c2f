//! Hostile clients against a real `sumu-node` whose memory the test reads
//! (its RSS, from /proc: a node served in process would share the test's):
//! the attacks that once grew it without bound. The others are tested in
//! process (`fast::hostile`), whose raw-socket helpers these use.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::fast::hostile::{big_broadcast, header, raw_socket, read_close, sloth, MIB};
use sumu_testkit::node::rss_bytes;
use tokio::io::AsyncWriteExt;

/// Issue 12 item 1: a header declaring 2^40 bytes, then 64 MiB of payload.
/// Before the patch the node buffered all of it (RSS +64 MiB, no close).
#[tokio::test]
async fn huge_declared_frame_is_refused_on_its_header() {
    let node = Node::dev(&[]);
    let pid = node.child.id();
    // Warm up: one ordinary socket, so the baseline includes the code paths.
    let _warm = raw_socket(&node, "warm").await;
    let before = rss_bytes(pid);

    let socket = raw_socket(&node, "attacker").await;
    let (mut rd, mut wr) = socket.into_split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let code = read_close(&mut rd, Duration::from_secs(10)).await;
        (code, started.elapsed(), rd)
    });
    let mut sent = 0usize;
    if wr
        .write_all(&header(0x2, true, 1 << 40, [9, 9, 9, 9]))
        .await
        .is_ok()
    {
        let chunk = vec![0x5au8; 64 * 1024];
        while sent < 64 * MIB {
            match tokio::time::timeout(Duration::from_secs(2), wr.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                // Refused (reset) or no longer read (blocked): stop.
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    // Measured while the socket is still open: a buffered frame is freed
    // when the connection ends.
    let grown = rss_bytes(pid).saturating_sub(before);
    let (code, closed_after, _rd) = reader.await.unwrap();
    drop(wr);
    eprintln!(
        "close {code:?} after {closed_after:?}; sent {} KiB; RSS grew {} KiB",
        sent / 1024,
        grown / 1024
    );
    assert!(grown < 16 * MIB, "RSS grew {} KiB", grown / 1024);
    assert_eq!(
        code,
        Some(Some(1009)),
        "close code (Some(None): closed without one; None: no close)"
    );
    assert!(
        closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
}

/// Item 14: tiny messages queued for clients that do not read are charged
/// what they really cost (their slot in the socket's queue, 64 B, not only
/// their 3 frame bytes). Five non-readers, their writes blocked by 5 MB of
/// broadcasts (1 to 4 MB of it in kernel buffers, the rest counted against
/// their 8 MiB cap), are fed 180,000 tiny broadcasts: uncharged, each would
/// pin 180,000 x 64 B = 11.5 MB more while the cap counted 540 KB (never
/// tripped); charged, each trips its cap, memory stays within the caps, and
/// a reader gets everything. 180,000, not fewer: their 64 B alone pass the
/// cap, however much of the 5 MB the kernel took (its buffers grow with the
/// machine's timing; with too few the cut-off hung on the rest, and failed
/// now and then on a loaded machine), while their frame bytes plus all of
/// the 5 MB stay under it.
#[tokio::test]
async fn tiny_messages_to_non_readers_trip_the_cap_by_their_real_cost() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    const SLOTHS: usize = 5;
    const CAP: usize = 8 * MIB;
    let node = Node::dev(&["--outbound-buffer-bytes", &CAP.to_string()]);
    let pid = node.child.id();
    let mut sloths = Vec::new();
    for i in 0..SLOTHS {
        sloths.push(sloth(&node, &format!("sloth{i}")).await);
    }
    let big = 170;
    let tiny = 180_000;
    // The real cost alone passes the cap; the frame bytes never could.
    assert!(tiny * 64 > CAP && tiny * 3 + big * 30_000 < CAP);
    let mut reader = node.connect("reader").await;
    let counting = tokio::spawn(async move {
        let mut texts = 0;
        while texts < big + tiny {
            match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => texts += 1,
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        (texts, reader)
    });
    node.notify_many(&big_broadcast(), big, 4).await;
    let slow_reader = r#"sumu_connections_closed_total{reason="slow_reader"}"#;
    assert_eq!(
        node.metric(slow_reader).await,
        0.0,
        "cut off by the big ones"
    );
    let before = rss_bytes(pid);
    let mut peak = before;
    let t0 = Instant::now();
    for _ in 0..10 {
        node.notify_many(r#"{"data":1}"#, tiny / 10, 16).await;
        peak = peak.max(rss_bytes(pid));
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{tiny} tiny broadcasts in {:?}; RSS peak +{} KiB",
        t0.elapsed(),
        grown / 1024
    );
    let (texts, _reader) = counting.await.unwrap();
    assert_eq!(texts, big + tiny, "the reader lost messages");
    eventually(
        "every non-reader cut off",
        Duration::from_secs(5),
        || async { node.metric(slow_reader).await == SLOTHS as f64 },
    )
    .await;
    assert_eq!(node.users().await, ["reader"]);
    assert!(
        grown < SLOTHS * CAP + 16 * MIB,
        "RSS grew {} KiB",
        grown / 1024
    );
    drop(sloths);
}
