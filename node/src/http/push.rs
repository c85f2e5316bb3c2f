//! `GET /push`: verify the token, record the connection, then upgrade.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::AsyncContext;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;

use super::{json_error, AppState};
use crate::auth::extract_token;
use crate::engine::{now_ms, ConnectionRecord};
use crate::metrics::METRICS;
use crate::registry::{Register, SessionHandle, Unregister};
use crate::session::outbound::{Metered, Outbound};
use crate::session::registration::Registration;
use crate::session::{Arm, Session};

/// The raw descriptor of an accepted TCP connection, recorded at connect.
#[derive(Clone, Copy)]
pub struct SocketFd(pub RawFd);

#[derive(Deserialize)]
struct PushQuery {
    authorization: Option<String>,
}

fn refuse(reason: &'static str, status: u16, message: &str) -> HttpResponse {
    METRICS.auth_failures.with_label_values(&[reason]).inc();
    tracing::info!(reason, "upgrade refused");
    json_error(status, message, Some(reason))
}

pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !state.ready.load(Ordering::Acquire) {
        return json_error(503, "node is not accepting connections", Some("draining"));
    }
    let origins = &state.config.allowed_origins;
    if !origins.is_empty() {
        if let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) {
            if !origins.iter().any(|o| o == origin) {
                return refuse("origin_not_allowed", 403, "origin not allowed");
            }
        }
    }
    let query = web::Query::<PushQuery>::from_query(req.query_string()).ok();
    let header = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok());
    let query_token = query.as_ref().and_then(|q| q.authorization.as_deref());
    let Some(token) = extract_token(query_token, header) else {
        return refuse("missing_token", 401, "Unauthorized");
    };
    let claims = match state.auth.verify(token).await {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            return refuse(e.reason(), e.status(), &message);
        }
    };
    let handshake = match ws::handshake(&req) {
        Ok(h) => h,
        Err(e) => return json_error(400, &e.to_string(), Some("not_a_websocket_upgrade")),
    };

    let connection_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let user_id: Arc<str> = claims.sub.into();
    let socket = req.conn_data::<SocketFd>().map(|fd| fd.0);
    let outbound = Arc::new(Outbound::new(
        state.config.limits.outbound_buffer_bytes,
        socket,
    ));
    let session = Session::new(
        connection_id.clone(),
        user_id.clone(),
        state.session_env.clone(),
        outbound.clone(),
    );
    // The factory runs right here; it hands the address out through `slot`.
    let slot = std::rc::Rc::new(std::cell::Cell::new(None));
    let slot_in = slot.clone();
    let stream = ws::WebsocketContext::with_factory(payload, move |ctx| {
        slot_in.set(Some(ctx.address()));
        session
    });
    let Some(addr) = slot.take() else {
        return json_error(500, "session did not start", None);
    };
    let registry = state.local.registry().clone();
    let registered = registry
        .send(Register {
            connection_id: connection_id.clone(),
            user_id: user_id.clone(),
            handle: SessionHandle {
                addr: addr.clone(),
                outbound: outbound.clone(),
            },
        })
        .await;
    if !matches!(registered, Ok(Ok(()))) {
        outbound.closed();
        return json_error(503, "node is not accepting connections", Some("draining"));
    }
    let now = now_ms();
    let record = ConnectionRecord {
        user_id: user_id.to_string(),
        connection_id: connection_id.to_string(),
        node_id: state.config.node_id.clone(),
        connected_at: now,
        delete_at: now / 1000 + state.config.limits.max_connection.as_secs() + 3600,
    };
    if let Err(e) = state.engine.store.register(&record).await {
        outbound.closed();
        registry.do_send(Unregister {
            connection_id: connection_id.clone(),
        });
        METRICS.errors.with_label_values(&["register"]).inc();
        tracing::warn!(error = %e, "connection could not be recorded; refused");
        return json_error(
            503,
            "connection could not be registered, retry",
            Some("register_failed"),
        );
    }
    addr.do_send(Arm(Registration {
        connection_id: connection_id.clone(),
        user_id: user_id.clone(),
        registry,
        store: state.engine.store.clone(),
    }));
    tracing::debug!(%connection_id, %user_id, "socket open");
    let mut response = handshake;
    response.streaming(Metered::new(Box::pin(stream), outbound))
}
