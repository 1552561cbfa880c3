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
