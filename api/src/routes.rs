//! Every route in one table ([`routes`]): method, path, the role it needs, what it does, and
//! its handler. The router, the auth check, the OpenAPI document and the auth tests are all
//! built from this table, so none can drift from the others.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tickflow_engine::control::Command;
use tickflow_engine::supervisor::{BacktestInput, LoggedEvent};
use tickflow_engine::{compile_confined, EngineError};

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::AppState;

/// One route.
#[derive(Clone, Copy)]
pub struct RouteSpec {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path with `{param}` placeholders.
    pub path: &'static str,
    /// The weakest role allowed; `None` for open routes (health).
    pub role: Option<Role>,
    /// What it does (OpenAPI summary).
    pub summary: &'static str,
    /// JSON Schema of the JSON request body, if it takes one.
    pub body: Option<fn() -> Value>,
    /// Whether the body is TOML text.
    pub toml_body: bool,
    /// The success statuses it answers with.
    pub success: &'static [u16],
    /// Its query parameters.
    pub query: &'static [QueryParam],
    /// The handler.
    pub handler: fn() -> MethodRouter<AppState>,
}

/// A query parameter, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Name.
    pub name: &'static str,
    /// JSON Schema type: `integer` or `string`.
    pub kind: &'static str,
    /// String format (`date-time`) or "".
    pub format: &'static str,
    /// What it does.
    pub description: &'static str,
}

const REASON: QueryParam = QueryParam {
    name: "reason",
    kind: "string",
    format: "",
    description: "Why (recorded on the event)",
};

impl RouteSpec {
    /// Whether it changes anything.
    pub fn is_mutating(&self) -> bool {
        self.method != "GET"
    }
}

fn schema<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null)
}

/// Every route of the API.
pub fn routes() -> &'static [RouteSpec] {
    use Role::{Operator, Viewer};
    const fn r(
        method: &'static str,
        path: &'static str,
        role: Option<Role>,
        summary: &'static str,
        handler: fn() -> MethodRouter<AppState>,
    ) -> RouteSpec {
        RouteSpec {
            method,
            path,
            role,
            summary,
            body: None,
            toml_body: false,
            success: &[200],
            query: &[],
            handler,
        }
    }
    static ROUTES: std::sync::OnceLock<Vec<RouteSpec>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| {
        vec![
            r("GET", "/health/live", None, "The process is up", || {
                get(health_live)
            }),
            r(
                "GET",
                "/health/ready",
                None,
                "Replay is done and every deployment that should run has started",
                || get(health_ready),
            ),
            r(
                "GET",
                "/metrics",
                Some(Viewer),
                "Prometheus metrics (text format)",
                || get(crate::metrics::render),
            ),
            r(
                "GET",
                "/api/v1/openapi.json",
                Some(Viewer),
                "This document",
                || get(crate::openapi::document),
            ),
            RouteSpec {
                toml_body: true,
                success: &[200, 201],
                query: &[REASON],
                ..r(
                    "POST",
                    "/api/v1/graphs",
                    Some(Operator),
                    "Submit a graph version (TOML body); 422 lists every validation error",
                    || post(submit_graph),
                )
            },
            r(
                "GET",
                "/api/v1/graphs",
                Some(Viewer),
                "Graphs and their versions",
                || get(list_graphs),
            ),
            r(
                "GET",
                "/api/v1/graphs/{name}/versions",
                Some(Viewer),
                "Versions of a graph",
                || get(graph_versions),
            ),
            r(
                "GET",
                "/api/v1/graphs/{name}/versions/{version}",
                Some(Viewer),
                "One version: TOML, sha256, compiled plan",
                || get(graph_version),
            ),
            RouteSpec {
                body: Some(schema::<DeployRequest>),
                success: &[200, 201],
                query: &[DRY_RUN],
                ..r(
                    "POST",
                    "/api/v1/deployments",
                    Some(Operator),
                    "Deploy a graph version (replaces the graph's active deployment)",
                    || post(deploy),
                )
            },
            r(
                "GET",
                "/api/v1/deployments/{id}/diff",
                Some(Viewer),
                "A shadow deployment's keyed diff against the deployment it shadows: \
                 matched, differing (which fields), only in one, with samples, through the \
                 event time both have finished",
                || get(shadow_diff),
            ),
            RouteSpec {
                body: Some(schema::<BacktestRequest>),
                ..r(
                    "POST",
                    "/api/v1/backtests",
                    Some(Operator),
                    "Backtest: run two submitted versions of a graph on a recorded file in the \
                     read roots and return the keyed diff of their outputs (nothing is \
                     appended; one at a time, bounded in input size and time)",
                    || post(run_backtest),
                )
            },
            r(
                "GET",
                "/api/v1/deployments",
                Some(Viewer),
                "Every deployment",
                || get(list_deployments),
            ),
            r(
                "GET",
                "/api/v1/deployments/{id}",
                Some(Viewer),
                "A deployment: state, per-node counters, watermark, last checkpoint",
                || get(show_deployment),
            ),
            action(
                "/api/v1/deployments/{id}/pause",
                "Pause: sources stop reading",
                || post(pause),
            ),
            action(
                "/api/v1/deployments/{id}/resume",
                "Resume a paused deployment",
                || post(resume),
            ),
            action(
                "/api/v1/deployments/{id}/stop",
                "Stop for good (its checkpoint stays for later versions)",
                || post(stop),
            ),
            action(
                "/api/v1/deployments/{id}/rollback",
                "Stop and redeploy the previous deployed version of the graph (a canary: abort \
                 its rollout, the current version takes back every key)",
                || post(rollback),
            ),
            action(
                "/api/v1/deployments/{id}/rollout/pause",
                "Hold a canary rollout at its step (the deployment keeps running)",
                || post(pause_rollout),
            ),
            action(
                "/api/v1/deployments/{id}/rollout/resume",
                "Let a held canary rollout go on (its step's time starts again)",
                || post(resume_rollout),
            ),
            RouteSpec {
                query: &[QueryParam {
                    name: "key",
                    kind: "string",
                    format: "",
                    description: "The key whose latest record to return; without it, the keys",
                }],
                ..r(
                    "GET",
                    "/api/v1/deployments/{id}/views/{sink}",
                    Some(Viewer),
                    "A projection sink's latest record for ?key=, or its keys",
                    || get(view),
                )
            },
            RouteSpec {
                query: &[
                    QueryParam {
                        name: "after",
                        kind: "integer",
                        format: "",
                        description: "Events with a sequence number after this one",
                    },
                    QueryParam {
                        name: "limit",
                        kind: "integer",
                        format: "",
                        description: "At most this many (1 to 10000, default 100)",
                    },
                ],
                ..r(
                    "GET",
                    "/api/v1/events",
                    Some(Viewer),
                    "The audit trail: events after ?after=SEQ, at most ?limit=N",
                    || get(events),
                )
            },
            RouteSpec {
                query: &[QueryParam {
                    name: "at",
                    kind: "string",
                    format: "date-time",
                    description: "The control state as it was at this RFC 3339 time",
                }],
                ..r(
                    "GET",
                    "/api/v1/state",
                    Some(Viewer),
                    "The control state, now or as it was ?at=RFC3339",
                    || get(state),
                )
            },
        ]
    })
}

/// A deployment action: operator role, `{"reason"}` body.
fn action(
    path: &'static str,
    summary: &'static str,
    handler: fn() -> MethodRouter<AppState>,
) -> RouteSpec {
    RouteSpec {
        method: "POST",
        path,
        role: Some(Role::Operator),
        summary,
        body: Some(schema::<ActionRequest>),
        toml_body: false,
        success: &[200],
        query: &[],
        handler,
    }
}

/// `POST /api/v1/deployments`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Graph name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub graph: String,
    /// Graph version.
    #[schemars(range(min = 1))]
    pub version: i64,
    /// Why (recorded on the events).
    #[serde(default)]
    #[schemars(regex(pattern = TEXT_PATTERN), length(max = 2000))]
    pub reason: Option<String>,
    /// Deploy even if the state plan drops state (a changed or removed stateful operator or
    /// sink); without it such a deploy is refused (409), naming each part's fate.
    #[serde(default)]
    pub allow_state_loss: bool,
    /// `replace` (the default: the version replaces the graph's active deployment) or
    /// `shadow` (it runs beside it on the same input, its outputs redirected; see
    /// `GET /deployments/{id}/diff`) or `canary` (both versions run in one dataflow on the
    /// same input and the new one takes over the production outputs key share by key share,
    /// each step checked; see `canary`) or `blue_green` (a canary of one step: every key at
    /// once after a smoke period of one step length, promoted after another).
    #[serde(default)]
    pub strategy: tickflow_engine::control::Strategy,
    /// With `"strategy": "canary"` or `"blue_green"`: steps (a blue-green's one step is 100),
    /// step length and checks; each one not given here comes from the new version's
    /// `[rollout]` table, then the defaults (10, 25, 50, 100 % of keys, 60 s a step, rates no
    /// worse than the current version's plus 0.01).
    #[serde(default)]
    pub canary: Option<tickflow_engine::control::CanarySettings>,
    /// With `"strategy": "shadow"`: `{"max_divergence": 0.01}` records a
    /// `shadow_threshold_crossed` event once a sink's keyed diff crosses it.
    #[serde(default)]
    pub shadow: Option<tickflow_engine::control::ShadowConfig>,
}

/// `POST /api/v1/backtests`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// Graph name.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub graph: String,
    /// The current version.
    #[schemars(range(min = 1))]
    pub old_version: i64,
    /// The new version.
    #[schemars(range(min = 1))]
    pub new_version: i64,
    /// The recorded input: a file in the server's read roots (relative paths are looked up
    /// in each). Give this or `kafka`.
    #[serde(default)]
    #[schemars(regex(pattern = TEXT_PATTERN), length(min = 1, max = 4096))]
    pub input: Option<String>,
    /// Instead of `input`: offset ranges of the topic the old version's Kafka source reads,
    /// partition -> `[from, to]` (`to` exclusive), such as `{"0": [100, 200]}`; the records
    /// are read in Kafka timestamp order, at most `backtest_max_input_bytes`.
    #[serde(default)]
    pub kafka: Option<std::collections::BTreeMap<i32, [i64; 2]>>,
    /// Differences returned as samples per kind and sink (at most 100).
    #[serde(default = "five")]
    #[schemars(range(max = 100))]
    pub samples: usize,
}

fn five() -> usize {
    5
}

/// Query of `POST /api/v1/deployments`.
#[derive(Debug, Deserialize)]
pub struct DeployQuery {
    /// Only say what the deploy would do (its events, with the state plan): nothing is
    /// appended.
    #[serde(default)]
    pub dry_run: bool,
}

const DRY_RUN: QueryParam = QueryParam {
    name: "dry_run",
    kind: "boolean",
    format: "",
    description: "Only say what the deploy would do (its events and state plan); nothing is \
                  appended",
};

/// Free text as the engine takes it: no control characters (U+0000-U+001F, U+007F-U+009F).
const TEXT_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";

/// A reason: free text with at least one character that is not white space.
const REASON_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// `POST /api/v1/deployments/{id}/pause|resume|stop|rollback`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Why (required; recorded on the event).
    #[schemars(regex(pattern = REASON_PATTERN), length(min = 1, max = 2000))]
    pub reason: String,
}

#[derive(Debug, Deserialize)]
struct ReasonQuery {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct AtQuery {
    at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn health_live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

async fn health_ready(State(app): State<AppState>) -> Response {
    let sup = Arc::clone(&app.sup);
    let ready = blocking(move || Ok(sup.is_ready())).await.unwrap_or(false);
    if ready {
        // Ready to serve; deployments that failed are listed (their dataflows are stopped).
        let failed: Vec<u64> = app
            .sup
            .state()
            .deployments
            .values()
            .filter(|d| d.state == tickflow_engine::control::DeploymentState::Failed)
            .map(|d| d.id)
            .collect();
        Json(json!({"status": "ready", "failed_deployments": failed})).into_response()
    } else {
        ApiError::Unavailable("replaying or starting deployments".into()).into_response()
    }
}

async fn submit_graph(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ReasonQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::invalid("the graph must be UTF-8 TOML text"))?;
    blocking(move || {
        let plan =
            compile_confined(&text, "request body", app.sup.policy()).map_err(|e| match e {
                EngineError::Invalid(errors) => ApiError::Unprocessable {
                    message: format!("{} error(s) in graph", errors.len()),
                    details: errors
                        .iter()
                        .map(|e| {
                            json!({"line": e.line, "path": e.path, "message": e.message,
                               "text": e.to_string()})
                        })
                        .collect(),
                },
                other => ApiError::invalid(other.to_string()),
            })?;
        let sha256 = crate::auth::sha256_hex(&text);
        let command = Command::Submit {
            name: plan.name.clone(),
            version: plan.version,
            sha256,
            toml: text,
            state_fingerprint: plan.state_fingerprint(),
            plan: plan.describe(),
        };
        let appended = app.sup.execute(&command, &caller.name, q.reason)?;
        let state = app.sup.state();
        let version = state
            .graph_version(&plan.name, plan.version)
            .ok_or_else(|| ApiError::Internal("submitted version missing".into()))?;
        let status = if appended.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let warnings: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
        Ok((
            status,
            Json(json!({"graph": version, "warnings": warnings, "events": appended})),
        ))
    })
    .await
}

async fn list_graphs(State(app): State<AppState>) -> Json<Value> {
    let state = app.sup.state();
    let graphs: Vec<Value> = state
        .graphs
        .iter()
        .map(|(name, versions)| {
            json!({
                "name": name,
                "versions": versions.keys().collect::<Vec<_>>(),
                "latest": versions.keys().next_back(),
            })
        })
        .collect();
    Json(json!({ "graphs": graphs }))
}

async fn graph_versions(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let state = app.sup.state();
    let versions = state
        .graphs
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("graph `{name}` does not exist")))?;
    let list: Vec<Value> = versions
        .values()
        .map(|v| {
            json!({
                "version": v.version, "sha256": v.sha256,
                "submitted_by": v.submitted_by, "submitted_at": v.submitted_at,
            })
        })
        .collect();
    Ok(Json(json!({ "name": name, "versions": list })))
}

async fn graph_version(
    State(app): State<AppState>,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let state = app.sup.state();
    let v = state
        .graph_version(&name, version)
        .ok_or_else(|| ApiError::NotFound(format!("graph `{name}` has no version {version}")))?;
    Ok(Json(json!(v)))
}

async fn deploy(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<DeployQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: DeployRequest = json_body(&body)?;
    let command = Command::Deploy {
        graph: req.graph,
        version: req.version,
        allow_state_loss: req.allow_state_loss,
        strategy: req.strategy,
        canary: req.canary,
        shadow: req.shadow,
    };
    if q.dry_run {
        let events = blocking(move || Ok(app.sup.dry_run(&command)?)).await?;
        return Ok((
            StatusCode::OK,
            Json(json!({"dry_run": true, "events": events})),
        ));
    }
    let appended =
        blocking(move || Ok(app.sup.execute(&command, &caller.name, req.reason)?)).await?;
    let id = appended.iter().rev().find_map(|e| match e.event.kind {
        tickflow_state::events::EventKind::DeploymentRequested { id, .. } => Some(id),
        _ => None,
    });
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "events": appended})),
    ))
}

async fn shadow_diff(
    State(app): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let report = blocking(move || Ok(app.sup.shadow_diff(id, 5)?)).await?;
    Ok(Json(json!(report)))
}

async fn run_backtest(State(app): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: BacktestRequest = json_body(&body)?;
    if req.samples > 100 {
        return Err(ApiError::invalid("samples: at most 100".to_string()));
    }
    let input = match (req.input, req.kafka) {
        (Some(file), None) => BacktestInput::File(file),
        (None, Some(ranges)) => {
            let spec: Vec<String> = ranges
                .iter()
                .map(|(p, [from, to])| format!("{p}:{from}-{to}"))
                .collect();
            let ranges = tickflow_engine::diff::parse_kafka_range(&spec.join(","))
                .map_err(|e| ApiError::invalid(format!("kafka: {e}")))?;
            BacktestInput::Kafka(ranges)
        }
        _ => {
            return Err(ApiError::invalid(
                "give `input` or `kafka`, not both".to_string(),
            ))
        }
    };
    let report = blocking(move || {
        Ok(app.sup.backtest(
            &req.graph,
            (req.old_version, req.new_version),
            &input,
            req.samples,
        )?)
    })
    .await?;
    Ok(Json(json!(report)))
}

async fn list_deployments(State(app): State<AppState>) -> Json<Value> {
    let state = app.sup.state();
    Json(json!({ "deployments": state.deployments.values().collect::<Vec<_>>() }))
}

async fn show_deployment(
    State(app): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let sup = Arc::clone(&app.sup);
    let status = blocking(move || {
        sup.deployment(id)
            .ok_or_else(|| ApiError::NotFound(format!("deployment {id} does not exist")))
    })
    .await?;
    Ok(Json(json!(status)))
}

async fn act(
    app: AppState,
    caller: Caller,
    body: Bytes,
    command: Command,
) -> Result<Json<Value>, ApiError> {
    let req: ActionRequest = json_body(&body)?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::invalid("reason must not be empty"));
    }
    let appended: Vec<LoggedEvent> =
        blocking(move || Ok(app.sup.execute(&command, &caller.name, Some(req.reason))?)).await?;
    Ok(Json(json!({ "events": appended })))
}

macro_rules! action_handler {
    ($name:ident, $variant:ident) => {
        async fn $name(
            State(app): State<AppState>,
            Extension(caller): Extension<Caller>,
            Path(id): Path<u64>,
            body: Bytes,
        ) -> Result<Json<Value>, ApiError> {
            act(app, caller, body, Command::$variant(id)).await
        }
    };
}

action_handler!(pause, Pause);
action_handler!(resume, Resume);
action_handler!(stop, Stop);
action_handler!(rollback, Rollback);
action_handler!(pause_rollout, PauseRollout);
action_handler!(resume_rollout, ResumeRollout);

async fn view(
    State(app): State<AppState>,
    Path((id, sink)): Path<(u64, String)>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Value>, ApiError> {
    let sup = Arc::clone(&app.sup);
    blocking(move || match q.key {
        Some(key) => {
            let record = sup.view(id, &sink, &key)?.ok_or_else(|| {
                ApiError::NotFound(format!("no record for key `{key}` in view `{sink}`"))
            })?;
            let record: Value = serde_json::from_str(&record).unwrap_or(Value::String(record));
            Ok(Json(json!({"key": key, "record": record})))
        }
        None => {
            // Checks the deployment and sink exist.
            sup.view(id, &sink, "")?;
            let (count, keys) = sup.view_keys(id, &sink, 1000).unwrap_or_default();
            Ok(Json(json!({"count": count, "keys": keys})))
        }
    })
    .await
}

async fn events(State(app): State<AppState>, Query(q): Query<EventsQuery>) -> Json<Value> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let events = app.sup.events(q.after.unwrap_or(0), limit);
    let next = events.last().map(|e| e.seq);
    Json(json!({ "events": events, "next_after": next }))
}

async fn state(
    State(app): State<AppState>,
    Query(q): Query<AtQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = match q.at {
        None => app.sup.state(),
        Some(at) => {
            let at: DateTime<Utc> = DateTime::parse_from_rfc3339(&at)
                .map_err(|e| ApiError::invalid(format!("at: not an RFC 3339 time ({e})")))?
                .with_timezone(&Utc);
            app.sup.state_at(at)
        }
    };
    Ok(Json(json!(state)))
}
