//! The OpenAPI 3.1 document, generated from the route table ([`crate::routes::routes`]) and
//! the request types' JSON Schemas (schemars).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::routes::routes;
use crate::AppState;

/// Error statuses every authenticated route may answer with (besides its own).
const ERRORS: [(u16, &str); 10] = [
    (400, "Malformed request (path parameter, query)"),
    (401, "No key or an unknown key"),
    (403, "The key's role is too weak"),
    (404, "No such graph, version, deployment, sink or key"),
    (405, "The path exists with another method"),
    (409, "Conflicts with the current state"),
    (413, "Request body too large"),
    (422, "Invalid request; details list every problem"),
    (500, "The engine failed"),
    (503, "Not ready"),
];

/// The JSON shape of every error.
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "A code: not_found, conflict, ..."},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"type": "object"}},
        },
    })
}

fn param_schema(name: &str) -> Value {
    match name {
        "id" => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        "version" => json!({"type": "integer", "minimum": 1, "maximum": i64::MAX}),
        _ => json!({"type": "string"}),
    }
}

/// The document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for r in routes() {
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                       "schema": param_schema(name)})
            })
            .collect();
        for q in r.query {
            let mut schema = json!({"type": q.kind});
            if !q.format.is_empty() {
                schema["format"] = json!(q.format);
            }
            if q.kind == "integer" {
                schema["minimum"] = json!(0);
                schema["maximum"] = json!(u64::MAX);
            }
            params.push(json!({"name": q.name, "in": "query", "required": false,
                               "description": q.description, "schema": schema}));
        }
        let success_content = match r.path {
            "/metrics" => json!({
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            }),
            _ => json!({"application/json": {"schema": {"type": "object"}}}),
        };
        let mut responses = Map::new();
        for status in r.success {
            let description = match status {
                201 => "Created",
                _ => "OK",
            };
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": success_content}),
            );
        }
        for (status, description) in ERRORS {
            let open = r.role.is_none();
            if open && !matches!(status, 405 | 500 | 503) {
                continue;
            }
            responses.insert(
                status.to_string(),
                json!({"description": description,
                       "content": {"application/json": {"schema": error_schema()}}}),
            );
        }
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "parameters": params,
            "responses": responses,
        });
        match r.role {
            Some(role) => {
                op["security"] = json!([{"apiKey": []}]);
                op["x-required-role"] = json!(role.name());
            }
            None => op["security"] = json!([]),
        }
        if let Some(schema) = r.body {
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema()}},
            });
        }
        if r.toml_body {
            op["requestBody"] = json!({
                "required": true,
                "content": {
                    "application/toml": {"schema": {"type": "string"}},
                    "text/plain": {"schema": {"type": "string"}},
                },
            });
        }
        let entry = paths
            .entry(r.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[r.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tickflow control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit graph versions, deploy, pause, resume, stop and roll back \
                            deployments, read the audit trail and projection views.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "An API key: `Authorization: Bearer <key>`"},
            },
        },
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document(State(_): State<AppState>) -> Json<Value> {
    Json(build())
}
