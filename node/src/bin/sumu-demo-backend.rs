//! `sumu-demo-backend`: SUMU's demo backend (the pure logic is
//! `sumu_node::demo::logic`) as a process beside a sumu cluster — or beside SUMU
//! itself: it speaks only the SUMU contract (SNS/SQS messages with the
//! `user_id`/`timestamp`/`source` attributes in, notification requests out)
//! and uses nothing of the node's internals.
//!
//! Inputs (any combination):
//! - the messages queue (what clients `send`, and presence with
//!   `presence_source = queue`);
//! - `--subscribe-topic ARN`: a queue of its own, created at start and
//!   subscribed (raw delivery) to the messages topic (what clients `publish`,
//!   and presence with `presence_source = topic`); unsubscribed and deleted at
//!   exit;
//! - `--node-url`: a single memory-engine node, read through its
//!   `/api/events` stream and answered through `/api/notify`.
//!
//! Invariants: every AWS and HTTP call has a timeout (the events stream only
//! a connect timeout: it is idle while nobody talks); a message is deleted
//! from its queue only after its notification request was accepted (or it was
//! found to need none), so a failure means a redelivery, never a loss; the
//! connected users are kept from presence events, seeded at start from the
//! connections table (or the node's `/api/users`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, QueueAttributeName};
use clap::Parser;
use serde::Deserialize;
use sumu_node::demo::logic::{DemoBackend, Ignored, Inbound, Notification};
use sumu_shared::attributes;
use sumu_shared::PresenceStatus;
use tokio::sync::{watch, Mutex};

/// SUMU's demo backend: answers chat messages and presence with notification requests.
#[derive(Parser, Debug, Clone)]
#[command(name = "sumu-demo-backend", version)]
struct Args {
    /// AWS endpoint override (the local emulator).
    #[arg(long, env = "SUMU_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
    /// AWS region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "SUMU_AWS_REGION")]
    aws_region: Option<String>,
    /// Prefix of the resource names looked up when no URL is given.
    #[arg(long, env = "SUMU_NAME_PREFIX", default_value = "Sumu")]
    name_prefix: String,
    /// The messages queue to read (default: `<prefix>Messages`).
    #[arg(long, env = "SUMU_MESSAGES_QUEUE_URL")]
    messages_queue_url: Option<String>,
    /// Read the messages queue (`send` frames, presence with presence_source=queue).
    #[arg(long, env = "SUMU_DEMO_READ_MESSAGES_QUEUE", default_value_t = true, action = clap::ArgAction::Set)]
    read_messages_queue: bool,
    /// Also read the messages topic (`publish` frames, presence with
    /// presence_source=topic) through a queue created and subscribed at start.
    #[arg(long, env = "SUMU_DEMO_SUBSCRIBE_TOPIC", value_name = "ARN")]
    subscribe_topic: Option<String>,
    /// Where notification requests go (default: `<prefix>Notifications`).
    #[arg(long, env = "SUMU_NOTIFICATIONS_QUEUE_URL")]
    notifications_queue_url: Option<String>,
    /// The connections table that seeds the connected users (default: `<prefix>Connections`).
    #[arg(long, env = "SUMU_CONNECTIONS_TABLE")]
    connections_table: Option<String>,
    /// Long-poll wait of each receive, 1 to 20 seconds.
    #[arg(long, env = "SUMU_DEMO_WAIT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(1..=20))]
    wait_secs: u8,
    /// Timeout of every other AWS or HTTP call, in seconds.
    #[arg(long, env = "SUMU_DEMO_CALL_TIMEOUT_SECS", default_value_t = 10)]
    call_timeout_secs: u64,
    /// Instead of AWS: a memory-engine node's base URL (e.g. http://127.0.0.1:8080).
    #[arg(long, env = "SUMU_DEMO_NODE_URL", conflicts_with_all = ["subscribe_topic", "messages_queue_url", "notifications_queue_url"])]
    node_url: Option<String>,
    /// The node's API key (`--node-url`; `dev` for a --dev node).
    #[arg(long, env = "SUMU_API_KEY", default_value = "dev")]
    api_key: String,
    /// Log filter (tracing syntax).
    #[arg(long, env = "SUMU_LOG", default_value = "info")]
    log: String,
}

/// A failed call to AWS or to the node, with its cause.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("{operation} failed")]
    Failed {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{operation}: {what}")]
    Unexpected {
        operation: &'static str,
        what: String,
    },
}

/// Runs one call under a timeout; every AWS and HTTP call goes through here.
async fn call<T, E, F>(operation: &'static str, after: Duration, fut: F) -> Result<T, CallError>
where
    F: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(after, fut).await {
        Err(_) => Err(CallError::Timeout { operation, after }),
        Ok(Err(e)) => Err(CallError::Failed {
            operation,
            source: Box::new(e),
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Where notification requests go.
#[derive(Clone)]
enum Sink {
    Queue {
        sqs: aws_sdk_sqs::Client,
        url: String,
    },
    Node {
        http: reqwest::Client,
        url: String,
        key: String,
    },
}

/// What the loops share.
struct Shared {
    demo: Mutex<DemoBackend>,
    sink: Sink,
    timeout: Duration,
}

impl Shared {
    /// Handles one inbound message: `Ok` when it is done with (answered or
    /// ignored), `Err` when it must be retried.
    async fn process(&self, inbound: &Inbound<'_>) -> Result<(), CallError> {
        let decided = self.demo.lock().await.handle(inbound);
        match decided {
            Ok(n) => self.notify(&n).await,
            Err(why) => {
                log_ignored(inbound, &why);
                Ok(())
            }
        }
    }

    async fn notify(&self, n: &Notification) -> Result<(), CallError> {
        let body = n.to_json();
        match &self.sink {
            Sink::Queue { sqs, url } => {
                call(
                    "SQS SendMessage",
                    self.timeout,
                    sqs.send_message().queue_url(url).message_body(body).send(),
                )
                .await?;
            }
            Sink::Node { http, url, key } => {
                let r = call(
                    "POST /api/notify",
                    self.timeout,
                    http.post(format!("{url}/api/notify"))
                        .bearer_auth(key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send(),
                )
                .await?;
                if !r.status().is_success() {
                    return Err(CallError::Unexpected {
                        operation: "POST /api/notify",
                        what: format!("HTTP {}", r.status()),
                    });
                }
            }
        }
        tracing::debug!(users = ?n.users, exclude = ?n.exclude_users, "notification sent");
        Ok(())
    }
}

fn log_ignored(inbound: &Inbound<'_>, why: &Ignored) {
    tracing::info!(user_id = inbound.user_id, source = inbound.source, reason = %why, "message ignored");
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let result = match &args.node_url {
        Some(url) => run_node(&args, url.trim_end_matches('/'), stop_rx).await,
        None => run_aws(&args, stop_rx).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            tracing::error!("{msg}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Announces readiness on stdout (tests and scripts wait for this line).
fn ready(what: &str) {
    println!("sumu-demo-backend ready: {what}");
}

// ---- AWS -------------------------------------------------------------------

async fn sdk_config(args: &Args) -> aws_config::SdkConfig {
    let region = args
        .aws_region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let timeout = Duration::from_secs(args.call_timeout_secs);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                // A long poll may legitimately last `wait_secs`.
                .operation_attempt_timeout(timeout + Duration::from_secs(u64::from(args.wait_secs)))
                .build(),
        );
    if let Some(endpoint) = &args.aws_endpoint {
        loader = loader.endpoint_url(endpoint);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && std::env::var_os("AWS_PROFILE").is_none()
        {
            loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test",
                "test",
                None,
                None,
                "sumu-local",
            ));
        }
    }
    loader.load().await
}

async fn queue_url(
    sqs: &aws_sdk_sqs::Client,
    given: &Option<String>,
    name: String,
    timeout: Duration,
) -> Result<String, CallError> {
    if let Some(url) = given {
        return Ok(url.clone());
    }
    let out = call(
        "SQS GetQueueUrl",
        timeout,
        sqs.get_queue_url().queue_name(&name).send(),
    )
    .await?;
    out.queue_url.ok_or(CallError::Unexpected {
        operation: "SQS GetQueueUrl",
        what: format!("no URL for queue {name}"),
    })
}

/// The queue this process subscribed to the messages topic; removed at exit.
struct TopicQueue {
    url: String,
    subscription_arn: String,
}

async fn subscribe_topic(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    prefix: &str,
    timeout: Duration,
) -> Result<TopicQueue, CallError> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let name = format!("{prefix}DemoBackend-{suffix}");
    let url = call(
        "SQS CreateQueue",
        timeout,
        sqs.create_queue()
            .queue_name(&name)
            .attributes(QueueAttributeName::VisibilityTimeout, "30")
            .send(),
    )
    .await?
    .queue_url
    .ok_or(CallError::Unexpected {
        operation: "SQS CreateQueue",
        what: "no queue URL".into(),
    })?;
    let attrs = call(
        "SQS GetQueueAttributes",
        timeout,
        sqs.get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send(),
    )
    .await?;
    let arn = attrs
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or(CallError::Unexpected {
            operation: "SQS GetQueueAttributes",
            what: "no QueueArn".into(),
        })?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
        }]
    })
    .to_string();
    call(
        "SQS SetQueueAttributes",
        timeout,
        sqs.set_queue_attributes()
            .queue_url(&url)
            .attributes(QueueAttributeName::Policy, policy)
            .send(),
    )
    .await?;
    let sub = call(
        "SNS Subscribe",
        timeout,
        sns.subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(&arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send(),
    )
    .await?;
    Ok(TopicQueue {
        url,
        subscription_arn: sub.subscription_arn.unwrap_or_default(),
    })
}

async fn run_aws(args: &Args, stop: watch::Receiver<bool>) -> Result<(), CallError> {
    let sdk = sdk_config(args).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let timeout = Duration::from_secs(args.call_timeout_secs);
    let prefix = &args.name_prefix;

    let notifications = queue_url(
        &sqs,
        &args.notifications_queue_url,
        format!("{prefix}Notifications"),
        timeout,
    )
    .await?;
    let mut inputs = Vec::new();
    if args.read_messages_queue {
        let url = queue_url(
            &sqs,
            &args.messages_queue_url,
            format!("{prefix}Messages"),
            timeout,
        )
        .await?;
        inputs.push(url);
    }
    let topic_queue = match &args.subscribe_topic {
        Some(arn) => {
            let q = subscribe_topic(&sqs, &sns, arn, prefix, timeout).await?;
            inputs.push(q.url.clone());
            Some(q)
        }
        None => None,
    };
    if inputs.is_empty() {
        return Err(CallError::Unexpected {
            operation: "start",
            what: "nothing to read: give --subscribe-topic or keep --read-messages-queue".into(),
        });
    }

    let mut demo = DemoBackend::default();
    let table = args
        .connections_table
        .clone()
        .unwrap_or_else(|| format!("{prefix}Connections"));
    match connected_users_from_table(&dynamodb, &table, timeout).await {
        Ok(users) => {
            tracing::info!(users = users.len(), %table, "connected users seeded");
            for u in users {
                demo.book.observe(&u, PresenceStatus::Online, 0);
            }
        }
        Err(e) => tracing::warn!(error = %e, %table, "connected users not seeded"),
    }
    let shared = Arc::new(Shared {
        demo: Mutex::new(demo),
        sink: Sink::Queue {
            sqs: sqs.clone(),
            url: notifications,
        },
        timeout,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for url in &inputs {
        tasks.spawn(poll_queue(
            sqs.clone(),
            url.clone(),
            args.wait_secs,
            shared.clone(),
            stop.clone(),
        ));
    }
    ready(&inputs.join(" "));
    while tasks.join_next().await.is_some() {}

    if let Some(q) = topic_queue {
        if let Err(e) = call(
            "SNS Unsubscribe",
            timeout,
            sns.unsubscribe()
                .subscription_arn(&q.subscription_arn)
                .send(),
        )
        .await
        {
            tracing::warn!(error = %e, "subscription not removed");
        }
        if let Err(e) = call(
            "SQS DeleteQueue",
            timeout,
            sqs.delete_queue().queue_url(&q.url).send(),
        )
        .await
        {
            tracing::warn!(error = %e, "topic queue not deleted");
        }
    }
    Ok(())
}

/// The distinct users of the connections table (paged Scan of `user_id`).
async fn connected_users_from_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    timeout: Duration,
) -> Result<Vec<String>, CallError> {
    let mut users = std::collections::BTreeSet::new();
    let mut start = None;
    loop {
        let out = call(
            "DynamoDB Scan",
            timeout,
            dynamodb
                .scan()
                .table_name(table)
                .projection_expression("user_id")
                .set_exclusive_start_key(start)
                .send(),
        )
        .await?;
        for item in out.items.unwrap_or_default() {
            if let Some(Ok(u)) = item.get("user_id").map(|v| v.as_s()) {
                users.insert(u.clone());
            }
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(users.into_iter().collect());
        }
    }
}

async fn poll_queue(
    sqs: aws_sdk_sqs::Client,
    url: String,
    wait_secs: u8,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let wait = Duration::from_secs(u64::from(wait_secs));
    let mut failures = 0u32;
    while !*stop.borrow() {
        let receive = call(
            "SQS ReceiveMessage",
            shared.timeout + wait,
            sqs.receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .wait_time_seconds(i32::from(wait_secs))
                .message_attribute_names("All")
                .send(),
        );
        let out = tokio::select! {
            _ = stop.changed() => break,
            out = receive => out,
        };
        let messages = match out {
            Ok(o) => {
                failures = 0;
                o.messages.unwrap_or_default()
            }
            Err(e) => {
                failures = (failures + 1).min(6);
                tracing::warn!(error = %e, queue = %url, "receive failed");
                tokio::time::sleep(Duration::from_millis(100 << failures)).await;
                continue;
            }
        };
        let mut done = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match message_inbound(m) {
                Some(parts) => match shared.process(&parts.inbound()).await {
                    Ok(()) => done.push(i),
                    // Left in the queue: it comes back after the visibility timeout.
                    Err(e) => tracing::warn!(error = %e, "notification not sent; will retry"),
                },
                None => {
                    tracing::info!(queue = %url, "message without the SUMU attributes ignored");
                    done.push(i);
                }
            }
        }
        let entries: Vec<_> = done
            .iter()
            .filter_map(|&i| {
                let handle = messages[i].receipt_handle.clone()?;
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        if let Err(e) = call(
            "SQS DeleteMessageBatch",
            shared.timeout,
            sqs.delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send(),
        )
        .await
        {
            tracing::warn!(error = %e, "delete failed: those messages will be seen again");
        }
    }
}

/// The body and attributes of one SQS message, raw or wrapped in an SNS envelope.
struct Parts {
    source: String,
    user_id: String,
    timestamp: u64,
    body: String,
}

impl Parts {
    fn inbound(&self) -> Inbound<'_> {
        Inbound {
            source: &self.source,
            user_id: &self.user_id,
            timestamp: self.timestamp,
            body: &self.body,
        }
    }
}

#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "MessageAttributes", default)]
    attributes: HashMap<String, SnsAttribute>,
}

#[derive(Deserialize)]
struct SnsAttribute {
    #[serde(rename = "Value")]
    value: String,
}

fn message_inbound(m: &Message) -> Option<Parts> {
    let body = m.body.as_deref()?;
    // A subscription without raw delivery wraps the message in an envelope.
    if let Ok(env) = serde_json::from_str::<SnsEnvelope>(body) {
        if env.kind == "Notification" {
            let get = |k: &str| env.attributes.get(k).map(|a| a.value.clone());
            return Some(Parts {
                source: get(attributes::SOURCE)?,
                user_id: get(attributes::USER_ID)?,
                timestamp: get(attributes::TIMESTAMP)?.parse().ok()?,
                body: env.message,
            });
        }
    }
    let attrs = m.message_attributes.as_ref()?;
    let get = |k: &str| attrs.get(k).and_then(|a| a.string_value.clone());
    Some(Parts {
        source: get(attributes::SOURCE)?,
        user_id: get(attributes::USER_ID)?,
        timestamp: get(attributes::TIMESTAMP)?.parse().ok()?,
        body: body.to_string(),
    })
}

// ---- a memory-engine node over HTTP ---------------------------------------

/// One event of the node's `/api/events` stream.
#[derive(Deserialize)]
struct BusEvent {
    source: String,
    user_id: String,
    timestamp: u64,
    message: String,
}

#[derive(Deserialize)]
struct UsersBody {
    users: Vec<String>,
}

async fn run_node(
    args: &Args,
    url: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<(), CallError> {
    let timeout = Duration::from_secs(args.call_timeout_secs);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CallError::Failed {
            operation: "HTTP client",
            source: Box::new(e),
        })?;
    let shared = Arc::new(Shared {
        demo: Mutex::new(DemoBackend::default()),
        sink: Sink::Node {
            http: http.clone(),
            url: url.to_string(),
            key: args.api_key.clone(),
        },
        timeout,
    });
    let mut announced = false;
    let mut failures = 0u32;
    while !*stop.borrow() {
        let session = node_session(&http, url, &args.api_key, &shared, &mut announced, timeout);
        let result = tokio::select! {
            _ = stop.changed() => break,
            r = session => r,
        };
        if let Err(e) = result {
            failures = (failures + 1).min(5);
            tracing::warn!(error = %e, "events stream lost; reconnecting");
        }
        tokio::select! {
            _ = stop.changed() => break,
            // 200 ms doubling to 2 s: a restarted node is found again quickly.
            _ = tokio::time::sleep(Duration::from_millis((200u64 << failures).min(2000))) => {}
        }
    }
    Ok(())
}

/// Subscribes to `/api/events`, re-seeds the connected users from
/// `/api/users`, then handles events until the stream ends.
async fn node_session(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    shared: &Shared,
    announced: &mut bool,
    timeout: Duration,
) -> Result<(), CallError> {
    const OP: &str = "GET /api/events";
    let mut events = call(
        OP,
        timeout,
        http.get(format!("{url}/api/events"))
            .bearer_auth(key)
            .send(),
    )
    .await?;
    if !events.status().is_success() {
        return Err(CallError::Unexpected {
            operation: OP,
            what: format!("HTTP {}", events.status()),
        });
    }
    // Subscribed first, then seeded: no presence change falls in between.
    let users: UsersBody = call(
        "GET /api/users",
        timeout,
        http.get(format!("{url}/api/users")).bearer_auth(key).send(),
    )
    .await?
    .json()
    .await
    .map_err(|e| CallError::Failed {
        operation: "GET /api/users",
        source: Box::new(e),
    })?;
    {
        let mut demo = shared.demo.lock().await;
        demo.book = Default::default();
        for u in users.users {
            demo.book.observe(&u, PresenceStatus::Online, 0);
        }
    }
    if !*announced {
        ready(url);
        *announced = true;
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = events.chunk().await.map_err(|e| CallError::Failed {
            operation: OP,
            source: Box::new(e),
        })?;
        let Some(chunk) = chunk else {
            return Err(CallError::Unexpected {
                operation: OP,
                what: "stream ended".into(),
            });
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = find(&buf, b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            for line in text.lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                match serde_json::from_str::<BusEvent>(data) {
                    Ok(ev) => {
                        let inbound = Inbound {
                            source: &ev.source,
                            user_id: &ev.user_id,
                            timestamp: ev.timestamp,
                            body: &ev.message,
                        };
                        // The bus has no redelivery: a failure is logged and dropped.
                        if let Err(e) = shared.process(&inbound).await {
                            tracing::warn!(error = %e, "notification not sent");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable event"),
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
