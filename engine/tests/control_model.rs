//! A property test of the control state machine: random command sequences (and the engine's
//! own started/finished/failed facts) go through `decide` into a real event log; the log,
//! reopened and folded, must equal the live state and a deliberately simple model.

use std::collections::BTreeMap;

use chrono::Utc;
use proptest::prelude::*;
use tickflow_engine::control::{decide, Command, ControlState};
use tickflow_state::events::{Event, EventKind};
use tickflow_state::EventLog;

#[derive(Debug, Clone)]
enum Step {
    Submit(usize, i64, usize),
    Deploy(usize, i64),
    Pause(u64),
    Resume(u64),
    Stop(u64),
    Rollback(u64),
    Started(u64),
    Finished(u64),
    Failed(u64),
}

const GRAPHS: [&str; 2] = ["a", "b"];
const SHAPES: [&str; 2] = ["X", "Y"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize, 1..4i64, 0..2usize).prop_map(|(g, v, f)| Step::Submit(g, v, f)),
        (0..2usize, 1..4i64).prop_map(|(g, v)| Step::Deploy(g, v)),
        (1..8u64).prop_map(Step::Pause),
        (1..8u64).prop_map(Step::Resume),
        (1..8u64).prop_map(Step::Stop),
        (1..8u64).prop_map(Step::Rollback),
        (1..8u64).prop_map(Step::Started),
        (1..8u64).prop_map(Step::Finished),
        (1..8u64).prop_map(Step::Failed),
    ]
}

/// A model deployment: graph, version, state, started.
type Dep = (String, i64, &'static str, bool);

/// The model: the rules written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    versions: BTreeMap<(String, i64), String>,
    deps: Vec<Dep>,
}

fn active(state: &str) -> bool {
    matches!(state, "starting" | "running" | "paused")
}

impl Model {
    fn dep(&mut self, id: u64) -> Option<&mut Dep> {
        self.deps.get_mut(id.checked_sub(1)? as usize)
    }

    /// Applies a command; whether it was accepted.
    fn command(&mut self, step: &Step) -> bool {
        match step {
            Step::Submit(g, v, f) => {
                let sha = format!("{}{v}{}", GRAPHS[*g], SHAPES[*f]);
                match self.versions.get(&(GRAPHS[*g].to_string(), *v)) {
                    Some(existing) => *existing == sha,
                    None => {
                        self.versions.insert((GRAPHS[*g].to_string(), *v), sha);
                        true
                    }
                }
            }
            Step::Deploy(g, v) => {
                let g = GRAPHS[*g].to_string();
                if !self.versions.contains_key(&(g.clone(), *v)) {
                    return false;
                }
                if self
                    .deps
                    .iter()
                    .any(|d| d.0 == g && d.1 == *v && active(d.2))
                {
                    return false;
                }
                for d in self.deps.iter_mut().filter(|d| d.0 == g && active(d.2)) {
                    d.2 = "stopped";
                }
                self.deps.push((g, *v, "starting", false));
                true
            }
            Step::Pause(id) => match self.dep(*id) {
                Some(d) if matches!(d.2, "starting" | "running") => {
                    d.2 = "paused";
                    true
                }
                _ => false,
            },
            Step::Resume(id) => match self.dep(*id) {
                Some(d) if d.2 == "paused" => {
                    d.2 = if d.3 { "running" } else { "starting" };
                    true
                }
                _ => false,
            },
            Step::Stop(id) => match self.dep(*id) {
                Some(d) if active(d.2) => {
                    d.2 = "stopped";
                    true
                }
                _ => false,
            },
            Step::Rollback(id) => {
                let Some(current) = self.dep(*id).cloned().filter(|d| active(d.2)) else {
                    return false;
                };
                let previous = self.deps[..(*id - 1) as usize]
                    .iter()
                    .rev()
                    .find(|p| p.0 == current.0 && p.1 != current.1 && p.3 && p.2 != "rolled_back")
                    .cloned();
                let Some(previous) = previous else {
                    return false;
                };
                if let Some(d) = self.dep(*id) {
                    d.2 = "rolled_back";
                }
                self.deps.push((previous.0, previous.1, "starting", false));
                true
            }
            Step::Started(_) | Step::Finished(_) | Step::Failed(_) => unreachable!(),
        }
    }

    /// An engine fact about an active deployment.
    fn fact(&mut self, step: &Step) {
        let (id, f): (u64, fn(&mut Dep)) = match step {
            Step::Started(id) => (*id, |d| {
                d.3 = true;
                if d.2 == "starting" {
                    d.2 = "running";
                }
            }),
            Step::Finished(id) => (*id, |d| d.2 = "finished"),
            Step::Failed(id) => (*id, |d| d.2 = "failed"),
            _ => unreachable!(),
        };
        if let Some(d) = self.dep(id) {
            f(d);
        }
    }
}

fn command_of(step: &Step) -> Command {
    match step {
        Step::Submit(g, v, f) => Command::Submit {
            name: GRAPHS[*g].into(),
            version: *v,
            sha256: format!("{}{v}{}", GRAPHS[*g], SHAPES[*f]),
            toml: String::new(),
            state_fingerprint: SHAPES[*f].into(),
            plan: serde_json::Value::Null,
        },
        Step::Deploy(g, v) => Command::Deploy {
            graph: GRAPHS[*g].into(),
            version: *v,
            allow_state_loss: false,
            strategy: Default::default(),
            canary: None,
            shadow: None,
        },
        Step::Pause(id) => Command::Pause(*id),
        Step::Resume(id) => Command::Resume(*id),
        Step::Stop(id) => Command::Stop(*id),
        Step::Rollback(id) => Command::Rollback(*id),
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn the_folded_log_equals_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let (mut log, _) = EventLog::open(&path, false).unwrap();
        let mut live = ControlState::default();
        let mut model = Model::default();
        let mut append = |live: &mut ControlState, kind: EventKind| {
            let event = Event::new(Utc::now(), "prop", None, kind);
            let seq = log.append(&event.encode()).unwrap();
            live.apply(seq, &event);
        };
        for step in &steps {
            match step {
                Step::Started(id) | Step::Finished(id) | Step::Failed(id) => {
                    // The engine reports only on deployments that have a dataflow.
                    if !live.deployments.get(id).is_some_and(|d| d.state.is_active()) {
                        continue;
                    }
                    model.fact(step);
                    append(&mut live, match step {
                        Step::Started(_) => EventKind::DeploymentStarted { id: *id, restored_from: None },
                        Step::Finished(_) => EventKind::DeploymentFinished { id: *id },
                        _ => EventKind::DeploymentFailed { id: *id, error: "boom".into() },
                    });
                }
                _ => {
                    let decided = decide(&live, &command_of(step));
                    let accepted = model.command(step);
                    prop_assert_eq!(decided.is_ok(), accepted, "{:?}: {:?}", step, decided);
                    for kind in decided.unwrap_or_default() {
                        append(&mut live, kind);
                    }
                }
            }
        }
        drop(log);
        let (reopened, _) = EventLog::open(&path, false).unwrap();
        let events: Vec<(u64, Event)> = reopened
            .records()
            .iter()
            .map(|r| (r.seq, Event::decode(&r.payload).unwrap()))
            .collect();
        let folded = ControlState::fold(events.iter().map(|(s, e)| (*s, e)));
        prop_assert_eq!(&folded, &live);
        let got: Vec<Dep> = folded
            .deployments
            .values()
            .map(|d| (d.graph.clone(), d.version, d.state.name(), d.started))
            .collect();
        prop_assert_eq!(got, model.deps);
        let versions: BTreeMap<(String, i64), String> = folded
            .graphs
            .values()
            .flat_map(|v| v.values())
            .map(|v| ((v.name.clone(), v.version), v.sha256.clone()))
            .collect();
        prop_assert_eq!(versions, model.versions);
    }
}
