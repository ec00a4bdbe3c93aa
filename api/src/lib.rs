//! The HTTP control API of `tickflow serve` (axum, JSON under `/api/v1`).
//!
//! - [`routes`]: the route table every other part is built from;
//! - [`auth`]: API keys (stored hashed, compared in constant time) and roles;
//! - [`config`]: the serve configuration (TOML file + `TICKFLOW__*` environment);
//! - [`error`]: one error type, one status code each;
//! - [`openapi`], [`metrics`]: the OpenAPI document and Prometheus metrics.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
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
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
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
        return Err(ApiError::NotFound(format!("no route {method} {path}")));
    };
    let Some(needed) = spec.role else {
        return Ok(next.run(req).await);
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(presented) = presented else {
        return Err(ApiError::Unauthorized(
            "an API key is required: `Authorization: Bearer <key>`".into(),
        ));
    };
    let Some(caller) = app.keys.check(presented) else {
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

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}
