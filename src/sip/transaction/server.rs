//! Server transactions: INVITE (§17.2.1 with RFC 6026's Accepted state) and non-INVITE
//! (§17.2.2).

use std::time::{Duration, Instant};

use super::super::message::{self, Method, Request, Response};
use super::super::refusal::Refusal;
use super::{Key, Peer, TimerRef, Transactions, TxId, TxOutput};

/// How often server transactions are checked for a user that never answered.
const SWEEP: Duration = Duration::from_secs(10);

/// Where a server transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Non-INVITE: nothing sent yet.
    Trying,
    /// A provisional response was sent (INVITE: 100 Trying at once).
    Proceeding,
    /// A final response was sent (INVITE: 3xx–6xx, waiting for the ACK).
    Completed,
    /// INVITE: a 2xx was sent; the user retransmits it until the dialog's ACK (RFC 6026).
    Accepted,
    /// INVITE: the ACK came; absorbing ACK retransmissions (timer I).
    Confirmed,
}

/// One server transaction.
pub(super) struct ServerTx {
    key: Key,
    invite: bool,
    state: State,
    peer: Peer,
    /// The last response sent, for retransmitted requests (and timer G).
    last: Vec<u8>,
    /// Timer G's next firing and interval (INVITE over UDP, after a 3xx–6xx).
    retransmit: Option<(Instant, Duration)>,
    /// When the transaction ends: timers H, I, J, L, or the wait for the user's answer.
    ends: Instant,
}

impl ServerTx {
    /// Whether it counts against `max_pending`: waiting for the user's final answer, or refused
    /// and waiting for the ACK. A peer ACKs a refusal within a round trip, so only a flood of
    /// never-ACKed INVITEs fills these, and it is shed before it takes memory.
    fn holds_slot(&self) -> bool {
        matches!(self.state, State::Trying | State::Proceeding) || (self.invite && self.state == State::Completed)
    }

    fn awaiting_final(&self) -> bool {
        matches!(self.state, State::Trying | State::Proceeding)
    }
}

impl Transactions {
    pub(super) fn handle_request(&mut self, now: Instant, request: Request, from: Peer) {
        let Some(key) = Key::server(&request) else {
            // The parser requires a Via; nothing to answer to without one.
            return;
        };
        if let Some(&id) = self.server_keys.get(&key) {
            return self.retransmitted(now, id, request);
        }
        match request.method {
            Method::Ack => self.outputs.push_back(TxOutput::Ack { request, from }),
            Method::Cancel => self.cancel(now, key, request, from),
            _ => self.new_server(now, key, request, from),
        }
    }

    /// A request that matches a live transaction: a retransmission, or the ACK of a 3xx–6xx.
    fn retransmitted(&mut self, now: Instant, id: TxId, request: Request) {
        let t4 = self.timers_cfg.t4;
        let Some(tx) = self.servers.get_mut(&id) else { return };
        if request.method == Method::Ack {
            match tx.state {
                State::Completed => {
                    // Timer I: absorb ACK retransmissions for T4 over UDP, none over streams.
                    self.pending -= 1;
                    tx.state = State::Confirmed;
                    tx.retransmit = None;
                    tx.ends = if tx.peer.transport.is_reliable() { now } else { now + t4 };
                    let at = tx.ends;
                    self.schedule(at, TimerRef::Server(id));
                }
                // An ACK of a 2xx that reuses the INVITE's branch (RFC 2543 peers): the dialog
                // layer takes it.
                State::Accepted => {
                    let from = tx.peer;
                    self.outputs.push_back(TxOutput::Ack { request, from });
                }
                _ => {}
            }
            return;
        }
        match tx.state {
            State::Proceeding | State::Completed => {
                let (to, bytes) = (tx.peer, tx.last.clone());
                self.transmit(to, bytes);
            }
            State::Trying | State::Accepted | State::Confirmed => {}
        }
    }

    fn cancel(&mut self, now: Instant, key: Key, request: Request, from: Peer) {
        let invite = self.server_keys.get(&Key::cancelled_invite(&key)).copied();
        let Some(invite) = invite else {
            // §9.2: no transaction to cancel. Kept as a transaction so that retransmitted
            // CANCELs get the same answer.
            let Some(id) = self.open_server(now, key, &request, from) else { return };
            let refusal = Refusal::NoSuchTransaction;
            let mut r = Response::to(&request, refusal.status(), message::reason_phrase(refusal.status()), None);
            refusal.write(&mut r);
            self.respond(now, id, &r);
            return;
        };
        let Some(id) = self.open_server(now, key, &request, from) else { return };
        let r = Response::to(&request, 200, message::reason_phrase(200), None);
        self.respond(now, id, &r);
        if self.servers.get(&invite).is_some_and(|tx| tx.state == State::Proceeding) {
            self.outputs.push_back(TxOutput::Cancelled { tx: invite });
        }
    }

    fn new_server(&mut self, now: Instant, key: Key, request: Request, from: Peer) {
        let Some(id) = self.open_server(now, key, &request, from) else { return };
        if request.method == Method::Invite {
            // CONTRACT §5: 100 Trying at once, which also stops the client's timer A.
            let trying = Response::to(&request, 100, message::reason_phrase(100), None);
            self.respond(now, id, &trying);
        }
        self.outputs.push_back(TxOutput::Request { tx: id, request, from });
    }

    /// Creates a server transaction, or refuses the request statelessly when the layer is full.
    fn open_server(&mut self, now: Instant, key: Key, request: &Request, from: Peer) -> Option<TxId> {
        if self.pending >= self.limits.max_pending
            || self.servers.len() + self.clients.len() >= self.limits.max_transactions
        {
            self.stateless(request, from, &Refusal::Overloaded);
            self.outputs.push_back(TxOutput::Shed { method: request.method.clone() });
            return None;
        }
        let id = self.next_id();
        let invite = request.method == Method::Invite;
        let ends = now + self.limits.unanswered;
        let tx = ServerTx {
            key: key.clone(),
            invite,
            state: if invite { State::Proceeding } else { State::Trying },
            peer: from,
            last: Vec::new(),
            retransmit: None,
            ends,
        };
        self.servers.insert(id, tx);
        self.server_keys.insert(key, id);
        self.pending += 1;
        // No timer entry for the wait on the user: almost every transaction is answered long
        // before, and the entry would stay in the heap until then. A periodic sweep catches
        // the rare one that is not.
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP);
        }
        Some(id)
    }

    /// Sends `response` in server transaction `tx`. Ignored when the transaction is gone or its
    /// state takes no such response (a late answer after a CANCEL's 487, say).
    pub fn respond(&mut self, now: Instant, tx: TxId, response: &Response) {
        let t1 = self.timers_cfg.t1;
        let Some(s) = self.servers.get_mut(&tx) else { return };
        let status = response.status;
        let reliable = s.peer.transport.is_reliable();
        let was_pending = s.holds_slot();
        let (mut timer, mut retransmit) = (None, None);
        match (s.invite, s.state, status) {
            (_, State::Trying | State::Proceeding, 100..=199) => s.state = State::Proceeding,
            (true, State::Proceeding, 200..=299) => {
                // RFC 6026 timer L: the 2xx's retransmissions belong to the user; this absorbs
                // retransmitted INVITEs meanwhile.
                s.state = State::Accepted;
                s.ends = now + 64 * t1;
                timer = Some(s.ends);
            }
            // The user's own 2xx retransmissions pass through.
            (true, State::Accepted, 200..=299) => {}
            (true, State::Proceeding, _) => {
                // Timers G (UDP) and H.
                s.state = State::Completed;
                s.ends = now + 64 * t1;
                timer = Some(s.ends);
                if !reliable {
                    s.retransmit = Some((now + t1, t1));
                    retransmit = Some(now + t1);
                }
            }
            (false, State::Trying | State::Proceeding, _) => {
                // Timer J: absorb retransmissions for 64·T1 over UDP, none over streams.
                s.state = State::Completed;
                s.ends = if reliable { now } else { now + 64 * t1 };
                timer = Some(s.ends);
            }
            _ => return,
        }
        let bytes = response.to_bytes();
        if s.state != State::Accepted {
            s.last.clone_from(&bytes);
        }
        let to = s.peer;
        if was_pending && !s.holds_slot() {
            self.pending -= 1;
        }
        for at in [timer, retransmit].into_iter().flatten() {
            self.schedule(at, TimerRef::Server(tx));
        }
        self.transmit(to, bytes);
    }

    /// Drops the server transactions that waited past `Limits::unanswered` for the user's
    /// final response.
    pub(super) fn sweep(&mut self, now: Instant) {
        let overdue: Vec<TxId> =
            self.servers.iter().filter(|(_, tx)| tx.awaiting_final() && tx.ends <= now).map(|(id, _)| *id).collect();
        for id in overdue {
            self.server_timeout(now, id);
        }
        self.next_sweep = (self.pending > 0).then_some(now + SWEEP);
    }

    pub(super) fn server_timeout(&mut self, now: Instant, id: TxId) {
        let t2 = self.timers_cfg.t2;
        let Some(tx) = self.servers.get_mut(&id) else { return };
        if let Some((at, interval)) = tx.retransmit
            && at <= now
            && tx.ends > now
            && tx.state == State::Completed
        {
            // Timer G.
            let interval = (interval * 2).min(t2);
            tx.retransmit = Some((now + interval, interval));
            let (to, bytes) = (tx.peer, tx.last.clone());
            self.schedule(now + interval, TimerRef::Server(id));
            self.transmit(to, bytes);
            return;
        }
        if tx.ends > now {
            return;
        }
        // Timers H, I, J, L, or no answer from the user in time: the transaction ends.
        if tx.holds_slot() {
            self.pending -= 1;
        }
        if tx.awaiting_final() {
            tracing::warn!(tx = id, "a server transaction got no final response in time");
        }
        if let Some(tx) = self.servers.remove(&id) {
            self.server_keys.remove(&tx.key);
        }
    }
}
