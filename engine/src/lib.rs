//! The tickflow engine: graph TOML in, a running Timely dataflow out.
//!
//! - [`compile`]: parse and validate a graph into a [`Plan`], reporting every problem at once
//!   with its TOML path and line.
//! - [`plan`]: the validated plan and its Graphviz rendering.
//! - [`component`]: the component model: a trait per kind (source, operator, sink) and the
//!   registry entry that validates, describes and builds each type.
//! - [`components`]: every component type, one file each, one registry line each.
//! - [`render`]: builds a plan into Timely operators (timely times are event-time watermarks),
//!   with one source driver per reader kind and one sink driver.
//! - [`run`]: executes a plan on N workers and returns a [`Summary`].
//! - [`cluster`]: one graph on several processes (Timely's cluster mode).
//! - [`checkpoint`]: consistent checkpoints, commit markers and the data directory.
//! - [`metrics`]: counters shared by all workers, read for the summary and progress.
//! - [`control`]: the control plane's state, a pure fold over the event log, and its rules.
//! - [`live`]: pause, resume and stop a running dataflow; projection views.
//! - [`policy`]: what a graph submitted over the API may reach: files, size (the trust boundary).
//! - [`supervisor`]: the long-running engine of `tickflow serve`.

pub mod canary;
pub mod checkpoint;
pub mod cluster;
pub mod compile;
pub mod component;
pub mod components;
pub mod control;
pub mod diff;
mod error;
pub mod fault;
pub mod live;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod reference;
pub mod render;
pub mod run;
pub mod state_plan;
pub mod supervisor;

pub use compile::{compile_confined, compile_file, compile_str};
pub use error::{EngineError, RuleError, ValidationError};
pub use metrics::Metrics;
pub use plan::Plan;
pub use run::{run, RunOptions, Summary};
