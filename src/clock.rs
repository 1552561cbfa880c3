//! Time is injected: production reads the system clock, tests drive a [`ManualClock`]. The
//! retry schedule is hours long; tests move the clock instead of sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// Milliseconds since the Unix epoch, the unit OpenMetadata uses for every timestamp.
pub type Millis = i64;

/// A source of the current time, and of waiting for a time to come.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;

    /// Resolves once `now_ms() >= at`.
    fn sleep_until(&self, at: Millis) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }

    fn sleep_until(&self, at: Millis) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Re-check after waking: the wall clock may have been set back meanwhile.
            loop {
                let now = self.now_ms();
                if now >= at {
                    return;
                }
                tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
            }
        })
    }
}

/// A clock that only moves when a test moves it; sleepers wake when it passes their time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<watch::Sender<Millis>>);

impl ManualClock {
    pub fn new(start: Millis) -> Self {
        Self(Arc::new(watch::Sender::new(start)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.send_modify(|now| *now += by.as_millis() as Millis);
    }

    pub fn set(&self, to: Millis) {
        self.0.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        *self.0.borrow()
    }

    fn sleep_until(&self, at: Millis) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, so this only ends by reaching `at`.
            let _ = rx.wait_for(|now| *now >= at).await;
        })
    }
}

/// A time as `2024-01-15 12:00:00 UTC`: the chat formats and the console write times so.
pub fn utc(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved() {
        let clock = ManualClock::new(1_000);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(61_000).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clock.now_ms(), 61_000);
    }
}
