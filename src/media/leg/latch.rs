//! Symmetric RTP latching: which source address the leg accepts media from, and when it moves
//! to a new one.

use super::*;

/// Where the peer sends from, once known.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Latch {
    pub(super) addr: Option<SocketAddr>,
    /// The first address latched (since the SDP last named a new one).
    first: Option<SocketAddr>,
    last_seen: Option<Instant>,
}

/// What a latch says of a datagram's source.
pub(super) enum Admission {
    /// Look at it (a valid packet then latches).
    Admitted,
    /// Latched elsewhere, and that source is not quiet.
    Latched,
    /// The latched source went quiet, but this one may not take over.
    Implausible,
}

impl Latch {
    /// Whether a packet from `from` may be looked at, the SDP having signalled `signalled`;
    /// `secure` when the packet must authenticate before it latches.
    pub(super) fn admits(
        &self,
        now: Instant,
        from: SocketAddr,
        policy: Latching,
        signalled: SocketAddr,
        secure: bool,
    ) -> Admission {
        let (Some(addr), Some(seen)) = (self.addr, self.last_seen) else { return Admission::Admitted };
        if addr == from {
            return Admission::Admitted;
        }
        if now.saturating_duration_since(seen) < RELATCH_AFTER {
            return Admission::Latched;
        }
        let plausible = match policy {
            Latching::Any => true,
            Latching::Ip => secure || from.ip() == signalled.ip() || self.first.is_some_and(|f| f.ip() == from.ip()),
            Latching::Strict => from == signalled,
        };
        if plausible { Admission::Admitted } else { Admission::Implausible }
    }

    /// Latches to `from` after a valid packet; true when it moved from another address.
    pub(super) fn latch(&mut self, now: Instant, from: SocketAddr) -> bool {
        let moved = self.addr.is_some_and(|a| a != from);
        self.addr = Some(from);
        self.first.get_or_insert(from);
        self.last_seen = Some(now);
        moved
    }
}
