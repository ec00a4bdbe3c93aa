//! The state plan of a deploy: per part, kept, empty, replaced or dropped (`tickflow plan`,
//! `POST /api/v1/deployments?dry_run=true`), `allow_state_loss`, and a deploy that keeps some
//! parts' state and starts others empty.

use serde_json::{json, Value};

use crate::common::tickflow;
use crate::serve::{setup, Server, OUTPUTS};

/// A fast window over `enrich` (its horizon is below the bars', so dedup keeps its retention)
/// and its sink: what v2 adds to the test graph.
const FAST: &str =
    "\n[operators.fast]\ntype = \"window\"\ninput = \"enrich\"\nkind = \"tumbling\"\n\
                    size = \"20s\"\nallowed_lateness = \"5s\"\n\n[sinks.fast]\ntype = \"file\"\n\
                    input = \"fast\"\npath = \"fast.jsonl\"\n";

fn version(toml: &str, v: i64) -> String {
    toml.replace("version = 1", &format!("version = {v}"))
}

fn fates(plan: &Value) -> std::collections::BTreeMap<String, String> {
    plan["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["part"].as_str().unwrap().to_string(),
                p["fate"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn tickflow_plan_names_kept_empty_and_dropped_state_per_part() {
    let s = setup(2_000);
    let dir = s.root.path();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let old = write("old.toml", &s.toml);
    let cases = [
        // A window size change: the window's state is replaced.
        (
            s.toml.replace("size = \"1m\"", "size = \"2m\""),
            vec![("operator/bars", "replaced"), ("source/ticks", "kept")],
            true,
        ),
        // An added operator (and its sink) starts empty; everything else is kept.
        (
            format!("{}{FAST}", s.toml),
            vec![
                ("operator/fast", "empty"),
                ("sink/fast", "empty"),
                ("operator/bars", "kept"),
                ("operator/normalize", "kept"),
            ],
            false,
        ),
        // A renamed sink: the old one's state is dropped, the new one starts empty.
        (
            s.toml.replace("[sinks.late]", "[sinks.late_ticks]"),
            vec![("sink/late", "dropped"), ("sink/late_ticks", "empty")],
            true,
        ),
    ];
    for (text, want, drops) in cases {
        let new = write("new.toml", &text);
        let o = tickflow()
            .arg("plan")
            .arg(&old)
            .arg(&new)
            .arg("--json")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
        let got = fates(&plan);
        for (part, fate) in want {
            assert_eq!(
                got.get(part).map(String::as_str),
                Some(fate),
                "{part}: {plan}"
            );
        }
        assert_eq!(plan["drops_state"], drops, "{plan}");
        let o = tickflow().arg("plan").arg(&old).arg(&new).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains(if drops {
            "allow_state_loss"
        } else {
            "keeps all state"
        }));
    }
}

#[test]
fn a_deploy_keeps_the_state_its_plan_keeps_and_dropping_state_needs_allow_state_loss() {
    let s = setup(300_000);
    let root = s.root.path();
    let server = Server::start(root, &[]);
    let submit = |toml: &str| server.submit(toml);
    submit(&s.toml);
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 1, "reason": "v1"}),
    );
    assert_eq!(status, 201, "{body}");
    // Held after its first checkpoint, mid-input.
    server.wait_for("/api/v1/deployments/1", "a checkpoint", |v| {
        !v["last_checkpoint"].is_null()
    });
    let (status, body) = server.post("/api/v1/deployments/1/pause", &json!({"reason": "hold"}));
    assert_eq!(status, 200, "{body}");

    // v2 adds a window: a dry run shows it continues deployment 1, the new window empty.
    submit(&format!("{}{FAST}", version(&s.toml, 2)));
    let before = server.events().len();
    let (status, body) = server.post(
        "/api/v1/deployments?dry_run=true",
        &json!({"graph": "test-bars", "version": 2, "reason": "add a window"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.events().len(), before, "a dry run appends nothing");
    let requested = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "deployment_requested")
        .unwrap_or_else(|| panic!("{body}"))
        .clone();
    assert_eq!(requested["continues"], 1, "{requested}");
    let fate = fates(&requested["state_plan"]);
    assert_eq!(fate["operator/fast"], "empty");
    assert_eq!(fate["operator/bars"], "kept");
    assert_eq!(fate["operator/normalize"], "kept");

    // Deployed: the kept parts continue v1's checkpoint exactly, so the bars, dead letters
    // and late ticks equal an uninterrupted run of v1; the new window writes its own bars.
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 2, "reason": "add a window"}),
    );
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_u64().unwrap();
    let dep = format!("/api/v1/deployments/{id}");
    let done = server.wait_for(&dep, "the end of input", |v| v["state"] == "finished");
    assert!(done["restored_from"].is_u64(), "{done}");
    for (i, name) in OUTPUTS.iter().enumerate() {
        let got = std::fs::read(root.join("outputs/d1").join(name)).unwrap();
        assert!(
            got == s.reference[i],
            "{name} of v1 then v2 (state kept) differs from an uninterrupted run of v1"
        );
    }
    let fast = std::fs::read_to_string(root.join("outputs/d1/fast.jsonl")).unwrap();
    assert!(fast.lines().count() > 10, "the new window wrote its bars");

    // v3 changes the bars' window size: that drops the bars' state, so it is refused unless
    // the request accepts it; then the plan is on the event.
    submit(&version(&format!("{}{FAST}", s.toml), 3).replace("size = \"1m\"", "size = \"2m\""));
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 3, "reason": "2m bars"}),
    );
    assert_eq!(status, 409, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("operator/bars: replaced") && message.contains("allow_state_loss"),
        "{message}"
    );
    let (status, body) = server.post(
        "/api/v1/deployments",
        &json!({"graph": "test-bars", "version": 3, "reason": "2m bars", "allow_state_loss": true}),
    );
    assert_eq!(status, 201, "{body}");
    let event = server
        .events()
        .into_iter()
        .rev()
        .find(|e| e["type"] == "deployment_requested")
        .unwrap();
    assert_eq!(
        fates(&event["state_plan"])["operator/bars"],
        "replaced",
        "{event}"
    );
    assert_eq!(event["state_plan"]["drops_state"], true);
}
