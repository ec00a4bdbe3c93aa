//! `window`: event-time OHLCV/VWAP bars over tumbling, sliding or session windows.

use tickflow_operators::session::{SessionSpec, SessionState, TABLES as SESSION_TABLES};
use tickflow_operators::window::{WindowConfig, WindowKind, WindowSpec, WindowState, TABLES};
use tickflow_operators::RecordKind;
use tickflow_state::TableDescriptor;

use crate::component::{BuildCx, Operator, OperatorType};
use crate::render::window::{window, BarState};
use crate::render::{AnyStream, RenderCx};

/// The registry entry.
pub const TYPE: OperatorType = OperatorType {
    name: "window",
    description: "event-time OHLCV/VWAP bars over tumbling, sliding or session windows",
    input: RecordKind::Enriched,
    outputs: &[("out", RecordKind::Bar), ("late", RecordKind::Enriched)],
    example: r#"kind = "tumbling"
size = "1m"
allowed_lateness = "30s""#,
    schema: || schemars::schema_for!(WindowConfig),
    build,
};

#[derive(Debug)]
enum Window {
    Fixed(WindowSpec),
    Session(SessionSpec),
}

fn build(cx: &mut BuildCx) -> Option<Box<dyn Operator>> {
    let cfg: WindowConfig = cx.config()?;
    let shape = match cfg.kind {
        WindowKind::Session => SessionSpec::from_config(&cfg).map(Window::Session),
        WindowKind::Tumbling | WindowKind::Sliding => {
            WindowSpec::from_config(&cfg).map(Window::Fixed)
        }
    };
    match shape {
        Ok(shape) => Some(Box::new(shape)),
        Err(errors) => {
            cx.operator_errors(errors);
            None
        }
    }
}

fn render_with<'s, B: BarState>(
    cx: &RenderCx<'s, '_>,
    input: AnyStream<'s>,
    tables: &[TableDescriptor],
    state: impl FnOnce(bool) -> B,
) -> Vec<AnyStream<'s>> {
    let Some(input) = input.enriched() else {
        return Vec::new();
    };
    let part = cx.operator_part(tables);
    let state = state(part.is_some());
    let (bars, late) = window(input, state, cx.counters(), part, cx.failure);
    vec![AnyStream::Bar(bars), AnyStream::Enriched(late)]
}

impl Operator for Window {
    fn state_tables(&self) -> &'static [TableDescriptor] {
        match self {
            Window::Fixed(_) => TABLES,
            Window::Session(_) => SESSION_TABLES,
        }
    }

    fn state_identity(&self) -> Option<String> {
        Some(match self {
            Window::Fixed(spec) => format!("{spec:?}"),
            Window::Session(spec) => format!("{spec:?}"),
        })
    }

    /// A duplicate arriving later than this would be late anyway.
    fn horizon_ms(&self) -> Option<u64> {
        Some(match self {
            Window::Fixed(spec) => spec.size_ms + spec.lateness_ms,
            Window::Session(spec) => spec.gap_ms + spec.lateness_ms,
        })
    }

    fn event_time_grid_ms(&self) -> Vec<u64> {
        match self {
            Window::Fixed(spec) => vec![spec.size_ms, spec.slide_ms, spec.lateness_ms],
            // A session ends a gap after its last tick, on no grid; only its lateness is.
            Window::Session(spec) => vec![spec.lateness_ms],
        }
    }

    fn render<'s>(&self, cx: &RenderCx<'s, '_>, input: AnyStream<'s>) -> Vec<AnyStream<'s>> {
        match *self {
            Window::Fixed(spec) => render_with(cx, input, TABLES, |durable| {
                if durable {
                    WindowState::durable(spec)
                } else {
                    WindowState::new(spec)
                }
            }),
            Window::Session(spec) => render_with(cx, input, SESSION_TABLES, |durable| {
                if durable {
                    SessionState::durable(spec)
                } else {
                    SessionState::new(spec)
                }
            }),
        }
    }
}
