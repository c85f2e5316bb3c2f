//! The HTTP surface: the WebSocket upgrade, the backend API, health,
//! metrics and the `--dev` pages.

pub mod api;
pub mod dev;
pub mod health;
pub mod push;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::auth::dev::DevIssuer;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::engine::Engine;
use crate::registry::LocalDelivery;
use crate::session::SessionEnv;

/// What every handler shares.
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub dev: Option<Arc<DevIssuer>>,
    pub engine: Engine,
    pub local: LocalDelivery,
    pub session_env: Arc<SessionEnv>,
    pub ready: Arc<AtomicBool>,
}

/// The largest notification request body (SQS's message size limit).
pub const MAX_NOTIFY_BYTES: usize = 256 * 1024;

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

pub fn json_error(status: u16, message: &str, reason: Option<&str>) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(ErrorBody { message, reason })
}

pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    let push_path = state.config.path.clone();
    cfg.app_data(web::PayloadConfig::new(MAX_NOTIFY_BYTES))
        .route(&push_path, web::get().to(push::upgrade))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/notify", web::post().to(api::notify))
        .route("/api/users", web::get().to(api::users))
        .route("/api/events", web::get().to(api::events));
    if state.dev.is_some() {
        cfg.route("/", web::get().to(dev::demo_page))
            .route("/dev/token", web::get().to(dev::token))
            .route("/dev/config", web::get().to(dev::config));
    }
}
