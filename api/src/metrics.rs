//! `/metrics`: Prometheus text format from `prometheus-client`. API requests are counted as
//! they happen; deployment counters are read from the engine's atomics at each scrape by a
//! [`Collector`], so the dataflow never touches the registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tickflow_engine::control::RolloutState;
use tickflow_engine::metrics::ALIGN_BUCKETS_SECONDS;
use tickflow_engine::supervisor::{canary_checks, Supervisor};
use tickflow_operators::record::DeadLetterReason;

use crate::error::ApiError;
use crate::AppState;

type Labels = Vec<(String, String)>;

/// The registry and the API's own metrics.
#[derive(Debug)]
pub struct ApiMetrics {
    /// Everything `/metrics` renders.
    pub registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<Labels, Counter>,
    /// Requests refused for want of a valid key, by reason.
    pub refused_logins: Family<Labels, Counter>,
}

impl ApiMetrics {
    /// A registry with the API counters and the engine collector.
    pub fn new(sup: Arc<Supervisor>) -> ApiMetrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "tickflow_api_requests",
            "HTTP API requests by route, method and status",
            requests.clone(),
        );
        let refused_logins = Family::<Labels, Counter>::default();
        registry.register(
            "tickflow_api_refused_logins",
            "Requests refused for want of a valid API key (no key, unknown key)",
            refused_logins.clone(),
        );
        registry.register_collector(Box::new(EngineCollector { sup }));
        ApiMetrics {
            registry,
            requests,
            refused_logins,
        }
    }
}

#[derive(Debug)]
struct EngineCollector {
    sup: Arc<Supervisor>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counter(
            &mut enc,
            "tickflow_event_log_appends",
            "Events appended to the control event log by this process",
            &[(Vec::new(), self.sup.appends())],
        )?;
        let runs = self.sup.metrics();
        let mut records_in = Vec::new();
        let mut records_out = Vec::new();
        let mut dead = Vec::new();
        let mut late = Vec::new();
        let mut dups = Vec::new();
        let mut lag = Vec::new();
        let mut ckpts = Vec::new();
        let mut align = Vec::new();
        let mut up = Vec::new();
        let (mut kafka_bytes, mut produce_errors, mut client_errors) = (vec![], vec![], vec![]);
        let (mut replay_skipped, mut broker_down, mut consumer_lag) = (vec![], vec![], vec![]);
        let (mut share, mut step, mut check_value, mut check_threshold) =
            (vec![], vec![], vec![], vec![]);
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        for (d, m) in &runs {
            let id = d.id.to_string();
            let base = [("deployment", id.as_str()), ("graph", d.graph.as_str())];
            if let Some(r) = d.rollout.as_ref().filter(|r| r.is_open()) {
                let state = if r.state == RolloutState::Paused {
                    "paused"
                } else {
                    "running"
                };
                let l = labels(&[base[0], base[1], ("state", state)]);
                share.push((l.clone(), f64::from(r.share_pct)));
                step.push((l, r.step as f64));
                for c in canary_checks(r, m) {
                    let l = labels(&[base[0], base[1], ("metric", &c.metric)]);
                    check_value.push((l.clone(), c.value));
                    check_threshold.push((l, c.threshold));
                }
            }
            for n in &m.nodes {
                let l = labels(&[base[0], base[1], ("node", &n.name), ("role", n.role)]);
                records_in.push((l, n.records_in.load(Ordering::Relaxed)));
                for (out, c) in &n.outputs {
                    let l = labels(&[base[0], base[1], ("node", &n.name), ("output", out)]);
                    records_out.push((l, c.load(Ordering::Relaxed)));
                }
            }
            for (reason, c) in DeadLetterReason::ALL.iter().zip(&m.dead_letters) {
                let l = labels(&[base[0], base[1], ("reason", reason.name())]);
                dead.push((l, c.load(Ordering::Relaxed)));
            }
            late.push((labels(&base), m.late.load(Ordering::Relaxed)));
            dups.push((labels(&base), m.duplicates.load(Ordering::Relaxed)));
            if let Some(w) = m.watermark_ms().filter(|w| *w < u64::MAX) {
                let secs = now_ms.saturating_sub(w) as f64 / 1000.0;
                lag.push((labels(&base), secs));
            }
            ckpts.push((labels(&base), m.checkpoints.load(Ordering::Relaxed)));
            let us = m.checkpoint_us_total.load(Ordering::Relaxed);
            let buckets: Vec<(f64, u64)> = ALIGN_BUCKETS_SECONDS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(&m.checkpoint_align_buckets)
                .map(|(bound, c)| (bound, c.load(Ordering::Relaxed)))
                .collect();
            align.push((labels(&base), us as f64 / 1e6, buckets));
            let state = d.state.name();
            up.push((labels(&[base[0], base[1], ("state", state)]), 1.0));
            let clients = m.kafka.lock().map(|k| k.clone()).unwrap_or_default();
            for (node, k) in &clients {
                let l = |extra: &[(&str, &str)]| {
                    let mut pairs = vec![base[0], base[1], ("node", node.as_str())];
                    pairs.extend_from_slice(extra);
                    labels(&pairs)
                };
                for (dir, c) in [("in", &k.bytes_in), ("out", &k.bytes_out)] {
                    kafka_bytes.push((l(&[("direction", dir)]), c.load(Ordering::Relaxed)));
                }
                produce_errors.push((l(&[]), k.produce_errors.load(Ordering::Relaxed)));
                client_errors.push((l(&[]), k.client_errors.load(Ordering::Relaxed)));
                replay_skipped.push((l(&[]), k.replay_skipped.load(Ordering::Relaxed)));
                let down = k.broker_down.load(Ordering::Relaxed);
                broker_down.push((l(&[]), if down { 1.0 } else { 0.0 }));
                let lags = k.lag.lock().map(|g| g.clone()).unwrap_or_default();
                for ((topic, partition), v) in lags {
                    let p = partition.to_string();
                    consumer_lag.push((l(&[("topic", &topic), ("partition", &p)]), v as f64));
                }
            }
        }
        counter(
            &mut enc,
            "tickflow_kafka_bytes",
            "Bytes of Kafka keys and values consumed (in) and acknowledged (out)",
            &kafka_bytes,
        )?;
        counter(
            &mut enc,
            "tickflow_kafka_produce_errors",
            "Kafka records whose delivery failed or that could not be queued",
            &produce_errors,
        )?;
        counter(
            &mut enc,
            "tickflow_kafka_client_errors",
            "Errors reported by Kafka clients (broker down, transport failures)",
            &client_errors,
        )?;
        counter(
            &mut enc,
            "tickflow_kafka_replay_skipped",
            "Records a restored Kafka sink found already written and did not write again",
            &replay_skipped,
        )?;
        gauge(
            &mut enc,
            "tickflow_kafka_broker_down",
            "1 while a Kafka client's last event was an error, 0 after a good fetch or delivery",
            &broker_down,
        )?;
        gauge(
            &mut enc,
            "tickflow_kafka_consumer_lag",
            "Records between a Kafka source's position and the partition's end",
            &consumer_lag,
        )?;
        counter(
            &mut enc,
            "tickflow_records_in",
            "Records received per node",
            &records_in,
        )?;
        counter(
            &mut enc,
            "tickflow_records_out",
            "Records sent per node and output",
            &records_out,
        )?;
        counter(
            &mut enc,
            "tickflow_dead_letters",
            "Dead letters by reason",
            &dead,
        )?;
        counter(
            &mut enc,
            "tickflow_late_ticks",
            "Ticks sent to late outputs",
            &late,
        )?;
        counter(
            &mut enc,
            "tickflow_duplicates",
            "Duplicate ticks dropped",
            &dups,
        )?;
        gauge(
            &mut enc,
            "tickflow_watermark_lag_seconds",
            "Wall clock minus the graph's event-time watermark",
            &lag,
        )?;
        counter(
            &mut enc,
            "tickflow_checkpoints",
            "Checkpoints committed",
            &ckpts,
        )?;
        let mut m = enc.encode_descriptor(
            "tickflow_checkpoint_align_seconds",
            "Time from a checkpoint's first save to its commit",
            None,
            MetricType::Histogram,
        )?;
        for (labels, sum, buckets) in &align {
            let count = buckets.iter().map(|b| b.1).sum();
            m.encode_family(labels)?
                .encode_histogram::<Labels>(*sum, count, buckets, None)?;
        }
        let mut shadow = Vec::new();
        for (id, diff) in self.sup.shadow_stats() {
            let id = id.to_string();
            for (sink, d) in &diff.sinks {
                for (outcome, n) in [
                    ("matched", d.matched),
                    ("differing", d.differing),
                    ("only_current", d.only_old),
                    ("only_shadow", d.only_new),
                ] {
                    let l = labels(&[("deployment", &id), ("sink", sink), ("outcome", outcome)]);
                    shadow.push((l, n as f64));
                }
            }
        }
        gauge(
            &mut enc,
            "tickflow_shadow_keys",
            "A shadow's keyed diff against production, by sink and outcome (final records only)",
            &shadow,
        )?;
        gauge(
            &mut enc,
            "tickflow_rollout_share_percent",
            "Percent of keys a canary's new version owns in the production outputs",
            &share,
        )?;
        gauge(
            &mut enc,
            "tickflow_rollout_step",
            "The step a canary rollout has passed (0: none yet)",
            &step,
        )?;
        gauge(
            &mut enc,
            "tickflow_rollout_check_value",
            "A canary's check metric now (dead_letter_rate, late_rate), the new version's",
            &check_value,
        )?;
        gauge(
            &mut enc,
            "tickflow_rollout_check_threshold",
            "The most a canary's check metric may be",
            &check_threshold,
        )?;
        gauge(
            &mut enc,
            "tickflow_deployment_info",
            "Deployments with a dataflow in this process, by state",
            &up,
        )?;
        Ok(())
    }
}

/// `GET /metrics`: OpenMetrics for a client that asks for it (Prometheus does), else the
/// Prometheus text format 0.0.4 (what `curl` and `promtool check metrics` read).
pub async fn render(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            text_format(&text),
        )
    };
    Ok(([(CONTENT_TYPE, content_type)], body).into_response())
}

/// OpenMetrics text as the Prometheus text format: a counter family `x` is named `x_total`
/// in its `HELP` and `TYPE` lines (its samples already are), and there is no `# EOF`.
fn text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct One;

    impl Collector for One {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut m = enc.encode_descriptor("x_seconds", "x", None, MetricType::Histogram)?;
            let buckets = [(0.5, 1u64), (f64::INFINITY, 2)];
            m.encode_family(&vec![("d".to_string(), "1".to_string())])?
                .encode_histogram::<Labels>(3.0, 3, &buckets, None)?;
            Ok(())
        }
    }

    #[test]
    fn the_text_format_names_counters_with_total() {
        let om = "# HELP a_x Xs.\n# TYPE a_x counter\na_x_total{k=\"v\"} 1\n\
                  # HELP b Bees.\n# TYPE b gauge\nb 2\n# EOF\n";
        assert_eq!(
            text_format(om),
            "# HELP a_x_total Xs.\n# TYPE a_x_total counter\na_x_total{k=\"v\"} 1\n\
             # HELP b Bees.\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn histograms_encode_cumulative_buckets() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // Buckets are cumulative.
        assert!(
            text.contains("x_seconds_bucket{le=\"0.5\",d=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{le=\"+Inf\",d=\"1\"} 3"),
            "{text}"
        );
    }
}
