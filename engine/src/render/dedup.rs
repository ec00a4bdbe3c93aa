//! Drops ticks whose `(venue, seq)` was already seen.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use tickflow_operators::normalize::{dedup_route, Deduper};
use tickflow_operators::record::Tick;

use super::stash::{frontier_time, TimeStash};
use super::{counters, fail, Counters, Failure, OperatorPart, S};

/// Drops ticks whose `(venue, seq)` was already seen, first in (time, input position) order.
pub fn dedup<'s>(
    input: S<'s, Tick>,
    retention_ms: u64,
    counters_: Counters,
    mut part: Option<OperatorPart>,
    failure: &Failure,
) -> S<'s, Tick> {
    let mut deduper = match part {
        Some(_) => Deduper::durable(retention_ms, input.scope().index() as u32),
        None => Deduper::new(retention_ms),
    };
    let mut stash = TimeStash::new();
    let failure = Arc::clone(failure);
    let (index, peers) = (input.scope().index(), input.scope().peers());
    input.unary_frontier(
        Exchange::new(|t: &Tick| dedup_route(&t.venue, t.seq)),
        "Dedup",
        move |_cap, _info| {
            if let Some(Err(e)) = part.as_ref().map(|p| p.restore(&mut deduper, index, peers)) {
                fail(&failure, e);
            }
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| stash.stash(&cap, 1, data));
                let mut kept = 0;
                let mut dups = 0;
                let mut save = |t: u64, deduper: &mut Deduper| {
                    if let Some(Err(e)) = part.as_mut().map(|p| p.save(t, deduper)) {
                        fail(&failure, e);
                    }
                };
                while let Some((time, caps, mut ticks)) = stash.pop_ready(frontier) {
                    save(time, &mut deduper);
                    deduper.advance(time);
                    ticks.sort_by_key(|t| t.ordinal);
                    let Some(cap) = caps.first() else { continue };
                    let mut session = output.session(cap);
                    for tick in ticks {
                        if deduper.first_seen(&tick) {
                            kept += 1;
                            session.give(tick);
                        } else {
                            dups += 1;
                        }
                    }
                }
                save(frontier_time(frontier), &mut deduper);
                if let Some(c) = counters(&counters_) {
                    counters_.0.duplicates.fetch_add(dups, Ordering::Relaxed);
                    c.add_out(0, kept);
                }
            }
        },
    )
}
