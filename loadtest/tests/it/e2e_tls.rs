//! End to end over wss: the Node `ws` peer (loadtest/bench/peers/ws-node) in its TLS mode
//! with a test CA and an ECDSA P-256 certificate (the testkit's run-time PKI), and every scenario
//! of `sumu-loadtest` with `--tls --ca-file`. A client that trusts another CA, or asks for a
//! name the certificate does not hold, fails the handshake quickly with `connect_tls`
//! instead of hanging.
//!
//! Needs `node` and `npm` (the peer's `ws` package is installed with `npm ci` when missing).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use sumu_testkit::tls::{KeyAlg, Pki};

/// A CA, and a leaf for 127.0.0.1 only (so `localhost` is a wrong name) signed by it,
/// as files under `dir/name`.
fn make_pki(dir: &Path, name: &str) -> Pki {
    Pki::generate(&dir.join(name), &["127.0.0.1"], KeyAlg::EcdsaP256)
}

fn ws_node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peers/ws-node")
}

/// `npm ci` once when the peer's dependencies are missing (idempotent). One
/// test at a time: `npm ci` first deletes `node_modules`, so a second test
/// installing beside the first would pull `ws` from under the peer the first
/// one just started (seen: "Cannot find module 'ws'").
fn ensure_ws_node_installed() {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = ws_node_dir();
    if dir.join("node_modules/ws/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .expect("npm is needed to install the ws-node peer");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// The ws-node peer with its plain listener (readiness, POST /api/notify) and a TLS one.
fn ws_node_tls(pki: &Pki, name: &str) -> (Server, u16) {
    ensure_ws_node_installed();
    let tls_port = sumu_testkit::free_port();
    let server_js = ws_node_dir().join("server.js");
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let server = Server::start(
        Path::new("node"),
        &[
            server_js.to_str().unwrap(),
            "--listen",
            "127.0.0.1:{port}",
            "--api-key",
            "k",
            "--tls-listen",
            &tls_listen,
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ],
        name,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS port {tls_port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, tls_port)
}

#[test]
fn every_scenario_runs_over_wss() {
    let dir = scratch("tls-scenarios");
    let pki = make_pki(&dir, "good");
    let (server, tls_port) = ws_node_tls(&pki, "ws-node-tls");
    let wss = format!("https://127.0.0.1:{tls_port}");
    let ca = pki.ca.to_str().unwrap();
    let plain = server.url();

    let (code, report) = loadtest(
        &[
            "connect",
            "--url",
            &wss,
            "--ca-file",
            ca,
            "--hs256-secret",
            "s",
            "-n",
            "40",
            "--ramp",
            "200",
            "--hold",
            "1s",
            "--ping-interval",
            "300ms",
        ],
        &dir.join("connect.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert_eq!(counter(&report, "held_at_end"), 40);
    assert!(counter(&report, "pongs") >= 40, "pings answered over TLS");
    assert!(report["target"]
        .as_str()
        .unwrap()
        .starts_with("wss://127.0.0.1:"));

    // The HTTP calls (POST /api/notify) go to the plain listener beside the TLS one.
    let (code, report) = loadtest(
        &[
            "fanout",
            "--url",
            &wss,
            "--ca-file",
            ca,
            "--http-url",
            &plain,
            "--hs256-secret",
            "s",
            "-n",
            "20",
            "--users",
            "5",
            "--mode",
            "unicast",
            "--rate",
            "50",
            "--count",
            "10",
            "--api-key",
            "k",
        ],
        &dir.join("fanout.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    // 10 requests x 4 sockets per user.
    assert_eq!(counter(&report, "expected_deliveries"), 40);
    assert_eq!(counter(&report, "deliveries"), 40);

    let (code, report) = loadtest(
        &[
            "churn",
            "--url",
            &wss,
            "--ca-file",
            ca,
            "--http-url",
            &plain,
            "--hs256-secret",
            "s",
            "-n",
            "10",
            "--rate",
            "20",
            "--count",
            "20",
            "--churn-rate",
            "20",
            "--churn-life",
            "1s",
            "--api-key",
            "k",
        ],
        &dir.join("churn.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert!(counter(&report, "churn_sockets") > 5);
    assert_eq!(counter(&report, "lost"), 0);

    let (code, report) = loadtest(
        &[
            "publish",
            "--url",
            &wss,
            "--ca-file",
            ca,
            "--hs256-secret",
            "s",
            "-n",
            "10",
            "--rate",
            "20",
            "--duration",
            "1s",
        ],
        &dir.join("publish.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    let published = counter(&report, "published");
    assert!(published >= 150, "published {published}");
    assert_eq!(counter(&report, "acked"), published);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wrong_ca_or_wrong_name_is_a_tls_failure_not_a_hang() {
    let dir = scratch("tls-refused");
    let pki = make_pki(&dir, "server");
    let other = make_pki(&dir, "other");
    let (_server, tls_port) = ws_node_tls(&pki, "ws-node-tls-refused");

    let cases = [
        // A CA that did not sign the server's certificate.
        (
            format!("https://127.0.0.1:{tls_port}"),
            other.ca.clone(),
            "wrong-ca",
        ),
        // The right CA, but a name the certificate does not hold (it holds 127.0.0.1 only).
        (
            format!("https://localhost:{tls_port}"),
            pki.ca.clone(),
            "wrong-name",
        ),
    ];
    for (url, ca, label) in cases {
        let started = Instant::now();
        let (code, report) = loadtest(
            &[
                "connect",
                "--url",
                &url,
                "--ca-file",
                ca.to_str().unwrap(),
                "--hs256-secret",
                "s",
                "-n",
                "3",
                "--hold",
                "0s",
                "--connect-timeout",
                "20s",
            ],
            &dir.join(format!("{label}.json")),
        );
        assert_ne!(code, 0, "{label}: a refused handshake must fail the run");
        assert_eq!(
            report["errors"]["connect_tls"].as_u64(),
            Some(3),
            "{label}: {:#}",
            report["errors"]
        );
        assert_eq!(counter(&report, "established"), 0, "{label}");
        // Refused by the handshake itself, far inside the 20 s connect timeout.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{label}: took {:?}",
            started.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
