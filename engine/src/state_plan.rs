//! What deploying a new version of a graph does with the running version's state, part by
//! part: which sources, stateful operators and sinks keep theirs (continued from the running
//! version's checkpoint), which start empty, and which state is dropped.
//!
//! Each part has an identity: what its stored state depends on (a source's input, a window's
//! size and lateness, a dedup's retention, a sink's output). A part whose identity is the same
//! in both versions keeps its state; one whose identity changed is **replaced** (its old state
//! is dropped and it starts empty); a part only the new version has starts **empty**; one only
//! the old version has is **dropped**. Positions and state must stay consistent with each
//! other, so state continues only when every source is kept: a changed source starts every
//! part over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// One part's stored state: its identity and its tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePart {
    /// What its state depends on.
    pub identity: String,
    /// Its tables (`node/table`), if it keeps any.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// The stateful parts of `plan`, by `source/<name>`, `operator/<name>` or `sink/<name>`.
pub fn parts_of(plan: &Plan) -> BTreeMap<String, StatePart> {
    let tables = |node: &str, descriptors: &[tickflow_state::TableDescriptor]| {
        descriptors
            .iter()
            .map(|t| crate::checkpoint::table_key(node, t.name))
            .collect()
    };
    let mut parts = BTreeMap::new();
    for s in &plan.sources {
        parts.insert(
            format!("source/{}", s.name),
            StatePart {
                identity: s.component.state_identity(),
                tables: Vec::new(),
            },
        );
    }
    for o in &plan.operators {
        if let Some(identity) = o.component.state_identity() {
            parts.insert(
                format!("operator/{}", o.name),
                StatePart {
                    identity: format!("{} {identity}", o.kind.name),
                    tables: tables(&o.name, o.component.state_tables()),
                },
            );
        }
    }
    for s in &plan.sinks {
        parts.insert(
            format!("sink/{}", s.name),
            StatePart {
                identity: s.component.state_identity(),
                tables: tables(&s.name, s.component.state_tables()),
            },
        );
    }
    parts
}

/// What happens to one part's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Continued from the running version's checkpoint.
    Kept,
    /// A part the new version adds: starts empty.
    Empty,
    /// Changed: its old state is dropped and it starts empty.
    Replaced,
    /// A part the new version no longer has: its state is dropped.
    Dropped,
}

/// One part's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartPlan {
    /// `source/<name>`, `operator/<name>` or `sink/<name>`.
    pub part: String,
    /// What happens to its state.
    pub fate: Fate,
    /// Its tables.
    pub tables: Vec<String>,
}

/// What a deploy does with the running version's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatePlan {
    /// Every part of either version, by name.
    pub parts: Vec<PartPlan>,
    /// Whether any state continues (every source is kept).
    pub continues: bool,
    /// Whether any state is dropped (a deploy then needs `allow_state_loss`).
    pub drops_state: bool,
}

impl StatePlan {
    /// The plan from the parts of the running version (`old`) to those of the new one.
    pub fn between(old: &BTreeMap<String, StatePart>, new: &BTreeMap<String, StatePart>) -> Self {
        // A canary's new-version sources feed only its own parts (see `crate::canary`).
        let canary = |k: &str| k.starts_with(&format!("source/{}", crate::canary::CANARY_PREFIX));
        let sources_kept = old
            .iter()
            .chain(new)
            .filter(|(k, _)| k.starts_with("source/") && !canary(k))
            .all(|(k, _)| old.get(k).is_some_and(|o| new.get(k) == Some(o)));
        let mut parts = Vec::new();
        for (key, part) in new {
            let fate = match old.get(key) {
                Some(o) if o == part && sources_kept => Fate::Kept,
                Some(_) => Fate::Replaced,
                None => Fate::Empty,
            };
            parts.push(PartPlan {
                part: key.clone(),
                fate,
                tables: part.tables.clone(),
            });
        }
        for (key, part) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
            parts.push(PartPlan {
                part: key.clone(),
                fate: Fate::Dropped,
                tables: part.tables.clone(),
            });
        }
        parts.sort_by(|a, b| a.part.cmp(&b.part));
        let drops_state = parts
            .iter()
            .any(|p| matches!(p.fate, Fate::Replaced | Fate::Dropped));
        StatePlan {
            parts,
            continues: sources_kept && !old.is_empty(),
            drops_state,
        }
    }

    /// The fate of part `key`.
    pub fn fate(&self, key: &str) -> Option<Fate> {
        self.parts.iter().find(|p| p.part == key).map(|p| p.fate)
    }

    /// One line per part, for a terminal or a refusal.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .parts
            .iter()
            .map(|p| {
                let what = match p.fate {
                    Fate::Kept => "kept (continued from the running version's checkpoint)",
                    Fate::Empty => "empty (new: starts empty)",
                    Fate::Replaced => "replaced (changed: its state is dropped, it starts empty)",
                    Fate::Dropped => "dropped (no longer in the graph)",
                };
                let tables = if p.tables.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", p.tables.join(", "))
                };
                format!("{}: {what}{tables}", p.part)
            })
            .collect();
        if !self.continues {
            out.push(
                "a source changed (or nothing ran before): every part starts over".to_string(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(identity: &str, tables: &[&str]) -> StatePart {
        StatePart {
            identity: identity.into(),
            tables: tables.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn parts(list: &[(&str, StatePart)]) -> BTreeMap<String, StatePart> {
        list.iter()
            .map(|(k, p)| (k.to_string(), p.clone()))
            .collect()
    }

    #[test]
    fn each_part_is_kept_replaced_empty_or_dropped_and_a_changed_source_starts_all_over() {
        let old = parts(&[
            ("source/ticks", part("file a", &[])),
            ("operator/normalize", part("dedup 60", &["normalize/dedup"])),
            ("operator/bars", part("window 1m", &["bars/windows"])),
            ("sink/bars", part("file out", &[])),
        ]);
        let mut new = old.clone();
        new.insert("operator/bars".into(), part("window 2m", &["bars/windows"]));
        new.insert("operator/slow".into(), part("window 5m", &["slow/windows"]));
        new.remove("sink/bars");
        new.insert("sink/bars_1m".into(), part("file out", &[]));
        let plan = StatePlan::between(&old, &new);
        let fate = |k: &str| plan.fate(k).unwrap();
        assert_eq!(fate("source/ticks"), Fate::Kept);
        assert_eq!(fate("operator/normalize"), Fate::Kept);
        assert_eq!(fate("operator/bars"), Fate::Replaced);
        assert_eq!(fate("operator/slow"), Fate::Empty);
        assert_eq!(fate("sink/bars"), Fate::Dropped);
        assert_eq!(fate("sink/bars_1m"), Fate::Empty);
        assert!(plan.continues && plan.drops_state);
        assert!(plan
            .lines()
            .iter()
            .any(|l| l.starts_with("operator/bars: replaced")));

        let same = StatePlan::between(&old, &old);
        assert!(same.continues && !same.drops_state);

        let mut moved = old.clone();
        moved.insert("source/ticks".into(), part("file b", &[]));
        let plan = StatePlan::between(&old, &moved);
        assert!(!plan.continues);
        assert_eq!(plan.fate("operator/normalize"), Some(Fate::Replaced));
    }
}
