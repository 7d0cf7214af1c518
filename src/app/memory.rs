//! Gives freed heap back to the operating system.
//!
//! glibc's allocator keeps what a burst freed (a flood's transactions, a wave of calls) in its
//! arenas: the memory is free for the process but the RSS stays at the burst's peak, which an
//! operator reads as a leak and an OOM killer as a target. Every [`TRIM_EVERY`] a task asks
//! glibc to return the free pages of every arena (`malloc_trim(0)`); with nothing freed it is a
//! walk over the free lists, a few microseconds for an idle daemon. Queues and caches are
//! bounded too (what a flood may take is capped where it enters); this only makes sure that what
//! was given back to the allocator also reaches the system.
//!
//! Not while SIP is busy: trimming a heap of a hundred megabytes holds an arena's lock for tens
//! of milliseconds, and every allocation of the SIP endpoint waits behind it; at 2,000 calls/s
//! that stall made the endpoint shed calls at nominal load. Memory in use by a steady load is
//! reused by it anyway; the trim comes in the first calm interval after.

use std::time::Duration;

/// How often the heap is trimmed.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Returns the free heap pages of every arena to the system; whether any was returned.
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes a pad size, touches only the allocator's own state under its
    // locks, and is safe to call from any thread at any time (glibc's documented contract).
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    released == 1
}

/// SIP messages per [`TRIM_EVERY`] above which the interval counts as busy (10/s).
pub const BUSY_MESSAGES: u64 = 100;

/// Trims every [`TRIM_EVERY`] in which SIP was calm, until the runtime stops; `handled` counts
/// the SIP messages handled so far.
pub async fn run_trim(handled: impl Fn() -> u64) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = handled();
    loop {
        every.tick().await;
        let now = handled();
        let busy = now.saturating_sub(last) > BUSY_MESSAGES;
        last = now;
        if !busy {
            // Off the async workers: a large fragmented heap can take a few milliseconds.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RSS of this process, from /proc.
    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    #[test]
    fn a_freed_burst_goes_back_to_the_system() {
        // Many small blocks (below the mmap threshold, so they live in the heap) freed all but
        // the last: without a trim the heap cannot shrink past the survivor.
        let before = rss_bytes();
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![(i % 251) as u8; 1_000]).collect();
        let survivor = blocks.pop();
        let peak = rss_bytes();
        drop(blocks);
        assert!(peak > before + 150_000_000, "the burst took memory: {before} → {peak}");
        trim();
        let after = rss_bytes();
        assert!(after < before + 50_000_000, "trimmed: {before} → {peak} → {after}");
        drop(survivor);
    }
}
