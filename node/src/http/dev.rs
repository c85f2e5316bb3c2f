//! `--dev` only: the token issuer and the demo page. A refusal is a
//! [`DevError`].

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use super::{error_body, AppState};
use crate::auth::dev::DEV_TOKEN_TTL_SECS;
use crate::logging::chain;

/// Why a dev request was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum DevError {
    #[error("not in --dev mode")]
    NotDev,
    #[error("give ?sub=NAME (1 to 128 characters)")]
    BadSubject,
    #[error("token not signed")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

impl ResponseError for DevError {
    fn status_code(&self) -> StatusCode {
        match self {
            DevError::NotDev => StatusCode::NOT_FOUND,
            DevError::BadSubject => StatusCode::BAD_REQUEST,
            DevError::Sign(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let DevError::Sign(e) = self {
            tracing::warn!(error = %chain(e), "dev token not signed");
        }
        error_body(self.status_code(), &self.to_string(), None)
    }
}

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    sub: Option<String>,
}

#[derive(Serialize)]
struct TokenBody {
    token: String,
    user_id: String,
    expires_in: u64,
}

pub(super) async fn token(
    q: web::Query<TokenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, DevError> {
    let dev = state.dev.as_ref().ok_or(DevError::NotDev)?;
    let sub = q.sub.as_deref().map(str::trim).unwrap_or("");
    if sub.is_empty() || sub.len() > 128 {
        return Err(DevError::BadSubject);
    }
    let token = dev.issue(sub).map_err(DevError::Sign)?;
    Ok(HttpResponse::Ok().json(TokenBody {
        token,
        user_id: sub.to_string(),
        expires_in: DEV_TOKEN_TTL_SECS,
    }))
}

#[derive(Serialize)]
struct DevConfig<'a> {
    path: &'a str,
    api_key: Option<&'a str>,
}

/// What the demo page needs to talk to this node.
pub(super) async fn config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(DevConfig {
        path: &state.config.path,
        api_key: state.config.api_key.as_deref(),
    })
}

pub(super) async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("demo.html"))
}
