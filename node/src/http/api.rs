//! The backend API: `POST /api/notify`, `GET /api/users`, `GET /api/events`.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Serialize;
use sumu_shared::NotificationRequest;

use super::{json_error, AppState};
use crate::metrics::METRICS;

/// Compares without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal, if the request lacks the API key.
fn refuse_without_key(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    let Some(key) = &state.config.api_key else {
        return Some(json_error(
            404,
            "the HTTP API is off: start the node with --api-key",
            Some("api_disabled"),
        ));
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or(Some(h)))
        .unwrap_or("");
    if constant_time_eq(given.trim().as_bytes(), key.as_bytes()) {
        None
    } else {
        Some(json_error(
            401,
            "missing or wrong API key",
            Some("bad_api_key"),
        ))
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize)]
struct NotifyAccepted {
    request_id: String,
    deliveries: usize,
    mesh_messages: usize,
}

pub async fn notify(req: HttpRequest, body: Bytes, state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = refuse_without_key(&req, &state) {
        return r;
    }
    let request = match NotificationRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            METRICS
                .notifications
                .with_label_values(&["http", "invalid"])
                .inc();
            return json_error(400, &e.to_string(), Some("invalid_request"));
        }
    };
    let request_id = format!(
        "{}-http-{}",
        state.config.node_id,
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    match state.engine.router.route(&request_id, request).await {
        Ok(outcome) => {
            METRICS
                .notifications
                .with_label_values(&["http", "routed"])
                .inc();
            HttpResponse::Accepted().json(NotifyAccepted {
                request_id,
                deliveries: outcome.local_deliveries,
                mesh_messages: outcome.mesh_messages,
            })
        }
        Err(e) => {
            METRICS
                .notifications
                .with_label_values(&["http", "failed"])
                .inc();
            tracing::warn!(error = %e, "notification routing failed");
            json_error(503, &e.to_string(), Some("routing_failed"))
        }
    }
}

#[derive(Serialize)]
struct Users {
    users: Vec<String>,
}

pub async fn users(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = refuse_without_key(&req, &state) {
        return r;
    }
    match state.local.connected_users().await {
        Ok(users) => HttpResponse::Ok().json(Users { users }),
        Err(e) => json_error(503, &e.to_string(), None),
    }
}

/// Server-sent events of the memory engine's bus: every `publish`, `send`
/// and presence event, as `{"source","destination","user_id","timestamp","message"}`.
pub async fn events(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(r) = refuse_without_key(&req, &state) {
        return r;
    }
    let Some(bus) = &state.engine.bus else {
        return json_error(
            404,
            "the aws engine sends these to the messages topic and queue",
            Some("no_bus"),
        );
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
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(futures_util::StreamExt::chain(hello, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
