//! Frames handed to many readers at once and written again once none of them holds one: a
//! publisher's Opus frames go to the forwarder, which passes the same buffer to str0m for every
//! browser and to every SIP leg's worker, and each drops it within a tick or two. Keeping the
//! last few buffers and reusing one nobody holds any longer means no allocation per frame.
//!
//! A buffer is reused only for data of its own length (an `Arc<[T]>` cannot change length), so
//! this pays off for frames of a few lengths: the SIP legs pad their Opus frames to a multiple
//! of 16 bytes for that reason (and RFC 6562's).

use std::sync::Arc;

/// Buffers kept per writer: the frames readers may still hold (a frame in the forwarder's queue,
/// in a worker's queue, in str0m's packetizer) with room to spare.
pub const KEPT: usize = 8;

/// The last [`KEPT`] buffers one writer shared.
#[derive(Debug)]
pub struct SharedFrames<T> {
    kept: Vec<Arc<[T]>>,
    /// Which kept buffer a new one replaces: the oldest.
    next: usize,
    /// Buffers allocated (a reused one is not counted).
    pub allocated: u64,
}

impl<T: Copy> Default for SharedFrames<T> {
    fn default() -> Self {
        Self { kept: Vec::new(), next: 0, allocated: 0 }
    }
}

impl<T: Copy> SharedFrames<T> {
    /// Nothing kept yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `data` in a shared buffer: a kept one of its length that nobody else holds, else a new
    /// one, kept in place of the oldest.
    pub fn share(&mut self, data: &[T]) -> Arc<[T]> {
        for buffer in &mut self.kept {
            if buffer.len() == data.len()
                && let Some(frame) = Arc::get_mut(buffer)
            {
                frame.copy_from_slice(data);
                return buffer.clone();
            }
        }
        self.allocated += 1;
        let fresh: Arc<[T]> = Arc::from(data);
        if self.kept.len() < KEPT {
            self.kept.push(fresh.clone());
        } else {
            self.kept[self.next] = fresh.clone();
            self.next = (self.next + 1) % KEPT;
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_nobody_holds_is_written_again() {
        let mut frames = SharedFrames::new();
        let first = frames.share(&[1u8, 2, 3]);
        let at = Arc::as_ptr(&first);
        drop(first);
        let second = frames.share(&[4, 5, 6]);
        assert_eq!(Arc::as_ptr(&second), at, "the same buffer");
        assert_eq!(&second[..], &[4, 5, 6]);
        assert_eq!(frames.allocated, 1);
    }

    #[test]
    fn a_held_buffer_is_never_overwritten() {
        let mut frames = SharedFrames::new();
        let held = frames.share(&[1u8, 2, 3]);
        let other = frames.share(&[4, 5, 6]);
        assert_eq!((&held[..], &other[..]), (&[1, 2, 3][..], &[4, 5, 6][..]));
        assert_eq!(frames.allocated, 2);
        // A reader that never lets go: past KEPT buffers the oldest is forgotten, not reused.
        let readers: Vec<_> = (0..3 * KEPT as u8).map(|i| frames.share(&[i, i, i])).collect();
        assert!(readers.iter().enumerate().all(|(i, r)| r[..] == [i as u8; 3]));
        assert_eq!(&held[..], &[1, 2, 3]);
        assert_eq!(frames.kept.len(), KEPT);
    }

    #[test]
    fn lengths_are_kept_apart() {
        let mut frames = SharedFrames::new();
        drop(frames.share(&[1u8, 2, 3]));
        let longer = frames.share(&[1, 2, 3, 4]);
        assert_eq!(&longer[..], &[1, 2, 3, 4]);
        drop(longer);
        drop(frames.share(&[7, 8, 9]));
        drop(frames.share(&[7, 8, 9, 10]));
        assert_eq!(frames.allocated, 2, "one buffer per length, each reused");
    }
}
