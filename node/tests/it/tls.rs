//! The TLS listener on a real node (`--tls-listen`, `--tls-cert`,
//! `--tls-key`): wss through a test CA beside the plain listener, refused
//! clients (wrong CA, wrong name) see a TLS error quickly, certificate
//! rotation (SIGHUP, file change) keeps open sockets while new handshakes get
//! the new leaf, a bad new pair is refused, a bad pair at start is exit 3;
//! connections that never finish their ClientHello neither starve real
//! handshakes nor hold more than their address's cap.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use sumu_testkit::node::scratch;
use sumu_testkit::tls::{connect_wss, KeyAlg, Pki, WssError};

const LONG: Duration = Duration::from_secs(5);

fn pki(dir: &Path, name: &str, alg: KeyAlg) -> Pki {
    Pki::generate(&dir.join(name), &["localhost", "127.0.0.1"], alg)
}

/// A `--dev` node serving `pki` on its TLS listener (demo backend off).
fn tls_node(pki: &Pki, extra: &[&str]) -> Node {
    let mut args = vec![
        "--dev",
        "--demo-backend=false",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Node::tls(&args, "dev")
}

/// A wss socket for `sub` trusting `ca`, and the leaf the node presented.
async fn wss(node: &Node, sub: &str, ca: &Path) -> Result<(Ws, Vec<u8>), WssError> {
    let token = node.dev_token(sub).await;
    let addr = node.tls_addr.expect("TLS listener");
    connect_wss(
        addr,
        "localhost",
        &format!("/push?authorization={token}"),
        ca,
        LONG,
    )
    .await
}

async fn assert_pongs(ws: &mut Ws) {
    send_text(ws, r#"{"action":"ping"}"#).await;
    let pong = next_text(ws, LONG).await.expect("pong");
    assert!(pong.contains(r#""type":"pong""#), "{pong}");
}

#[tokio::test]
async fn wss_through_a_test_ca_beside_the_plain_listener() {
    let dir = scratch("tls-basic");
    let pki = pki(&dir, "a", KeyAlg::EcdsaP256);
    let node = tls_node(&pki, &[]);
    assert_ne!(node.tls_addr, Some(node.addr));
    let (mut ws, leaf) = wss(&node, "alice", &pki.ca).await.expect("wss connect");
    assert_eq!(leaf, pki.leaf, "the node serves the configured leaf");
    assert_pongs(&mut ws).await;
    // A notification reaches the wss socket.
    let (status, _) = node
        .notify(r#"{"users":["alice"],"data":{"hello":"tls"}}"#)
        .await;
    assert_eq!(status, 202);
    let msg = next_text(&mut ws, LONG).await.expect("notification");
    assert!(msg.contains("tls"), "{msg}");
    // The plain listener keeps working beside it.
    let mut plain = node.connect("bob").await;
    assert_pongs(&mut plain).await;
    assert_pongs(&mut ws).await;
}

#[tokio::test]
async fn wrong_ca_and_wrong_name_get_a_tls_error_not_a_hang() {
    let dir = scratch("tls-refused");
    let pki = pki(&dir, "a", KeyAlg::EcdsaP256);
    let stranger = Pki::generate(&dir.join("other"), &["localhost"], KeyAlg::EcdsaP256);
    let node = tls_node(&pki, &[]);
    let addr = node.tls_addr.unwrap();
    let token = node.dev_token("alice").await;
    let path = format!("/push?authorization={token}");
    for (name, ca) in [("localhost", &stranger.ca), ("wrong.test", &pki.ca)] {
        let started = Instant::now();
        let result = connect_wss(addr, name, &path, ca, LONG).await;
        assert!(
            matches!(result, Err(WssError::Tls(_))),
            "{name}: expected a TLS error, got {:?}",
            result.map(|_| ())
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name}: slow refusal"
        );
    }
    // The node still serves good clients.
    let (mut ws, _) = wss(&node, "alice", &pki.ca).await.unwrap();
    assert_pongs(&mut ws).await;
}

#[tokio::test]
async fn rotation_keeps_open_sockets_and_refuses_a_bad_pair() {
    const SOCKETS: usize = 20;
    let dir = scratch("tls-rotate");
    let live = pki(&dir, "live", KeyAlg::EcdsaP256);
    let next = pki(&dir, "next", KeyAlg::Rsa2048);
    // No polling: only SIGHUP reloads.
    let mut node = tls_node(&live, &["--tls-watch-secs", "0"]);
    let mut open = Vec::new();
    for i in 0..SOCKETS {
        let (ws, leaf) = wss(&node, &format!("u{i}"), &live.ca).await.unwrap();
        assert_eq!(leaf, live.leaf);
        open.push(ws);
    }

    // New files, no signal yet: nothing changes.
    next.install_over(&live);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, leaf) = wss(&node, "probe", &live.ca).await.unwrap();
    assert_eq!(
        leaf, live.leaf,
        "no reload without SIGHUP when polling is off"
    );

    node.signal(libc::SIGHUP);
    eventually("new handshakes get the new leaf", LONG, || async {
        matches!(wss(&node, "probe", &next.ca).await, Ok((_, leaf)) if leaf == next.leaf)
    })
    .await;
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "SIGHUP killed the node"
    );
    for ws in &mut open {
        assert_pongs(ws).await;
    }
    assert!(
        matches!(wss(&node, "probe", &live.ca).await, Err(WssError::Tls(_))),
        "the old certificate is gone from new handshakes"
    );

    // A bad pair is refused: the current one stays in use.
    std::fs::write(
        &live.cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    node.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node.child.try_wait().unwrap().is_none());
    let (mut ws, leaf) = wss(&node, "after-bad", &next.ca).await.unwrap();
    assert_eq!(leaf, next.leaf);
    assert_pongs(&mut ws).await;
    for ws in &mut open {
        assert_pongs(ws).await;
    }
}

#[tokio::test]
async fn a_file_change_is_picked_up_without_a_signal() {
    let dir = scratch("tls-watch");
    let live = pki(&dir, "live", KeyAlg::EcdsaP256);
    let next = pki(&dir, "next", KeyAlg::EcdsaP256);
    let node = tls_node(&live, &["--tls-watch-secs", "1"]);
    let (mut old, _) = wss(&node, "old", &live.ca).await.unwrap();
    next.install_over(&live);
    eventually("the watcher loads the new files", LONG, || async {
        matches!(wss(&node, "probe", &next.ca).await, Ok((_, leaf)) if leaf == next.leaf)
    })
    .await;
    assert_pongs(&mut old).await;
}

#[test]
fn an_unusable_pair_at_start_is_one_line_and_exit_code_3() {
    let dir = scratch("tls-start");
    let good = pki(&dir, "good", KeyAlg::EcdsaP256);
    let other = pki(&dir, "other", KeyAlg::EcdsaP256);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.join("missing.pem");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases = [
        (s(&garbage), s(&good.key), s(&garbage)),
        (s(&missing), s(&good.key), s(&missing)),
        (s(&good.cert), s(&other.key), s(&other.key)),
    ];
    for (cert, key, named) in cases {
        let exited = Node::run_to_exit(
            &[
                "--dev",
                "--tls-listen",
                "127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
            LONG,
        );
        assert_eq!(exited.code, Some(3), "{cert} {key}: {}", exited.stderr);
        let lines: Vec<&str> = exited
            .stderr
            .lines()
            .filter(|l| l.contains("error"))
            .collect();
        assert_eq!(lines.len(), 1, "{}", exited.stderr);
        assert!(lines[0].contains(&named), "{}", exited.stderr);
    }
    // A listener without a certificate is a configuration error (exit 1).
    let exited = Node::run_to_exit(&["--dev", "--tls-listen", "127.0.0.1:0"], LONG);
    assert_eq!(exited.code, Some(1), "{}", exited.stderr);
    assert!(exited.stderr.contains("--tls-cert"), "{}", exited.stderr);
}

#[tokio::test]
async fn a_wss_reader_that_never_reads_is_aborted() {
    use futures_util::StreamExt;
    use std::os::fd::AsRawFd;
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::MaybeTlsStream;

    let dir = scratch("tls-sloth");
    let pki = pki(&dir, "a", KeyAlg::EcdsaP256);
    let node = tls_node(&pki, &["--outbound-buffer-bytes", "262144"]);
    // Completes the TLS and WebSocket handshakes, then never reads.
    let (mut sloth, _) = wss(&node, "sloth", &pki.ca).await.unwrap();
    if let MaybeTlsStream::Rustls(tls) = sloth.get_ref() {
        sumu_testkit::sys::set_recv_buffer(tls.get_ref().0.as_raw_fd(), 4096);
    }
    let body = format!(r#"{{"data":"{}"}}"#, "z".repeat(30_000));
    let mut cut = false;
    for i in 0..600 {
        let (status, _) = node.notify(&body).await;
        assert_eq!(status, 202);
        if i % 20 == 19 && node.metrics().await.contains(r#"reason="slow_reader"} 1"#) {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow reader was never cut off");
    // The outbound cap aborts the TCP connection under the TLS stream (it
    // needs that stream's descriptor): the client sees a reset, not the
    // queued data followed by an orderly close.
    // Bounded as a whole: without the abort the client reads the queued data
    // for minutes until the node drops it for a missing pong.
    let deadline = tokio::time::Instant::now() + LONG;
    let outcome = loop {
        match tokio::time::timeout_at(deadline, sloth.next()).await {
            Ok(Some(Ok(_))) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(
            &outcome,
            Ok(Some(Err(Error::Io(e)))) if e.kind() == std::io::ErrorKind::ConnectionReset
        ),
        "{outcome:?}"
    );
}

/// The first bytes of a ClientHello: a handshake record announcing 512
/// bytes, of which only these come (a client that stalls mid-hello).
const HALF_HELLO: [u8; 27] = [
    0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, // TLS 1.2 (legacy version)
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, // half the random
];

/// `n` connections to `addr` that send nothing (even ones) or half a
/// ClientHello (odd ones), each opened again as soon as the node closes it,
/// until `stop`. Answers how many are open now.
fn flood(
    addr: std::net::SocketAddr,
    n: usize,
    stop: tokio_util::sync::CancellationToken,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..n {
        let (open, stop) = (open.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if i % 2 == 1 {
                    let _ = tcp.write_all(&HALF_HELLO).await;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 256];
                // Until the node closes it (or the test ends).
                let _ = stop.run_until_cancelled(tcp.read(&mut buf)).await;
                open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
    open
}

/// Issue 17 item 11: 3,000 connections to the TLS listener that send
/// nothing or half a ClientHello, re-opened as soon as they are closed, must
/// not starve real handshakes. With actix-tls's acceptor they held every
/// handshake slot of every worker (256 each) from accept on: real
/// handshakes took 2.8 s with 1,000 such connections and timed out with
/// 3,000. Now a connection takes a slot only once its ClientHello is in.
/// (Loopback is exempt from the per-address cap, so this holds without it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_hello_connections_do_not_starve_real_handshakes() {
    const FLOOD: usize = 3000;
    const REAL: usize = 20;
    let dir = scratch("tls-flood");
    let pki = pki(&dir, "a", KeyAlg::EcdsaP256);
    let node = tls_node(&pki, &[]);
    let addr = node.tls_addr.unwrap();
    let token = node.dev_token("real").await;
    let path = format!("/push?authorization={token}");
    let stop = tokio_util::sync::CancellationToken::new();
    let open = flood(addr, FLOOD, stop.clone());
    eventually("the flood is open", Duration::from_secs(30), || async {
        open.load(std::sync::atomic::Ordering::Relaxed) >= FLOOD * 9 / 10
    })
    .await;
    // Measured once the flood churns: its first connections ran out of time
    // and were opened again.
    let hello_timeouts = r#"sumu_tls_refused_total{reason="client_hello_timeout"}"#;
    eventually(
        "the node closes silent connections",
        Duration::from_secs(15),
        || async { node.metric(hello_timeouts).await > 0.0 },
    )
    .await;
    let mut took = Vec::new();
    for _ in 0..REAL {
        let started = Instant::now();
        let result = connect_wss(addr, "localhost", &path, &pki.ca, Duration::from_secs(10)).await;
        let elapsed = started.elapsed();
        let (mut ws, _) = result.unwrap_or_else(|e| {
            panic!("a real handshake failed after {elapsed:?} under the flood: {e:?}")
        });
        assert_pongs(&mut ws).await;
        took.push(elapsed);
    }
    let still_open = open.load(std::sync::atomic::Ordering::Relaxed);
    stop.cancel();
    took.sort();
    let (median, max) = (took[REAL / 2], took[REAL - 1]);
    println!(
        "{REAL} real TLS handshakes (+ upgrade) beside {still_open} flood connections: \
         median {median:?}, max {max:?}"
    );
    // Bounds for a loaded 2-core machine; before the fix every one timed out.
    assert!(max < Duration::from_secs(2), "max {max:?}: {took:?}");
    assert!(
        median < Duration::from_secs(1),
        "median {median:?}: {took:?}"
    );
}

/// Issue 17 item 11: one address may hold at most
/// `--max-tls-handshakes-per-address` unfinished handshakes; the rest are
/// closed at accept, counted, and other addresses are not affected. The cap
/// frees as those connections go.
#[tokio::test]
async fn one_address_holds_at_most_its_cap_of_unfinished_handshakes() {
    use tokio::io::AsyncReadExt;
    const CAP: usize = 16;
    const TRIED: usize = 40;
    let dir = scratch("tls-cap");
    let pki = pki(&dir, "a", KeyAlg::EcdsaP256);
    let node = tls_node(
        &pki,
        &[
            "--address-limits-exempt",
            "",
            "--max-tls-handshakes-per-address",
            &CAP.to_string(),
        ],
    );
    let addr = node.tls_addr.unwrap();
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(addr)
    };
    let mut idle = Vec::new();
    for _ in 0..TRIED {
        idle.push(from("127.0.0.3").await.unwrap());
    }
    // Well within the ClientHello time (2 s): only the cap closes them.
    let started = Instant::now();
    let mut closed = 0;
    for tcp in &mut idle {
        let mut buf = [0u8; 16];
        let left = Duration::from_millis(1000).saturating_sub(started.elapsed());
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(left, tcp.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, TRIED - CAP, "closed at accept");
    assert_eq!(
        node.metric(r#"sumu_tls_refused_total{reason="too_many_from_address"}"#)
            .await as usize,
        TRIED - CAP
    );
    // Another address handshakes at once.
    let (mut ws, _) = wss(&node, "other", &pki.ca).await.expect("another address");
    assert_pongs(&mut ws).await;
    // Once the idle ones are gone, the address may connect again.
    drop(idle);
    eventually("the cap is given back", LONG, || async {
        let mut again = from("127.0.0.3").await.unwrap();
        let mut buf = [0u8; 16];
        // Still open (not closed at accept) after a while.
        tokio::time::timeout(Duration::from_millis(300), again.read(&mut buf))
            .await
            .is_err()
    })
    .await;
}
