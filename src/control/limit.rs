//! Per-source-address limits of the HTTP layer: failed sign-ins (HTTP Basic) and the demo's
//! unauthenticated `/demo/connectionInfo`.
//!
//! A [`WindowLimiter`] counts events per source address in fixed windows: the first event opens
//! a window of `window`; once `limit` events were counted in it, the address is refused until the
//! window ends, and the refusal says when that is (`Retry-After`). The table is bounded
//! ([`MAX_TRACKED`] addresses): ended windows are dropped first, then the oldest, so a flood of
//! addresses costs bounded memory (and at worst forgets an old address early). IPv6 sources are
//! counted by their /64, which one host usually owns whole; IPv4-mapped IPv6 as IPv4.
//!
//! The map is this layer's own: a short lock, never held across an `.await`, shared with nothing
//! on the SIP or media paths.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::Extensions;

/// Most source addresses tracked at once by one limiter.
pub const MAX_TRACKED: usize = 10_000;

/// Counts events per source address in fixed windows.
#[derive(Debug)]
pub struct WindowLimiter {
    limit: u32,
    window: Duration,
    max_tracked: usize,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    count: u32,
}

impl WindowLimiter {
    /// At most `limit` events per `window` from one source.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_capacity(limit, window, MAX_TRACKED)
    }

    fn with_capacity(limit: u32, window: Duration, max_tracked: usize) -> Self {
        assert!(limit > 0 && max_tracked > 0, "a limiter that refuses everything is a configuration bug");
        Self { limit, window, max_tracked, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one event from `source` at `now`, unless its limit is already reached in this
    /// window: then nothing is counted and the answer is how long until the window ends.
    pub fn hit(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = key(source);
        let mut windows = self.lock();
        if let Some(w) = windows.get_mut(&key)
            && !self.ended(w, now)
        {
            if w.count >= self.limit {
                return Err(self.remaining(w, now));
            }
            w.count += 1;
            return Ok(());
        }
        self.insert(&mut windows, key, now);
        Ok(())
    }

    /// Whether `source` is refused at `now` (its limit reached in the current window), without
    /// counting anything.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let windows = self.lock();
        match windows.get(&key(source)) {
            Some(w) if !self.ended(w, now) && w.count >= self.limit => Err(self.remaining(w, now)),
            _ => Ok(()),
        }
    }

    /// Counts one event from `source` at `now`, whatever the count already is.
    pub fn record(&self, source: IpAddr, now: Instant) {
        let key = key(source);
        let mut windows = self.lock();
        match windows.get_mut(&key) {
            Some(w) if !self.ended(w, now) => w.count = w.count.saturating_add(1),
            _ => self.insert(&mut windows, key, now),
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn insert(&self, windows: &mut HashMap<IpAddr, Window>, key: IpAddr, now: Instant) {
        if windows.len() >= self.max_tracked && !windows.contains_key(&key) {
            windows.retain(|_, w| !self.ended(w, now));
            if windows.len() >= self.max_tracked
                && let Some(oldest) = windows.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k)
            {
                windows.remove(&oldest);
            }
        }
        windows.insert(key, Window { start: now, count: 1 });
    }

    fn ended(&self, w: &Window, now: Instant) -> bool {
        now.saturating_duration_since(w.start) >= self.window
    }

    fn remaining(&self, w: &Window, now: Instant) -> Duration {
        self.window.saturating_sub(now.saturating_duration_since(w.start))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // Every update leaves the map consistent, so a poisoned lock still guards a usable map.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The address a source is counted by: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// The request's source address (the TCP peer; a proxy in front is one source for all). Requests
/// served without connection info (in-process tests) count as the unspecified address.
pub fn source_ip(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

/// The request's source address as an extractor ([`source_ip`]).
pub struct SourceIp(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SourceIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(source_ip(&parts.extensions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hit_allows_the_limit_per_window_then_says_when() {
        let t0 = Instant::now();
        let l = WindowLimiter::new(3, Duration::from_secs(60));
        assert!((0..3).all(|_| l.hit(ip("192.0.2.1"), t0).is_ok()));
        assert_eq!(l.hit(ip("192.0.2.1"), t0 + Duration::from_secs(20)), Err(Duration::from_secs(40)));
        assert!(l.hit(ip("192.0.2.2"), t0).is_ok(), "another source has its own count");
        assert!(l.hit(ip("192.0.2.1"), t0 + Duration::from_secs(60)).is_ok(), "a new window");
    }

    #[test]
    fn failures_block_after_the_limit_until_the_window_ends() {
        let t0 = Instant::now();
        let l = WindowLimiter::new(2, Duration::from_secs(10));
        let a = ip("198.51.100.7");
        assert!(l.check(a, t0).is_ok());
        l.record(a, t0);
        assert!(l.check(a, t0).is_ok());
        l.record(a, t0 + Duration::from_secs(1));
        assert_eq!(l.check(a, t0 + Duration::from_secs(4)), Err(Duration::from_secs(6)));
        assert!(l.check(a, t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let l = WindowLimiter::new(1, Duration::from_secs(60));
        assert!(l.hit(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(l.hit(ip("2001:db8:1:2:ffff::9"), t0).is_err(), "same /64");
        assert!(l.hit(ip("2001:db8:1:3::1"), t0).is_ok(), "another /64");
        assert!(l.hit(ip("192.0.2.9"), t0).is_ok());
        assert!(l.hit(ip("::ffff:192.0.2.9"), t0).is_err(), "the same IPv4 source");
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let l = WindowLimiter::with_capacity(1, Duration::from_secs(60), 100);
        for i in 0..1000u32 {
            let source = IpAddr::V4((0x0a00_0000 + i).into());
            l.record(source, t0 + Duration::from_millis(u64::from(i)));
            assert!(l.tracked() <= 100);
        }
        // The newest sources are still counted; the oldest were forgotten first.
        assert!(l.check(IpAddr::V4((0x0a00_0000 + 999).into()), t0 + Duration::from_secs(1)).is_err());
        assert!(l.check(IpAddr::V4(0x0a00_0000.into()), t0 + Duration::from_secs(1)).is_ok());
    }
}
