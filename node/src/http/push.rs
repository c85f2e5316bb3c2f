//! `GET /push`: admit the socket (node maximum, client address), verify
//! the token, admit it for its user, register it (hub, then the engine's
//! store, both before the 101), then upgrade. A refusal is an
//! [`UpgradeError`]: HTTP status + `{"message","reason"}`, no socket.
//! The admission [`Permit`] travels with the socket's body stream, so the
//! counts go back when the connection ends (or the upgrade is refused).
//!
//! The socket's [`Registration`] guard exists before anything is
//! registered, so an upgrade abandoned half-way (the client reset the
//! connection) unregisters whatever it had registered.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix::{Actor, AsyncContext};
use actix_http::KillSwitch;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use actix_web_actors::ws;
use futures_util::Stream;

use super::shared::{error_body, AppState};
use crate::auth::{token_from_request, AuthError};
use crate::clock::now_ms;
use crate::engine::{ConnectionRecord, EngineError};
use crate::hub::{HubError, Register};
use crate::limits::{Permit, Refusal};
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::outbound::{Metered, Outbound};
use crate::session::{Arm, Begin, Registration, Resumer, Session};

/// Why an upgrade was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpgradeError {
    #[error("node is not accepting connections")]
    NotReady,
    #[error("node is rejoining the cluster, retry")]
    OutOfMesh,
    #[error("origin not allowed")]
    Origin,
    #[error(transparent)]
    Limited(Refusal),
    #[error(transparent)]
    Auth(AuthError),
    #[error("{0}")]
    NotWebSocket(ws::HandshakeError),
    #[error("session did not start")]
    SessionDidNotStart,
    #[error("node is not accepting connections")]
    Hub(#[source] HubError),
    #[error("connection could not be registered, retry")]
    RegisterFailed(#[source] EngineError),
}

impl UpgradeError {
    /// The stable `reason` of the body (and of the auth-failure metric).
    fn reason(&self) -> Option<&'static str> {
        match self {
            UpgradeError::NotReady | UpgradeError::Hub(_) => Some("draining"),
            UpgradeError::OutOfMesh => Some("rejoining"),
            UpgradeError::Origin => Some("origin_not_allowed"),
            UpgradeError::Limited(r) => Some(r.reason()),
            UpgradeError::Auth(e) => Some(e.reason()),
            UpgradeError::NotWebSocket(_) => Some("not_a_websocket_upgrade"),
            UpgradeError::SessionDidNotStart => None,
            UpgradeError::RegisterFailed(_) => Some("register_failed"),
        }
    }

    /// The body's `message`. A missing token says only "Unauthorized", as
    /// API Gateway does.
    fn message(&self) -> String {
        match self {
            UpgradeError::Auth(AuthError::Missing) => "Unauthorized".to_string(),
            other => other.to_string(),
        }
    }

    /// Counts and logs the refusal: client errors as information, ours as
    /// warnings with their causes.
    fn record(&self, metrics: &Metrics) {
        match self {
            UpgradeError::Origin | UpgradeError::Auth(_) => {
                let reason = self.reason().unwrap_or_default();
                metrics.auth_failures.with_label_values(&[reason]).inc();
                tracing::info!(reason, "upgrade refused");
            }
            UpgradeError::Limited(r) => {
                metrics.limited.with_label_values(&[r.reason()]).inc();
                tracing::info!(reason = r.reason(), "upgrade refused");
            }
            UpgradeError::RegisterFailed(e) => {
                metrics.errors.with_label_values(&["register"]).inc();
                tracing::warn!(error = %chain(e), "connection could not be recorded; refused");
            }
            UpgradeError::Hub(e) => tracing::info!(error = %chain(e), "upgrade refused"),
            UpgradeError::SessionDidNotStart => tracing::warn!("session did not start"),
            UpgradeError::NotReady | UpgradeError::OutOfMesh | UpgradeError::NotWebSocket(_) => {}
        }
    }
}

impl ResponseError for UpgradeError {
    fn status_code(&self) -> StatusCode {
        match self {
            UpgradeError::NotReady
            | UpgradeError::OutOfMesh
            | UpgradeError::Hub(_)
            | UpgradeError::RegisterFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpgradeError::Origin => StatusCode::FORBIDDEN,
            // 503 sends the balancer elsewhere; 429 says this client is over.
            UpgradeError::Limited(Refusal::NodeFull) => StatusCode::SERVICE_UNAVAILABLE,
            UpgradeError::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
            UpgradeError::Auth(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            UpgradeError::NotWebSocket(_) => StatusCode::BAD_REQUEST,
            UpgradeError::SessionDidNotStart => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        error_body(self.status_code(), &self.message(), self.reason())
    }
}

/// The WebSocket upgrade; a refusal is counted and logged here, where the
/// node's metrics are at hand.
pub(super) async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UpgradeError> {
    let metrics = state.metrics.clone();
    open(req, payload, state)
        .await
        .inspect_err(|e| e.record(&metrics))
}

async fn open(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UpgradeError> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(UpgradeError::NotReady);
    }
    if !state.engine.health.in_mesh() {
        return Err(UpgradeError::OutOfMesh);
    }
    let mut permit = state.admission.open().map_err(UpgradeError::Limited)?;
    let client = client_ip(&req);
    if let Some(ip) = client {
        permit
            .address(ip, Instant::now())
            .map_err(UpgradeError::Limited)?;
    }
    let origins = &state.config.allowed_origins;
    if !origins.is_empty() {
        if let Some(origin) = req.headers().get("origin").and_then(|o| o.to_str().ok()) {
            if !origins.iter().any(|o| o == origin) {
                return Err(UpgradeError::Origin);
            }
        }
    }
    let header = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok());
    let token = token_from_request(req.query_string(), header).map_err(UpgradeError::Auth)?;
    let resume = sumu_shared::recovery::ResumeRequest::from_query(req.query_string());
    let claims = state
        .auth
        .verify(&token)
        .await
        .map_err(UpgradeError::Auth)?;
    let mut response = ws::handshake(&req).map_err(UpgradeError::NotWebSocket)?;

    let connection_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let user_id: Arc<str> = claims.sub.into();
    permit.user(&user_id).map_err(UpgradeError::Limited)?;
    // The connection's own kill switch (set at connect): cutting this
    // socket off can only ever end this connection.
    let switch = req.conn_data::<KillSwitch>().cloned();
    let outbound = Arc::new(Outbound::new(
        state.config.limits.outbound_buffer_bytes,
        switch,
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
        return Err(UpgradeError::SessionDidNotStart);
    };
    // A socket that opted into recovery is delivered to through its
    // `Resumer`, which puts finished frames into the socket's queue; a
    // plain one has the hub's frames put there directly.
    let resumer = resume.map(|r| {
        Resumer::new(
            user_id.clone(),
            r.since,
            outbound.clone(),
            state.recovery.clone(),
        )
        .start()
    });
    // From here on, dropping `registration` (an error, or this request
    // abandoned at an await) undoes what was registered.
    let mut registration = Registration::new(
        connection_id.clone(),
        user_id.clone(),
        state.local.clone(),
        state.engine.store.clone(),
    );
    let registered = state
        .local
        .register(Register {
            connection_id: connection_id.clone(),
            user_id: user_id.clone(),
            outbound: outbound.clone(),
            resumer: resumer.as_ref().map(|r| r.clone().recipient()),
        })
        .await;
    if let Err(e) = registered {
        return Err(UpgradeError::Hub(e));
    }
    let now = now_ms();
    let record = ConnectionRecord {
        user_id: user_id.to_string(),
        connection_id: connection_id.to_string(),
        node_id: state.config.node_id.clone(),
        connected_at: now,
        delete_at: now / 1000 + state.config.limits.max_connection.as_secs() + 3600,
    };
    // A write that times out goes on; the registration deletes its row once
    // it answered (a refused socket leaves no row).
    let stored = registration
        .store(record, state.config.aws.register_timeout)
        .await;
    if let Err(e) = stored {
        // The balancer should send new clients elsewhere until AWS answers.
        state.engine.health.store_failed();
        return Err(UpgradeError::RegisterFailed(e));
    }
    addr.do_send(Arm(registration));
    // Registered in the hub and the store: what is recorded from now on
    // reaches the socket live, so the history can be read.
    if let Some(resumer) = resumer {
        resumer.do_send(Begin);
    }
    tracing::debug!(%connection_id, %user_id, client = ?client, "socket open");
    Ok(response.streaming(Admitted {
        stream: Metered::new(Box::pin(stream), outbound),
        _permit: permit,
    }))
}

/// The client's address: the TCP peer, or with `--proxy-protocol` the
/// source its PROXY v2 header named.
fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// A socket's body stream with its admission permit: actix drops the body
/// when the connection ends, and the permit gives the counts back then.
struct Admitted<S> {
    stream: S,
    _permit: Permit,
}

impl<S: Stream + Unpin> Stream for Admitted<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.get_mut().stream).poll_next(cx)
    }
}
