//! What every HTTP handler shares: the node's state ([`AppState`]) and the
//! one JSON body of a refusal ([`error_body`]). A leaf of `http`: the
//! handlers import it, it imports none of them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

use crate::auth::dev::DevIssuer;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::engine::Engine;
use crate::hub::LocalDelivery;
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::session::{RecoveryEnv, SessionEnv};

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) dev: Option<Arc<DevIssuer>>,
    pub(crate) engine: Engine,
    pub(crate) local: LocalDelivery,
    pub(crate) session_env: Arc<SessionEnv>,
    /// What the recovering sockets share (history, limits).
    pub(crate) recovery: Arc<RecoveryEnv>,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) admission: Arc<Admission>,
    /// The node's metrics (`/metrics` renders them).
    pub(crate) metrics: Arc<Metrics>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The JSON body of every refusal.
pub(super) fn error_body(status: StatusCode, message: &str, reason: Option<&str>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { message, reason })
}
