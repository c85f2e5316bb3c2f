//! The HTTP surface: the WebSocket upgrade, the backend API, health,
//! metrics and the `--dev` pages. Each boundary has one error type that
//! knows its status, its stable `reason`, its metric and its log line
//! (`push::UpgradeError`, `api::ApiError`, `dev::DevError`); every refusal
//! body is `{"message", "reason"?}`, written by [`error_body`] alone.

mod api;
mod dev;
mod health;
mod push;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::auth::dev::DevIssuer;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::engine::Engine;
use crate::hub::LocalDelivery;
use crate::limits::Admission;
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
}

/// The largest notification request body (SQS's message size limit).
const MAX_NOTIFY_BYTES: usize = 256 * 1024;

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The JSON body of every refusal.
fn error_body(status: StatusCode, message: &str, reason: Option<&str>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { message, reason })
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    let push_path = state.config.path.clone();
    cfg.app_data(web::PayloadConfig::new(MAX_NOTIFY_BYTES))
        .route(&push_path, web::get().to(push::upgrade))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/notify", web::post().to(api::notify))
        .route("/api/users", web::get().to(api::users))
        .route("/api/events", web::get().to(api::events));
    dev::configure(cfg, state.dev.is_some());
}
