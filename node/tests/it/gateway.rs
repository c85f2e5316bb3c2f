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

/// Issue 17 item 2: `--dev` serves `/dev/token` (a token for any user) on
/// every listener, so a non-loopback TLS listener with real certificate
/// files is refused like a non-loopback `--listen`, unless forced.
#[tokio::test]
async fn refuses_dev_on_a_public_tls_listener_unless_forced() {
    use sumu_testkit::tls::{KeyAlg, Pki};
    let dir = sumu_testkit::scratch("dev-public-tls");
    let pki = Pki::generate(&dir, &["localhost"], KeyAlg::EcdsaP256);
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let public = [
        "--dev",
        "--tls-listen",
        "0.0.0.0:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    let exited = Node::run_to_exit(&public, LONG);
    assert_eq!(exited.code, Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("--dev-allow-remote") && exited.stderr.contains("0.0.0.0"),
        "{}",
        exited.stderr
    );
    // Forced, it serves the dev issuer on that listener.
    let mut forced = public.to_vec();
    forced.push("--dev-allow-remote");
    let node = Node::start(&forced, "dev");
    let tls = node.tls_addr.expect("TLS listener");
    assert!(tls.ip().is_unspecified(), "{tls}");
}

/// The node's stderr (`SUMU_LOG=info`) from start until its demo page line
/// (the last of its start), then the node is killed.
fn startup_log(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sumu-node"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("SUMU_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    // Read on a thread, so the deadline holds whatever the node does.
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            let last = line.contains("demo page");
            if tx.send(line).is_err() || last {
                break;
            }
        }
    });
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(15)) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("demo page") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

/// Issue 17 item 2: the startup log names the API key only when it is the
/// well-known `dev` one; a key given with `--api-key` is a secret.
#[test]
fn the_startup_log_never_prints_a_given_api_key() {
    let secret = "k-8f3a1c9e7b2d4f60";
    let log = startup_log(&["--dev", "--demo-backend=false", "--api-key", secret]);
    assert!(log.contains("demo page"), "{log}");
    assert!(!log.contains(secret), "the API key is in the log:\n{log}");
    let log = startup_log(&["--dev", "--demo-backend=false"]);
    assert!(log.contains("API key: dev"), "{log}");
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
