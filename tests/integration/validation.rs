//! `tickflow validate`: every error kind names its TOML key and line; all errors at once.

use crate::common::*;

const GOOD: &str = r#"[graph]
name = "g"
version = 1

[sources.ticks]
type = "file"
path = "TICKS"

[operators.normalize]
type = "normalize"
input = "ticks"

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "REF"

[operators.bars]
type = "window"
input = "enrich"
size = "1m"

[sinks.bars]
type = "stdout"
input = ["bars", "bars.late", "normalize.dead_letter", "enrich.dead_letter"]
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ticks.jsonl"), "").unwrap();
        std::fs::write(
            dir.path().join("ref.csv"),
            "symbol,instrument_id\nAAPL,I1\n",
        )
        .unwrap();
        Fixture { dir }
    }

    fn good(&self) -> String {
        GOOD.replace(
            "TICKS",
            &self.dir.path().join("ticks.jsonl").display().to_string(),
        )
        .replace(
            "REF",
            &self.dir.path().join("ref.csv").display().to_string(),
        )
    }

    /// Validates `text`; returns (exit code, stderr).
    fn validate(&self, text: &str) -> (i32, String) {
        let path = self.dir.path().join("g.toml");
        std::fs::write(&path, text).unwrap();
        let o = run_cli(&["validate", path.to_str().unwrap()]);
        (o.status.code().unwrap_or(-1), stderr(&o))
    }

    /// Asserts `text` fails validation with a message at `line` naming `key` and containing `what`.
    fn expect_error(&self, text: &str, line: usize, key: &str, what: &str) {
        let (code, err) = self.validate(text);
        assert_eq!(code, 1, "exit code 1 expected; stderr: {err}");
        let want = format!("g.toml:{line}: {key}: ");
        let hit = err
            .lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no error `{want}` in:\n{err}"));
        assert!(hit.contains(what), "`{what}` not in `{hit}`");
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in graph"))
}

#[test]
fn the_good_graph_is_valid() {
    let f = Fixture::new();
    let (code, err) = f.validate(&f.good());
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_type() {
    let f = Fixture::new();
    let g = f.good().replace("type = \"window\"", "type = \"windoww\"");
    let line = line_of(&g, "windoww");
    f.expect_error(
        &g,
        line,
        "operators.bars.type",
        "unknown operator type `windoww`",
    );
}

#[test]
fn unknown_key() {
    let f = Fixture::new();
    let g = f
        .good()
        .replace("size = \"1m\"", "size = \"1m\"\nsizee = \"2m\"");
    let line = line_of(&g, "sizee");
    f.expect_error(&g, line, "operators.bars.sizee", "unknown field `sizee`");
}

#[test]
fn unknown_graph_key() {
    let f = Fixture::new();
    let g = f
        .good()
        .replace("version = 1", "version = 1\nowner = \"desk\"");
    let line = line_of(&g, "owner");
    f.expect_error(&g, line, "graph.owner", "unknown key");
}

#[test]
fn missing_input() {
    let f = Fixture::new();
    let g = f.good().replace("input = \"normalize\"\n", "");
    let line = line_of(&g, "[operators.enrich]");
    f.expect_error(&g, line, "operators.enrich.input", "missing");
}

#[test]
fn dangling_input_and_unknown_output() {
    let f = Fixture::new();
    let g = f
        .good()
        .replace("input = \"normalize\"", "input = \"normalise\"");
    let line = line_of(&g, "normalise");
    f.expect_error(
        &g,
        line,
        "operators.enrich.input",
        "`normalise` does not name a source or operator",
    );
    let g = f.good().replace("\"bars.late\"", "\"bars.later\"");
    let line = line_of(&g, "bars.later");
    f.expect_error(&g, line, "sinks.bars.input", "`bars` has no output `later`");
}

#[test]
fn cycle() {
    let f = Fixture::new();
    let g = f.good()
        + "\n[operators.a]\ntype = \"window\"\ninput = \"b.late\"\nsize = \"1m\"\n"
        + "\n[operators.b]\ntype = \"window\"\ninput = \"a.late\"\nsize = \"1m\"\n";
    let line = line_of(&g, "[operators.a]");
    f.expect_error(&g, line, "operators.a.input", "cycle: operators a, b");
    let line = line_of(&g, "[operators.b]");
    f.expect_error(&g, line, "operators.b.input", "cycle");
}

#[test]
fn wrong_record_kind() {
    let f = Fixture::new();
    let g = f.good().replace(
        "type = \"window\"\ninput = \"enrich\"",
        "type = \"window\"\ninput = [ \"normalize\" ]",
    );
    let line = line_of(&g, "input = [ \"normalize\" ]");
    f.expect_error(
        &g,
        line,
        "operators.bars.input",
        "`normalize` carries tick records but this node reads enriched records",
    );
}

#[test]
fn bad_duration() {
    let f = Fixture::new();
    let g = f.good().replace("size = \"1m\"", "size = \"1 fortnight\"");
    let line = line_of(&g, "fortnight");
    f.expect_error(&g, line, "operators.bars.size", "not a duration");
    let g = f.good().replace(
        "version = 1",
        "version = 1\n[graph.defaults]\nmax_out_of_orderness = \"5\"",
    );
    let line = line_of(&g, "max_out_of_orderness");
    f.expect_error(
        &g,
        line,
        "graph.defaults.max_out_of_orderness",
        "not a duration",
    );
}

#[test]
fn missing_reference_file() {
    let f = Fixture::new();
    let g = f.good().replace("ref.csv", "nope.csv");
    let line = line_of(&g, "nope.csv");
    f.expect_error(&g, line, "operators.enrich.reference", "reference file");
}

#[test]
fn bad_reference_rows_name_the_csv_line() {
    let f = Fixture::new();
    std::fs::write(
        f.dir.path().join("ref.csv"),
        "symbol,instrument_id\nAAPL,I1\nAAPL,I2\n",
    )
    .unwrap();
    let g = f.good();
    let line = line_of(&g, "ref.csv");
    f.expect_error(
        &g,
        line,
        "operators.enrich.reference",
        "ref.csv:3: symbol AAPL is listed twice",
    );
}

#[test]
fn wrong_value_type() {
    let f = Fixture::new();
    let g = f.good().replace("size = \"1m\"", "size = 60");
    let line = line_of(&g, "size = 60");
    f.expect_error(&g, line, "operators.bars.size", "invalid type");
}

#[test]
fn toml_syntax_error() {
    let f = Fixture::new();
    let g = f.good().replace("size = \"1m\"", "size = [\"1m\"");
    let (code, err) = f.validate(&g);
    assert_eq!(code, 1);
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let f = Fixture::new();
    let g = f
        .good()
        .replace("type = \"window\"", "type = \"windoww\"")
        .replace("ref.csv", "nope.csv")
        .replace("version = 1", "version = 0");
    let (code, err) = f.validate(&g);
    assert_eq!(code, 1);
    assert!(err.contains("graph.version"), "{err}");
    assert!(err.contains("operators.bars.type"), "{err}");
    assert!(err.contains("operators.enrich.reference"), "{err}");
    assert!(err.contains("error(s)"), "{err}");
}

#[test]
fn run_refuses_an_invalid_graph_with_the_same_errors() {
    let f = Fixture::new();
    let g = f.good().replace("size = \"1m\"", "size = \"1 fortnight\"");
    let path = f.dir.path().join("g.toml");
    std::fs::write(&path, g).unwrap();
    let o = run_cli(&["run", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("operators.bars.size"));
}

#[test]
fn graph_prints_dot_with_every_edge() {
    let f = Fixture::new();
    let path = f.dir.path().join("g.toml");
    std::fs::write(&path, f.good()).unwrap();
    let o = run_cli(&["graph", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dot = String::from_utf8(o.stdout).unwrap();
    assert!(dot.starts_with("digraph \"g\""), "{dot}");
    assert!(
        dot.contains("\"ticks\" -> \"normalize\" [label=\"out (raw)\"]"),
        "{dot}"
    );
    assert!(
        dot.contains("\"bars\" -> \"sink:bars\" [label=\"late (enriched)\"]"),
        "{dot}"
    );
    assert!(
        dot.contains("\"normalize\" -> \"sink:bars\" [label=\"dead_letter (dead_letter)\"]"),
        "{dot}"
    );
}

#[test]
fn kafka_nodes_are_checked_key_by_key() {
    let f = Fixture::new();
    let kafka_source = "type = \"kafka\"\nbrokers = \"\"\ntopic = \"raw\"\nidle_timeout = \"soon\"";
    let g = f
        .good()
        .replace(
            &format!(
                "type = \"file\"\npath = \"{}\"",
                f.dir.path().join("ticks.jsonl").display()
            ),
            kafka_source,
        )
        .replace(
            "type = \"stdout\"",
            "type = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"bars\"\nkey = \"instrument_id\"\npartitions = 4",
        );
    assert!(g.contains("idle_timeout"), "{g}");
    let (code, err) = f.validate(&g);
    assert_eq!(code, 1, "{err}");
    // Every problem at once, each with its line and TOML key.
    for (needle, key, what) in [
        (
            "brokers = \"\"",
            "sources.ticks.brokers",
            "must not be empty",
        ),
        ("idle_timeout", "sources.ticks.idle_timeout", "soon"),
        (
            "partitions = 4",
            "sinks.bars.partitions",
            "unknown field `partitions`",
        ),
    ] {
        let want = format!("g.toml:{}: {key}: ", line_of(&g, needle));
        let hit = err
            .lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no error `{want}` in:\n{err}"));
        assert!(hit.contains(what), "`{what}` not in `{hit}`");
    }
    // Valid Kafka nodes validate without a broker (topics are checked when the graph runs).
    let ok = g
        .replace("brokers = \"\"", "brokers = \"127.0.0.1:1\"")
        .replace("idle_timeout = \"soon\"", "idle_timeout = \"5s\"")
        .replace("\npartitions = 4", "");
    let (code, err) = f.validate(&ok);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_rollout_table_is_checked_key_by_key_and_leaves_the_fingerprint_alone() {
    let f = Fixture::new();
    let with = |table: &str| format!("{}\n[rollout]\n{table}\n", f.good());
    let (code, err) = f.validate(&with(
        "steps = [20, 100]\nstep_length = \"2m\"\n[rollout.checks]\nmax_dead_letter_rate = 0.02",
    ));
    assert_eq!(code, 0, "{err}");
    let g = with("steps = [50, 20]");
    f.expect_error(&g, line_of(&g, "steps = [50"), "rollout.steps", "must rise");
    let g = with("step_length = \"1ms\"");
    f.expect_error(
        &g,
        line_of(&g, "step_length"),
        "rollout.step_length",
        "100ms",
    );
    let g = with("stepz = [100]");
    f.expect_error(
        &g,
        line_of(&g, "stepz"),
        "rollout.stepz",
        "unknown field `stepz`",
    );
    let g = with("[rollout.checks]\nmax_late_rate = 2.0");
    f.expect_error(
        &g,
        line_of(&g, "[rollout.checks]"),
        "rollout.checks.max_late_rate",
        "from 0 to 1",
    );
    // The rollout settings are not part of the graph: the same fingerprint with or without.
    let fingerprint = |text: &str| {
        tickflow_engine::compile_str(text, "g.toml")
            .unwrap()
            .fingerprint
    };
    assert_eq!(
        fingerprint(&with("steps = [20, 100]")),
        fingerprint(&f.good())
    );
}
