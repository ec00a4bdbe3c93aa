//! The HTTP control API of `tickflow serve` (axum, JSON under `/api/v1`).
//!
//! - [`routes`]: the route table every other part is built from;
//! - [`auth`]: API keys (stored hashed, compared in constant time) and roles;
//! - [`config`]: the serve configuration (TOML file + `TICKFLOW__*` environment);
//! - [`error`]: one error type, one status code each;
//! - [`openapi`], [`metrics`]: the OpenAPI document and Prometheus metrics;
//! - [`serve`]: the server loop with header-read and idle timeouts and a connection limit.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod serve;

use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tickflow_engine::supervisor::Supervisor;

use crate::auth::Keys;
use crate::error::ApiError;
use crate::metrics::ApiMetrics;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub sup: Arc<Supervisor>,
    /// Configured API keys.
    pub keys: Arc<Keys>,
    /// Prometheus registry and API counters.
    pub metrics: Arc<ApiMetrics>,
}

/// The router: every route of [`routes::routes`], behind the key check, request counting and
/// the body size limit.
pub fn router(sup: Arc<Supervisor>, keys: Keys, max_body_bytes: usize) -> Router {
    let state = AppState {
        metrics: Arc::new(ApiMetrics::new(Arc::clone(&sup))),
        sup,
        keys: Arc::new(keys),
    };
    let mut router = Router::new();
    for r in routes::routes() {
        router = router.route(r.path, (r.handler)());
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .route_layer(middleware::from_fn_with_state(state.clone(), count))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("no route {}", req.uri().path()))
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Gives every error response the one JSON shape of [`ApiError`], whichever layer made it
/// (axum's own 400, 405, 413 and 415 answers are plain text).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::from_status(status, message).into_response();
    for name in [ALLOW] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

fn matched(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string())
}

/// Checks the key against the role the route needs; puts the caller in the request.
async fn authorize(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = matched(&req);
    let method = req.method().as_str().to_string();
    let Some(spec) = routes::routes()
        .iter()
        .find(|r| r.path == path && r.method == method)
    else {
        let allowed: Vec<&str> = routes::routes()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.method)
            .collect();
        if allowed.is_empty() {
            return Err(ApiError::NotFound(format!("no route {method} {path}")));
        }
        let mut response = ApiError::from_status(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers {}, not {method}", allowed.join(", ")),
        )
        .into_response();
        if let Ok(v) = allowed.join(", ").parse() {
            response.headers_mut().insert(ALLOW, v);
        }
        return Ok(response);
    };
    let Some(needed) = spec.role else {
        return Ok(next.run(req).await);
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let refused = |why: &'static str| {
        // Never the key itself: only where the attempt came from and what it asked for.
        tracing::warn!(peer = %peer, method = %method, route = %path, why, "login refused");
        app.metrics
            .refused_logins
            .get_or_create(&vec![("reason".to_string(), why.to_string())])
            .inc();
    };
    let Some(presented) = presented else {
        refused("no_key");
        return Err(ApiError::Unauthorized(
            "an API key is required: `Authorization: Bearer <key>`".into(),
        ));
    };
    let Some(caller) = app.keys.check(presented) else {
        refused("unknown_key");
        return Err(ApiError::Unauthorized("unknown API key".into()));
    };
    if caller.role < needed {
        return Err(ApiError::Forbidden(format!(
            "{method} {path} needs role {} or higher; key `{}` has role {}",
            needed.name(),
            caller.name,
            caller.role.name()
        )));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Counts requests by route, method and status.
async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let path = matched(&req);
    let method = req.method().as_str().to_string();
    let response = next.run(req).await.into_response();
    let labels = vec![
        ("route".to_string(), path),
        ("method".to_string(), method),
        ("status".to_string(), response.status().as_u16().to_string()),
    ];
    app.metrics.requests.get_or_create(&labels).inc();
    response
}

/// The key of an `Authorization` value in the `Bearer` scheme (the scheme's name in any
/// case, as RFC 9110 says).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key)
}
