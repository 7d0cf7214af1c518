//! An adaptive jitter buffer for one received audio stream, sans-IO and allocation-free after
//! construction.
//!
//! Inputs: [`JitterBuffer::packet`] once per received RTP packet (arrival time, SSRC,
//! timestamp), then [`JitterBuffer::insert`] for each frame it carries. Output:
//! [`JitterBuffer::poll`] once per 20 ms playout tick, which returns the next frame to decode
//! or what to do instead ([`Playout`]). Time is the `now` argument.
//!
//! ## How it plays
//!
//! Frames live in a ring of 20 ms slots numbered from the first timestamp of the stream
//! (`origin`). Slot `next` is played at each poll. For every packet the buffer computes its
//! transit `arrival - timestamp` (in RTP ticks) and keeps the minimum over the last two
//! seconds: the fastest path. The *playout delay* is how much later than that fastest path the
//! slot being played would have arrived:
//!
//! `delay = now - min_transit - timestamp(next)`
//!
//! A packet whose extra transit (over the minimum) is at most `delay` arrives in time. The
//! target delay is four times the RFC 3550 interarrival jitter (§6.4.1, A.8), plus a bump for
//! each packet that arrived too late (decaying over about ten seconds), clamped to
//! [`MIN_DELAY`]–[`MAX_DELAY`]. When the delay is more than a frame above the target one
//! frame is skipped; more than half a frame below, one frame is stretched (the caller conceals,
//! the slot is played at the next tick); at most one change every [`ADJUST_EVERY`] polls. (Half
//! a frame below, not a whole one: a tick that moves earlier, as a media worker's pacing does,
//! would otherwise leave the delay anywhere down to nothing, with no room for jitter.)
//!
//! ## Loss, DTX, re-sync
//!
//! - A missing slot with later frames already here is lost: [`Playout::Conceal`] (codec PLC).
//! - A missing slot after comfort noise (SID, CN) or NO_DATA is DTX: [`Playout::Dtx`], no
//!   alarm, not counted as loss.
//! - A missing slot with nothing buffered is an underrun and also concealed; after
//!   [`IDLE_AFTER`] such polls the stream is considered stopped ([`Playout::Buffering`] until
//!   the next packet restarts playout with the target delay).
//! - A new SSRC, a transit more than [`RESYNC_AFTER`] off the minimum (a timestamp jump: the
//!   peer restarted) or [`RESYNC_RUN`] packets in a row that are late or far ahead flush the
//!   buffer and restart playout from the next packet.
//! - Reordered packets take their slot; duplicates are counted and ignored; packets for a slot
//!   already concealed are late and counted.

use std::time::{Duration, Instant};

use crate::media::rtp::{ClockRate, Ssrc, TimestampExtender};

/// Smallest target delay.
pub const MIN_DELAY: Duration = Duration::from_millis(20);
/// Largest target delay.
pub const MAX_DELAY: Duration = Duration::from_millis(120);
/// Playout length of one slot.
pub const FRAME: Duration = Duration::from_millis(20);
/// Slots in the ring: one second of audio, far above [`MAX_DELAY`].
pub const CAPACITY: usize = 50;
/// Bytes one slot holds: 20 ms of G.711 (one byte per 8 kHz sample), more than the largest
/// AMR-WB frame (60 bytes).
pub const SLOT_BYTES: usize = 160;
/// Underrun polls after which the stream counts as stopped (200 ms).
pub const IDLE_AFTER: u32 = 10;
/// A transit this far from the fastest path means the timestamps jumped.
pub const RESYNC_AFTER: Duration = Duration::from_secs(1);
/// Late or far-ahead packets in a row that force a re-sync.
pub const RESYNC_RUN: u32 = 10;
/// Polls between two delay adjustments.
pub const ADJUST_EVERY: u32 = 5;
/// How long a minimum-transit window lasts; the reference is the minimum over two.
const TRANSIT_WINDOW: Duration = Duration::from_secs(2);
/// Target delay as a multiple of the RFC 3550 jitter estimate.
const JITTER_FACTOR: f64 = 4.0;

/// What a frame is, for playout decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Speech (or any audio).
    Speech,
    /// Comfort-noise parameters: AMR-WB SID or an RFC 3389 CN packet. DTX follows.
    Comfort,
    /// AMR-WB NO_DATA: the sender sent a placeholder. DTX.
    NoData,
}

/// One frame to store.
#[derive(Clone, Copy, Debug)]
pub enum Frame<'a> {
    /// Samples of a sample-based codec, one byte each (G.711), starting at the timestamp;
    /// any length up to one slot, any alignment.
    Samples(&'a [u8]),
    /// One whole 20 ms frame of a frame-based codec (AMR-WB), or a comfort-noise payload.
    Coded {
        /// What it is.
        kind: FrameKind,
        /// The codec's tag, given back at playout (AMR-WB: FT and Q).
        tag: u8,
        /// At most [`SLOT_BYTES`] bytes.
        data: &'a [u8],
    },
}

/// What [`JitterBuffer::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored for playout.
    Stored,
    /// Already here, or already played.
    Duplicate,
    /// Its slot was already concealed.
    Late,
    /// Beyond the ring's capacity.
    TooFarAhead,
    /// Refused: no stream (call [`JitterBuffer::packet`] first) or too long for a slot.
    Invalid,
}

/// What to play at this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// Nothing to play yet: before the first packet, while filling to the target delay, or
    /// after the stream stopped. Play silence; nothing is wrong.
    Buffering,
    /// The frame to decode.
    Frame(PlayFrame<'a>),
    /// A frame was lost (or the buffer ran dry): run the codec's concealment.
    Conceal,
    /// The buffer is growing its delay by one frame: conceal, nothing was lost.
    Stretch,
    /// Discontinuous transmission: continue the comfort noise.
    Dtx,
}

/// A frame handed out for playout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayFrame<'a> {
    /// What it is.
    pub kind: FrameKind,
    /// The tag given at insert (0 for samples).
    pub tag: u8,
    /// The bytes: a whole slot for samples (gaps filled with the fill byte), the frame for
    /// coded frames.
    pub data: &'a [u8],
    /// For samples: every part of the slot arrived.
    pub complete: bool,
}

/// Counters for the call record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played.
    pub played: u64,
    /// Frames concealed because they were lost or the buffer ran dry.
    pub concealed: u64,
    /// Frames concealed to grow the delay.
    pub stretched: u64,
    /// Frames dropped to shrink the delay.
    pub skipped: u64,
    /// DTX ticks (comfort noise, no alarm).
    pub dtx: u64,
    /// Frames that arrived after their slot was concealed.
    pub late: u64,
    /// Frames that arrived twice.
    pub duplicates: u64,
    /// Frames beyond the ring.
    pub overflow: u64,
    /// Re-syncs: SSRC change, timestamp jump, runs of late packets.
    pub resyncs: u64,
}

/// Settings of one buffer.
#[derive(Clone, Copy, Debug)]
pub struct JitterConfig {
    /// The RTP clock of the stream.
    pub clock: ClockRate,
    /// The byte that fills gaps in a slot of samples (G.711 silence).
    pub fill_byte: u8,
}

/// The jitter buffer; see the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    frame_ticks: i64,
    slots: Box<[Slot]>,
    epoch: Option<Instant>,
    ssrc: Option<Ssrc>,
    timestamps: TimestampExtender,
    /// Minimum transit: this window, the previous one, and when this one ends (ticks).
    transit: Option<Transit>,
    /// RFC 3550 interarrival jitter in ticks.
    jitter: f64,
    last_transit: Option<i64>,
    /// Extra target after late packets, in ticks.
    late_bump: f64,
    play: Option<Play>,
    last_delay: Option<i64>,
    stats: JitterStats,
}

#[derive(Clone, Copy, Debug)]
struct Transit {
    current: i64,
    previous: i64,
    window_end: i64,
}

#[derive(Clone, Copy, Debug)]
struct Play {
    /// Timestamp (extended) of slot 0.
    origin: i64,
    /// Slot to play next.
    next: i64,
    /// Highest slot stored + 1.
    newest_end: i64,
    started: bool,
    last_kind: Option<FrameKind>,
    underruns: u32,
    cooldown: u32,
    /// Bit i: slot `next - 1 - i` was concealed.
    concealed_history: u64,
    bad_run: u32,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    number: i64,
    /// Halves of the slot written so far (bit 0 first 10 ms, bit 1 second).
    halves: u8,
    kind: FrameKind,
    tag: u8,
    len: usize,
    data: [u8; SLOT_BYTES],
}

const NO_SLOT: i64 = i64::MIN;

impl JitterBuffer {
    /// An empty buffer; the ring is allocated here, once.
    pub fn new(config: JitterConfig) -> Self {
        let frame_ticks = config.clock.ticks(FRAME) as i64;
        let empty = Slot {
            number: NO_SLOT,
            halves: 0,
            kind: FrameKind::Speech,
            tag: 0,
            len: 0,
            data: [config.fill_byte; SLOT_BYTES],
        };
        Self {
            config,
            frame_ticks,
            slots: vec![empty; CAPACITY].into_boxed_slice(),
            epoch: None,
            ssrc: None,
            timestamps: TimestampExtender::new(config.clock),
            transit: None,
            jitter: 0.0,
            last_transit: None,
            late_bump: 0.0,
            play: None,
            last_delay: None,
            stats: JitterStats::default(),
        }
    }

    /// Records the arrival of one RTP packet of the stream. Call before inserting its frames.
    pub fn packet(&mut self, now: Instant, ssrc: Ssrc, timestamp: u32) {
        let now_ticks = self.ticks(now);
        // 1. A new source starts over.
        if self.ssrc.is_some_and(|s| s != ssrc) {
            self.resync();
        }
        self.ssrc = Some(ssrc);
        let ts = self.timestamps.extend(timestamp).ticks() as i64;
        let transit = now_ticks - ts;
        // 2. A timestamp jump starts over too.
        if let Some(t) = self.transit {
            let reference = t.current.min(t.previous);
            if (transit - reference).abs() > self.config.clock.ticks(RESYNC_AFTER) as i64 {
                self.resync();
                self.ssrc = Some(ssrc);
            }
        }
        // 3. RFC 3550 A.8 interarrival jitter, in arrival order.
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        // 4. The fastest path over the last two windows.
        let window = self.config.clock.ticks(TRANSIT_WINDOW) as i64;
        match &mut self.transit {
            None => {
                self.transit = Some(Transit { current: transit, previous: transit, window_end: now_ticks + window })
            }
            Some(t) if now_ticks >= t.window_end => {
                t.previous = t.current;
                t.current = transit;
                t.window_end = now_ticks + window;
            }
            Some(t) => t.current = t.current.min(transit),
        }
        // 5. No playout yet (first packet, after a re-sync or an idle stream): start here.
        if self.play.is_none() {
            self.play = Some(Play {
                origin: ts,
                next: 0,
                newest_end: 0,
                started: false,
                last_kind: None,
                underruns: 0,
                cooldown: 0,
                concealed_history: 0,
                bad_run: 0,
            });
        }
    }

    /// Stores one frame starting at RTP `timestamp` (of the packet last given to
    /// [`Self::packet`], plus the frame's offset in it).
    pub fn insert(&mut self, timestamp: u32, frame: Frame<'_>) -> Inserted {
        let Some(mut play) = self.play else {
            return Inserted::Invalid;
        };
        let ts = self.timestamps.extend(timestamp).ticks() as i64 - play.origin;
        let result = match frame {
            Frame::Samples(data) => self.insert_samples(&mut play, ts, data),
            Frame::Coded { kind, tag, data } => self.insert_coded(&mut play, ts, kind, tag, data),
        };
        // A run of packets that do not fit means the timeline is wrong: start over.
        match result {
            Inserted::Late | Inserted::TooFarAhead => play.bad_run += 1,
            Inserted::Stored => play.bad_run = 0,
            Inserted::Duplicate | Inserted::Invalid => {}
        }
        self.play = Some(play);
        match result {
            Inserted::Late => {
                self.stats.late += 1;
                self.note_late();
            }
            Inserted::Duplicate => self.stats.duplicates += 1,
            Inserted::TooFarAhead => self.stats.overflow += 1,
            Inserted::Stored | Inserted::Invalid => {}
        }
        if play.bad_run >= RESYNC_RUN {
            self.resync();
        }
        result
    }

    /// The frame to play at this 20 ms tick; see [`Playout`].
    pub fn poll(&mut self, now: Instant) -> Playout<'_> {
        let now_ticks = self.ticks(now);
        self.late_bump *= LATE_BUMP_DECAY;
        let target = self.target_ticks();
        let (Some(mut play), Some(transit)) = (self.play, self.transit) else {
            return Playout::Buffering;
        };
        let reference = transit.current.min(transit.previous);
        let delay = now_ticks - reference - (play.origin + play.next * self.frame_ticks);
        self.last_delay = Some(delay);
        // 1. Fill up to the target before the first frame.
        if !play.started {
            if delay < target {
                return Playout::Buffering;
            }
            play.started = true;
        }
        // 2. Adjust the delay by one frame when it is off by more than one.
        play.cooldown = play.cooldown.saturating_sub(1);
        if play.cooldown == 0 && delay >= target + self.frame_ticks {
            self.invalidate(play.next);
            play.next += 1;
            play.cooldown = ADJUST_EVERY;
            play.concealed_history <<= 1;
            self.stats.skipped += 1;
        } else if play.cooldown == 0 && 2 * delay + self.frame_ticks < 2 * target {
            play.cooldown = ADJUST_EVERY;
            self.play = Some(play);
            if matches!(play.last_kind, Some(FrameKind::Comfort | FrameKind::NoData)) {
                self.stats.dtx += 1;
                return Playout::Dtx;
            }
            self.stats.stretched += 1;
            return Playout::Stretch;
        }
        // 3. Play slot `next`.
        let number = play.next;
        play.next += 1;
        play.concealed_history <<= 1;
        let index = self.index(number);
        if self.slots[index].number == number {
            play.underruns = 0;
            let slot = &mut self.slots[index];
            slot.number = NO_SLOT;
            play.last_kind = Some(slot.kind);
            self.play = Some(play);
            self.stats.played += 1;
            let complete = slot.halves == 0b11;
            let data = &slot.data[..slot.len];
            return Playout::Frame(PlayFrame { kind: slot.kind, tag: slot.tag, data, complete });
        }
        // 4. Missing: DTX, loss, or an empty buffer.
        if matches!(play.last_kind, Some(FrameKind::Comfort | FrameKind::NoData)) {
            self.play = Some(play);
            self.stats.dtx += 1;
            return Playout::Dtx;
        }
        if play.newest_end <= number {
            play.underruns += 1;
            if play.underruns > IDLE_AFTER {
                // The stream stopped: wait for it to come back.
                self.play = None;
                return Playout::Buffering;
            }
        }
        play.concealed_history |= 1;
        self.play = Some(play);
        self.stats.concealed += 1;
        Playout::Conceal
    }

    /// Flushes everything and waits for the next packet (hold, codec change, new stream).
    pub fn reset(&mut self) {
        self.resync();
        self.stats.resyncs -= 1;
    }

    /// The delay the buffer aims for.
    pub fn target_delay(&self) -> Duration {
        self.config.clock.duration(self.target_ticks() as u64)
    }

    /// The playout delay at the last poll (see the module docs), if playing.
    pub fn current_delay(&self) -> Option<Duration> {
        self.last_delay
            .filter(|_| self.play.is_some_and(|p| p.started))
            .map(|d| self.config.clock.duration(d.max(0) as u64))
    }

    /// The RFC 3550 interarrival jitter estimate.
    pub fn jitter(&self) -> Duration {
        self.config.clock.duration(self.jitter as u64)
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn insert_samples(&mut self, play: &mut Play, ts: i64, data: &[u8]) -> Inserted {
        if data.is_empty() || data.len() > SLOT_BYTES {
            return Inserted::Invalid;
        }
        let frame = self.frame_ticks;
        let half = frame / 2;
        let mut position = ts;
        let mut rest = data;
        let mut any_new = false;
        let mut any_late = false;
        let mut any_far = false;
        while !rest.is_empty() {
            let number = position.div_euclid(frame);
            let offset = position.rem_euclid(frame) as usize;
            let n = rest.len().min(frame as usize - offset);
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            position += n as i64;
            match self.check_slot(play, number) {
                Some(Inserted::Late) => any_late = true,
                Some(Inserted::TooFarAhead) => any_far = true,
                Some(_) => {}
                None => {
                    let index = self.open_slot(number, FrameKind::Speech, 0);
                    let slot = &mut self.slots[index];
                    slot.len = frame as usize;
                    slot.data[offset..offset + n].copy_from_slice(chunk);
                    let first = (offset as i64) / half;
                    let last = (offset as i64 + n as i64 - 1) / half;
                    let halves = (first..=last).fold(0u8, |m, h| m | 1 << h.min(1));
                    if halves & !slot.halves != 0 {
                        any_new = true;
                    }
                    slot.halves |= halves;
                    play.newest_end = play.newest_end.max(number + 1);
                }
            }
        }
        if any_new {
            Inserted::Stored
        } else if any_late {
            Inserted::Late
        } else if any_far {
            Inserted::TooFarAhead
        } else {
            Inserted::Duplicate
        }
    }

    fn insert_coded(&mut self, play: &mut Play, ts: i64, kind: FrameKind, tag: u8, data: &[u8]) -> Inserted {
        if data.len() > SLOT_BYTES {
            return Inserted::Invalid;
        }
        // Round to the nearest slot: frames of a well-behaved sender sit on slot boundaries.
        let number = (ts + self.frame_ticks / 2).div_euclid(self.frame_ticks);
        if let Some(refused) = self.check_slot(play, number) {
            return refused;
        }
        let index = self.index(number);
        if self.slots[index].number == number && self.slots[index].halves == 0b11 {
            return Inserted::Duplicate;
        }
        let index = self.open_slot(number, kind, tag);
        let slot = &mut self.slots[index];
        slot.data[..data.len()].copy_from_slice(data);
        slot.len = data.len();
        slot.halves = 0b11;
        play.newest_end = play.newest_end.max(number + 1);
        Inserted::Stored
    }

    /// `None` when slot `number` may be written, else why not.
    fn check_slot(&self, play: &Play, number: i64) -> Option<Inserted> {
        if number < play.next {
            let age = play.next - 1 - number;
            let concealed = age < 64 && play.concealed_history & (1 << age) != 0;
            return Some(if concealed { Inserted::Late } else { Inserted::Duplicate });
        }
        if number >= play.next + CAPACITY as i64 {
            return Some(Inserted::TooFarAhead);
        }
        None
    }

    /// The index of slot `number`, cleared for it if it held another.
    fn open_slot(&mut self, number: i64, kind: FrameKind, tag: u8) -> usize {
        let index = self.index(number);
        let fill = self.config.fill_byte;
        let slot = &mut self.slots[index];
        if slot.number != number {
            slot.number = number;
            slot.halves = 0;
            slot.len = 0;
            slot.data.fill(fill);
        }
        slot.kind = kind;
        slot.tag = tag;
        index
    }

    fn invalidate(&mut self, number: i64) {
        let index = self.index(number);
        if self.slots[index].number == number {
            self.slots[index].number = NO_SLOT;
        }
    }

    fn index(&self, number: i64) -> usize {
        number.rem_euclid(CAPACITY as i64) as usize
    }

    fn resync(&mut self) {
        // Playout, source and timing start over; the jitter estimate stays (same network).
        for slot in self.slots.iter_mut() {
            slot.number = NO_SLOT;
        }
        self.play = None;
        self.transit = None;
        self.last_transit = None;
        self.ssrc = None;
        self.timestamps = TimestampExtender::new(self.config.clock);
        self.stats.resyncs += 1;
    }

    fn target_ticks(&self) -> i64 {
        let min = self.config.clock.ticks(MIN_DELAY) as f64;
        let max = self.config.clock.ticks(MAX_DELAY) as f64;
        (JITTER_FACTOR * self.jitter + self.late_bump).clamp(min, max) as i64
    }

    fn ticks(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        // Time going backwards reads as the epoch (STYLE §2: ignore it, do not fail).
        self.config.clock.ticks(now.saturating_duration_since(epoch)) as i64
    }
}

impl JitterBuffer {
    /// Grows the target after a late frame.
    fn note_late(&mut self) {
        let frame = self.frame_ticks as f64;
        let max = self.config.clock.ticks(MAX_DELAY) as f64;
        self.late_bump = (self.late_bump + frame / 2.0).min(max);
    }
}

/// Per-poll decay of the late bump: about 10 s time constant at 50 polls a second.
const LATE_BUMP_DECAY: f64 = 0.998;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::netem::{Link, LinkConfig};

    fn config() -> JitterConfig {
        JitterConfig { clock: ClockRate::HZ_8000, fill_byte: 0xFF }
    }

    /// Sends a 20 ms G.711 frame numbered `n` (its bytes all equal `n as u8`) every 20 ms over
    /// `link` for `seconds`, polls every 20 ms, and returns the buffer, the frames played in
    /// order and the delays seen.
    struct Run {
        buffer: JitterBuffer,
        played: Vec<u32>,
        delays: Vec<Duration>,
        sent: u32,
    }

    fn run(link: LinkConfig, seconds: u32, seed: u64) -> Run {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        let mut link = Link::new(link, seed);
        let mut played = Vec::new();
        let mut delays = Vec::new();
        let frames = seconds * 50;
        let ts0 = 0xFFFF_0000u32; // wraps during the call
        // Sender ticks at 0, 20, ..; receiver polls at 7, 27, ..; deliveries in between.
        for n in 0..frames + 20 {
            let tick = start + FRAME * n;
            if n < frames {
                let mut payload = [0u8; 4 + SLOT_BYTES];
                payload[..4].copy_from_slice(&n.to_be_bytes());
                payload[4..].fill(n as u8);
                link.send(tick, &payload);
            }
            let poll_at = tick + Duration::from_millis(7);
            while let Some((at, datagram)) = link.receive_until(poll_at) {
                let n = u32::from_be_bytes(datagram[..4].try_into().unwrap());
                let ts = ts0.wrapping_add(n * 160);
                buffer.packet(at, Ssrc(1), ts);
                buffer.insert(ts, Frame::Samples(&datagram[4..]));
            }
            match buffer.poll(poll_at) {
                Playout::Frame(f) => {
                    assert!(f.complete);
                    played.push(u32::from(f.data[0]));
                    delays.extend(buffer.current_delay());
                }
                Playout::Conceal | Playout::Stretch | Playout::Dtx | Playout::Buffering => {}
            }
        }
        // The stream ends IDLE_AFTER underruns before the buffer goes idle; those are not loss.
        assert!(buffer.stats().concealed >= u64::from(IDLE_AFTER));
        buffer.stats.concealed -= u64::from(IDLE_AFTER);
        Run { buffer, played, delays, sent: frames }
    }

    fn assert_in_order(played: &[u32]) {
        // Bytes wrap at 256; consecutive played frames move forward by a small step.
        for pair in played.windows(2) {
            let step = (pair[1] as u8).wrapping_sub(pair[0] as u8);
            assert!((1..=60).contains(&step), "out of order: {pair:?}");
        }
    }

    #[test]
    fn a_clean_link_plays_everything_at_the_minimum_delay() {
        let r = run(LinkConfig::latency(Duration::from_millis(40)), 60, 1);
        let s = r.buffer.stats();
        assert_eq!(s.concealed, 0, "{s:?}");
        assert_eq!(s.late + s.skipped, 0, "{s:?}");
        assert!(s.played >= u64::from(r.sent) - 1, "{s:?}");
        assert_eq!(r.buffer.target_delay(), MIN_DELAY);
        assert!(r.delays.iter().all(|d| *d <= Duration::from_millis(40)), "{:?}", r.delays.iter().max());
        assert_in_order(&r.played);
    }

    #[test]
    fn jitter_and_reordering_raise_the_delay_within_bounds_and_few_frames_are_lost() {
        let link = LinkConfig {
            jitter: Duration::from_millis(15),
            reorder: 0.02,
            ..LinkConfig::latency(Duration::from_millis(60))
        };
        // Three minutes of call.
        let r = run(link, 180, 2);
        let s = r.buffer.stats();
        let target = r.buffer.target_delay();
        assert!(target > Duration::from_millis(30) && target <= MAX_DELAY, "{target:?}");
        let late_share = s.late as f64 / f64::from(r.sent);
        assert!(late_share < 0.02, "{s:?}");
        assert!(s.concealed as f64 / f64::from(r.sent) < 0.03, "{s:?}");
        assert!(r.delays.iter().all(|d| *d <= MAX_DELAY + FRAME * 2), "{:?}", r.delays.iter().max());
        assert_in_order(&r.played);
    }

    #[test]
    fn random_and_bursty_loss_are_concealed_and_counted() {
        let link = LinkConfig { loss: 0.05, ..LinkConfig::latency(Duration::from_millis(30)) };
        let r = run(link, 120, 3);
        let s = r.buffer.stats();
        let lost = f64::from(r.sent) - s.played as f64;
        // Every frame not played was concealed (give or take the tail and the start).
        assert!((s.concealed as f64 - lost).abs() <= 3.0, "{s:?} lost {lost}");
        assert!((0.04..0.06).contains(&(s.concealed as f64 / f64::from(r.sent))), "{s:?}");
        let bursty = LinkConfig { burst: Some((0.01, 0.3)), ..LinkConfig::latency(Duration::from_millis(30)) };
        let r = run(bursty, 120, 4);
        let s = r.buffer.stats();
        assert!(s.concealed > 50, "{s:?}");
        assert_eq!(s.resyncs, 0, "{s:?}");
        assert_in_order(&r.played);
    }

    #[test]
    fn duplicates_are_ignored() {
        let link = LinkConfig { duplicate: 0.1, ..LinkConfig::latency(Duration::from_millis(30)) };
        let r = run(link, 30, 5);
        let s = r.buffer.stats();
        assert!(s.duplicates > 100, "{s:?}");
        assert_eq!(s.concealed, 0, "{s:?}");
        assert_in_order(&r.played);
    }

    /// The tick moves earlier (a media worker's pacing follows the packets): the delay falls
    /// far below the target and one frame is stretched to bring it back, rather than playing
    /// on with no margin for jitter.
    #[test]
    fn a_tick_that_moves_earlier_is_stretched_back_to_the_target() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        // Polls 2 ms after each packet: the buffer settles 22 ms behind, then 8.
        let mut tick = start + Duration::from_millis(2);
        let mut delays = Vec::new();
        for n in 0..200u32 {
            let at = start + FRAME * n;
            buffer.packet(at, Ssrc(9), n * 160);
            buffer.insert(n * 160, Frame::Samples(&[1; 160]));
            if n == 100 {
                tick -= Duration::from_millis(14);
            }
            let _ = buffer.poll(tick);
            tick += FRAME;
            if n > 120 {
                delays.extend(buffer.current_delay());
            }
        }
        assert_eq!(buffer.stats().stretched, 1, "{:?}", buffer.stats());
        assert!(delays.iter().all(|d| *d >= MIN_DELAY - FRAME / 2 && *d < MIN_DELAY + FRAME), "{delays:?}");
    }

    #[test]
    fn delay_shrinks_back_after_a_jittery_spell() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        let mut delays_late = Vec::new();
        for n in 0..3000u32 {
            let tick = start + FRAME * n;
            // 60 ms spikes on every fifth packet for the first 20 s, then a clean link.
            let extra = if n < 1000 && n % 5 == 0 { 60 } else { 0 };
            let at = tick + Duration::from_millis(10 + extra);
            buffer.packet(at, Ssrc(9), n * 160);
            buffer.insert(n * 160, Frame::Samples(&[1; 160]));
            // Polls lag so that each lands after that tick's on-time packet.
            let _ = buffer.poll(tick + Duration::from_millis(15));
            if n > 2500 {
                delays_late.extend(buffer.current_delay());
            }
        }
        assert!(buffer.stats().skipped > 0, "{:?}", buffer.stats());
        let max = delays_late.iter().max().unwrap();
        assert!(*max <= Duration::from_millis(60), "{max:?}");
    }

    #[test]
    fn dtx_after_comfort_noise_is_not_loss_and_the_talkspurt_resumes() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(JitterConfig { clock: ClockRate::HZ_16000, fill_byte: 0 });
        let mut kinds = Vec::new();
        for n in 0..200u32 {
            let tick = start + FRAME * n;
            let ts = n * 320;
            // Speech 0..50, SID at 50 and every 8th frame until 150, speech again.
            let frame = match n {
                0..50 | 150.. => Some(FrameKind::Speech),
                _ if n % 8 == 2 => Some(FrameKind::Comfort),
                _ => None,
            };
            if let Some(kind) = frame {
                buffer.packet(tick + Duration::from_millis(5), Ssrc(3), ts);
                buffer.insert(ts, Frame::Coded { kind, tag: 0, data: &[n as u8; 10] });
            }
            kinds.push(buffer.poll(tick + Duration::from_millis(10)).kind_name());
        }
        let s = buffer.stats();
        assert_eq!(s.concealed, 0, "{s:?}");
        assert!(s.dtx > 80, "{s:?}");
        assert_eq!(kinds.last(), Some(&"frame"));
    }

    #[test]
    fn a_new_ssrc_or_a_timestamp_jump_resyncs_and_playout_goes_on() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        let mut played_after = 0;
        for n in 0..300u32 {
            let tick = start + FRAME * n;
            let (ssrc, ts) = match n {
                0..100 => (1, n * 160),
                100..200 => (2, 0x8000_0000u32.wrapping_add(n * 160)),
                // Same SSRC, the timestamp jumps by an hour.
                _ => (2, 0x8000_0000u32.wrapping_add(n * 160 + 8000 * 3600)),
            };
            buffer.packet(tick + Duration::from_millis(5), Ssrc(ssrc), ts);
            buffer.insert(ts, Frame::Samples(&[n as u8; 160]));
            if let Playout::Frame(_) = buffer.poll(tick + Duration::from_millis(10))
                && n > 250
            {
                played_after += 1;
            }
        }
        let s = buffer.stats();
        assert_eq!(s.resyncs, 2, "{s:?}");
        assert_eq!(played_after, 49, "{s:?}");
        assert!(s.concealed <= 2, "{s:?}");
    }

    #[test]
    fn ten_ms_packets_fill_halves_and_a_missing_half_is_reported_incomplete() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        let mut incomplete = 0;
        for n in 0..100u32 {
            let tick = start + FRAME * n;
            for half in 0..2u32 {
                if n == 50 && half == 1 {
                    continue;
                }
                let ts = 12_345 + n * 160 + half * 80;
                buffer.packet(tick + Duration::from_millis(2), Ssrc(5), ts);
                buffer.insert(ts, Frame::Samples(&[half as u8 + 1; 80]));
            }
            if let Playout::Frame(f) = buffer.poll(tick + Duration::from_millis(10)) {
                assert_eq!(f.data.len(), 160);
                assert_eq!(f.data[0], 1);
                if !f.complete {
                    incomplete += 1;
                    assert_eq!(f.data[159], 0xFF, "gap filled with silence");
                }
            }
        }
        assert_eq!(incomplete, 1);
        assert_eq!(buffer.stats().concealed, 0);
    }

    #[test]
    fn a_stopped_stream_goes_idle_and_restarts() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        let mut buffering = 0;
        for n in 0..400u32 {
            let tick = start + FRAME * n;
            if !(100..300).contains(&n) {
                buffer.packet(tick, Ssrc(5), n * 160);
                buffer.insert(n * 160, Frame::Samples(&[1; 160]));
            }
            if buffer.poll(tick + Duration::from_millis(5)) == Playout::Buffering {
                buffering += 1;
            }
        }
        let s = buffer.stats();
        assert!(s.concealed <= u64::from(IDLE_AFTER) + 1, "{s:?}");
        assert!(buffering > 150);
        assert!(s.played > 190, "{s:?}");
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let start = Instant::now();
        let mut buffer = JitterBuffer::new(config());
        assert_eq!(buffer.insert(0, Frame::Samples(&[0; 10])), Inserted::Invalid);
        let mut seed = 1u64;
        for n in 0..5000u32 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1442695040888963407);
            let ts = (seed >> 32) as u32;
            let len = (seed >> 20) as usize % 200;
            buffer.packet(start + Duration::from_millis(u64::from(n)), Ssrc((seed & 3) as u32), ts);
            let _ = buffer.insert(ts, Frame::Samples(&[0; 200][..len]));
            let _ = buffer.insert(ts, Frame::Coded { kind: FrameKind::Speech, tag: 0, data: &[0; 200][..len] });
            let _ = buffer.poll(start + Duration::from_millis(u64::from(n)));
        }
        // Time going backwards is ignored.
        let _ = buffer.poll(start);
    }

    impl Playout<'_> {
        fn kind_name(&self) -> &'static str {
            match self {
                Self::Buffering => "buffering",
                Self::Frame(_) => "frame",
                Self::Conceal => "conceal",
                Self::Stretch => "stretch",
                Self::Dtx => "dtx",
            }
        }
    }
}
