//! tickflow's integration tests: one binary, a module per area. Every test drives the real
//! `tickflow` executable on real files, as a user would.

mod backtest;
mod canary;
mod cluster;
mod common;
mod csv_input;
mod deploy;
mod fuzz;
mod http;
mod kafka;
mod kafka_bench;
mod kafka_cluster;
mod kafka_partitions;
mod kafka_rollouts;
mod oracle;
mod pipeline;
mod recovery;
mod registry;
mod reshape;
mod security;
mod serve;
mod serve_cluster;
mod session;
mod shadow;
mod shapes;
mod state_plan;
mod validation;
mod venues;
