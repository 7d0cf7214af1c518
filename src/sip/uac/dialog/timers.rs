//! A placed call's timers: the session refresh or expiry (RFC 4028) and the retransmission of our
//! 2xx to a re-INVITE until its ACK (RFC 3261 §13.3.1.4).

use super::*;

impl Uac {
    pub(in crate::sip::uac) fn session_timeout(&mut self, now: Instant, call: CallRef) {
        let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) else { return };
        let Some(s) = d.session.as_mut() else { return };
        if s.deadline() > now {
            return; // A stale entry: the timer restarted since.
        }
        if s.refresh_at.take().is_some() {
            let busy = d.modifying.is_some();
            let deadline = s.deadline();
            self.schedule(deadline, call, Timer::Session);
            if !busy {
                self.send_modify(now, call, None, false, true);
            }
            return;
        }
        self.send_bye(now, call, EndReason::SessionExpired);
    }

    pub(in crate::sip::uac) fn retransmit_timeout(&mut self, now: Instant, call: CallRef) {
        let Some(d) = self.calls.get_mut(&call).and_then(Call::dialog) else { return };
        let Some(r) = d.retransmit.as_mut() else { return };
        if r.next > now {
            return;
        }
        if r.give_up <= now {
            d.retransmit = None;
            // §13.3.1.4: no ACK for our 2xx: the dialog ends with BYE.
            self.send_bye(now, call, EndReason::DialogLost);
            return;
        }
        r.interval = (r.interval * 2).min(T2);
        r.next = now + r.interval;
        let (bytes, next) = (r.bytes.clone(), r.next);
        let to = self.calls[&call].next_hop;
        self.outputs.push_back(UacOutput::Transmit { to, bytes });
        self.schedule(next, call, Timer::Retransmit);
    }
}
