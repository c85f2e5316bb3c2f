//! What a test can rely on from a node served in process
//! (`sumu_testkit::InProcessNode`): nodes in one process count apart, the
//! shutdown a test holds drains like SIGTERM, and a refused configuration
//! is an error, not a hang.

use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(5);

/// Metrics were one process-wide registry: a second node in the process
/// then showed the first one's sockets and closes.
#[tokio::test]
async fn nodes_in_one_process_count_apart() {
    let busy = InProcessNode::dev(&[]);
    let idle = InProcessNode::dev(&[]);
    let _a = busy.connect("a").await;
    let mut b = busy.connect("b").await;
    eventually("two sockets on the busy node", WAIT, || async {
        busy.metric("sumu_connections").await == 2.0
    })
    .await;
    b.close(None).await.expect("close");
    let closed = r#"sumu_connections_closed_total{reason="client"}"#;
    eventually("one close counted on the busy node", WAIT, || async {
        busy.metric(closed).await == 1.0
    })
    .await;
    assert_eq!(idle.metric("sumu_connections").await, 0.0);
    assert_eq!(idle.metric(closed).await, 0.0);
    assert_eq!(
        idle.metric("sumu_connections_opened_total").await,
        0.0,
        "{}",
        idle.metrics().await
    );
}

/// The shutdown `serve` is given is what SIGTERM resolves in the binary:
/// sockets close with the drain code and `serve` returns Ok.
#[tokio::test]
async fn shutdown_drains_sockets_with_1012_and_serve_returns_ok() {
    let node = InProcessNode::dev(&["--drain-secs", "1"]);
    let mut a = node.connect("a").await;
    let mut b = node.connect("b").await;
    let stopping = tokio::task::spawn_blocking(move || node.shutdown(Duration::from_secs(20)));
    assert_eq!(close_code(&mut a, WAIT).await, Some(1012));
    assert_eq!(close_code(&mut b, WAIT).await, Some(1012));
    let served = stopping.await.expect("shutdown thread");
    assert!(served.is_ok(), "{served:?}");
}

/// `sumu-node` refuses to serve without token keys; so does an in-process
/// node, at once. A TLS listener is refused too: it needs a process node.
#[test]
fn a_refused_configuration_is_an_error() {
    let tls = ["--dev", "--tls-listen", "127.0.0.1:0", "--dev-tls"];
    for (args, why) in [(&[][..], "no token keys"), (&tls[..], "process node")] {
        match InProcessNode::try_start(args, "") {
            Err(sumu_testkit::in_process::StartError::Config(message)) => {
                assert!(message.contains(why), "{args:?}: {message}")
            }
            Err(other) => panic!("{args:?}: expected a configuration error, got {other:?}"),
            Ok(node) => panic!("{args:?}: a node started on {}", node.addr()),
        }
    }
}
