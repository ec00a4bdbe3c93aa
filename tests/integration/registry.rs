//! The component registries: every entry validates its example, rejects an unknown key with
//! its TOML path and line, renders and runs (the Kafka entries render against a real broker
//! in `kafka.rs`), and appears in the generated reference, which the README carries verbatim.

use tickflow_engine::{compile_str, components, reference};

use crate::common::*;

const HEADER: &str = "[graph]\nname = \"registry\"\nversion = 1\n\n";

/// The nodes that turn raw records into `kind`, ending in a node named `upstream`.
fn upstream(kind: &str) -> String {
    let source = "[sources.upstream]\ntype = \"file\"\npath = \"examples/data/ticks.jsonl\"\n";
    let chain = [
        (
            "normalize",
            "type = \"normalize\"\nfx = { EUR = \"1.08\", GBP = \"1.27\" }",
        ),
        (
            "enrich",
            "type = \"enrich\"\nreference = \"examples/data/instruments.csv\"",
        ),
        ("window", "type = \"window\"\nsize = \"1m\""),
    ];
    let steps = match kind {
        "raw" => 0,
        "tick" => 1,
        "enriched" => 2,
        _ => 3,
    };
    if steps == 0 {
        return source.to_string();
    }
    let mut text = source.replace("[sources.upstream]", "[sources.ticks]");
    let mut prev = "ticks".to_string();
    for (i, (name, body)) in chain.iter().take(steps).enumerate() {
        let node = if i + 1 == steps {
            "upstream".to_string()
        } else {
            name.to_string()
        };
        text.push_str(&format!(
            "\n[operators.{node}]\n{body}\ninput = \"{prev}\"\n"
        ));
        prev = node;
    }
    text
}

/// One graph per registry entry: the entry as node `it`, fed and drained as its kind needs.
fn graphs(out: &std::path::Path) -> Vec<(String, String, String)> {
    let mut graphs = Vec::new();
    for t in components::sources() {
        let text = format!(
            "{HEADER}[sources.it]\ntype = \"{}\"\n{}\n\n[sinks.out]\ntype = \"file\"\ninput = \"it\"\npath = \"{}/source-{}.jsonl\"\n",
            t.name, t.example, out.display(), t.name
        );
        graphs.push((
            format!("sources.{}", t.name),
            "sources.it".to_string(),
            text,
        ));
    }
    for t in components::operators() {
        let mut text = format!(
            "{HEADER}{}\n[operators.it]\ntype = \"{}\"\ninput = \"upstream\"\n{}\n",
            upstream(t.input.name()),
            t.name,
            t.example
        );
        for (output, _) in t.outputs {
            text.push_str(&format!(
                "\n[sinks.{output}]\ntype = \"file\"\ninput = \"it.{output}\"\npath = \"{}/{}-{output}.jsonl\"\n",
                out.display(),
                t.name
            ));
        }
        graphs.push((
            format!("operators.{}", t.name),
            "operators.it".to_string(),
            text,
        ));
    }
    for t in components::sinks() {
        let example = t
            .example
            .replace("out/bars.jsonl", &format!("{}/sink.jsonl", out.display()));
        let text = format!(
            "{HEADER}{}\n[sinks.it]\ntype = \"{}\"\ninput = \"upstream\"\n{example}\n",
            upstream("tick"),
            t.name
        );
        graphs.push((format!("sinks.{}", t.name), "sinks.it".to_string(), text));
    }
    graphs
}

#[test]
fn every_entry_validates_and_rejects_an_unknown_key_by_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (what, node, text) in graphs(dir.path()) {
        let plan = compile_str(&text, "registry.toml");
        assert!(
            plan.is_ok(),
            "{what}: {}",
            plan.err().map(|e| e.to_string()).unwrap_or_default()
        );
        let header = format!("[{node}]\n");
        let bad = text.replace(&header, &format!("{header}bogus_key = 1\n"));
        let line = bad.lines().position(|l| l == "bogus_key = 1").unwrap() + 1;
        let err = compile_str(&bad, "registry.toml").unwrap_err().to_string();
        let want = format!("registry.toml:{line}: {node}.bogus_key: unknown field `bogus_key`");
        assert!(err.contains(&want), "{what}: {err}");
    }
}

#[test]
fn every_entry_but_kafka_renders_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (what, _, text) in graphs(dir.path()) {
        if what.ends_with(".kafka") {
            continue; // kafka.rs runs both against a broker started for the test
        }
        let graph = dir.path().join("g.toml");
        std::fs::write(&graph, &text).unwrap();
        let o = tickflow()
            .arg("run")
            .arg(&graph)
            .args(["--workers", "2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{what}: {}", stderr(&o));
    }
    // Every operator's every output was rendered and wired to its sink.
    for t in components::operators() {
        for (output, _) in t.outputs {
            let file = dir.path().join(format!("{}-{output}.jsonl", t.name));
            assert!(file.exists(), "{} output {output}", t.name);
        }
    }
    // The map example reads `time_ns`, which the example ticks lack: all are dead letters.
    let map_dead = std::fs::read_to_string(dir.path().join("map-dead_letter.jsonl")).unwrap();
    assert!(map_dead.lines().count() > 100 && map_dead.contains("time_ns"));
    assert!(
        std::fs::read_to_string(dir.path().join("window-out.jsonl"))
            .unwrap()
            .lines()
            .count()
            > 0
    );
}

#[test]
fn every_entry_is_in_the_reference_and_the_readme_reference_is_current() {
    let text = reference::graph_reference();
    let names = components::sources()
        .iter()
        .map(|t| ("sources", t.name))
        .chain(
            components::operators()
                .iter()
                .map(|t| ("operators", t.name)),
        )
        .chain(components::sinks().iter().map(|t| ("sinks", t.name)));
    for (table, name) in names {
        let heading = format!("#### `[{table}.<name>]` `type = \"{name}\"`");
        assert!(
            text.contains(&heading),
            "{heading} missing from the reference"
        );
    }
    let readme = std::fs::read_to_string("README.md").unwrap();
    let fresh = reference::splice(&readme, &text).expect("README has the reference markers");
    assert!(
        fresh == readme,
        "README.md's graph reference is stale: run `tickflow reference --readme README.md`"
    );
}
