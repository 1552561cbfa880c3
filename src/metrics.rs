//! Counters for `/metrics`, in the Prometheus text format (0.0.4), written by hand.
//!
//! `prometheus-client` was weighed against this: its encoder writes OpenMetrics (a
//! `# TYPE` line names a counter without its `_total`, bucket bounds read `le="1.0"`, a
//! `# EOF` line ends the text) and its histogram takes a lock on every observation; the
//! exposition would change under scrapers and dashboards, and the per-delivery path would
//! get slower. A few atomics, and [`Histogram`] for each latency series, do the same work.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::delivery::Outcome;

/// Upper bounds of the delivery latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The process's counters: ingest, publish refusals, refused bus messages, deliveries and
/// their latency.
#[derive(Debug, Default)]
pub struct Metrics {
    events_ingested: AtomicU64,
    events_duplicate: AtomicU64,
    publish_rejected: AtomicU64,
    bus_terminated: AtomicU64,
    /// By [`Outcome`], in the order of [`OUTCOMES`].
    deliveries: [AtomicU64; 3],
    latency: Histogram,
}

/// The `outcome` label's values, in the order `Metrics::deliveries` counts them.
const OUTCOMES: [Outcome; 3] = [Outcome::Success, Outcome::Failure, Outcome::Fatal];

/// A latency histogram over `BUCKETS`, cumulative like Prometheus's: an observation counts
/// in every bucket whose bound it does not pass. Lock-free, so observing costs a few atomic
/// additions on the delivery path.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe_ms(&self, duration_ms: i64) {
        let seconds = duration_ms as f64 / 1000.0;
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((duration_ms.max(0) as u64) * 1000, Ordering::Relaxed);
    }

    /// The series of one histogram: its buckets, `+Inf`, sum and count.
    fn write(&self, out: &mut String, name: &str) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = get(&self.sum_micros) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// One webhook's lag, for the gauge.
pub struct Lag {
    pub id: uuid::Uuid,
    pub name: String,
    pub events: i64,
}

fn get(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// The `# HELP` and `# TYPE` lines that open a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format writes it: `\`, `"` and line feeds escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn ingested(&self, stored: u64, duplicates: u64) {
        self.events_ingested.fetch_add(stored, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicates, Ordering::Relaxed);
    }

    pub fn publish_rejected(&self) {
        self.publish_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A bus message that cannot be accepted was terminated (never redelivered).
    pub fn bus_message_terminated(&self) {
        self.bus_terminated.fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivered(&self, outcome: Outcome, duration_ms: i64) {
        let index = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Fatal => 2,
        };
        self.deliveries[index].fetch_add(1, Ordering::Relaxed);
        self.latency.observe_ms(duration_ms);
    }

    /// The text exposition, with the lag of the webhooks this instance delivers.
    pub fn render(&self, lags: &[Lag]) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "outhook_events_ingested_total",
                "Events stored in the event log.",
                &self.events_ingested,
            ),
            (
                "outhook_events_duplicate_total",
                "Published events whose eventId was already in the log.",
                &self.events_duplicate,
            ),
            (
                "outhook_publish_rejected_total",
                "Publish requests refused by the rate limit or quota.",
                &self.publish_rejected,
            ),
            (
                "outhook_nats_messages_terminated_total",
                "NATS messages that could not be accepted (bad JSON, invalid events, too \
                 large) and were terminated instead of redelivered.",
                &self.bus_terminated,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", get(value));
        }
        let name = "outhook_deliveries_total";
        family(&mut out, name, "counter", "Delivery attempts by outcome.");
        for (outcome, count) in OUTCOMES.iter().zip(&self.deliveries) {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {}", get(count));
        }
        let name = "outhook_delivery_duration_seconds";
        family(
            &mut out,
            name,
            "histogram",
            "Time from sending a delivery to its answer.",
        );
        self.latency.write(&mut out, name);
        let name = "outhook_webhook_lag_events";
        family(
            &mut out,
            name,
            "gauge",
            "Events in the log not yet considered for a webhook (this instance's webhooks).",
        );
        for lag in lags {
            let _ = writeln!(
                out,
                "{name}{{webhook_id=\"{}\",webhook=\"{}\"}} {}",
                lag.id,
                label_value(&lag.name),
                lag.events
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.ingested(3, 1);
        m.delivered(Outcome::Success, 2);
        m.delivered(Outcome::Failure, 700);
        let text = m.render(&[Lag {
            id: uuid::Uuid::nil(),
            name: "a\"b".into(),
            events: 4,
        }]);
        assert!(text.contains("outhook_events_ingested_total 3\n"));
        assert!(text.contains("outhook_deliveries_total{outcome=\"failure\"} 1\n"));
        assert!(text.contains("outhook_delivery_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("outhook_delivery_duration_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("outhook_delivery_duration_seconds_count 2\n"));
        assert!(text.contains("webhook=\"a\\\"b\"} 4\n"));
    }
}
