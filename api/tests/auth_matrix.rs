//! The auth matrix, built from the router's own route table and checked over a real socket:
//! every route but `/health/*` answers 401 without a key or with an unknown one, a viewer
//! gets 403 on every mutating route and is let through on every reading one, and the OpenAPI
//! document lists every route with the role it needs.

use std::sync::Arc;

use tickflow_api::auth::{hash_key, Keys, Role};
use tickflow_api::config::KeyConfig;
use tickflow_api::routes::routes;
use tickflow_engine::supervisor::{Supervisor, SupervisorConfig};

struct Api {
    base: String,
    _dir: tempfile::TempDir,
}

fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let (sup, _) = Supervisor::start(SupervisorConfig {
        data_dir: dir.path().join("engine"),
        workers: 1,
        repair: false,
        read_roots: Vec::new(),
        output_root: None,
        max_graph_nodes: 100,
        stop_timeout: std::time::Duration::from_secs(30),
        metrics_grace: std::time::Duration::from_secs(300),
        cluster: None,
        backtest_timeout: std::time::Duration::from_secs(60),
        backtest_max_input_bytes: 1 << 20,
    })
    .unwrap();
    let key = |name: &str, role| KeyConfig {
        name: name.into(),
        role,
        sha256: hash_key(&format!("{name}-key")),
    };
    let keys = Keys::new(&[
        key("viewer", Role::Viewer),
        key("operator", Role::Operator),
        key("admin", Role::Admin),
    ]);
    let router = tickflow_api::router(Arc::clone(&sup), keys, 1 << 16);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tickflow_api::serve::serve(listener, router, Default::default()).await;
        });
    });
    Api { base, _dir: dir }
}

fn status(api: &Api, method: &str, path: &str, key: Option<&str>) -> u16 {
    let mut req = ureq::request(method, &format!("{}{path}", api.base));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let resp = if method == "GET" {
        req.call()
    } else {
        req.send_string("{\"reason\": \"auth matrix\"}")
    };
    match resp {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{name}", "g")
        .replace("{version}", "1")
        .replace("{sink}", "s")
}

#[test]
fn every_route_needs_the_right_key() {
    let api = start();
    let all = routes();
    assert!(all.len() >= 18, "{} routes", all.len());
    let mut checked = 0;
    for r in all {
        let path = concrete(r.path);
        let anonymous = status(&api, r.method, &path, None);
        let wrong = status(&api, r.method, &path, Some("not-a-key"));
        let viewer = status(&api, r.method, &path, Some("viewer-key"));
        let admin = status(&api, r.method, &path, Some("admin-key"));
        match r.role {
            None => {
                assert!(r.path.starts_with("/health/"), "open route {}", r.path);
                assert_eq!(anonymous, 200, "{} {}", r.method, r.path);
            }
            Some(role) => {
                assert_eq!(anonymous, 401, "{} {} without a key", r.method, r.path);
                assert_eq!(wrong, 401, "{} {} with an unknown key", r.method, r.path);
                if r.is_mutating() {
                    assert!(role >= Role::Operator, "{} {} mutates", r.method, r.path);
                    assert_eq!(viewer, 403, "{} {} as viewer", r.method, r.path);
                } else {
                    assert!(
                        ![401, 403].contains(&viewer),
                        "{} {} as viewer",
                        r.method,
                        r.path
                    );
                }
                assert!(
                    ![401, 403].contains(&admin),
                    "{} {} as admin",
                    r.method,
                    r.path
                );
            }
        }
        checked += 1;
    }
    assert_eq!(checked, all.len());
}

#[test]
fn the_openapi_document_lists_every_route() {
    let api = start();
    let doc: serde_json::Value = ureq::get(&format!("{}/api/v1/openapi.json", api.base))
        .set("Authorization", "Bearer viewer-key")
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    for r in routes() {
        let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} missing", r.method, r.path);
        assert_eq!(op["summary"], r.summary);
        match r.role {
            Some(role) => assert_eq!(op["x-required-role"], role.name()),
            None => assert_eq!(op["security"], serde_json::json!([])),
        }
    }
    let deploy = &doc["paths"]["/api/v1/deployments"]["post"]["requestBody"];
    let props = &deploy["content"]["application/json"]["schema"]["properties"];
    assert!(
        props["graph"].is_object() && props["version"].is_object(),
        "{deploy}"
    );
}
