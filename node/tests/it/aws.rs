//! The `aws` engine against a real AWS emulator (ministack) through the
//! real AWS SDK clients: connection rows, publish/send, notification input,
//! DLQ redrive, stale-row pruning.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

const LONG: Duration = Duration::from_secs(10);

/// An emulator with everything bootstrapped, and nodes started against it
/// (also used by the other aws-engine modules).
pub(crate) struct Cluster {
    pub(crate) emulator: Emulator,
    pub(crate) prefix: String,
    env: HashMap<String, String>,
}

impl Cluster {
    /// An emulator with everything bootstrapped under `prefix`.
    pub(crate) fn new(prefix: &str, max_receive: u32) -> Cluster {
        let emulator = Emulator::start();
        let env = emulator.env(prefix);
        let out = Command::new(env!("CARGO_BIN_EXE_sumu-node"))
            .args(["bootstrap", "--max-receive-count", &max_receive.to_string()])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SUMU_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Twice: idempotent.
        let again = Command::new(env!("CARGO_BIN_EXE_sumu-node"))
            .args(["bootstrap", "--max-receive-count", &max_receive.to_string()])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        assert!(
            again.status.success(),
            "second bootstrap: {}",
            String::from_utf8_lossy(&again.stderr)
        );
        let mut vars: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        vars.extend(env);
        Cluster {
            emulator,
            prefix: prefix.to_string(),
            env: vars,
        }
    }

    pub(crate) fn node(&self, extra: &[&str]) -> Node {
        self.named("node-a", extra)
    }

    /// The environment a node of this cluster runs with.
    pub(crate) fn node_env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .filter(|(k, _)| !k.starts_with("SUMU_NOTIFICATIONS_TOPIC"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub(crate) fn named(&self, node_id: &str, extra: &[&str]) -> Node {
        let mut args = vec!["--dev", "--node-id", node_id];
        args.extend_from_slice(extra);
        Node::start_with_env(&args, "dev", &self.node_env())
    }

    pub(crate) fn var(&self, k: &str) -> &str {
        &self.env[k]
    }

    /// `sumu-node cluster status ARGS` against this cluster: (exit ok, stdout).
    fn status(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_sumu-node"))
            .args(["cluster", "status"])
            .args(args)
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| !k.starts_with("SUMU_NOTIFICATIONS_TOPIC"))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .env("SUMU_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

pub(crate) async fn row_exists(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    user: &str,
    conn: &str,
) -> bool {
    ddb.get_item()
        .table_name(table)
        .key("user_id", AttributeValue::S(user.into()))
        .key("connection_id", AttributeValue::S(conn.into()))
        .send()
        .await
        .unwrap()
        .item
        .is_some()
}

pub(crate) async fn cluster_row(
    ddb: &aws_sdk_dynamodb::Client,
    cluster: &Cluster,
    pk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    ddb.get_item()
        .table_name(format!("{}Cluster", cluster.prefix))
        .key("pk", AttributeValue::S(pk.into()))
        .send()
        .await
        .unwrap()
        .item
}

/// The next client message in `url`: presence events share the messages topic
/// and queue, and whether a connect's ONLINE (from the leader's stream reader)
/// or the client's own publish reaches a backend's queue first is a race, so
/// they are skipped (left invisible until their visibility timeout).
async fn receive_one(sqs: &aws_sdk_sqs::Client, url: &str) -> aws_sdk_sqs::types::Message {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let client_message = out.messages.unwrap_or_default().into_iter().find(|m| {
            m.message_attributes()
                .and_then(|a| a.get("source"))
                .and_then(|s| s.string_value())
                != Some(sumu_shared::attributes::SOURCE_PRESENCE)
        });
        if let Some(m) = client_message {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived in {url}"
        );
    }
}

fn attr<'a>(m: &'a aws_sdk_sqs::types::Message, name: &str) -> (&'a str, &'a str) {
    let a = &m.message_attributes().unwrap()[name];
    (a.data_type(), a.string_value().unwrap())
}

#[tokio::test]
async fn rows_follow_sockets_and_publish_send_carry_sumu_attributes() {
    let cluster = Cluster::new("T1", 5);
    let sdk = sdk(&cluster.emulator).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let backend_url = backend_queue(&cluster, &sqs, &sns, "backend").await;

    let node = cluster.node(&[]);
    let mut ws = node.connect("alice").await;
    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    let pong: serde_json::Value =
        serde_json::from_str(&next_text(&mut ws, LONG).await.unwrap()).unwrap();
    let conn = pong["connectionId"].as_str().unwrap().to_string();
    let table = format!("{}Connections", cluster.prefix);
    let item = ddb
        .get_item()
        .table_name(&table)
        .key("user_id", AttributeValue::S("alice".into()))
        .key("connection_id", AttributeValue::S(conn.clone()))
        .send()
        .await
        .unwrap()
        .item
        .expect("row written before the socket opened");
    assert_eq!(item["node_id"], AttributeValue::S("node-a".into()));
    let delete_at: u64 = item["delete_at"]
        .as_n()
        .expect("numeric delete_at")
        .parse()
        .unwrap();
    assert!(
        delete_at > now_secs() + 7000,
        "delete_at = connected + max duration + grace"
    );
    assert!(item["connected_at"].as_n().is_ok());

    let before = now_secs() * 1000;
    send_text(
        &mut ws,
        r#"{"action":"publish","message":{"hello":"topic"},"id":"p1"}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut ws, LONG).await.unwrap(),
        r#"{"type":"ack","statusCode":200,"id":"p1"}"#
    );
    let m = receive_one(&sqs, &backend_url).await;
    assert_eq!(m.body().unwrap(), r#"{"hello":"topic"}"#);
    assert_eq!(attr(&m, "user_id"), ("String", "alice"));
    assert_eq!(attr(&m, "source"), ("String", "apigw.route.publish"));
    let (ty, ts) = attr(&m, "timestamp");
    assert_eq!(ty, "Number");
    let ts: u64 = ts.parse().unwrap();
    assert!(ts >= before && ts <= now_secs() * 1000 + 1000);

    send_text(
        &mut ws,
        r#"{"action":"send","message":["to","queue"],"id":7}"#,
    )
    .await;
    assert_eq!(
        next_text(&mut ws, LONG).await.unwrap(),
        r#"{"type":"ack","statusCode":200,"id":7}"#
    );
    let m = receive_one(&sqs, cluster.var("SUMU_MESSAGES_QUEUE_URL")).await;
    assert_eq!(m.body().unwrap(), r#"["to","queue"]"#);
    assert_eq!(attr(&m, "user_id"), ("String", "alice"));
    assert_eq!(attr(&m, "source"), ("String", "apigw.route.send"));
    assert_eq!(attr(&m, "timestamp").0, "Number");

    drop(ws);
    eventually("row removed on close", LONG, || async {
        !row_exists(&ddb, &table, "alice", &conn).await
    })
    .await;
}

#[tokio::test]
async fn notification_requests_from_queue_and_topic_reach_their_sockets() {
    let cluster = Cluster::new("T2", 5);
    let sdk = sdk(&cluster.emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let node = cluster.node(&[]);
    let mut alice1 = node.connect("alice").await;
    let mut alice2 = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    let data = r#"{"type":"n", "message":{"k":[1, 2]}}"#;
    sqs.send_message()
        .queue_url(cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL"))
        .message_body(format!(r#"{{"users":["alice","alice"],"data":{data}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice1, LONG).await.unwrap(), data);
    assert_eq!(next_text(&mut alice2, LONG).await.unwrap(), data);
    assert_eq!(next_text(&mut bob, Duration::from_millis(300)).await, None);

    sns.publish()
        .topic_arn(cluster.var("SUMU_NOTIFICATIONS_TOPIC_ARN"))
        .message(format!(r#"{{"exclude_users":["alice"],"data":{data}}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(next_text(&mut bob, LONG).await.unwrap(), data);
    assert_eq!(
        next_text(&mut alice1, Duration::from_millis(300)).await,
        None
    );

    // Routed requests were deleted from the queue: by the node's deleter,
    // within its linger (1 s at the default 5 s visibility) and a call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let counts = loop {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL"))
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = attrs.attributes().unwrap();
        let counts = (
            a[&QueueAttributeName::ApproximateNumberOfMessages].clone(),
            a[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible].clone(),
        );
        if counts == ("0".into(), "0".into()) || tokio::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        counts,
        ("0".to_string(), "0".to_string()),
        "(visible, in flight) after the linger"
    );
}

#[tokio::test]
async fn a_malformed_request_ends_in_the_dlq_without_blocking_its_batch() {
    let cluster = Cluster::new("T3", 2);
    let sdk = sdk(&cluster.emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    // Both in one batch before the node polls.
    let q = cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL").to_string();
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry as E;
    sqs.send_message_batch()
        .queue_url(&q)
        .entries(
            E::builder()
                .id("bad")
                .message_body("{this is not json")
                .build()
                .unwrap(),
        )
        .entries(
            E::builder()
                .id("nodata")
                .message_body(r#"{"users":["carol"]}"#)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let node = cluster.node(&[]);
    let mut carol = node.connect("carol").await;
    sqs.send_message()
        .queue_url(&q)
        .message_body(r#"{"users":["carol"],"data":"after"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(next_text(&mut carol, LONG).await.unwrap(), "\"after\"");
    let dlq = sqs
        .get_queue_url()
        .queue_name(format!("{}NotificationsDLQ", cluster.prefix))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while bodies.len() < 2 {
        let out = sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            bodies.push(m.body().unwrap_or_default().to_string());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "DLQ has only {bodies:?}"
        );
    }
    bodies.sort();
    assert_eq!(bodies, vec!["{\"users\":[\"carol\"]}", "{this is not json"]);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("sumu_notifications_total{outcome=\"invalid\",source=\"sqs\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("sumu_aws_calls_total{operation=\"ReceiveMessage\",service=\"sqs\"}"));
    assert!(metrics.contains("sumu_aws_call_seconds_bucket{operation=\"BatchWriteItem\""));
}

#[tokio::test]
async fn rows_of_sockets_nobody_holds_are_pruned() {
    let cluster = Cluster::new("T4", 5);
    let sdk = sdk(&cluster.emulator).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("{}Connections", cluster.prefix);
    let put = |conn: &str, at: u64| {
        ddb.put_item()
            .table_name(&table)
            .item("user_id", AttributeValue::S("ghost".into()))
            .item("connection_id", AttributeValue::S(conn.into()))
            .item("node_id", AttributeValue::S("node-a".into()))
            .item("connected_at", AttributeValue::N(at.to_string()))
            .item(
                "delete_at",
                AttributeValue::N((now_secs() + 9000).to_string()),
            )
            .send()
    };
    // One row a notification will find stale, one old row the sweeper finds.
    put("stale-1", now_secs() * 1000).await.unwrap();
    put("orphan-1", (now_secs() - 3600) * 1000).await.unwrap();
    let node = cluster.node(&[]);
    let (status, _) = node.notify(r#"{"users":["ghost"],"data":1}"#).await;
    assert_eq!(status, 202);
    eventually("stale rows pruned", LONG, || async {
        ddb.query()
            .table_name(&table)
            .key_condition_expression("user_id = :u")
            .expression_attribute_values(":u", AttributeValue::S("ghost".into()))
            .send()
            .await
            .unwrap()
            .count()
            == 0
    })
    .await;
}

#[tokio::test]
async fn a_connect_that_cannot_be_registered_is_refused() {
    let cluster = Cluster::new("T5", 5);
    let node = cluster.node(&[]);
    let token = node.dev_token("late").await;
    // The table disappears under the node.
    let sdk = sdk(&cluster.emulator).await;
    aws_sdk_dynamodb::Client::new(&sdk)
        .delete_table()
        .table_name(format!("{}Connections", cluster.prefix))
        .send()
        .await
        .unwrap();
    let (status, body) = refused(&node.ws_url(&token)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("register_failed"), "{body}");
}

#[tokio::test]
async fn the_mesh_carries_multicasts_and_broadcasts_between_nodes() {
    let cluster = Cluster::new("T6", 5);
    let sdk = sdk(&cluster.emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let a = cluster.named("node-a", &[]);
    let b = cluster.named("node-b", &[]);
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    let mut carol = b.connect("carol").await;

    // Multicast through the HTTP API of node A reaches bob on node B.
    let (status, body) = a
        .notify(r#"{"users":["alice","bob"],"data":{"m":1}}"#)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1);
    assert_eq!(body["mesh_messages"], 1);
    assert_eq!(next_text(&mut alice, LONG).await.unwrap(), r#"{"m":1}"#);
    assert_eq!(next_text(&mut bob, LONG).await.unwrap(), r#"{"m":1}"#);
    assert_eq!(
        next_text(&mut carol, Duration::from_millis(300)).await,
        None
    );

    // Requests on the notifications queue, whichever node polls them.
    let q = cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL").to_string();
    for i in 0..4 {
        sqs.send_message()
            .queue_url(&q)
            .message_body(format!(r#"{{"users":["alice","carol"],"data":{i}}}"#))
            .send()
            .await
            .unwrap();
    }
    // Requests are routed concurrently: the order across requests is free.
    for ws in [&mut alice, &mut carol] {
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_text(ws, LONG).await.unwrap());
        }
        got.sort();
        assert_eq!(got, vec!["0", "1", "2", "3"]);
    }

    // Broadcast with exclusion: one publish to the mesh topic, every node delivers.
    sqs.send_message()
        .queue_url(&q)
        .message_body(r#"{"exclude_users":["carol"],"data":"all"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(next_text(&mut alice, LONG).await.unwrap(), "\"all\"");
    assert_eq!(next_text(&mut bob, LONG).await.unwrap(), "\"all\"");
    assert_eq!(
        next_text(&mut carol, Duration::from_millis(500)).await,
        None
    );
    assert_eq!(
        next_text(&mut alice, Duration::from_millis(300)).await,
        None,
        "one copy each"
    );

    // Node B leaves gracefully: inbox, subscription and node row go.
    let inbox = sqs
        .get_queue_url()
        .queue_name(format!("{}Inbox-node-b", cluster.prefix))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    b.signal(libc::SIGTERM);
    assert_eq!(
        close_code(&mut bob, LONG).await,
        Some(1012),
        "a drain closes with 1012"
    );
    eventually("node-b left: row and inbox gone", LONG, || async {
        cluster_row(&ddb, &cluster, "node#node-b").await.is_none()
            && sqs
                .get_queue_attributes()
                .queue_url(&inbox)
                .send()
                .await
                .is_err()
    })
    .await;
    // Rows of a node with no cluster row are pruned when targeted.
    let table = format!("{}Connections", cluster.prefix);
    ddb.put_item()
        .table_name(&table)
        .item("user_id", AttributeValue::S("zombie".into()))
        .item("connection_id", AttributeValue::S("z1".into()))
        .item("node_id", AttributeValue::S("node-gone".into()))
        .item("connected_at", AttributeValue::N("1".into()))
        .item(
            "delete_at",
            AttributeValue::N((now_secs() + 100).to_string()),
        )
        .send()
        .await
        .unwrap();
    let (status, _) = a.notify(r#"{"users":["zombie"],"data":1}"#).await;
    assert_eq!(status, 202);
    eventually("zombie row pruned", LONG, || async {
        !row_exists(&ddb, &table, "zombie", "z1").await
    })
    .await;
}

/// A backend queue subscribed (raw) to the messages topic.
pub(crate) async fn backend_queue(
    cluster: &Cluster,
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    name: &str,
) -> String {
    let url = sqs
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(cluster.var("SUMU_MESSAGES_TOPIC_ARN"))
        .protocol("sqs")
        .endpoint(arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .unwrap();
    url
}

/// Presence events from the queue until `want` of them arrived, as (user, status).
async fn presence_events(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    want: usize,
    within: Duration,
) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < want {
        assert!(tokio::time::Instant::now() < deadline, "only {out:?}");
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in got.messages.unwrap_or_default() {
            let (_, source) = attr(&m, "source");
            if source != "lambda.presence.watchdog" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(v["type"], "presence");
            assert_eq!(
                attr(&m, "user_id").1,
                v["message"]["user_id"].as_str().unwrap()
            );
            assert_eq!(attr(&m, "timestamp").0, "Number");
            out.push((
                v["message"]["user_id"].as_str().unwrap().to_string(),
                v["message"]["status"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn the_leader_emits_presence_and_reaps_a_dead_node() {
    let cluster = Cluster::new("T7", 5);
    let sdk = sdk(&cluster.emulator).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let presence_q = backend_queue(&cluster, &sqs, &sns, "presence-watch").await;
    let fast = ["--heartbeat-secs", "1", "--node-timeout-secs", "3"];
    let a = cluster.named("node-a", &fast);
    // node-a leads before node-b starts.
    eventually("node-a leads", LONG, || async {
        cluster_row(&ddb, &cluster, "lease#leader")
            .await
            .is_some_and(|l| l["owner"] == AttributeValue::S("node-a".into()))
    })
    .await;
    let mut b = cluster.named("node-b", &fast);

    // Two sockets for alice (two nodes): one ONLINE, and OFFLINE only when the last goes.
    let alice1 = a.connect("alice").await;
    let alice2 = b.connect("alice").await;
    let _bob = b.connect("bob").await;
    let mut first = presence_events(&sqs, &presence_q, 2, LONG).await;
    first.sort();
    assert_eq!(
        first,
        vec![
            ("alice".into(), "ONLINE".into()),
            ("bob".into(), "ONLINE".into())
        ]
    );
    drop(alice1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(alice2);
    let gone = presence_events(&sqs, &presence_q, 1, LONG).await;
    assert_eq!(gone, vec![("alice".into(), "OFFLINE".into())]);

    // node-b dies without leaving: the leader reaps it and bob goes OFFLINE.
    let inbox = sqs
        .get_queue_url()
        .queue_name(format!("{}Inbox-node-b", cluster.prefix))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    b.child.kill().unwrap();
    let reaped = presence_events(&sqs, &presence_q, 1, Duration::from_secs(20)).await;
    assert_eq!(reaped, vec![("bob".into(), "OFFLINE".into())]);
    eventually("dead node's inbox deleted", LONG, || async {
        sqs.get_queue_attributes()
            .queue_url(&inbox)
            .send()
            .await
            .is_err()
    })
    .await;
    assert!(
        cluster_row(&ddb, &cluster, "node#node-b").await.is_none(),
        "dead node's row not deleted"
    );
    // No stray events: alice was reported once each way.
    let rest = sqs
        .receive_message()
        .queue_url(&presence_q)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(rest.messages.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn cluster_status_shows_nodes_sockets_leader_and_queues() {
    let c = Cluster::new("Status", 5);
    let timing = ["--heartbeat-secs", "1", "--node-timeout-secs", "3"];
    let a = c.named("node-a", &timing);
    let b = c.named("node-b", &timing);
    let _a1 = a.connect("u1").await;
    let _a2 = a.connect("u2").await;
    let _b1 = b.connect("u3").await;
    eventually(
        "status: two nodes, their sockets, a leader",
        LONG,
        || async {
            let (ok, out) = c.status(&["--json"]);
            assert!(ok, "cluster status failed: {out}");
            let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
            let nodes = v["nodes"].as_array().expect("nodes");
            let sockets = |id: &str| {
                nodes
                    .iter()
                    .find(|n| n["node_id"] == id)
                    .and_then(|n| n["connections"].as_u64())
            };
            let leader = v["leader"]["node_id"].as_str().unwrap_or("");
            nodes.len() == 2
                && sockets("node-a") == Some(2)
                && sockets("node-b") == Some(1)
                && nodes.iter().all(|n| {
                    n["status"] == "active"
                        && n["heartbeat_age_ms"].as_u64().is_some_and(|a| a < 5_000)
                })
                && (leader == "node-a" || leader == "node-b")
                && v["presence"]["shards"].as_u64().is_some_and(|n| n >= 1)
                && v["queues"].as_array().is_some_and(|q| q.len() == 4)
        },
    )
    .await;
    let (ok, table) = c.status(&[]);
    assert!(ok);
    for want in [
        "NODE",
        "node-a",
        "node-b",
        "leader: node-",
        "StatusNotificationsDLQ",
    ] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }
}

/// Item 4 of issue 19: every node publishes its open sockets to CloudWatch
/// as one statistic set per period (dimension Fleet = the name prefix), the
/// metric the fleet's target-tracking policy scales on.
#[tokio::test]
async fn every_node_publishes_its_sockets_to_cloudwatch_once_a_period() {
    let c = Cluster::new("Scale", 5);
    let cw = aws_sdk_cloudwatch::Client::new(&sdk(&c.emulator).await);
    let flags = [
        "--metrics-namespace",
        "SumuScaleTest",
        "--metrics-interval-secs",
        "1",
    ];
    let a = c.named("node-a", &flags);
    let b = c.named("node-b", &flags);
    let _a1 = a.connect("u1").await;
    let _a2 = a.connect("u2").await;
    let _a3 = a.connect("u3").await;
    let _b1 = b.connect("u4").await;
    let calls = "sumu_aws_calls_total{operation=\"PutMetricData\",service=\"cloudwatch\"}";
    let before = a.metric(calls).await;
    let started = std::time::Instant::now();
    eventually(
        "Sockets with Fleet=Scale: a datum of node-a's 3 and node-b's 1",
        Duration::from_secs(30),
        || async {
            let now = aws_sdk_cloudwatch::primitives::DateTime::from(std::time::SystemTime::now());
            let out = cw
                .get_metric_statistics()
                .namespace("SumuScaleTest")
                .metric_name("Sockets")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder()
                        .name("Fleet")
                        .value("Scale")
                        .build(),
                )
                .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now.secs() - 600,
                ))
                .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                    now.secs() + 600,
                ))
                .period(3600)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
                .statistics(aws_sdk_cloudwatch::types::Statistic::Minimum)
                .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount)
                .send()
                .await
                .expect("GetMetricStatistics");
            let points = out.datapoints();
            points.iter().any(|p| p.maximum() == Some(3.0))
                && points.iter().any(|p| p.minimum().is_some_and(|m| m <= 1.0))
                // Each datum is a statistic set of 6 samples.
                && points.iter().all(|p| {
                    p.sample_count()
                        .is_some_and(|n| n >= 6.0 && n % 6.0 == 0.0)
                })
        },
    )
    .await;
    // One call per period, not per socket or sample (the leader's
    // PresenceStreamIteratorAge adds one a minute).
    let periods = started.elapsed().as_secs_f64() + 1.0;
    let made = a.metric(calls).await - before;
    assert!(
        made >= 1.0 && made <= periods + 1.0,
        "{made} PutMetricData calls in {periods:.1} periods"
    );
}

/// Issue 17 item 5: the ids of `/api/notify` requests are unique across
/// restarts with the same `--node-id`. They used to restart at 0, so the
/// other nodes dropped the restarted node's mesh deliveries as duplicates
/// of requests they had seen before the restart (for their 15 min window).
#[tokio::test]
async fn http_request_ids_stay_unique_across_a_restart_with_the_same_node_id() {
    let cluster = Cluster::new("T9", 5);
    let b = cluster.named("node-b", &[]);
    let mut bob = b.connect("bob").await;
    let mut ids = std::collections::HashSet::new();
    for round in 0..2 {
        let a = cluster.named("node-a", &[]);
        for i in 0..5 {
            let data = (round * 5 + i).to_string();
            let (status, body) = a
                .notify(&format!(r#"{{"users":["bob"],"data":{data}}}"#))
                .await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["mesh_messages"], 1, "{body}");
            assert_eq!(
                next_text(&mut bob, LONG).await.as_deref(),
                Some(data.as_str()),
                "round {round}: the delivery through node-a (request {})",
                body["request_id"]
            );
            let id = body["request_id"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "request id {id} repeated");
        }
        a.stop(Duration::from_secs(30));
    }
}

/// Issue 17 item 9: a node loads its TLS files before it joins the mesh,
/// so a bad certificate (exit 3) leaves no inbox, subscription or row.
#[tokio::test]
async fn a_bad_certificate_leaves_no_inbox_subscription_or_row() {
    use sumu_testkit::tls::{KeyAlg, Pki};
    let cluster = Cluster::new("T10", 5);
    let dir = sumu_testkit::scratch("tls-before-join");
    let good = Pki::generate(&dir.join("good"), &["localhost"], KeyAlg::EcdsaP256);
    let other = Pki::generate(&dir.join("other"), &["localhost"], KeyAlg::EcdsaP256);
    let exited = Node::run_to_exit_with_env(
        &[
            "--dev",
            "--node-id",
            "node-bad",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            good.cert.to_str().unwrap(),
            "--tls-key",
            other.key.to_str().unwrap(),
        ],
        &cluster.node_env(),
        Duration::from_secs(30),
    );
    assert_eq!(exited.code, Some(3), "{}", exited.stderr);
    let sdk = sdk(&cluster.emulator).await;
    let queues = aws_sdk_sqs::Client::new(&sdk)
        .list_queues()
        .queue_name_prefix(format!("{}Inbox", cluster.prefix))
        .send()
        .await
        .unwrap();
    assert_eq!(queues.queue_urls(), &[] as &[String], "an inbox was left");
    let subscriptions = aws_sdk_sns::Client::new(&sdk)
        .list_subscriptions_by_topic()
        .topic_arn(cluster.var("SUMU_MESH_TOPIC_ARN"))
        .send()
        .await
        .unwrap();
    assert!(
        subscriptions.subscriptions().is_empty(),
        "a mesh subscription was left: {:?}",
        subscriptions.subscriptions()
    );
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    assert!(
        cluster_row(&ddb, &cluster, "node#node-bad").await.is_none(),
        "a node row was left"
    );
}
