//! Per-token publish limits, as `seeds/003_*` describes them: a rate (requests per second)
//! with a burst, and a daily quota (requests per UTC day). Kept in memory, per instance.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::clock::Millis;

const DAY_MS: Millis = 86_400_000;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_second: f64,
    pub burst: f64,
    pub daily: u64,
}

/// Why a request was refused, and when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub retry_after_secs: u64,
    pub reason: String,
}

struct Bucket {
    tokens: f64,
    updated: Millis,
    day: Millis,
    used_today: u64,
}

pub struct RateLimiter {
    limits: Limits,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `token` at `now`, or says why not.
    pub fn check(&self, token: Uuid, now: Millis) -> Result<(), Refusal> {
        let Limits {
            per_second,
            burst,
            daily,
        } = self.limits;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(token).or_insert(Bucket {
            tokens: burst,
            updated: now,
            day: now / DAY_MS,
            used_today: 0,
        });
        if now / DAY_MS != bucket.day {
            bucket.day = now / DAY_MS;
            bucket.used_today = 0;
        }
        let elapsed = (now - bucket.updated).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        if bucket.used_today >= daily {
            let next_day = (bucket.day + 1) * DAY_MS;
            return Err(Refusal {
                retry_after_secs: ((next_day - now) as u64).div_ceil(1000),
                reason: format!("daily quota of {daily} publish requests reached for this token"),
            });
        }
        if bucket.tokens < 1.0 {
            let wait = ((1.0 - bucket.tokens) / per_second).ceil().max(1.0);
            return Err(Refusal {
                retry_after_secs: wait as u64,
                reason: format!(
                    "rate limit of {per_second} publish requests per second (burst {burst}) exceeded"
                ),
            });
        }
        bucket.tokens -= 1.0;
        bucket.used_today += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let limiter = RateLimiter::new(Limits {
            per_second: 2.0,
            burst: 3.0,
            daily: 1000,
        });
        let token = Uuid::new_v4();
        for _ in 0..3 {
            limiter.check(token, 0).unwrap();
        }
        let refused = limiter.check(token, 0).unwrap_err();
        assert_eq!(refused.retry_after_secs, 1);
        limiter.check(token, 500).unwrap(); // half a second refills one
        assert!(limiter.check(token, 500).is_err());
        // Tokens are separate.
        limiter.check(Uuid::new_v4(), 500).unwrap();
    }

    #[test]
    fn daily_quota_resets_at_midnight_utc() {
        let limiter = RateLimiter::new(Limits {
            per_second: 1000.0,
            burst: 1000.0,
            daily: 2,
        });
        let token = Uuid::new_v4();
        let noon = 10 * DAY_MS + DAY_MS / 2;
        limiter.check(token, noon).unwrap();
        limiter.check(token, noon).unwrap();
        let refused = limiter.check(token, noon).unwrap_err();
        assert_eq!(refused.retry_after_secs, 43_200);
        limiter.check(token, 11 * DAY_MS).unwrap();
    }
}
