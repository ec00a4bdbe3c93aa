//! Source flow control: how far ahead of the sinks a source may read.

use timely::dataflow::ProbeHandle;

/// Lines a source reads before it moves its watermark.
pub const BATCH: usize = 1_000;

/// Batches (with distinct watermarks) a source may have in flight before the sinks have
/// completed them: the flow control that keeps memory flat when one worker reads for all.
pub const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// A source's flow control: the watermarks of its recent batches, oldest first. A source holds
/// back while the sinks (`probe`) have not completed the batch sent [`MAX_BATCHES_IN_FLIGHT`]
/// watermarks ago, which keeps memory flat when sources read faster than sinks write.
pub struct FlowControl {
    probe: ProbeHandle<u64>,
    in_flight: std::collections::VecDeque<u64>,
}

impl FlowControl {
    pub fn new(probe: ProbeHandle<u64>) -> Self {
        FlowControl {
            probe,
            in_flight: Default::default(),
        }
    }

    /// Whether a source whose capability is at `now` should wait before reading more.
    pub fn hold(&mut self, now: u64) -> bool {
        while self
            .in_flight
            .front()
            .is_some_and(|t| !self.probe.less_equal(t))
        {
            self.in_flight.pop_front();
        }
        self.in_flight.len() >= MAX_BATCHES_IN_FLIGHT
            && self.in_flight.front().is_some_and(|t| *t < now)
    }

    /// Records that the source leaves watermark `t` behind.
    pub fn sent(&mut self, t: u64) {
        self.in_flight.push_back(t);
    }
}
