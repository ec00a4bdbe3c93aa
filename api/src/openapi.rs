//! The OpenAPI 3.1 document, generated from the route table ([`crate::routes::routes`]) and
//! the request types' JSON Schemas (schemars).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use crate::routes::routes;
use crate::AppState;

/// The document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for r in routes() {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true,
                               "schema": {"type": "string"}})
            })
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method, r.path),
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "401": {"description": "No key or an unknown key"},
                "403": {"description": "The key's role is too weak"},
            },
        });
        match r.role {
            Some(role) => {
                op["security"] = json!([{"apiKey": []}]);
                op["x-required-role"] = json!(role.name());
            }
            None => {
                op["security"] = json!([]);
                if let Some(resp) = op["responses"].as_object_mut() {
                    resp.remove("401");
                    resp.remove("403");
                }
            }
        }
        if r.is_mutating() {
            let responses = &mut op["responses"];
            responses["409"] = json!({"description": "Conflicts with the current state"});
            responses["413"] = json!({"description": "Request body too large"});
            responses["422"] =
                json!({"description": "Invalid request; details list every problem"});
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
                "content": {"application/toml": {"schema": {"type": "string"}}},
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
