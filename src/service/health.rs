//! A webhook's delivery health: attempts, successes, failures and request durations over
//! the last hour and day, read off the per-minute rollups the store keeps as attempts are
//! recorded (see `store::operations`), and the same minutes as a series for a chart.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Result, Service};
use crate::clock::Millis;
use crate::store::{DURATION_BOUNDS_MS, Rollup, minute_of};

const MINUTE_MS: Millis = 60_000;
const HOUR_MS: Millis = 60 * MINUTE_MS;
const DAY_MS: Millis = 24 * HOUR_MS;

/// Delivery attempts over a time window ending now.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthWindow {
    /// Requests sent (test messages are not counted).
    pub attempts: i64,
    /// Attempts answered 2xx.
    pub successes: i64,
    /// Attempts that failed (to be retried, or past retrying).
    pub failures: i64,
    /// successes / attempts; null without attempts.
    pub success_ratio: Option<f64>,
    /// The median request duration, in ms: the upper bound of the duration bucket holding
    /// it (1, 2, 5, 10, 20, 50, 100, 200, 500 ms, 1, 2, 5, 10, 20, 30, 60, 120, 300 s; past
    /// 300 s, 300000). Null without attempts.
    pub p50_duration_ms: Option<i64>,
    /// The 99th percentile request duration, in ms, read the same way.
    pub p99_duration_ms: Option<i64>,
}

/// Delivery health over the last hour and the last 24 hours (whole minutes: the current
/// minute and the ones before it).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryHealth {
    pub last_hour: HealthWindow,
    #[serde(rename = "last24Hours")]
    pub last_24_hours: HealthWindow,
}

/// Attempts and failures in one span of time, for a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChartPoint {
    /// Where the span starts (ms).
    pub from: Millis,
    pub attempts: i64,
    pub failures: i64,
}

/// A webhook's health figures and its last day in spans, read at once.
pub struct HealthReport {
    pub health: DeliveryHealth,
    /// The last 24 hours in 24 spans of an hour, oldest first.
    pub hourly: Vec<ChartPoint>,
}

impl Service {
    /// The delivery health of the webhook with this id (callers have found it first).
    pub async fn health_report(&self, webhook: Uuid) -> Result<HealthReport> {
        let now = self.clock.now_ms();
        let this_minute = minute_of(now);
        let day_from = this_minute - DAY_MS + MINUTE_MS;
        let rollups = self.store.attempt_rollups(webhook, day_from).await?;
        Ok(HealthReport {
            health: DeliveryHealth {
                last_hour: window(&rollups, this_minute - HOUR_MS + MINUTE_MS),
                last_24_hours: window(&rollups, day_from),
            },
            hourly: series(&rollups, this_minute + MINUTE_MS - DAY_MS, HOUR_MS, 24),
        })
    }
}

/// The figures of the rollups from minute `since` on.
pub fn window(rollups: &[Rollup], since: Millis) -> HealthWindow {
    let mut buckets = [0i64; DURATION_BOUNDS_MS.len() + 1];
    let (mut attempts, mut successes, mut failures) = (0, 0, 0);
    for r in rollups.iter().filter(|r| r.minute >= since) {
        attempts += r.attempts;
        successes += r.successes;
        failures += r.failures;
        if let Some(count) = usize::try_from(r.bucket)
            .ok()
            .and_then(|b| buckets.get_mut(b))
        {
            *count += r.attempts;
        }
    }
    HealthWindow {
        attempts,
        successes,
        failures,
        success_ratio: (attempts > 0).then(|| successes as f64 / attempts as f64),
        p50_duration_ms: percentile(&buckets, 0.50),
        p99_duration_ms: percentile(&buckets, 0.99),
    }
}

/// The upper bound of the bucket holding the `q` quantile of the counted durations (the
/// attempt of rank ⌈q·n⌉); past the last bound, the last bound.
fn percentile(buckets: &[i64], q: f64) -> Option<i64> {
    let total: i64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (bucket, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let last = DURATION_BOUNDS_MS.len() - 1;
            return Some(DURATION_BOUNDS_MS[bucket.min(last)]);
        }
    }
    None
}

/// `spans` spans of `span_ms` from `from` on, each with the attempts and failures of its
/// minutes.
pub fn series(rollups: &[Rollup], from: Millis, span_ms: Millis, spans: usize) -> Vec<ChartPoint> {
    let mut points: Vec<ChartPoint> = (0..spans)
        .map(|i| ChartPoint {
            from: from + i as Millis * span_ms,
            ..Default::default()
        })
        .collect();
    for r in rollups.iter().filter(|r| r.minute >= from) {
        let index = ((r.minute - from) / span_ms) as usize;
        if let Some(point) = points.get_mut(index) {
            point.attempts += r.attempts;
            point.failures += r.failures;
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(minute: Millis, bucket: i32, attempts: i64, failures: i64) -> Rollup {
        Rollup {
            minute,
            bucket,
            attempts,
            successes: attempts - failures,
            failures,
        }
    }

    #[test]
    fn a_window_sums_its_minutes_and_reads_percentiles_off_the_buckets() {
        // 98 attempts under 100 ms (bucket 6: 50-100 ms), 2 of 1-2 s (bucket 10).
        let rollups = [
            r(0, 6, 50, 0),
            r(60_000, 6, 48, 1),
            r(60_000, 10, 2, 2),
            r(120_000, 3, 7, 0),
        ];
        let w = window(&rollups, 0);
        assert_eq!((w.attempts, w.successes, w.failures), (107, 104, 3));
        assert_eq!(w.p50_duration_ms, Some(100));
        assert_eq!(w.p99_duration_ms, Some(2_000));
        let later = window(&rollups, 120_000);
        assert_eq!(later.attempts, 7);
        assert_eq!(later.success_ratio, Some(1.0));
        assert_eq!(later.p99_duration_ms, Some(10));
        let none = window(&rollups, 180_000);
        assert_eq!(
            (none.attempts, none.success_ratio, none.p50_duration_ms),
            (0, None, None)
        );
    }

    #[test]
    fn the_slowest_bucket_reads_as_the_last_bound() {
        let w = window(&[r(0, 18, 1, 1)], 0);
        assert_eq!(w.p99_duration_ms, Some(300_000));
    }

    #[test]
    fn a_series_puts_each_minute_in_its_span() {
        let rollups = [
            r(0, 1, 2, 1),
            r(59 * 60_000, 1, 3, 0),
            r(60 * 60_000, 1, 4, 4),
        ];
        let points = series(&rollups, 0, HOUR_MS, 3);
        assert_eq!(
            points
                .iter()
                .map(|p| (p.attempts, p.failures))
                .collect::<Vec<_>>(),
            [(5, 1), (4, 4), (0, 0)]
        );
    }
}
