//! The wire contract's process-level edges on a real `sumu-node`: the drain
//! on SIGTERM and its exit code, SIGHUP, and a refused command line. The
//! rest of the contract is tested in process (`fast::gateway`).

use std::time::{Duration, Instant};

use crate::common::*;
use crate::fast::gateway::LONG;

#[tokio::test]
async fn sigterm_closes_sockets_with_1012_and_exits_zero() {
    let mut node = Node::dev(&["--drain-secs", "1"]);
    let mut a = node.connect("a").await;
    let mut b = node.connect("b").await;
    node.signal(libc::SIGTERM);
    // 1012 "service restart": clients reconnect (to another node).
    assert_eq!(close_code(&mut a, LONG).await, Some(1012));
    assert_eq!(close_code(&mut b, LONG).await, Some(1012));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "node did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn refuses_dev_on_a_public_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sumu-node"))
        .args(["--dev", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev-allow-remote"));
}

/// A SIGHUP (`systemctl reload`) to a node without TLS has nothing to reload and
/// must not end it (the signal's default action would): open sockets keep working.
#[tokio::test]
async fn sighup_without_tls_keeps_the_node() {
    let mut node = Node::dev(&[]);
    let mut ws = node.connect("hup").await;
    node.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        node.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the node"
    );
    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    let pong = next_text(&mut ws, LONG).await.unwrap();
    assert!(pong.contains("pong"), "{pong}");
}
