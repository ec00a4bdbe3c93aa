//! Kafka gives the file's answers: the same ticks, with very late ones and bad lines, through
//! topics partitioned and keyed in several ways (one partition nearly empty), on 1, 2 and 3
//! workers and after kill -9, give the bars, late ticks and dead letters of a file run.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::kafka::Broker;

/// Dead letters without where they were read (a file line, a Kafka partition and offset).
fn dead_letter_contents(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", v["reason"], v["message"], v["raw"])
        })
        .collect();
    out.sort();
    out
}

#[test]
fn kafka_gives_the_file_answers_for_any_partitioning_with_late_ticks_and_a_nearly_empty_partition()
{
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    // 80 s of event time; 1 % of ticks 30 to 120 s late, which with 10 s windows and 5 s of
    // allowed lateness is late however the partitions' reads interleave.
    gen(
        &data,
        40_000,
        50,
        7,
        &[
            "--bad-ratio",
            "0.02",
            "--late-ratio",
            "0.01",
            "--rate",
            "500",
        ],
    );
    let win = Win {
        size: "10s",
        slide: None,
        lateness: "5s",
        ooo: "1s",
    };
    let file_out = root.path().join("file-out");
    let file_graph = write_graph(root.path(), &data, &file_out, win);
    run_graph(&file_graph, 2);
    let file_bars = sorted_lines(&file_out.join("bars.jsonl"));
    let file_late = sorted_lines(&file_out.join("late.jsonl"));
    let file_dead = dead_letter_contents(&sorted_lines(&file_out.join("dead_letters.jsonl")));
    assert!(file_bars.len() > 300 && file_late.len() > 300 && file_dead.len() > 500);

    let broker = Broker::start("memory://tansu/");
    // Keyings: by venue over 4 partitions (two venues share one, one holds only a few dozen
    // bad lines), by symbol over 3, no key over 1.
    let layouts = [("venue", 4u32), ("symbol", 3), ("", 1)];
    for (key, parts) in layouts {
        let raw = format!("raw-{key}-{parts}");
        broker.create(&raw, parts);
        broker.produce(&data.join("ticks.jsonl"), &raw, key);
        if key == "venue" {
            let mut counts = std::collections::BTreeMap::new();
            for r in broker.read(&raw) {
                *counts
                    .entry(r["partition"].as_i64().unwrap())
                    .or_insert(0u64) += 1;
            }
            let least = counts.values().min().copied().unwrap_or(0);
            assert!(
                counts.len() == 4 && least > 0 && least < 100,
                "one partition nearly empty: {counts:?}"
            );
        }
    }
    let graph = |raw: &str, tag: &str| -> PathBuf {
        for t in ["bars", "dead", "late"] {
            broker.create(&format!("{t}-{tag}"), 1);
        }
        let text = format!(
            r#"[graph]
name = "kafka-late"
version = 1
base_currency = "USD"

[graph.defaults]
max_out_of_orderness = "1s"

[sources.ticks]
type = "kafka"
brokers = "{addr}"
topic = "{raw}"
group_id = "g-{tag}"
start = "earliest"
stop_at_end = true
idle_timeout = "1s"

{enrich}
{bars}
[sinks.bars]
type = "kafka"
input = "bars"
brokers = "{addr}"
topic = "bars-{tag}"

[sinks.dead_letters]
type = "kafka"
input = ["normalize.dead_letter", "enrich.dead_letter"]
brokers = "{addr}"
topic = "dead-{tag}"

[sinks.late]
type = "kafka"
input = "bars.late"
brokers = "{addr}"
topic = "late-{tag}"

[checkpoint]
interval = "5s"
min_pause = "0ms"
"#,
            addr = broker.addr(),
            enrich = enrich_nodes(&data),
            bars = bars_node(win),
        );
        let path = root.path().join(format!("{tag}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let topic_values = |topic: &str| -> Vec<String> {
        let mut v: Vec<String> = broker
            .read(topic)
            .iter()
            .map(|r| r["value"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let check = |tag: &str, what: &str| {
        let same = |got: &[String], want: &[String], kind: &str| {
            if got != want {
                let missing: Vec<&String> = want.iter().filter(|b| !got.contains(b)).collect();
                let extra: Vec<&String> = got.iter().filter(|b| !want.contains(b)).collect();
                panic!(
                    "{what}: {kind} differ from the file's: {} vs {}; {} missing, e.g. \
                     {:?}; {} extra, e.g. {:?}",
                    got.len(),
                    want.len(),
                    missing.len(),
                    missing.iter().take(3).collect::<Vec<_>>(),
                    extra.len(),
                    extra.iter().take(3).collect::<Vec<_>>(),
                );
            }
        };
        same(&topic_values(&format!("bars-{tag}")), &file_bars, "bars");
        same(
            &topic_values(&format!("late-{tag}")),
            &file_late,
            "late ticks",
        );
        let dead = dead_letter_contents(&topic_values(&format!("dead-{tag}")));
        same(&dead, &file_dead, "dead letters");
    };
    let run = |graph: &Path, workers: usize, data_dir: &Path| -> Child {
        tickflow()
            .arg("run")
            .arg(graph)
            .args(["--workers", &workers.to_string(), "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let finish = |child: Child, what: &str| {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Every layout, on 1, 2 and 3 workers.
    for ((key, parts), workers) in layouts.into_iter().zip([2, 1, 3]) {
        let tag = format!("{key}-{parts}-w{workers}");
        let g = graph(&format!("raw-{key}-{parts}"), &tag);
        finish(
            run(&g, workers, &root.path().join(format!("state-{tag}"))),
            &tag,
        );
        check(&tag, &tag);
    }
    // The nearly empty partition again, on 3 workers, killed (SIGKILL) once a checkpoint
    // is committed, then resumed on 2.
    let tag = "venue-4-killed";
    let g = graph("raw-venue-4", tag);
    let state = root.path().join("state-killed");
    let mut child = run(&g, 3, &state);
    let started = Instant::now();
    while newest_marker(&state).is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    finish(run(&g, 2, &state), "resumed");
    check(tag, "killed and resumed");
}
