//! Event-time bars by instrument, with a `late` output.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;

use tickflow_operators::instrument_route;
use tickflow_operators::record::{Bar, EnrichedTick};
use tickflow_operators::window::WindowState;
use tickflow_state::Durable;

use super::stash::{frontier_time, TimeStash};
use super::{counters, fail, Counters, Failure, OperatorPart, S};

/// Window state the window operator drives: tumbling and sliding windows, sessions.
pub trait BarState: Durable + 'static {
    /// Applies a tick that arrived at watermark `time`. Bars it changes that were already
    /// emitted (revisions, retractions) go to `revisions`; the ends of the windows it now
    /// belongs to go to `ends` (the operator holds a capability at each until it passes).
    /// Returns the tick if it is late.
    fn apply_at(
        &mut self,
        time: u64,
        tick: EnrichedTick,
        revisions: &mut Vec<Bar>,
        ends: &mut Vec<u64>,
    ) -> Option<EnrichedTick>;
    /// Emits the bars of windows whose end the watermark has reached.
    fn advance(&mut self, watermark: u64, bars: &mut Vec<Bar>);
    /// The ends of windows not yet emitted (after a restore).
    fn pending_ends(&self) -> Vec<u64>;
}

impl BarState for WindowState {
    fn apply_at(
        &mut self,
        time: u64,
        tick: EnrichedTick,
        revisions: &mut Vec<Bar>,
        ends: &mut Vec<u64>,
    ) -> Option<EnrichedTick> {
        ends.extend(
            self.spec()
                .windows_of(tick.tick.ts_ms())
                .map(|(_, end)| end),
        );
        self.apply(time, tick, revisions)
    }

    fn advance(&mut self, watermark: u64, bars: &mut Vec<Bar>) {
        WindowState::advance(self, watermark, bars)
    }

    fn pending_ends(&self) -> Vec<u64> {
        WindowState::pending_ends(self)
    }
}

/// The time a window's bar is given at: the millisecond before its end (at the earliest,
/// `cap`'s). The bar is complete once the frontier reaches the end, and sinks write a time
/// once the frontier has passed it: given at the end itself, a closed bar would wait for the
/// watermark's next step (up to 5 s) before a sink wrote it.
fn bar_time(end: u64, cap: &Capability<u64>) -> u64 {
    end.saturating_sub(1).max(*cap.time())
}

/// The window operator's bars output, activated.
type BarsSession<'a> = timely::dataflow::operators::generic::OutputBuilderSession<
    'a,
    u64,
    timely::container::CapacityContainerBuilder<Vec<Bar>>,
>;

/// Event-time bars by instrument, with a `late` output.
pub fn window<'s, B: BarState>(
    input: S<'s, EnrichedTick>,
    mut state: B,
    counters_: Counters,
    mut part: Option<OperatorPart>,
    failure: &Failure,
) -> (S<'s, Bar>, S<'s, EnrichedTick>) {
    let failure = Arc::clone(failure);
    let (index, peers) = (input.scope().index(), input.scope().peers());
    let mut builder = OperatorBuilder::new("Window".to_string(), input.scope());
    let mut input = builder.new_input(
        input,
        Exchange::new(|t: &EnrichedTick| instrument_route(&t.instrument.instrument_id)),
    );
    let (bars_out, bars) = builder.new_output();
    let (late_out, late) = builder.new_output();
    let mut bars_out =
        OutputBuilder::<_, timely::container::CapacityContainerBuilder<Vec<Bar>>>::from(bars_out);
    let mut late_out = OutputBuilder::<
        _,
        timely::container::CapacityContainerBuilder<Vec<EnrichedTick>>,
    >::from(late_out);
    builder.build(move |caps| {
        let mut stash = TimeStash::new();
        // Capabilities for the bar of every window not yet emitted (at its `bar_time`).
        let mut end_caps: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        if let Some(p) = part.as_ref() {
            match p.restore(&mut state, index, peers) {
                Ok(()) => {
                    if let Some(cap) = caps.first() {
                        for end in state.pending_ends() {
                            end_caps.insert(end, cap.delayed(&bar_time(end, cap)));
                        }
                    }
                }
                Err(e) => fail(&failure, e),
            }
        }
        drop(caps);
        let mut bars_buf = Vec::new();
        move |frontiers| {
            let frontier = &frontiers[0];
            let mut bars_handle = bars_out.activate();
            let mut late_handle = late_out.activate();
            let (mut n_in, mut n_bars, mut n_late) = (0u64, 0u64, 0u64);
            input.for_each_stamp(|cap, data| stash.stash(&cap, 2, data));

            // Closes the windows ending by `t` and gives their bars. Where reaching `t` passes
            // a checkpoint, the state is saved once the windows ending by the checkpoint's
            // time are closed and before the others are: their bars, given at end - 1, are
            // before that time in every sink's position.
            let mut close = |t: u64,
                             state: &mut B,
                             end_caps: &mut BTreeMap<u64, Capability<u64>>,
                             bars_handle: &mut BarsSession<'_>|
             -> u64 {
                let mut n = 0;
                let mut close_to = |upto: u64, state: &mut B| {
                    state.advance(upto, &mut bars_buf);
                    n += bars_buf.len() as u64;
                    for bar in bars_buf.drain(..) {
                        if let Some(cap) = end_caps.get(&bar.window_end_ms) {
                            bars_handle.session(cap).give(bar);
                        }
                    }
                    let keep = end_caps.split_off(&upto.saturating_add(1));
                    *end_caps = keep;
                };
                if let Some(p) = part.as_mut() {
                    if let Some((_, through)) = p.due(t) {
                        close_to(through.min(t), state);
                        if let Err(e) = p.save(t, state) {
                            fail(&failure, e);
                        }
                    }
                }
                close_to(t, state);
                n
            };
            while let Some((time, caps, mut ticks)) = stash.pop_ready(frontier) {
                n_bars += close(time, &mut state, &mut end_caps, &mut bars_handle);
                let (Some(bar_cap), Some(late_cap)) = (caps.first(), caps.get(1)) else {
                    continue;
                };
                ticks.sort_by_key(|t| t.tick.ordinal);
                n_in += ticks.len() as u64;
                let mut revisions = Vec::new();
                let mut late_ticks = Vec::new();
                let mut ends = Vec::new();
                for tick in ticks {
                    ends.clear();
                    if let Some(late) = state.apply_at(time, tick, &mut revisions, &mut ends) {
                        late_ticks.push(late);
                    }
                    for &end in &ends {
                        if end > time {
                            end_caps
                                .entry(end)
                                .or_insert_with(|| bar_cap.delayed(&bar_time(end, bar_cap)));
                        }
                    }
                }
                n_bars += revisions.len() as u64;
                n_late += late_ticks.len() as u64;
                bars_handle
                    .session(bar_cap)
                    .give_iterator(revisions.into_iter());
                late_handle
                    .session(late_cap)
                    .give_iterator(late_ticks.into_iter());
            }
            let upto = frontier_time(frontier);
            n_bars += close(upto, &mut state, &mut end_caps, &mut bars_handle);
            if let Some(c) = counters(&counters_) {
                c.add_in(n_in);
                c.add_out(0, n_bars);
                c.add_out(1, n_late);
                counters_.0.late.fetch_add(n_late, Ordering::Relaxed);
            }
        }
    });
    (bars, late)
}

impl BarState for tickflow_operators::session::SessionState {
    fn apply_at(
        &mut self,
        time: u64,
        tick: EnrichedTick,
        revisions: &mut Vec<Bar>,
        ends: &mut Vec<u64>,
    ) -> Option<EnrichedTick> {
        self.apply(time, tick, revisions, ends)
    }

    fn advance(&mut self, watermark: u64, bars: &mut Vec<Bar>) {
        tickflow_operators::session::SessionState::advance(self, watermark, bars)
    }

    fn pending_ends(&self) -> Vec<u64> {
        tickflow_operators::session::SessionState::pending_ends(self)
    }
}
