//! End to end against the bundled reference peer `sumu-peer-min`: HS256 minted tokens,
//! unicast, churn and publish with acks.

use std::path::Path;

use crate::common::*;

fn peer() -> Server {
    Server::start(
        Path::new(env!("CARGO_BIN_EXE_sumu-peer-min")),
        &["--listen", "127.0.0.1:{port}", "--api-key", "k"],
        "peer-min",
    )
}

#[test]
fn unicast_churn_and_publish() {
    let server = peer();
    let dir = scratch("peer-min");
    let url = server.url();

    let (code, report) = loadtest(
        &[
            "fanout",
            "--url",
            &url,
            "--hs256-secret",
            "s",
            "-n",
            "30",
            "--users",
            "10",
            "--mode",
            "unicast",
            "--rate",
            "50",
            "--count",
            "20",
            "--api-key",
            "k",
            "--source-ips",
            "4",
        ],
        &dir.join("unicast.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    // 20 requests x 3 sockets per user.
    assert_eq!(counter(&report, "expected_deliveries"), 60);
    assert_eq!(counter(&report, "deliveries"), 60);
    assert_eq!(report["machine"]["source_addrs"], 4);

    let (code, report) = loadtest(
        &[
            "churn",
            "--url",
            &url,
            "--hs256-secret",
            "s",
            "-n",
            "20",
            "--rate",
            "20",
            "--count",
            "30",
            "--churn-rate",
            "40",
            "--churn-life",
            "1s",
            "--api-key",
            "k",
        ],
        &dir.join("churn.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert!(counter(&report, "churn_sockets") > 10);
    // 20 stable sockets x 30 broadcasts, plus what the churning sockets live for a
    // whole request (1 s life minus 2 x 200 ms settle) had to receive.
    assert!(counter(&report, "expected_deliveries") > 600);
    assert_eq!(counter(&report, "lost"), 0);

    let (code, report) = loadtest(
        &[
            "publish",
            "--url",
            &url,
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
}

#[test]
fn wrong_api_key_is_counted_not_hidden() {
    let server = peer();
    let dir = scratch("peer-min-key");
    let (code, report) = loadtest(
        &[
            "fanout",
            "--url",
            &server.url(),
            "--hs256-secret",
            "s",
            "-n",
            "5",
            "--rate",
            "50",
            "--count",
            "3",
            "--api-key",
            "wrong",
            "--drain-timeout",
            "200ms",
        ],
        &dir.join("bad-key.json"),
    );
    assert_eq!(code, 1);
    assert_eq!(report["errors"]["notify_http_401"], 3);
    assert_eq!(counter(&report, "notifications_accepted"), 0);
}

#[test]
fn remote_target_is_refused_without_allow_remote() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sumu-loadtest"))
        .args([
            "connect",
            "--url",
            "http://192.0.2.1:80",
            "--hs256-secret",
            "s",
            "-n",
            "1",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
