//! The leg's bounded queues: datagrams to send, DTMF digits to play, events for the shell.

use super::*;

/// Datagrams waiting for `poll_transmit`, in one buffer allocated with the leg.
pub(super) struct TxQueue {
    data: Box<[[u8; MTU]; TX_QUEUE]>,
    meta: [(SocketAddr, Channel, usize); TX_QUEUE],
    head: usize,
    len: usize,
}

impl TxQueue {
    pub(super) fn new() -> Self {
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            data: vec![[0u8; MTU]; TX_QUEUE]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("the vector has TX_QUEUE entries")),
            meta: [(nowhere, Channel::Rtp, 0); TX_QUEUE],
            head: 0,
            len: 0,
        }
    }

    /// Queues a datagram; false when the oldest had to be dropped for it.
    pub(super) fn push(&mut self, to: SocketAddr, channel: Channel, datagram: &[u8]) -> bool {
        let mut kept = true;
        if self.len == TX_QUEUE {
            self.head = (self.head + 1) % TX_QUEUE;
            self.len -= 1;
            kept = false;
        }
        let slot = (self.head + self.len) % TX_QUEUE;
        let n = datagram.len().min(MTU);
        self.data[slot][..n].copy_from_slice(&datagram[..n]);
        self.meta[slot] = (to, channel, n);
        self.len += 1;
        kept
    }

    pub(super) fn pop(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if self.len == 0 {
            return None;
        }
        let (to, channel, n) = self.meta[self.head];
        let len = n.min(buf.len());
        buf[..len].copy_from_slice(&self.data[self.head][..len]);
        self.head = (self.head + 1) % TX_QUEUE;
        self.len -= 1;
        Some(Transmit { to, len, channel })
    }
}

/// DTMF digits waiting to be sent.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DigitQueue {
    digits: [u8; DTMF_QUEUE],
    head: usize,
    len: usize,
}

impl DigitQueue {
    pub(super) fn push(&mut self, event: Event) -> bool {
        if self.len == DTMF_QUEUE {
            return false;
        }
        self.digits[(self.head + self.len) % DTMF_QUEUE] = event.0;
        self.len += 1;
        true
    }

    pub(super) fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let event = Event(self.digits[self.head]);
        self.head = (self.head + 1) % DTMF_QUEUE;
        self.len -= 1;
        Some(event)
    }
}

/// DTMF events for `poll_event`; the oldest is dropped when the driver does not poll.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct EventQueue {
    events: [Option<LegEvent>; 16],
    head: usize,
    len: usize,
}

impl EventQueue {
    pub(super) fn push(&mut self, event: LegEvent) {
        if self.len == self.events.len() {
            self.head = (self.head + 1) % self.events.len();
            self.len -= 1;
        }
        let at = (self.head + self.len) % self.events.len();
        self.events[at] = Some(event);
        self.len += 1;
    }

    pub(super) fn pop(&mut self) -> Option<LegEvent> {
        if self.len == 0 {
            return None;
        }
        let event = self.events[self.head].take();
        self.head = (self.head + 1) % self.events.len();
        self.len -= 1;
        event
    }
}
