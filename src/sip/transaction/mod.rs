//! RFC 3261 §17 transactions, with RFC 6026's Accepted states, sans-IO.
//!
//! [`Transactions`] is fed parsed messages with the peer they came from, the transaction user's
//! responses and requests, and the time; it returns [`TxOutput`]s (bytes to transmit, requests
//! and responses for the transaction user) and the next deadline. It never touches a socket or
//! a clock: `sip::driver` owns both.
//!
//! What this layer does for the user agent above it:
//! - absorbs retransmitted requests and answers them with the last response sent;
//! - retransmits over UDP only (timers A, E and G), never over TCP or TLS;
//! - sends 100 Trying for every new INVITE at once (CONTRACT §5);
//! - answers CANCEL itself (200 when it matches an INVITE transaction, 481 otherwise) and tells
//!   the user of the INVITE transaction it cancels;
//! - builds the ACK of a non-2xx final response to an INVITE it sent (§17.1.1.3); the ACK of a
//!   2xx belongs to the dialog layer, so an ACK that matches no transaction goes up as
//!   [`TxOutput::Ack`];
//! - bounds its memory: past `max_pending` requests awaiting the user's final answer or the ACK
//!   of a refusal, or `max_transactions` in all, new requests get a stateless 503.
//!
//! Drive contract: after each call, drain [`Transactions::poll_output`] until `None`, then arm
//! one timer at [`Transactions::poll_timeout`] and call [`Transactions::handle_timeout`] when it
//! passes. Spurious or late timeouts are no-ops.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use self::table::Table;
use super::message::{self, Message, Method, Request, Response};

mod client;
mod key;
mod server;
mod table;
#[cfg(test)]
mod tests;

pub use key::Key;

/// Names a server transaction; given to the transaction user with its request.
pub type TxId = u64;

/// Names a client transaction; returned by [`Transactions::send_request`].
pub type ClientTx = u64;

/// Names a stream connection (TCP or TLS) of the transport layer.
pub type ConnId = u64;

/// How a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// Reliable transports get no retransmissions and no wait states (§17.1.1.2, §17.2.1).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// The Via transport token.
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
}

/// The other end of a message: where it came from, or where to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The address (the packet's source for what we received).
    pub addr: SocketAddr,
    /// Over what.
    pub transport: Transport,
    /// The stream connection it came on; `None` for UDP, or to let the transport pick or open
    /// one to `addr`.
    pub conn: Option<ConnId>,
}

/// RFC 3261's timer values (§17.1.1.1, Table 4).
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// RTT estimate.
    pub t1: Duration,
    /// Longest retransmit interval of non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Longest time a message stays in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

/// Bounds on what the layer holds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most server transactions awaiting the user's final response, or the ACK of a refused
    /// INVITE (`sip.max_pending`).
    pub max_pending: usize,
    /// Most transactions of either kind, in any state.
    pub max_transactions: usize,
    /// How long a server transaction may wait for the user's final response before it is
    /// dropped (a safety net: the user agent always answers).
    pub unanswered: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_pending: 4096, max_transactions: 200_000, unanswered: Duration::from_secs(300) }
    }
}

/// What the layer wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxOutput {
    /// Send these bytes.
    Transmit {
        /// Where.
        to: Peer,
        /// A whole message.
        bytes: Vec<u8>,
    },
    /// A new request for the transaction user; answer it with [`Transactions::respond`].
    Request {
        /// Its server transaction.
        tx: TxId,
        /// The request.
        request: Request,
        /// Where it came from; responses go back there.
        from: Peer,
    },
    /// An ACK that matches no transaction: the ACK of a 2xx, for the dialog layer.
    Ack {
        /// The ACK.
        request: Request,
        /// Where it came from.
        from: Peer,
    },
    /// A CANCEL matched INVITE transaction `tx` before its final response; the CANCEL got its
    /// 200. The user answers the INVITE (487).
    Cancelled {
        /// The INVITE's transaction.
        tx: TxId,
    },
    /// A response to a request we sent (provisional or final, and 2xx retransmissions of an
    /// INVITE, which the dialog layer ACKs).
    Response {
        /// The client transaction.
        client: ClientTx,
        /// The response.
        response: Response,
    },
    /// A request we sent got no final response in time (timer B or F), or could not be sent.
    Timeout {
        /// The client transaction.
        client: ClientTx,
    },
    /// A request was refused without a transaction (overload); for counting.
    Shed {
        /// The refused request's method.
        method: Method,
    },
}

/// Why [`Transactions::send_request`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The request has no Via with a branch (the caller adds ours).
    #[error("the request has no Via branch")]
    NoBranch,
    /// ACK is not sent in a transaction (§17.1.1.3: the dialog layer sends it directly).
    #[error("ACK is sent outside transactions")]
    Ack,
    /// A transaction with this branch exists already.
    #[error("a transaction with this branch exists")]
    Exists,
    /// Too many transactions.
    #[error("too many transactions")]
    Full,
}

/// What a timer entry refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(TxId),
    Client(ClientTx),
}

/// Every live transaction, server and client.
pub struct Transactions {
    timers_cfg: Timers,
    limits: Limits,
    servers: Table<TxId, server::ServerTx>,
    server_keys: Table<Key, TxId>,
    clients: Table<ClientTx, client::ClientTx>,
    client_keys: Table<Key, ClientTx>,
    /// Server transactions counted against `max_pending`.
    pending: usize,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    /// When to look for server transactions the user never answered (while any may be).
    next_sweep: Option<Instant>,
    outputs: VecDeque<TxOutput>,
    next_id: u64,
    /// A tag for stateless answers, varied per answer.
    tag_seed: u64,
}

impl Transactions {
    /// An empty layer.
    pub fn new(timers: Timers, limits: Limits) -> Self {
        Self {
            timers_cfg: timers,
            limits,
            servers: Table::default(),
            server_keys: Table::default(),
            clients: Table::default(),
            client_keys: Table::default(),
            pending: 0,
            timers: BinaryHeap::new(),
            next_sweep: None,
            outputs: VecDeque::new(),
            next_id: 1,
            tag_seed: 0,
        }
    }

    /// Live transactions (server, client).
    pub fn len(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Server transactions waiting for the user's final response or a refusal's ACK.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// A message from the transport.
    pub fn handle_message(&mut self, now: Instant, message: Message, from: Peer) {
        match message {
            Message::Request(request) => self.handle_request(now, request, from),
            Message::Response(response) => self.handle_response(now, response, from),
        }
    }

    /// A message that waited for the endpoint past the point where a call it starts is worth
    /// answering (the transport's [`super::transport::LATE`]): a new INVITE is refused
    /// statelessly with 503 and Retry-After, as when the layer is full, since its caller's
    /// timer A is already running and a late 200 would only lengthen the queue; a retransmitted
    /// INVITE of a live transaction, and anything else, is handled as usual. Returns whether it
    /// was refused.
    pub fn handle_late_message(&mut self, now: Instant, message: Message, from: Peer) -> bool {
        if let Message::Request(request) = &message
            && request.method == Method::Invite
            && request.to_tag().is_none()
            && Key::server(request).is_some_and(|key| !self.server_keys.contains_key(&key))
        {
            self.stateless(request, from, &super::refusal::Refusal::Overloaded);
            self.outputs.push_back(TxOutput::Shed { method: Method::Invite });
            return true;
        }
        self.handle_message(now, message, from);
        false
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<TxOutput> {
        self.outputs.pop_front()
    }

    /// When [`Transactions::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        [timer, self.next_sweep].into_iter().flatten().min()
    }

    /// Timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, which))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match which {
                TimerRef::Server(id) => self.server_timeout(now, id),
                TimerRef::Client(id) => self.client_timeout(now, id),
            }
        }
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        self.shrink();
    }

    fn schedule(&mut self, at: Instant, which: TimerRef) {
        self.timers.push(Reverse((at, which)));
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn transmit(&mut self, to: Peer, bytes: Vec<u8>) {
        self.outputs.push_back(TxOutput::Transmit { to, bytes });
    }

    /// A response sent without keeping state (§8.2.7): overload refusals and answers to
    /// requests that cannot have a transaction.
    fn stateless(&mut self, request: &Request, from: Peer, refusal: &super::refusal::Refusal) {
        self.tag_seed = self.tag_seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let tag = format!("{}{:x}", super::refusal::STATELESS_TAG, self.tag_seed ^ self.next_id);
        let status = refusal.status();
        let mut r = Response::to(request, status, message::reason_phrase(status), Some(&tag));
        refusal.write(&mut r);
        self.transmit(from, r.to_bytes());
    }

    /// Gives memory back after a flood: maps keep their peak capacity otherwise.
    fn shrink(&mut self) {
        self.servers.shrink();
        self.server_keys.shrink();
        self.clients.shrink();
        self.client_keys.shrink();
        if self.timers.capacity() > 4096 && self.timers.len() < self.timers.capacity() / 4 {
            self.timers.shrink_to(self.timers.len() * 2);
        }
        if self.outputs.capacity() > 1024 && self.outputs.is_empty() {
            self.outputs.shrink_to(64);
        }
    }
}
