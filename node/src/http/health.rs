//! `/healthz` (the process is up), `/readyz` (it takes new sockets: the
//! balancer's health check; 503 while starting, draining or full), `/metrics` (Prometheus text).

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use super::shared::AppState;

/// The process is up.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// The node takes new sockets: false while starting and draining, while the
/// engine cannot register sockets (out of the mesh, AWS not answering), and
/// while it holds `--max-sockets` (so the balancer sends new ones elsewhere).
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.ready.load(Ordering::Acquire) || !state.engine.health.ready() {
        HttpResponse::ServiceUnavailable().body("not ready")
    } else if state.admission.full() {
        HttpResponse::ServiceUnavailable().body("full")
    } else {
        HttpResponse::Ok().body("ready")
    }
}

pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
