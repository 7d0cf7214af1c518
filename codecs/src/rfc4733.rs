//! RTP payload for DTMF digits and telephony tones (RFC 4733 §2), sans-IO.
//!
//! [`TelephoneEventSender`] is ticked once per packet interval and returns the packets of one
//! event: the first with the marker bit, then growing durations, then the final duration
//! three times with the E bit (§2.5.1.4). Events longer than 0xFFFF samples are split into
//! segments (§2.5.1.3). [`TelephoneEventReceiver`] is fed `(now, timestamp, payload)` and
//! reports each event's start and end once, whatever was lost, repeated or reordered: a
//! repeated end is ignored, a lost start is replaced by the first packet seen, a lost end by
//! the next event's start or by a timeout (`poll_timeout` / `handle_timeout`).
//!
//! The clock is the telephone-event payload type's own rate (8, 16 or 48 kHz: it matches the
//! audio codec of the stream, §2.1); durations are in that clock's samples.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use thiserror::Error;

/// One event code (RFC 4733 §3.2 for DTMF: 0–9, `*` = 10, `#` = 11, A–D = 12–15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event(pub u8);

impl Event {
    /// The DTMF event for a keypad character.
    pub fn from_dtmf(digit: char) -> Option<Self> {
        DTMF_DIGITS.iter().position(|&c| c == digit.to_ascii_uppercase()).map(|i| Self(i as u8))
    }

    /// The keypad character, for DTMF events.
    pub fn dtmf(self) -> Option<char> {
        DTMF_DIGITS.get(usize::from(self.0)).copied()
    }
}

/// One telephone-event payload block (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPayload {
    /// The event.
    pub event: Event,
    /// E: this is (a retransmission of) the last packet of the event.
    pub end: bool,
    /// Power level in -dBm0, 0..=63.
    pub volume: u8,
    /// Duration so far, in samples of the payload type's clock.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first four bytes; any further blocks are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, Rfc4733Error> {
        let &[event, flags, high, low, ..] = payload else {
            return Err(Rfc4733Error::Truncated { len: payload.len() });
        };
        Ok(Self {
            event: Event(event),
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([high, low]),
        })
    }

    /// The four bytes; the R bit is zero.
    pub fn to_bytes(self) -> [u8; 4] {
        let [high, low] = self.duration.to_be_bytes();
        [self.event.0, (u8::from(self.end) << 7) | (self.volume & 0x3F), high, low]
    }
}

/// Errors of this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Rfc4733Error {
    /// A payload shorter than one 4-byte block.
    #[error("telephone-event payload of {len} bytes, need 4")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// `start` while an event is still being sent.
    #[error("an event is still being sent")]
    Busy,
}

/// One RTP packet the sender wants sent with the telephone-event payload type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPacket {
    /// RTP timestamp: the start of the event (segment), the same for all its packets.
    pub timestamp: u32,
    /// RTP marker bit: set on the first packet of an event.
    pub marker: bool,
    /// The payload.
    pub payload: EventPayload,
}

/// Sends one event at a time as RFC 4733 packets.
#[derive(Clone, Debug)]
pub struct TelephoneEventSender {
    packet_samples: u32,
    clock_rate: u32,
    sending: Option<Sending>,
}

#[derive(Clone, Copy, Debug)]
struct Sending {
    event: Event,
    volume: u8,
    /// Start of the current segment.
    timestamp: u32,
    /// Samples of the event not yet covered by earlier segments.
    remaining: u32,
    /// Duration reported in the current segment so far.
    duration: u32,
    first: bool,
    ends_left: u8,
}

impl TelephoneEventSender {
    /// A sender for a `clock_rate` Hz payload type that sends one packet every `ptime_ms`.
    ///
    /// # Panics
    /// When `clock_rate * ptime_ms / 1000` is zero: a configuration bug.
    pub fn new(clock_rate: u32, ptime_ms: u32) -> Self {
        let packet_samples = clock_rate * ptime_ms / 1000;
        assert!(packet_samples > 0, "telephone-event packet interval of zero samples");
        Self { packet_samples, clock_rate, sending: None }
    }

    /// Starts sending `event` at RTP `timestamp` for `duration_ms`, at `volume` -dBm0.
    pub fn start(&mut self, timestamp: u32, event: Event, volume: u8, duration_ms: u32) -> Result<(), Rfc4733Error> {
        if self.sending.is_some() {
            return Err(Rfc4733Error::Busy);
        }
        let total = (u64::from(duration_ms) * u64::from(self.clock_rate) / 1000).clamp(1, u64::from(u32::MAX)) as u32;
        self.sending = Some(Sending {
            event,
            volume: volume.min(63),
            timestamp,
            remaining: total,
            duration: 0,
            first: true,
            ends_left: END_PACKETS,
        });
        Ok(())
    }

    /// Ends the current event at the duration sent so far (key released early).
    pub fn end_now(&mut self) {
        if let Some(sending) = &mut self.sending {
            sending.remaining = sending.duration.max(1);
        }
    }

    /// Whether no event is being sent.
    pub fn is_idle(&self) -> bool {
        self.sending.is_none()
    }

    /// The packet for this packet interval, if an event is being sent. Call once per interval.
    pub fn poll_packet(&mut self) -> Option<EventPacket> {
        let sending = self.sending.as_mut()?;
        // 1. Advance the duration by one interval, not past the event or the 16-bit field.
        let mut end = false;
        if sending.duration < sending.remaining.min(MAX_SEGMENT) {
            sending.duration = (sending.duration + self.packet_samples).min(sending.remaining).min(MAX_SEGMENT);
        }
        let packet = if sending.duration == sending.remaining {
            // 2. The event is complete: the final packet, three times (§2.5.1.4).
            end = true;
            sending.ends_left -= 1;
            sending.packet(true)
        } else if sending.duration == MAX_SEGMENT {
            // 3. A full segment: report it and go on in a new one (§2.5.1.3).
            let packet = sending.packet(false);
            sending.timestamp = sending.timestamp.wrapping_add(MAX_SEGMENT);
            sending.remaining -= MAX_SEGMENT;
            sending.duration = 0;
            packet
        } else {
            sending.packet(false)
        };
        if end && sending.ends_left == 0 {
            self.sending = None;
        }
        Some(packet)
    }
}

impl Sending {
    fn packet(&mut self, end: bool) -> EventPacket {
        let marker = std::mem::take(&mut self.first);
        // The duration never exceeds MAX_SEGMENT, so it fits the 16-bit field.
        let duration = self.duration as u16;
        EventPacket {
            timestamp: self.timestamp,
            marker,
            payload: EventPayload { event: self.event, end, volume: self.volume, duration },
        }
    }
}

/// What the receiver reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceivedEvent {
    /// An event began at this RTP timestamp.
    Began {
        /// The event.
        event: Event,
        /// Its start timestamp.
        timestamp: u32,
    },
    /// The event that began at `timestamp` ended.
    Ended {
        /// The event.
        event: Event,
        /// Its start timestamp.
        timestamp: u32,
        /// Its total duration in clock samples (across segments).
        duration: u32,
        /// How the end was known.
        reason: EndReason,
    },
}

/// How the receiver learned an event ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A packet with the E bit.
    EndBit,
    /// A new event started before any end packet arrived.
    Superseded,
    /// No packet for [`END_TIMEOUT`].
    Timeout,
}

/// How long the receiver waits for the next packet of an event before ending it. Senders
/// refresh every 50 ms at most (§2.5.1.2); four missing packets at that rate is a lost end.
pub const END_TIMEOUT: Duration = Duration::from_millis(250);

/// Turns received telephone-event packets into event starts and ends.
#[derive(Clone, Debug)]
pub struct TelephoneEventReceiver {
    current: Option<Current>,
    events: VecDeque<ReceivedEvent>,
}

#[derive(Clone, Copy, Debug)]
struct Current {
    event: Event,
    /// Start of the event (first segment).
    start: u32,
    /// Start of the current segment.
    segment: u32,
    /// Duration of earlier segments.
    before: u32,
    duration: u16,
    ended: bool,
    last_seen: Instant,
}

impl Default for TelephoneEventReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl TelephoneEventReceiver {
    /// A receiver with nothing in progress.
    pub fn new() -> Self {
        Self { current: None, events: VecDeque::with_capacity(QUEUE) }
    }

    /// Feeds one packet of the telephone-event payload type: its RTP timestamp and payload.
    pub fn handle_packet(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Result<(), Rfc4733Error> {
        let block = EventPayload::parse(payload)?;
        match self.current {
            // 1. Another packet of the current segment (repeats included).
            Some(ref mut current) if current.segment == timestamp => {
                if current.ended {
                    return Ok(());
                }
                current.duration = current.duration.max(block.duration);
                current.last_seen = now;
                if block.end {
                    current.ended = true;
                    let ended = Self::ended(current, EndReason::EndBit);
                    self.push(ended);
                }
            }
            // 2. A packet of an older event, late or repeated: already reported.
            Some(current) if (timestamp.wrapping_sub(current.segment) as i32) < 0 => {}
            // 3. The next segment of a long event (§2.5.1.3).
            Some(ref mut current)
                if !current.ended
                    && current.event == block.event
                    && current.duration == u16::MAX
                    && timestamp == current.segment.wrapping_add(MAX_SEGMENT) =>
            {
                current.before += MAX_SEGMENT;
                current.segment = timestamp;
                current.duration = block.duration;
                current.last_seen = now;
                if block.end {
                    current.ended = true;
                    let ended = Self::ended(current, EndReason::EndBit);
                    self.push(ended);
                }
            }
            // 4. A new event; the previous one ends here if its end was lost.
            previous => {
                if let Some(previous) = previous
                    && !previous.ended
                {
                    self.push(Self::ended(&previous, EndReason::Superseded));
                }
                let current = Current {
                    event: block.event,
                    start: timestamp,
                    segment: timestamp,
                    before: 0,
                    duration: block.duration,
                    ended: block.end,
                    last_seen: now,
                };
                self.push(ReceivedEvent::Began { event: block.event, timestamp });
                if block.end {
                    self.push(Self::ended(&current, EndReason::EndBit));
                }
                self.current = Some(current);
            }
        }
        Ok(())
    }

    /// When [`Self::handle_timeout`] should next be called, if an event is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.filter(|c| !c.ended).map(|c| c.last_seen + END_TIMEOUT)
    }

    /// Ends an event whose packets stopped coming. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(current) = &mut self.current
            && !current.ended
            && now >= current.last_seen + END_TIMEOUT
        {
            current.ended = true;
            let ended = Self::ended(current, EndReason::Timeout);
            self.push(ended);
        }
    }

    /// The next start or end to report.
    pub fn poll_event(&mut self) -> Option<ReceivedEvent> {
        self.events.pop_front()
    }

    fn ended(current: &Current, reason: EndReason) -> ReceivedEvent {
        ReceivedEvent::Ended {
            event: current.event,
            timestamp: current.start,
            duration: current.before + u32::from(current.duration),
            reason,
        }
    }

    fn push(&mut self, event: ReceivedEvent) {
        // Bounded: a caller that never polls loses the oldest reports, not memory.
        if self.events.len() == QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

/// §2.5.1.4: "the final packet ... SHOULD be retransmitted twice" -> three in all.
const END_PACKETS: u8 = 3;
/// Largest duration one segment reports (the 16-bit field).
const MAX_SEGMENT: u32 = 0xFFFF;
/// Reports held between polls; one packet produces at most two.
const QUEUE: usize = 8;
/// RFC 4733 §3.2 Table 1 order.
const DTMF_DIGITS: [char; 16] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D'];

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_sender(sender: &mut TelephoneEventSender) -> Vec<EventPacket> {
        let mut packets = Vec::new();
        for _ in 0..10_000 {
            match sender.poll_packet() {
                Some(p) => packets.push(p),
                None => return packets,
            }
        }
        panic!("sender did not finish");
    }

    #[test]
    fn payload_known_answer_from_rfc4733_figure_1() {
        // Event 5 ("5"), E=1, volume 10, duration 800 = 0x0320.
        let payload = EventPayload { event: Event(5), end: true, volume: 10, duration: 800 };
        assert_eq!(payload.to_bytes(), [0x05, 0x8A, 0x03, 0x20]);
        assert_eq!(EventPayload::parse(&[0x05, 0x8A, 0x03, 0x20]), Ok(payload));
        // The R bit is ignored on receipt.
        assert_eq!(EventPayload::parse(&[0x05, 0xCA, 0x03, 0x20]), Ok(payload));
        assert_eq!(EventPayload::parse(&[0x05, 0x8A, 0x03]), Err(Rfc4733Error::Truncated { len: 3 }));
        assert_eq!(Event::from_dtmf('#'), Some(Event(11)));
        assert_eq!(Event::from_dtmf('d'), Some(Event(15)));
        assert_eq!(Event(10).dtmf(), Some('*'));
        assert_eq!(Event::from_dtmf('x'), None);
    }

    #[test]
    fn sender_emits_marker_growing_durations_and_three_ends_at_each_clock() {
        for (clock, interval) in [(8_000u32, 160u16), (16_000, 320), (48_000, 960)] {
            let mut sender = TelephoneEventSender::new(clock, 20);
            sender.start(1_000, Event(1), 10, 100).unwrap();
            assert_eq!(sender.start(1_000, Event(2), 10, 100), Err(Rfc4733Error::Busy));
            let packets = drain_sender(&mut sender);
            assert!(sender.is_idle());
            let total = (clock / 10) as u16; // 100 ms
            // 100 ms in 20 ms steps: 5 packets, the last of which is the first end packet.
            assert_eq!(packets.len(), 7, "{clock}");
            assert!(packets.iter().all(|p| p.timestamp == 1_000 && p.payload.event == Event(1)));
            assert!(packets[0].marker && packets[1..].iter().all(|p| !p.marker));
            let durations: Vec<u16> = packets.iter().map(|p| p.payload.duration).collect();
            assert_eq!(durations, [interval, 2 * interval, 3 * interval, 4 * interval, total, total, total]);
            let ends: Vec<bool> = packets.iter().map(|p| p.payload.end).collect();
            assert_eq!(ends, [false, false, false, false, true, true, true]);
        }
    }

    #[test]
    fn long_events_are_split_into_segments() {
        // 3 s at 48 kHz = 144,000 samples: segments of 65,535, 65,535 and 12,930.
        let mut sender = TelephoneEventSender::new(48_000, 20);
        sender.start(u32::MAX - 100, Event(0), 0, 3_000).unwrap();
        let packets = drain_sender(&mut sender);
        let starts: Vec<u32> =
            packets.iter().map(|p| p.timestamp).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let expected_starts =
            [u32::MAX - 100, (u32::MAX - 100).wrapping_add(65_535), (u32::MAX - 100).wrapping_add(131_070)];
        let mut sorted = expected_starts;
        sorted.sort();
        assert_eq!(starts, sorted);
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
        let last = packets.last().unwrap();
        assert_eq!((last.timestamp, last.payload.duration, last.payload.end), (expected_starts[2], 12_930, true));
        // And the receiver stitches them back into one 3 s event.
        let mut receiver = TelephoneEventReceiver::new();
        let now = Instant::now();
        for p in &packets {
            receiver.handle_packet(now, p.timestamp, &p.payload.to_bytes()).unwrap();
        }
        assert_eq!(
            receiver.poll_event(),
            Some(ReceivedEvent::Began { event: Event(0), timestamp: expected_starts[0] })
        );
        assert_eq!(
            receiver.poll_event(),
            Some(ReceivedEvent::Ended {
                event: Event(0),
                timestamp: expected_starts[0],
                duration: 144_000,
                reason: EndReason::EndBit
            })
        );
        assert_eq!(receiver.poll_event(), None);
    }

    #[test]
    fn end_now_cuts_the_event_short() {
        let mut sender = TelephoneEventSender::new(8_000, 20);
        sender.start(0, Event(3), 10, 5_000).unwrap();
        sender.poll_packet().unwrap();
        sender.poll_packet().unwrap();
        sender.end_now();
        let rest = drain_sender(&mut sender);
        assert_eq!(rest.len(), 3);
        assert!(rest.iter().all(|p| p.payload.end && p.payload.duration == 320));
    }

    fn feed(receiver: &mut TelephoneEventReceiver, now: Instant, packets: &[EventPacket]) -> Vec<ReceivedEvent> {
        for p in packets {
            receiver.handle_packet(now, p.timestamp, &p.payload.to_bytes()).unwrap();
        }
        std::iter::from_fn(|| receiver.poll_event()).collect()
    }

    fn event_packets(timestamp: u32, event: u8) -> Vec<EventPacket> {
        let mut sender = TelephoneEventSender::new(8_000, 20);
        sender.start(timestamp, Event(event), 10, 100).unwrap();
        drain_sender(&mut sender)
    }

    #[test]
    fn receiver_reports_each_event_once_despite_repeats() {
        let mut receiver = TelephoneEventReceiver::new();
        let now = Instant::now();
        let mut packets = event_packets(8_000, 1);
        packets.extend(event_packets(16_000, 2));
        // Every packet twice.
        let doubled: Vec<EventPacket> = packets.iter().flat_map(|p| [*p, *p]).collect();
        let events = feed(&mut receiver, now, &doubled);
        assert_eq!(
            events,
            [
                ReceivedEvent::Began { event: Event(1), timestamp: 8_000 },
                ReceivedEvent::Ended { event: Event(1), timestamp: 8_000, duration: 800, reason: EndReason::EndBit },
                ReceivedEvent::Began { event: Event(2), timestamp: 16_000 },
                ReceivedEvent::Ended { event: Event(2), timestamp: 16_000, duration: 800, reason: EndReason::EndBit },
            ]
        );
        // Late packets of the first event change nothing.
        assert!(feed(&mut receiver, now, &packets[..3]).is_empty());
        assert_eq!(receiver.poll_timeout(), None);
    }

    #[test]
    fn receiver_survives_lost_starts_and_ends() {
        let mut receiver = TelephoneEventReceiver::new();
        let start = Instant::now();
        let first = event_packets(100, 7);
        let second = event_packets(2_000, 8);
        // First event: start packets lost, and all three end packets lost.
        let mut events = feed(&mut receiver, start, &first[2..4]);
        assert_eq!(events, [ReceivedEvent::Began { event: Event(7), timestamp: 100 }]);
        // Second event arrives: the first ends by supersession, with the last duration seen.
        events = feed(&mut receiver, start, &second[3..]);
        assert_eq!(
            events,
            [
                ReceivedEvent::Ended { event: Event(7), timestamp: 100, duration: 640, reason: EndReason::Superseded },
                ReceivedEvent::Began { event: Event(8), timestamp: 2_000 },
                ReceivedEvent::Ended { event: Event(8), timestamp: 2_000, duration: 800, reason: EndReason::EndBit },
            ]
        );
        // A third event whose end never comes is ended by the timeout, once.
        let third = event_packets(5_000, 9);
        feed(&mut receiver, start, &third[..2]);
        let deadline = receiver.poll_timeout().unwrap();
        assert_eq!(deadline, start + END_TIMEOUT);
        receiver.handle_timeout(start + Duration::from_millis(100));
        assert_eq!(receiver.poll_event(), None);
        receiver.handle_timeout(deadline);
        receiver.handle_timeout(deadline + Duration::from_secs(1));
        assert_eq!(
            receiver.poll_event(),
            Some(ReceivedEvent::Ended { event: Event(9), timestamp: 5_000, duration: 320, reason: EndReason::Timeout })
        );
        assert_eq!(receiver.poll_event(), None);
        // Its end packets arriving afterwards are ignored.
        assert!(feed(&mut receiver, deadline, &third[4..]).is_empty());
    }

    #[test]
    fn receiver_handles_timestamp_wraparound_and_truncation() {
        let mut receiver = TelephoneEventReceiver::new();
        let now = Instant::now();
        let before = event_packets(u32::MAX - 500, 1);
        let after = event_packets(300, 2);
        feed(&mut receiver, now, &before);
        let events = feed(&mut receiver, now, &after);
        assert_eq!(events.len(), 2, "{events:?}");
        // A packet from before the wrap is older, not newer.
        assert!(feed(&mut receiver, now, &before[..1]).is_empty());
        assert_eq!(receiver.handle_packet(now, 0, &[1, 2]), Err(Rfc4733Error::Truncated { len: 2 }));
    }
}
