//! Counters for `/metrics`, in the Prometheus text format (written by hand: a few atomics
//! do not need a metrics crate).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::delivery::Outcome;

/// Upper bounds of the delivery latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    events_ingested: AtomicU64,
    events_duplicate: AtomicU64,
    publish_rejected: AtomicU64,
    deliveries: [AtomicU64; 3],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

/// One webhook's lag, for the gauge.
pub struct Lag {
    pub id: uuid::Uuid,
    pub name: String,
    pub events: i64,
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

    pub fn delivered(&self, outcome: Outcome, duration_ms: i64) {
        let index = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Fatal => 2,
        };
        self.deliveries[index].fetch_add(1, Ordering::Relaxed);
        let seconds = duration_ms as f64 / 1000.0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add((duration_ms.max(0) as u64) * 1000, Ordering::Relaxed);
    }

    /// The text exposition, with the lag of the webhooks this instance delivers.
    pub fn render(&self, lags: &[Lag]) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP outhook_events_ingested_total Events stored in the event log."
        );
        let _ = writeln!(out, "# TYPE outhook_events_ingested_total counter");
        let _ = writeln!(
            out,
            "outhook_events_ingested_total {}",
            get(&self.events_ingested)
        );
        let _ = writeln!(
            out,
            "# HELP outhook_events_duplicate_total Published events whose eventId was already in the log."
        );
        let _ = writeln!(out, "# TYPE outhook_events_duplicate_total counter");
        let _ = writeln!(
            out,
            "outhook_events_duplicate_total {}",
            get(&self.events_duplicate)
        );
        let _ = writeln!(
            out,
            "# HELP outhook_publish_rejected_total Publish requests refused by the rate limit or quota."
        );
        let _ = writeln!(out, "# TYPE outhook_publish_rejected_total counter");
        let _ = writeln!(
            out,
            "outhook_publish_rejected_total {}",
            get(&self.publish_rejected)
        );
        let _ = writeln!(
            out,
            "# HELP outhook_deliveries_total Delivery attempts by outcome."
        );
        let _ = writeln!(out, "# TYPE outhook_deliveries_total counter");
        for (i, outcome) in ["success", "failure", "fatal"].iter().enumerate() {
            let _ = writeln!(
                out,
                "outhook_deliveries_total{{outcome=\"{outcome}\"}} {}",
                get(&self.deliveries[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP outhook_delivery_duration_seconds Time from sending a delivery to its answer."
        );
        let _ = writeln!(out, "# TYPE outhook_delivery_duration_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "outhook_delivery_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                get(&self.latency_buckets[i])
            );
        }
        let count = get(&self.latency_count);
        let _ = writeln!(
            out,
            "outhook_delivery_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "outhook_delivery_duration_seconds_sum {}",
            get(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "outhook_delivery_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP outhook_webhook_lag_events Events in the log not yet considered for a webhook (this instance's webhooks)."
        );
        let _ = writeln!(out, "# TYPE outhook_webhook_lag_events gauge");
        for lag in lags {
            let name = lag
                .name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                out,
                "outhook_webhook_lag_events{{webhook_id=\"{}\",webhook=\"{name}\"}} {}",
                lag.id, lag.events
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
