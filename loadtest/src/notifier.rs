//! Notification requests: which users each request targets, the timestamped payload in
//! `data`, parsing the frames the sockets receive, and sending the requests over
//! `POST /api/notify` or the notifications SQS queue.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cli::FanoutMode;
use crate::tokens::user_name;

/// Users targeted by request `seq`: None = broadcast; otherwise user indices (distinct
/// when `k <= users`), rotating through all users.
pub fn targets_for(seq: u64, mode: FanoutMode, k: usize, users: usize) -> Option<Vec<usize>> {
    if users == 0 {
        return Some(Vec::new());
    }
    match mode {
        FanoutMode::Broadcast => None,
        FanoutMode::Unicast => Some(vec![(seq % users as u64) as usize]),
        FanoutMode::Multicast => {
            let k = k.clamp(1, users) as u64;
            Some(
                (0..k)
                    .map(|j| ((seq.wrapping_mul(k) + j) % users as u64) as usize)
                    .collect(),
            )
        }
    }
}

/// The `data` of request `seq`: `{"type":"bench","message":{"t":..,"seq":..,"run":..}}`,
/// `t` = send time in unix microseconds.
pub fn bench_data(run_id: &str, seq: u64, sent_micros: u64, padding: usize) -> String {
    let pad = "x".repeat(padding);
    format!(
        r#"{{"type":"bench","message":{{"t":{sent_micros},"seq":{seq},"run":"{}","pad":"{pad}"}}}}"#,
        json_escape(run_id)
    )
}

fn json_escape(text: &str) -> String {
    serde_json::to_string(text)
        .map(|quoted| quoted[1..quoted.len() - 1].to_string())
        .unwrap_or_default()
}

/// The notification request body.
pub fn request_body(users: Option<&[usize]>, prefix: &str, data: &str) -> String {
    match users {
        None => format!(r#"{{"data":{data}}}"#),
        Some(users) => {
            let names: Vec<String> = users.iter().map(|&u| user_name(prefix, u)).collect();
            let users_json = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
            format!(r#"{{"users":{users_json},"data":{data}}}"#)
        }
    }
}

/// A text frame received by a client socket, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A bench delivery of this run.
    Delivery {
        seq: u64,
        sent_micros: u64,
    },
    /// A bench delivery of another run (another tool instance on the same server).
    Foreign,
    Pong,
    Ack {
        id: String,
    },
    Error {
        status: u16,
        message: String,
        /// The id of the rejected frame, when the server echoes it.
        id: Option<String>,
    },
    Other,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(rename = "statusCode", default)]
    status_code: Option<u16>,
}

#[derive(Deserialize)]
struct BenchMessage {
    t: u64,
    seq: u64,
    #[serde(default)]
    run: String,
}

/// An echoed `id`: the string itself for a JSON string, else the JSON text (`7`).
fn id_text(raw: &RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
}

/// Classifies one text frame.
pub fn classify_frame(text: &str, run_id: &str) -> Incoming {
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        return Incoming::Other;
    };
    match envelope.kind {
        Some("bench") => match envelope
            .message
            .and_then(|raw| serde_json::from_str::<BenchMessage>(raw.get()).ok())
        {
            Some(m) if m.run == run_id => Incoming::Delivery {
                seq: m.seq,
                sent_micros: m.t,
            },
            Some(_) => Incoming::Foreign,
            None => Incoming::Other,
        },
        Some("pong") => Incoming::Pong,
        Some("ack") => Incoming::Ack {
            id: envelope.id.map(id_text).unwrap_or_default(),
        },
        Some("error") => Incoming::Error {
            status: envelope.status_code.unwrap_or(0),
            message: envelope
                .message
                .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .unwrap_or_default(),
            id: envelope.id.map(id_text),
        },
        _ => Incoming::Other,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("POST /api/notify answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("POST /api/notify failed: {0}")]
    Transport(String),
    #[error("SQS SendMessage failed: {0}")]
    Sqs(String),
    #[error("--via sqs needs --queue-url")]
    NoQueueUrl,
}

impl NotifyError {
    /// Stable report name.
    pub fn kind_name(&self) -> String {
        match self {
            NotifyError::Status { status, .. } => format!("notify_http_{status}"),
            NotifyError::Transport(_) => "notify_transport".into(),
            NotifyError::Sqs(_) => "notify_sqs".into(),
            NotifyError::NoQueueUrl => "notify_config".into(),
        }
    }
}

#[derive(Deserialize)]
struct NotifyAccepted {
    #[serde(default)]
    deliveries: Option<u64>,
}

/// An SQS client from the default credential chain (env AWS_ACCESS_KEY_ID/SECRET,
/// profile, ...) with an optional endpoint override (the local emulator); every call
/// is bounded (10 s per attempt, 30 s per operation).
pub async fn sqs_client(endpoint: Option<&str>, region: &str) -> aws_sdk_sqs::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(30))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .timeout_config(timeouts);
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::new(&loader.load().await)
}

/// Sends notification requests.
#[derive(Debug, Clone)]
pub enum Notifier {
    Http {
        client: reqwest::Client,
        url: String,
        authorization: String,
    },
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
}

impl Notifier {
    pub fn http(http_base: &str, api_key: &str) -> Result<Self, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| NotifyError::Transport(e.to_string()))?;
        Ok(Notifier::Http {
            client,
            url: format!("{http_base}/api/notify"),
            authorization: format!("Bearer {api_key}"),
        })
    }

    /// SQS client from the default chain (env AWS_ACCESS_KEY_ID/SECRET, profile, ...),
    /// with an optional endpoint override (local emulator).
    pub async fn sqs(
        queue_url: Option<&str>,
        endpoint: Option<&str>,
        region: &str,
    ) -> Result<Self, NotifyError> {
        let queue_url = queue_url.ok_or(NotifyError::NoQueueUrl)?.to_string();
        Ok(Notifier::Sqs {
            client: sqs_client(endpoint, region).await,
            queue_url,
        })
    }

    /// Sends one request; over HTTP returns the server's reported delivery count if any.
    pub async fn send(&self, body: String) -> Result<Option<u64>, NotifyError> {
        match self {
            Notifier::Http {
                client,
                url,
                authorization,
            } => {
                let response = client
                    .post(url)
                    .header("authorization", authorization)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| NotifyError::Transport(e.to_string()))?;
                let status = response.status();
                let text = response
                    .text()
                    .await
                    .map_err(|e| NotifyError::Transport(e.to_string()))?;
                if !status.is_success() {
                    return Err(NotifyError::Status {
                        status: status.as_u16(),
                        body: text.chars().take(200).collect(),
                    });
                }
                Ok(serde_json::from_str::<NotifyAccepted>(&text)
                    .ok()
                    .and_then(|a| a.deliveries))
            }
            Notifier::Sqs { client, queue_url } => {
                client
                    .send_message()
                    .queue_url(queue_url)
                    .message_body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        NotifyError::Sqs(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                    })?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_rotate_and_are_distinct() {
        assert_eq!(targets_for(3, FanoutMode::Broadcast, 5, 10), None);
        assert_eq!(targets_for(13, FanoutMode::Unicast, 5, 10), Some(vec![3]));
        let m = targets_for(1, FanoutMode::Multicast, 4, 10).unwrap();
        assert_eq!(m, vec![4, 5, 6, 7]);
        let m = targets_for(2, FanoutMode::Multicast, 4, 10).unwrap();
        assert_eq!(m, vec![8, 9, 0, 1]);
        // k larger than users is clamped: every user once.
        let mut m = targets_for(7, FanoutMode::Multicast, 50, 3).unwrap();
        m.sort();
        assert_eq!(m, vec![0, 1, 2]);
    }

    #[test]
    fn payload_round_trips_through_classifier() {
        let data = bench_data("run-1", 42, 1_700_000_000_000_000, 16);
        assert!(serde_json::from_str::<serde_json::Value>(&data).is_ok());
        assert_eq!(
            classify_frame(&data, "run-1"),
            Incoming::Delivery {
                seq: 42,
                sent_micros: 1_700_000_000_000_000
            }
        );
        assert_eq!(classify_frame(&data, "run-2"), Incoming::Foreign);
    }

    #[test]
    fn request_bodies() {
        let body = request_body(Some(&[1, 2]), "user-", r#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["users"], serde_json::json!(["user-1", "user-2"]));
        assert_eq!(v["data"]["a"], 1);
        let body = request_body(None, "user-", r#"{"a":1}"#);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v.get("users").is_none());
    }

    #[test]
    fn understands_sumu_frames_and_sumu_understands_requests() {
        use serde_json::value::RawValue;
        use sumu_shared::notification::NotificationRequest;
        use sumu_shared::server;

        assert_eq!(classify_frame(&server::pong("c-1"), "r"), Incoming::Pong);
        let id = RawValue::from_string("\"42\"".into()).unwrap();
        assert_eq!(
            classify_frame(&server::ack(&id), "r"),
            Incoming::Ack { id: "42".into() }
        );
        let numeric = RawValue::from_string("42".into()).unwrap();
        assert_eq!(
            classify_frame(&server::ack(&numeric), "r"),
            Incoming::Ack { id: "42".into() }
        );
        assert_eq!(
            classify_frame(&server::error(429, "rate limited", Some(&id)), "r"),
            Incoming::Error {
                status: 429,
                message: "rate limited".into(),
                id: Some("42".into())
            }
        );

        let data = bench_data("run", 3, 99, 4);
        let multicast =
            NotificationRequest::parse(request_body(Some(&[2, 5]), "user-", &data).as_bytes())
                .unwrap();
        assert!(!multicast.is_broadcast());
        assert_eq!(
            multicast.targets().collect::<Vec<_>>(),
            ["user-2", "user-5"]
        );
        // What sockets receive is `data` byte for byte: the tool must recognise it.
        assert_eq!(multicast.data.get(), data);
        assert_eq!(
            classify_frame(multicast.data.get(), "run"),
            Incoming::Delivery {
                seq: 3,
                sent_micros: 99
            }
        );
        let broadcast =
            NotificationRequest::parse(request_body(None, "user-", &data).as_bytes()).unwrap();
        assert!(broadcast.is_broadcast());
    }

    #[tokio::test]
    async fn sqs_needs_a_queue_url() {
        assert!(matches!(
            Notifier::sqs(None, Some("http://127.0.0.1:4566"), "us-east-1").await,
            Err(NotifyError::NoQueueUrl)
        ));
        assert_eq!(NotifyError::NoQueueUrl.kind_name(), "notify_config");
    }

    #[test]
    fn classifies_control_frames() {
        assert_eq!(
            classify_frame(
                r#"{"type":"pong","statusCode":200,"connectionId":"c"}"#,
                "r"
            ),
            Incoming::Pong
        );
        assert_eq!(
            classify_frame(r#"{"type":"ack","id":"7"}"#, "r"),
            Incoming::Ack { id: "7".into() }
        );
        assert_eq!(
            classify_frame(
                r#"{"type":"error","statusCode":429,"message":"slow down"}"#,
                "r"
            ),
            Incoming::Error {
                status: 429,
                message: "slow down".into(),
                id: None
            }
        );
        assert_eq!(classify_frame("not json", "r"), Incoming::Other);
        assert_eq!(
            classify_frame(r#"{"type":"bench","message":"x"}"#, "r"),
            Incoming::Other
        );
        assert_eq!(classify_frame(r#"[1,2]"#, "r"), Incoming::Other);
    }
}
