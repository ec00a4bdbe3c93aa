//! Every component type, one registry line each. The engine learns about a type only here:
//! adding a source, operator or sink is one file beside this one plus one line below.

pub mod enrich;
pub mod file_sink;
pub mod file_source;
pub mod kafka_sink;
pub mod kafka_source;
pub mod map;
pub mod normalize;
pub mod projection;
pub mod stdout;
pub mod window;

use crate::component::{OperatorType, SinkType, SourceType};

/// Every source type.
pub fn sources() -> &'static [SourceType] {
    &[file_source::TYPE, kafka_source::TYPE]
}

/// Every operator type.
pub fn operators() -> &'static [OperatorType] {
    &[normalize::TYPE, enrich::TYPE, window::TYPE, map::TYPE]
}

/// Every sink type.
pub fn sinks() -> &'static [SinkType] {
    &[
        file_sink::TYPE,
        stdout::TYPE,
        projection::TYPE,
        kafka_sink::TYPE,
    ]
}
