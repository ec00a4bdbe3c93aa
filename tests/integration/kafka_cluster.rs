//! The Kafka example on a cluster of processes (Timely's cluster mode), against a real broker:
//! partitions spread over every worker of every process, checkpoints per process.

use crate::kafka::{check_outputs, kafka_graph, setup, TICKS};

#[test]
fn kafka_example_on_two_processes_spreads_the_partitions_and_equals_the_file_run() {
    let s = setup(TICKS, "memory://tansu/");
    let graph = kafka_graph(&s);
    // Two processes of two workers: the 4 partitions are spread over all four workers, each
    // process checkpointing its own parts (the sources' offsets, the sinks' positions).
    let state = s.root.path().join("cluster-state");
    let state_arg = state.to_str().unwrap();
    let run = || {
        crate::common::run_cluster(
            &graph,
            (2, 2),
            |_| s.root.path().to_path_buf(),
            &["--data-dir", state_arg],
        )
    };
    let summaries = run();
    let read: Vec<u64> = summaries
        .iter()
        .map(|p| p["input_records"].as_u64().unwrap())
        .collect();
    assert!(read.iter().all(|r| *r > 0), "every process reads: {read:?}");
    assert_eq!(read.iter().sum::<u64>(), s.ticks, "{read:?}");
    check_outputs(&s);
    // Run again: both processes restore the final checkpoint (every process's marker, merged)
    // and have nothing left to read or write.
    for summary in run() {
        assert!(summary["restored_from"].as_u64().is_some(), "{summary}");
        assert_eq!(summary["input_records"], 0, "{summary}");
    }
    check_outputs(&s);
}
