//! Client transactions: INVITE (§17.1.1 with RFC 6026's Accepted state) and non-INVITE
//! (§17.1.2).

use std::time::{Duration, Instant};

use super::super::message::{self, Method, Request, Response};
use super::{ClientTx as ClientId, Key, Peer, SendError, TimerRef, Transactions, TxOutput};

/// Timer D over UDP: how long the ACK of a 3xx–6xx is resent for retransmitted finals (§17.1.1.2).
const TIMER_D: Duration = Duration::from_secs(32);

/// Where a client transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Sent; nothing back yet (INVITE: Calling; non-INVITE: Trying).
    Calling,
    /// A provisional response came.
    Proceeding,
    /// A final response came (INVITE: 3xx–6xx, ACKed here).
    Completed,
    /// INVITE: a 2xx came; later 2xx go up for the dialog to ACK (timer M).
    Accepted,
}

/// One client transaction.
pub(super) struct ClientTx {
    key: Key,
    invite: bool,
    state: State,
    peer: Peer,
    /// The request as sent (retransmissions, the ACK of a 3xx–6xx, CANCEL).
    request: Request,
    bytes: Vec<u8>,
    /// The ACK sent for a 3xx–6xx, resent when the final comes again.
    ack: Option<Vec<u8>>,
    /// Timer A or E: next firing and interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B, D, F, K or M.
    ends: Instant,
}

impl Transactions {
    /// Sends `request` (with our Via and branch on top) to `to` as a new client transaction.
    pub fn send_request(&mut self, now: Instant, request: Request, to: Peer) -> Result<ClientId, SendError> {
        if request.method == Method::Ack {
            return Err(SendError::Ack);
        }
        let key = Key::client_of_request(&request).ok_or(SendError::NoBranch)?;
        if self.client_keys.contains_key(&key) {
            return Err(SendError::Exists);
        }
        if self.servers.len() + self.clients.len() >= self.limits.max_transactions {
            return Err(SendError::Full);
        }
        let t1 = self.timers_cfg.t1;
        let id = self.next_id();
        let bytes = request.to_bytes();
        let retransmit = (!to.transport.is_reliable()).then_some((now + t1, t1));
        let ends = now + 64 * t1;
        let tx = ClientTx {
            key: key.clone(),
            invite: request.method == Method::Invite,
            state: State::Calling,
            peer: to,
            request,
            bytes: bytes.clone(),
            ack: None,
            retransmit,
            ends,
        };
        self.clients.insert(id, tx);
        self.client_keys.insert(key, id);
        if let Some((at, _)) = retransmit {
            self.schedule(at, TimerRef::Client(id));
        }
        self.schedule(ends, TimerRef::Client(id));
        self.transmit(to, bytes);
        Ok(id)
    }

    /// The CANCEL of INVITE client transaction `client` (§9.1), to send as a client transaction
    /// of its own; `None` when it is not an INVITE still waiting for its final response.
    pub fn cancel_request(&self, client: ClientId) -> Option<(Request, Peer)> {
        let tx = self.clients.get(&client)?;
        if !tx.invite || !matches!(tx.state, State::Calling | State::Proceeding) {
            return None;
        }
        let mut cancel = Request {
            method: Method::Cancel,
            uri: tx.request.uri.clone(),
            headers: message::Headers::default(),
            body: Vec::new(),
        };
        copy_for_ack_or_cancel(&tx.request, &mut cancel.headers, tx.request.headers.get("To"), "CANCEL");
        Some((cancel, tx.peer))
    }

    /// The transport could not deliver `client`'s request: it ends as a timeout (§17.1.4).
    pub fn transport_failed(&mut self, client: ClientId) {
        if let Some(tx) = self.clients.remove(&client) {
            self.client_keys.remove(&tx.key);
            if matches!(tx.state, State::Calling | State::Proceeding) {
                self.outputs.push_back(TxOutput::Timeout { client });
            }
        }
    }

    pub(super) fn handle_response(&mut self, now: Instant, response: Response, _from: Peer) {
        let Some(key) = Key::client_of_response(&response) else { return };
        let Some(&id) = self.client_keys.get(&key) else {
            // A stray response (its transaction is over): nothing to do (§18.1.2).
            return;
        };
        let (t1, t4) = (self.timers_cfg.t1, self.timers_cfg.t4);
        let Some(tx) = self.clients.get_mut(&id) else { return };
        let reliable = tx.peer.transport.is_reliable();
        let status = response.status;
        let mut timer = None;
        let pass = match (tx.invite, tx.state, status) {
            (_, State::Calling | State::Proceeding, 100..=199) => {
                tx.state = State::Proceeding;
                if tx.invite {
                    // Timer A stops at the first provisional.
                    tx.retransmit = None;
                }
                true
            }
            (true, State::Calling | State::Proceeding, 200..=299) => {
                tx.state = State::Accepted;
                tx.retransmit = None;
                tx.ends = now + 64 * t1;
                timer = Some(tx.ends);
                true
            }
            (true, State::Accepted, 200..=299) => true,
            (true, State::Calling | State::Proceeding, _) => {
                let ack = ack_for(&tx.request, &response).to_bytes();
                self.outputs.push_back(TxOutput::Transmit { to: tx.peer, bytes: ack.clone() });
                tx.ack = Some(ack);
                tx.state = State::Completed;
                tx.retransmit = None;
                tx.ends = if reliable { now } else { now + TIMER_D };
                timer = Some(tx.ends);
                true
            }
            (true, State::Completed, 300..=699) => {
                if let Some(ack) = tx.ack.clone() {
                    self.outputs.push_back(TxOutput::Transmit { to: tx.peer, bytes: ack });
                }
                false
            }
            (false, State::Calling | State::Proceeding, 200..=699) => {
                tx.state = State::Completed;
                tx.retransmit = None;
                tx.ends = if reliable { now } else { now + t4 };
                timer = Some(tx.ends);
                true
            }
            _ => false,
        };
        if let Some(at) = timer {
            self.schedule(at, TimerRef::Client(id));
        }
        if pass {
            self.outputs.push_back(TxOutput::Response { client: id, response });
        }
    }

    pub(super) fn client_timeout(&mut self, now: Instant, id: ClientId) {
        let t2 = self.timers_cfg.t2;
        let Some(tx) = self.clients.get_mut(&id) else { return };
        if let Some((at, interval)) = tx.retransmit
            && at <= now
            && tx.ends > now
        {
            // Timer A doubles without bound (§17.1.1.2); timer E up to T2, and T2 once a
            // provisional came (§17.1.2.2).
            let next = match (tx.invite, tx.state) {
                (true, _) => interval * 2,
                (false, State::Proceeding) => t2,
                (false, _) => (interval * 2).min(t2),
            };
            tx.retransmit = Some((now + next, next));
            let (to, bytes) = (tx.peer, tx.bytes.clone());
            self.schedule(now + next, TimerRef::Client(id));
            self.transmit(to, bytes);
            return;
        }
        if tx.ends > now {
            return;
        }
        let timed_out = matches!(tx.state, State::Calling | State::Proceeding);
        if let Some(tx) = self.clients.remove(&id) {
            self.client_keys.remove(&tx.key);
        }
        if timed_out {
            // Timer B or F.
            self.outputs.push_back(TxOutput::Timeout { client: id });
        }
    }
}

/// The ACK of a 3xx–6xx (§17.1.1.3): the request's Request-URI, top Via, From, Call-ID, CSeq
/// number and Route set, with the response's To.
fn ack_for(request: &Request, response: &Response) -> Request {
    let mut ack = Request {
        method: Method::Ack,
        uri: request.uri.clone(),
        headers: message::Headers::default(),
        body: Vec::new(),
    };
    copy_for_ack_or_cancel(request, &mut ack.headers, response.headers.get("To"), "ACK");
    ack
}

fn copy_for_ack_or_cancel(request: &Request, headers: &mut message::Headers, to: Option<&str>, method: &str) {
    if let Some(via) = request.headers.get("Via") {
        headers.push("Via", via);
    }
    headers.push("Max-Forwards", "70");
    if let Some(from) = request.headers.get("From") {
        headers.push("From", from);
    }
    if let Some(to) = to {
        headers.push("To", to);
    }
    headers.push("Call-ID", request.call_id());
    headers.push("CSeq", format!("{} {method}", request.cseq()));
    for route in request.headers.get_all("Route") {
        headers.push("Route", route);
    }
}
