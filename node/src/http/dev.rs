//! `--dev` only: the token issuer and the demo page.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{json_error, AppState};
use crate::auth::dev::DEV_TOKEN_TTL_SECS;

#[derive(Deserialize)]
pub struct TokenQuery {
    sub: Option<String>,
}

#[derive(Serialize)]
struct TokenBody {
    token: String,
    user_id: String,
    expires_in: u64,
}

pub async fn token(q: web::Query<TokenQuery>, state: web::Data<AppState>) -> HttpResponse {
    let Some(dev) = &state.dev else {
        return json_error(404, "not in --dev mode", None);
    };
    let sub = q.sub.as_deref().map(str::trim).unwrap_or("");
    if sub.is_empty() || sub.len() > 128 {
        return json_error(400, "give ?sub=NAME (1 to 128 characters)", None);
    }
    match dev.issue(sub) {
        Ok(token) => HttpResponse::Ok().json(TokenBody {
            token,
            user_id: sub.to_string(),
            expires_in: DEV_TOKEN_TTL_SECS,
        }),
        Err(e) => json_error(500, &e.to_string(), None),
    }
}

#[derive(Serialize)]
struct DevConfig<'a> {
    path: &'a str,
    api_key: Option<&'a str>,
}

/// What the demo page needs to talk to this node.
pub async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(DevConfig {
        path: &state.config.path,
        api_key: state.config.api_key.as_deref(),
    })
}

pub async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("demo.html"))
}
