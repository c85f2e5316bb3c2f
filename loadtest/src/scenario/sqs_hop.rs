//! `sqs-hop`: the bare SQS hop, the floor under every cross-node delivery of the
//! fleet (a router's SendMessage to another node's inbox, that node's long poll).
//! Sends `--count` messages at `--rate` to a scratch queue while one receiver
//! long-polls it as a node's inbox poller does (10 s waits, batches of 10, then
//! DeleteMessageBatch); latency = send start -> received, on this process's clock.
//!
//! Invariant: the scratch queue is deleted at the end, whatever happened; every call
//! is bounded (the SQS client's timeouts), and so is the wait for stragglers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::Semaphore;

use super::{config_entry, new_run_id, ScenarioError, ScenarioOutput};
use crate::cli::SqsHopArgs;
use crate::latency::LatencyHistogram;
use crate::notifier::sqs_client;
use crate::report::RunReport;
use crate::tokens::unix_now;

/// Sends in flight at once (a send's own latency must not throttle the rate).
const SEND_CONCURRENCY: usize = 16;
/// The long poll's wait, as a node's inbox poller (`node/src/engine/aws/queue.rs`).
const WAIT_SECS: i32 = 10;

fn sqs_error<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
) -> impl FnOnce(E) -> ScenarioError {
    move |e| ScenarioError::Sqs {
        operation,
        source: Box::new(e),
    }
}

/// What the receiver saw.
#[derive(Default)]
struct Received {
    latencies: LatencyHistogram,
    seen: std::collections::HashSet<u64>,
    duplicates: u64,
    receive_errors: u64,
}

pub async fn run(args: &SqsHopArgs) -> Result<ScenarioOutput, ScenarioError> {
    if !(args.rate > 0.0 && args.rate.is_finite()) || args.count == 0 {
        return Err(ScenarioError::Config(
            "--rate must be positive and --count at least 1".into(),
        ));
    }
    let client = sqs_client(args.aws_endpoint.as_deref(), &args.aws_region).await;
    let run_id = new_run_id();
    let name = format!("{}-{}", args.queue_prefix, &run_id[..run_id.len().min(12)]);
    let url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .map_err(sqs_error("CreateQueue"))?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let outcome = measure(&client, &url, args).await;
    if let Err(e) = client.delete_queue().queue_url(&url).send().await {
        eprintln!("warning: scratch queue {url} not deleted: {e}");
    }
    let (received, sent, send_errors, window) = outcome?;
    let received = Arc::try_unwrap(received)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();

    let mut report = RunReport {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        scenario: "sqs-hop".into(),
        target: url,
        run_id,
        started_unix_ms: unix_now().as_millis() as u64,
        elapsed_s: window.as_secs_f64(),
        ..Default::default()
    };
    config_entry(&mut report, "rate_per_s", args.rate);
    config_entry(&mut report, "count", args.count);
    config_entry(&mut report, "wait_time_seconds", WAIT_SECS);
    report
        .latencies
        .insert("hop".into(), received.latencies.summary());
    let got = received.seen.len() as u64;
    report.counters.insert("sent".into(), sent);
    report.counters.insert("received".into(), got);
    report
        .counters
        .insert("duplicates".into(), received.duplicates);
    report
        .rates
        .insert("messages_per_s".into(), sent as f64 / window.as_secs_f64());
    if send_errors > 0 {
        report.errors.insert("send_failed".into(), send_errors);
    }
    if received.receive_errors > 0 {
        report
            .errors
            .insert("receive_failed".into(), received.receive_errors);
    }
    if got < sent {
        report.errors.insert("lost".into(), sent - got);
    }
    Ok(ScenarioOutput {
        report,
        histograms: vec![("hop".into(), received.latencies)],
    })
}

type Measured = (Arc<Mutex<Received>>, u64, u64, Duration);

async fn measure(
    client: &aws_sdk_sqs::Client,
    url: &str,
    args: &SqsHopArgs,
) -> Result<Measured, ScenarioError> {
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let received: Arc<Mutex<Received>> = Arc::default();
    let receiver = tokio::spawn(receive_loop(
        client.clone(),
        url.to_string(),
        sent_at.clone(),
        received.clone(),
    ));
    // The receiver's first long poll is in flight before the first send.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / args.rate);
    let permits = Arc::new(Semaphore::new(SEND_CONCURRENCY));
    let mut sends = tokio::task::JoinSet::new();
    for seq in 0..args.count {
        tokio::time::sleep_until((started + every.mul_f64(seq as f64)).into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let (client, url, sent_at) = (client.clone(), url.to_string(), sent_at.clone());
        sends.spawn(async move {
            let _permit = permit;
            sent_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(seq, Instant::now());
            client
                .send_message()
                .queue_url(url)
                .message_body(seq.to_string())
                .send()
                .await
                .is_ok()
        });
    }
    let mut sent = 0;
    let mut send_errors = 0;
    while let Some(ok) = sends.join_next().await {
        if matches!(ok, Ok(true)) {
            sent += 1;
        } else {
            send_errors += 1;
        }
    }
    let window = started.elapsed();
    let deadline = Instant::now() + args.drain_timeout;
    while Instant::now() < deadline
        && (received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len() as u64)
            < sent
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.abort();
    let _ = receiver.await;
    Ok((received, sent, send_errors, window))
}

/// One long poller, as a node's inbox: receive up to 10, record, delete the batch.
async fn receive_loop(
    client: aws_sdk_sqs::Client,
    url: String,
    sent_at: Arc<Mutex<HashMap<u64, Instant>>>,
    received: Arc<Mutex<Received>>,
) {
    loop {
        let out = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECS)
            .send()
            .await;
        let now = Instant::now();
        let messages = match out {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(_) => {
                received
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .receive_errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut entries = Vec::new();
        {
            let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner());
            let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
            for (i, m) in messages.iter().enumerate() {
                let seq = m.body().and_then(|b| b.parse::<u64>().ok());
                match seq.and_then(|s| Some((s, *sent.get(&s)?))) {
                    Some((s, at)) if r.seen.insert(s) => {
                        r.latencies.record(now.saturating_duration_since(at))
                    }
                    Some(_) => r.duplicates += 1,
                    None => {}
                }
                if let Some(h) = m.receipt_handle() {
                    if let Ok(e) = DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .build()
                    {
                        entries.push(e);
                    }
                }
            }
        }
        if !entries.is_empty() {
            let _ = client
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await;
        }
    }
}
