//! The HTTP surface: the WebSocket upgrade, the backend API, health,
//! metrics and the `--dev` pages. Each boundary has one error type that
//! knows its status, its stable `reason`, its metric and its log line
//! (`push::UpgradeError`, `api::ApiError`, `dev::DevError`); every refusal
//! body is `{"message", "reason"?}`, written by `shared::error_body` alone.
//! The handlers import what they share from `shared`, never from this
//! file, which only wires them (imports point one way: here → handlers →
//! shared).

mod api;
mod dev;
mod health;
mod push;
mod shared;

use actix_web::web;

pub(crate) use shared::AppState;

pub(crate) fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    let push_path = state.config.path.clone();
    cfg.app_data(web::PayloadConfig::new(api::MAX_NOTIFY_BYTES))
        .route(&push_path, web::get().to(push::upgrade))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/notify", web::post().to(api::notify))
        .route("/api/users", web::get().to(api::users))
        .route("/api/events", web::get().to(api::events));
    dev::configure(cfg, state.dev.is_some());
}
