//! The token issuer and the demo page (`--dev` only), and the browser client
//! `/sumu.js` (every mode). The page's files live in `node/static/` and are
//! embedded in the binary: what the repository holds is what the node serves.
//! A refusal is a [`DevError`].

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

use super::shared::{error_body, AppState};
use crate::auth::dev::DEV_TOKEN_TTL_SECS;
use crate::config::DEV_API_KEY;
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
struct TokenQuery {
    sub: Option<String>,
}

#[derive(Serialize)]
struct TokenBody {
    token: String,
    user_id: String,
    expires_in: u64,
}

async fn token(
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
    /// Only the built-in dev key is ever shown: an operator's `--api-key`
    /// stays secret even with `--dev`.
    api_key: Option<&'a str>,
    /// SUMU's demo backend runs in this node (`--demo-backend`).
    demo_backend: bool,
}

/// What the demo page needs to talk to this node.
async fn config(state: web::Data<AppState>) -> HttpResponse {
    let api_key = state
        .config
        .api_key
        .as_deref()
        .filter(|k| *k == DEV_API_KEY);
    HttpResponse::Ok().json(DevConfig {
        path: &state.config.path,
        api_key,
        demo_backend: state.config.demo_backend,
    })
}

/// Registers this module's routes: `/sumu.js` always (apps load the client
/// from the node they connect to), the demo page and the token issuer only
/// with `--dev`.
pub(super) fn configure(cfg: &mut web::ServiceConfig, dev: bool) {
    cfg.route("/sumu.js", web::get().to(sumu_js));
    if dev {
        cfg.route("/", web::get().to(demo_page))
            .route("/app.js", web::get().to(app_js))
            .route("/style.css", web::get().to(style_css))
            .route("/dev/token", web::get().to(token))
            .route("/dev/config", web::get().to(config));
    }
}

const SUMU_JS: &str = include_str!("../../static/sumu.js");
const APP_JS: &str = include_str!("../../static/app.js");
const STYLE_CSS: &str = include_str!("../../static/style.css");
const INDEX_HTML: &str = include_str!("../../static/index.html");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Revalidated on every load, so a rebuilt node never serves a stale client.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// The browser client, an ES module.
async fn sumu_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SUMU_JS)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// The demo page. Its CSP allows only this origin's scripts and styles and
/// WebSocket/fetch to any host (a pasted wss URL may point elsewhere).
async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
             style-src 'self'; script-src 'self'; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ))
        .body(INDEX_HTML)
}
