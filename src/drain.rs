//! Draining on SIGTERM (CONTRACT §7): stop taking work, let live calls finish up to the drain
//! timeout, then end them.
//!
//! Whoever runs a call holds a [`CallGuard`]; [`Drain::wait_idle`] resolves when the last guard
//! drops or the timeout passes. `/readyz` and the SIP side read [`Drain::is_draining`] to refuse
//! new work (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Shared drain state.
#[derive(Clone)]
pub struct Drain {
    inner: Arc<Inner>,
}

struct Inner {
    draining: AtomicBool,
    live: watch::Sender<usize>,
    /// Fires once when draining starts; long-lived tasks select on it.
    started: watch::Sender<bool>,
}

/// Held for as long as a call is live.
pub struct CallGuard {
    inner: Arc<Inner>,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every call ended on its own.
    Idle,
    /// The timeout passed with this many calls still live.
    TimedOut(usize),
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                draining: AtomicBool::new(false),
                live: watch::channel(0).0,
                started: watch::channel(false).0,
            }),
        }
    }
}

impl Drain {
    /// True once draining has started: refuse new calls and report not ready.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Starts draining.
    pub fn start(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.started.send_replace(true);
    }

    /// Resolves when draining starts.
    pub async fn started(&self) {
        let mut rx = self.inner.started.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|started| *started).await;
    }

    /// Registers a live call.
    pub fn call(&self) -> CallGuard {
        self.inner.live.send_modify(|n| *n += 1);
        CallGuard { inner: self.inner.clone() }
    }

    /// Live calls now.
    pub fn live_calls(&self) -> usize {
        *self.inner.live.borrow()
    }

    /// Waits until no call is live, or `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> DrainOutcome {
        let mut rx = self.inner.live.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await {
            Ok(_) => DrainOutcome::Idle,
            Err(_) => DrainOutcome::TimedOut(self.live_calls()),
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.inner.live.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_live_calls_then_resolves() {
        let drain = Drain::default();
        let call = drain.call();
        assert!(!drain.is_draining());
        drain.start();
        assert!(drain.is_draining());
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.wait_idle(Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!waiter.is_finished(), "a live call holds the drain");
        drop(call);
        assert_eq!(waiter.await.unwrap(), DrainOutcome::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_at_the_timeout() {
        let drain = Drain::default();
        let _call = drain.call();
        let _other = drain.call();
        drain.start();
        let start = tokio::time::Instant::now();
        assert_eq!(drain.wait_idle(Duration::from_secs(30)).await, DrainOutcome::TimedOut(2));
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn started_resolves_when_draining_begins() {
        let drain = Drain::default();
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.started().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drain.start();
        waiter.await.unwrap();
    }
}
