//! Streams of any record kind, by `(node, output)`.

use std::collections::HashMap;
use std::sync::Arc;

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::{Scope, StreamVec};

use tickflow_operators::record::{Bar, DeadLetter, EnrichedTick, RawLine, Tick, ToJsonLine};
use tickflow_operators::RecordKind;

use crate::plan::OutputRef;

/// A stream of records of type `D` at event-time watermarks.
pub type S<'s, D> = StreamVec<'s, u64, D>;

/// A stream of any record kind: what components hand each other.
#[derive(Clone)]
pub enum AnyStream<'s> {
    /// Raw records ([`RecordKind::Raw`]).
    Raw(S<'s, RawLine>),
    /// Normalized ticks.
    Tick(S<'s, Tick>),
    /// Ticks with their instrument.
    Enriched(S<'s, EnrichedTick>),
    /// Window aggregates.
    Bar(S<'s, Bar>),
    /// Rejected records.
    DeadLetter(S<'s, DeadLetter>),
}

macro_rules! typed {
    ($($method:ident, $variant:ident, $ty:ty;)*) => {
        impl<'s> AnyStream<'s> {
            $(
                /// The stream, if it carries this kind.
                pub fn $method(self) -> Option<S<'s, $ty>> {
                    match self {
                        AnyStream::$variant(s) => Some(s),
                        _ => None,
                    }
                }
            )*

            /// The record kind it carries.
            pub fn kind(&self) -> RecordKind {
                match self {
                    $(AnyStream::$variant(_) => RecordKind::$variant,)*
                }
            }

            /// Concatenates streams of one kind (`None` if empty or kinds differ).
            fn concat(scope: Scope<'s, u64>, streams: Vec<AnyStream<'s>>) -> Option<AnyStream<'s>> {
                let kind = streams.first()?.kind();
                match kind {
                    $(RecordKind::$variant => {
                        let typed: Option<Vec<S<'s, $ty>>> =
                            streams.into_iter().map(AnyStream::$method).collect();
                        let mut typed = typed?;
                        Some(AnyStream::$variant(if typed.len() == 1 {
                            typed.pop()?
                        } else {
                            scope.concatenate(typed)
                        }))
                    })*
                }
            }

            /// The records rendered as JSON lines (`names`: source names by id).
            pub fn lines(&self, names: &Arc<Vec<String>>) -> S<'s, String> {
                fn render<'s, D: ToJsonLine + Clone + 'static>(
                    s: &S<'s, D>,
                    names: &Arc<Vec<String>>,
                ) -> S<'s, String> {
                    let names = Arc::clone(names);
                    s.clone().map(move |r| r.to_json_line(&names))
                }
                match self {
                    $(AnyStream::$variant(s) => render(s, names),)*
                }
            }
        }
    };
}

typed! {
    raw, Raw, RawLine;
    tick, Tick, Tick;
    enriched, Enriched, EnrichedTick;
    bar, Bar, Bar;
    dead_letter, DeadLetter, DeadLetter;
}

/// Streams by `(node, output)`.
pub(crate) struct Streams<'s> {
    pub(crate) scope: Scope<'s, u64>,
    map: HashMap<(String, String), AnyStream<'s>>,
}

impl<'s> Streams<'s> {
    pub(crate) fn new(scope: Scope<'s, u64>) -> Self {
        Streams {
            scope,
            map: HashMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, node: &str, output: &str, stream: AnyStream<'s>) {
        self.map
            .insert((node.to_string(), output.to_string()), stream);
    }

    /// The named outputs concatenated, if all are there and of one kind.
    pub(crate) fn input(&self, inputs: &[OutputRef]) -> Option<AnyStream<'s>> {
        let streams: Option<Vec<AnyStream<'s>>> = inputs
            .iter()
            .map(|i| self.map.get(&(i.node.clone(), i.output.clone())).cloned())
            .collect();
        AnyStream::concat(self.scope, streams?)
    }

    /// The named outputs, each rendered as JSON lines, concatenated.
    /// With a `route`, each input keeps only the records its version owns.
    pub(crate) fn lines(
        &self,
        inputs: &[OutputRef],
        names: &Arc<Vec<String>>,
        route: Option<&super::route::Route>,
    ) -> Option<S<'s, String>> {
        use super::route::{keep, Lane};
        let mut lines: Vec<S<'s, String>> = inputs
            .iter()
            .enumerate()
            .filter_map(|(n, i)| {
                let stream = self.map.get(&(i.node.clone(), i.output.clone()))?;
                Some(match route {
                    None => stream.lines(names),
                    Some(r) => {
                        let lane = if n < r.canary_from {
                            Lane::Current
                        } else {
                            Lane::Canary
                        };
                        keep(stream.clone(), lane, &r.schedule).lines(names)
                    }
                })
            })
            .collect();
        match lines.len() {
            0 => None,
            1 => lines.pop(),
            _ => Some(self.scope.concatenate(lines)),
        }
    }
}
