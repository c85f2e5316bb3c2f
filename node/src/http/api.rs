//! The backend API: `POST /api/notify`, `GET /api/users`, `GET /api/events`,
//! behind the API key (compared in constant time). A refusal is an
//! [`ApiError`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use serde::Serialize;
use sumu_shared::NotificationRequest;

use super::shared::{error_body, AppState};
use crate::engine::EngineError;
use crate::hub::HubError;
use crate::logging::chain;
use crate::metrics::Metrics;

/// The largest notification request body (SQS's message size limit).
pub(super) const MAX_NOTIFY_BYTES: usize = 256 * 1024;

/// Why an API call was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApiError {
    #[error("the HTTP API is off: start the node with --api-key")]
    Disabled,
    #[error("missing or wrong API key")]
    BadKey,
    #[error("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    BodyTimeout,
    #[error("the request body is over {} bytes", MAX_NOTIFY_BYTES)]
    BodyTooLarge,
    #[error("the request body could not be read")]
    BodyRead(#[source] actix_web::Error),
    #[error("{0}")]
    InvalidRequest(#[source] sumu_shared::NotificationError),
    #[error("{0}")]
    Routing(#[source] EngineError),
    #[error("{0}")]
    Hub(#[source] HubError),
    #[error("the aws engine sends these to the messages topic and queue")]
    NoBus,
}

impl ApiError {
    fn reason(&self) -> Option<&'static str> {
        match self {
            ApiError::Disabled => Some("api_disabled"),
            ApiError::BadKey => Some("bad_api_key"),
            ApiError::BodyTimeout => Some("body_timeout"),
            ApiError::BodyTooLarge => Some("body_too_large"),
            ApiError::BodyRead(_) => Some("bad_body"),
            ApiError::InvalidRequest(_) => Some("invalid_request"),
            ApiError::Routing(_) => Some("routing_failed"),
            ApiError::Hub(_) => None,
            ApiError::NoBus => Some("no_bus"),
        }
    }

    fn record(&self, metrics: &Metrics) {
        match self {
            ApiError::InvalidRequest(_) => metrics
                .notifications
                .with_label_values(&["http", "invalid"])
                .inc(),
            ApiError::Routing(e) => {
                metrics
                    .notifications
                    .with_label_values(&["http", "failed"])
                    .inc();
                tracing::warn!(error = %chain(e), "notification routing failed");
            }
            ApiError::Hub(e) => tracing::warn!(error = %chain(e), "local sockets unreachable"),
            ApiError::Disabled
            | ApiError::BadKey
            | ApiError::NoBus
            | ApiError::BodyTimeout
            | ApiError::BodyTooLarge
            | ApiError::BodyRead(_) => {}
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Disabled | ApiError::NoBus => StatusCode::NOT_FOUND,
            ApiError::BadKey => StatusCode::UNAUTHORIZED,
            ApiError::InvalidRequest(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Routing(_) | ApiError::Hub(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_body(self.status_code(), &self.to_string(), self.reason())
    }
}

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a request that lacks the API key.
fn require_key(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let Some(key) = &state.config.api_key else {
        return Err(ApiError::Disabled);
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or(Some(h)))
        .unwrap_or("");
    if constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::BadKey)
    }
}

/// Numbers this process's `/api/notify` requests.
static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// This process's part of its request ids, random: the other nodes remember
/// routed ids for their dedupe window (15 min), so ids that restarted at 0
/// with a node restarted under the same `--node-id` were dropped there as
/// duplicates.
static PROCESS_TAG: LazyLock<String> = LazyLock::new(|| {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_string()
});

/// A request id unique across the fleet and across restarts:
/// `<node id>-http-<process tag>-<n>`.
fn request_id(node_id: &str) -> String {
    format!(
        "{node_id}-http-{}-{}",
        *PROCESS_TAG,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Serialize)]
struct NotifyAccepted {
    request_id: String,
    deliveries: usize,
    mesh_messages: usize,
}

/// How long a notification request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body, read only once the key was checked: bounded in size and time,
/// so no client without the key, and none trickling bytes, holds a
/// connection.
async fn read_body(payload: web::Payload) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, payload.to_bytes_limited(MAX_NOTIFY_BYTES)).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(_limit_exceeded)) => Err(ApiError::BodyTooLarge),
        Ok(Ok(Err(e))) => Err(ApiError::BodyRead(e)),
        Ok(Ok(Ok(body))) => Ok(body),
    }
}

/// POST /api/notify; a refusal is counted and logged here, where the
/// node's metrics are at hand.
pub(super) async fn notify(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let metrics = state.metrics.clone();
    route(req, payload, state)
        .await
        .inspect_err(|e| e.record(&metrics))
}

async fn route(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state)?;
    let body = read_body(payload).await?;
    let request = NotificationRequest::parse(&body).map_err(ApiError::InvalidRequest)?;
    let request_id = request_id(&state.config.node_id);
    let outcome = state
        .engine
        .router
        .route(&request_id, request)
        .await
        .map_err(ApiError::Routing)?;
    state
        .metrics
        .notifications
        .with_label_values(&["http", "routed"])
        .inc();
    Ok(HttpResponse::Accepted().json(NotifyAccepted {
        request_id,
        deliveries: outcome.local_deliveries,
        mesh_messages: outcome.mesh_messages,
    }))
}

#[derive(Serialize)]
struct Users {
    users: Vec<String>,
}

pub(super) async fn users(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state)?;
    let users = state
        .local
        .connected_users()
        .await
        .map_err(ApiError::Hub)
        .inspect_err(|e| e.record(&state.metrics))?;
    Ok(HttpResponse::Ok().json(Users { users }))
}

/// Server-sent events of the memory engine's bus: every `publish`, `send`
/// and presence event, as `{"source","destination","user_id","timestamp","message"}`.
pub(super) async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    require_key(&req, &state)?;
    let Some(bus) = &state.engine.bus else {
        return Err(ApiError::NoBus);
    };
    let rx = bus.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        let chunk = match rx.recv().await {
            Ok(m) => format!(
                "data: {}\n\n",
                serde_json::to_string(&*m).unwrap_or_default()
            ),
            Err(RecvError::Lagged(n)) => format!("event: lagged\ndata: {n}\n\n"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, actix_web::Error>(Bytes::from(chunk)), rx))
    });
    // An initial comment so clients see the stream open at once.
    let hello = futures_util::stream::once(async { Ok(Bytes::from_static(b": sumu events\n\n")) });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(futures_util::StreamExt::chain(hello, stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_carry_the_process_tag_and_a_sequence() {
        let (a, b) = (request_id("n1"), request_id("n1"));
        assert_ne!(a, b);
        let tag = format!("n1-http-{}-", *PROCESS_TAG);
        assert!(a.starts_with(&tag) && b.starts_with(&tag), "{a} {b}");
        assert_eq!(PROCESS_TAG.len(), 12);
    }

    #[test]
    fn compares_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
