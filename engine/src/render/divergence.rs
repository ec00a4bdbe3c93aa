//! A canary's divergence: the bars of the two versions of a canary dataflow compared as they
//! are made, by `(instrument, window, revision)`. A pair that differs, or a bar only one version
//! made once both have passed its window's horizon, counts as diverging; bars of windows that
//! ended before this run began are not counted (the current version made them in an earlier
//! run, the new one only now, catching up).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concatenate;

use tickflow_operators::record::Bar;

use super::route::key_slot;
use super::stash::frontier_time;
use super::S;
use crate::metrics::Metrics;

/// `(instrument_id, window_start, window_end, revision)`.
type Key = (Arc<str>, u64, u64, u32);

/// Counts the divergence of `current` and `canary` bars into `metrics.divergence`
/// (matched, differing, only in one).
/// Bars of windows ending at or before `resumed_ms` (the checkpoint the run resumed from) are
/// not counted when only one version made them.
pub fn compare<'s>(
    (current, canary): (S<'s, Bar>, S<'s, Bar>),
    horizon_ms: u64,
    resumed_ms: u64,
    metrics: Arc<Metrics>,
) {
    let scope = current.scope();
    let tagged = scope.concatenate(vec![current.map(|b| (false, b)), canary.map(|b| (true, b))]);
    let mut pending: HashMap<Key, (bool, Bar)> = HashMap::new();
    let route = |r: &(bool, Bar)| u64::from(key_slot(&r.1.instrument.instrument_id));
    type Nothing = timely::container::CapacityContainerBuilder<Vec<()>>;
    let _: S<'s, ()> = tagged.unary_frontier::<Nothing, _, _, _>(
        Exchange::new(route),
        "Divergence",
        move |_, _| {
            move |(input, frontier), _output| {
                let (mut matched, mut differing, mut alone) = (0u64, 0u64, 0u64);
                input.for_each_stamp(|_cap, data| {
                    for batch in data {
                        for (lane, bar) in batch.drain(..) {
                            let key = (
                                Arc::clone(&bar.instrument.instrument_id),
                                bar.window_start_ms,
                                bar.window_end_ms,
                                bar.revision,
                            );
                            match pending.remove(&key) {
                                Some((other, seen)) if other != lane => {
                                    if seen == bar {
                                        matched += 1;
                                    } else {
                                        differing += 1;
                                    }
                                }
                                _ => {
                                    pending.insert(key, (lane, bar));
                                }
                            }
                        }
                    }
                });
                let now = frontier_time(frontier);
                pending.retain(|k, _| {
                    let passed = k.2.saturating_add(horizon_ms) < now;
                    if passed && k.2 > resumed_ms {
                        alone += 1;
                    }
                    !passed
                });
                for (i, n) in [matched, differing, alone].into_iter().enumerate() {
                    if n > 0 {
                        metrics.divergence[i].fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        },
    );
}
