//! Source flow control: how far ahead of the sinks a source may read.

use timely::dataflow::ProbeHandle;

/// Lines a source reads before it moves its watermark.
pub const BATCH: usize = 1_000;

/// Records a source may have in flight (emitted at watermarks the sinks have not completed)
/// before it holds back: the flow control that keeps memory flat when one worker reads for
/// all. It used to be four watermarks, which on sparse data (a thousand ticks per watermark
/// step) left the workers idle a third of the time waiting on each other; 32,768 records
/// (about 10 MB of raw lines) keep every stage busy.
pub const MAX_RECORDS_IN_FLIGHT: usize = 32_768;

/// A source's flow control: the watermarks it left behind with the records emitted at each,
/// oldest first. A source holds back while the records at watermarks the sinks (`probe`) have
/// not completed reach [`MAX_RECORDS_IN_FLIGHT`], which keeps memory flat when sources read
/// faster than sinks write.
pub struct FlowControl {
    probe: ProbeHandle<u64>,
    in_flight: std::collections::VecDeque<(u64, usize)>,
    records: usize,
}

impl FlowControl {
    pub fn new(probe: ProbeHandle<u64>) -> Self {
        FlowControl {
            probe,
            in_flight: Default::default(),
            records: 0,
        }
    }

    /// Whether a source whose capability is at `now` should wait before reading more.
    pub fn hold(&mut self, now: u64) -> bool {
        while let Some(&(t, n)) = self.in_flight.front() {
            if self.probe.less_equal(&t) {
                break;
            }
            self.records -= n;
            self.in_flight.pop_front();
        }
        self.records >= MAX_RECORDS_IN_FLIGHT && self.in_flight.front().is_some_and(|t| t.0 < now)
    }

    /// Records that the source leaves watermark `t` behind, with `records` emitted at it.
    pub fn sent(&mut self, t: u64, records: usize) {
        self.in_flight.push_back((t, records));
        self.records += records;
    }
}
