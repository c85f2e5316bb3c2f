//! End to end through SQS: the real `sumu-node` with the `aws` engine on the ministack
//! emulator, notification requests sent by the load tester with `--via sqs` to the
//! notifications queue, every delivery checked.

use std::collections::HashMap;
use std::process::Command;

use crate::common::*;

#[test]
fn fanout_via_the_notifications_queue() {
    let node = workspace_binary("sumu-node");
    let emulator = Emulator::start();
    let env = emulator.env("lt-e2e");
    let out = Command::new(&node)
        .arg("bootstrap")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SUMU_LOG", "warn")
        .output()
        .expect("run sumu-node bootstrap");
    assert!(
        out.status.success(),
        "bootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let queue = vars
        .get("SUMU_NOTIFICATIONS_QUEUE_URL")
        .expect("bootstrap prints SUMU_NOTIFICATIONS_QUEUE_URL")
        .clone();
    let mut node_env = env.clone();
    node_env.extend(
        vars.iter()
            .filter(|(k, _)| !k.starts_with("SUMU_NOTIFICATIONS_TOPIC"))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let node_env: Vec<(&str, &str)> = node_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let server = Node::start_with_env(&["--dev", "--node-id", "lt-a"], "dev", &node_env);
    let dir = scratch("node-sqs");
    let aws_env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "test".to_string()),
    ];
    let (code, report) = loadtest_with_env(
        &[
            "fanout",
            "--url",
            &server.url(""),
            "--dev",
            "-n",
            "20",
            "--users",
            "10",
            "--mode",
            "multicast",
            "-k",
            "2",
            "--rate",
            "10",
            "--count",
            "6",
            "--via",
            "sqs",
            "--queue-url",
            &queue,
            "--aws-endpoint",
            &emulator.endpoint,
            "--aws-region",
            "us-east-1",
            "--drain-timeout",
            "20s",
        ],
        &aws_env,
        &dir.join("sqs.json"),
    );
    assert_no_errors(&report);
    assert_eq!(code, 0);
    assert_eq!(counter(&report, "notifications_accepted"), 6);
    // 6 requests x 2 users x 2 sockets per user.
    assert_eq!(counter(&report, "expected_deliveries"), 24);
    assert_eq!(counter(&report, "deliveries"), 24);
    assert_eq!(report["config"]["via"], "sqs");
}
