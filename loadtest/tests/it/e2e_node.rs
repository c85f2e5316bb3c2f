//! End to end against the real `sumu-node` binary (built by `cargo build --release
//! --workspace` before the tests run): the load tester connects, holds and fans out,
//! and every expected delivery arrives with no error.

use crate::common::*;

#[test]
fn dev_tokens_connect_and_broadcast() {
    let server = Node::start(&["--dev"], "dev");
    let dir = scratch("node-dev");
    let url = server.url("");

    let (code, report) = loadtest(
        &[
            "connect",
            "--url",
            &url,
            "--dev",
            "-n",
            "50",
            "--ramp",
            "500",
            "--hold",
            "1s",
            "--ping-interval",
            "300ms",
            "--server-pid",
            &server.child.id().to_string(),
        ],
        &dir.join("connect.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert_eq!(counter(&report, "established"), 50);
    assert_eq!(counter(&report, "held_at_end"), 50);
    assert!(
        counter(&report, "pongs") >= 50,
        "every socket got a pong for its keepalive"
    );
    assert_eq!(report["latencies"]["connect"]["count"], 50);
    assert!(report["server"]["rss_after_kib"].as_u64().unwrap() > 0);

    let (code, report) = loadtest(
        &[
            "fanout",
            "--url",
            &url,
            "--dev",
            "-n",
            "50",
            "--users",
            "20",
            "--mode",
            "broadcast",
            "--rate",
            "20",
            "--count",
            "10",
            "--api-key",
            "dev",
        ],
        &dir.join("fanout.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert_eq!(counter(&report, "notifications_accepted"), 10);
    assert_eq!(counter(&report, "expected_deliveries"), 500);
    assert_eq!(counter(&report, "deliveries"), 500);
    assert_eq!(counter(&report, "lost"), 0);
    assert_eq!(report["latencies"]["delivery"]["count"], 500);
}

#[test]
fn minted_rs256_tokens_are_accepted_and_multicast_reaches_only_targets() {
    let public = fixture("rsa-public.pem");
    let server = Node::start(
        &[
            "--jwks-file",
            &public,
            "--jwt-audiences",
            "sumu-e2e",
            "--api-key",
            "e2e-key",
        ],
        "e2e-key",
    );
    let dir = scratch("node-rs256");
    let private = fixture("rsa-private.pem");
    let (code, report) = loadtest(
        &[
            "fanout",
            "--url",
            &server.url(""),
            "--private-key",
            &private,
            "--aud",
            "sumu-e2e",
            "--kid",
            "e2e",
            "-n",
            "40",
            "--users",
            "10",
            "--mode",
            "multicast",
            "-k",
            "3",
            "--rate",
            "20",
            "--count",
            "10",
            "--api-key",
            "e2e-key",
            "--token-in",
            "header",
        ],
        &dir.join("multicast.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert_eq!(counter(&report, "established"), 40);
    // 10 requests x 3 users x 4 sockets per user.
    assert_eq!(counter(&report, "expected_deliveries"), 120);
    assert_eq!(counter(&report, "deliveries"), 120);
    assert_eq!(counter(&report, "misdelivered"), 0);

    // A token for another audience is refused: every connect fails with HTTP 401.
    let (code, report) = loadtest(
        &[
            "connect",
            "--url",
            &server.url(""),
            "--private-key",
            &private,
            "--aud",
            "elsewhere",
            "-n",
            "5",
            "--hold",
            "0s",
        ],
        &dir.join("refused.json"),
    );
    assert_eq!(code, 1);
    assert_eq!(counter(&report, "established"), 0);
    assert_eq!(report["errors"]["connect_http_401"], 5);
    assert_eq!(report["machine"]["limited_by_machine"], false);
}
