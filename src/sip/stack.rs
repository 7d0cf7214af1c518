//! The one module that names rsipstack's types: transports and RFC 3261 §17 transactions (with
//! RFC 6026) come from rsipstack `=0.7.14`; everything above them speaks [`super::message`].
//!
//! Two parser gaps of the stack are covered here, before its parser sees a datagram
//! ([`GuardedUdpSocket`]): a Via header carrying several comma-joined values is split into one
//! header per hop, and a UDP body without Content-Length runs to the end of the datagram (RFC
//! 3261 §18.3). The same guard answers 400 to what neither parser accepts, where the stack would
//! drop it in silence.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::transaction::{Transaction, TransactionEvent, TransactionEventSender};
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use tokio_util::sync::CancellationToken;

use super::message::{self, Message, Request, Response};
use super::ua::Transport;
use crate::app::metrics::{MalformedLabels, Metrics};

/// A UDP socket that screens datagrams before the stack parses them.
pub struct GuardedUdpSocket {
    socket: tokio::net::UdpSocket,
    metrics: Arc<Metrics>,
    /// A whole datagram: the stack reads into 8 KiB, which would cut larger ones silently.
    scratch: tokio::sync::Mutex<Vec<u8>>,
}

/// What the guard makes of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Screened {
    /// Give these bytes to the stack (normalized when needed).
    Pass(Vec<u8>),
    /// Send this answer back to the source and drop the datagram.
    Answer(Vec<u8>),
    /// Drop it.
    Drop,
}

impl GuardedUdpSocket {
    /// Wraps a bound socket.
    pub fn new(socket: tokio::net::UdpSocket, metrics: Arc<Metrics>) -> Self {
        Self { socket, metrics, scratch: tokio::sync::Mutex::new(vec![0; message::MAX_MESSAGE_LEN]) }
    }
}

/// Screens one datagram: parse with our parser, re-serialize requests in the form the stack
/// reads well, and check that the stack can key a transaction from it and that it fits the
/// stack's receive buffer of `limit` bytes (513 otherwise).
pub fn screen(bytes: &[u8], limit: usize) -> Screened {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Keepalives (RFC 5626 CRLF): the stack answers them.
        return Screened::Pass(bytes.to_vec());
    }
    match message::parse(bytes) {
        Err(e) => message::bad_request_for(bytes, &e).map_or(Screened::Drop, Screened::Answer),
        Ok(Message::Response(_)) if bytes.len() <= limit => Screened::Pass(bytes.to_vec()),
        Ok(Message::Response(_)) => Screened::Drop,
        Ok(Message::Request(req)) => {
            let normalized = req.to_bytes();
            if normalized.len() > limit {
                let mut r = Response::to(&req, 513, "Message Too Large", None);
                r.headers.push("Warning", format!("399 interwork \"requests over UDP are limited to {limit} bytes\""));
                return Screened::Answer(r.to_bytes());
            }
            let keyed = rsipstack::sip::SipMessage::try_from(normalized.as_slice())
                .ok()
                .and_then(|m| match m {
                    rsipstack::sip::SipMessage::Request(r) => {
                        TransactionKey::from_request(&r, TransactionRole::Server).ok()
                    }
                    rsipstack::sip::SipMessage::Response(_) => None,
                })
                .is_some();
            if keyed {
                Screened::Pass(normalized)
            } else if let message::Method::Other(_) = req.method {
                // The stack has no transaction for methods it does not know: answer here.
                let mut r = Response::to(&req, 405, "Method Not Allowed", None);
                r.headers.push("Allow", super::ua::ALLOW);
                Screened::Answer(r.to_bytes())
            } else {
                let mut r = Response::to(&req, 400, "Bad Request", None);
                r.headers.push(
                    "Warning",
                    "399 interwork \"the request cannot key a transaction (Via branch, From tag, CSeq)\"",
                );
                Screened::Answer(r.to_bytes())
            }
        }
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        let mut scratch = self.scratch.lock().await;
        loop {
            let (len, from) = self.socket.recv_from(&mut scratch).await?;
            match screen(&scratch[..len], buf.len()) {
                Screened::Pass(bytes) if bytes.len() <= buf.len() => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    return Ok((bytes.len(), from));
                }
                Screened::Pass(_) | Screened::Drop => {
                    self.metrics.sip_malformed.get_or_create(&MalformedLabels { outcome: "dropped" }).inc();
                }
                Screened::Answer(answer) => {
                    self.metrics.sip_malformed.get_or_create(&MalformedLabels { outcome: "answered" }).inc();
                    let _ = self.socket.send_to(&answer, from).await;
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// The running stack: an endpoint with UDP and TCP on one address.
pub struct Stack {
    /// The endpoint.
    pub endpoint: Arc<rsipstack::transaction::endpoint::EndpointInner>,
    /// Our UDP listener as the stack's connection, for requests we send.
    pub udp: SipConnection,
    /// The address SIP listens on.
    pub local: SocketAddr,
    /// New server transactions.
    pub incoming: rsipstack::transaction::TransactionReceiver,
}

impl Stack {
    /// Binds UDP and TCP on `listen` (and TLS on `tls` when given: address, certificate chain
    /// and key, PEM) and starts the endpoint.
    pub async fn start(
        listen: SocketAddr,
        tls: Option<(SocketAddr, Vec<u8>, Vec<u8>)>,
        cancel: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot listen for SIP on UDP {listen}"))?;
        let local = socket.local_addr()?;
        let guarded: Arc<dyn rsipstack::platform::net::UdpSocket> = Arc::new(GuardedUdpSocket::new(socket, metrics));
        let udp = rsipstack::transport::udp::UdpConnection::from_socket(guarded, None, Some(cancel.child_token()))
            .await
            .map_err(|e| anyhow::anyhow!("SIP UDP transport: {e}"))?;
        let tcp = rsipstack::transport::TcpListenerConnection::new(local, None)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for SIP on TCP {local}: {e}"))?;
        let transport = TransportLayer::new(cancel.clone());
        let udp: SipConnection = udp.into();
        transport.add_transport(udp.clone());
        transport.add_transport(tcp.into());
        if let Some((addr, cert, key)) = tls {
            let config =
                rsipstack::transport::tls::TlsConfig { cert: Some(cert), key: Some(key), ..Default::default() };
            let listener = rsipstack::transport::tls::TlsListenerConnection::new(addr, None, config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for SIP on TLS {addr}: {e}"))?;
            transport.add_transport(listener.into());
        }
        let endpoint = rsipstack::EndpointBuilder::new()
            .with_transport_layer(transport)
            .with_cancel_token(cancel)
            .with_user_agent(concat!("interwork/", env!("CARGO_PKG_VERSION")))
            .build();
        let incoming = endpoint.incoming_transactions().map_err(|e| anyhow::anyhow!("SIP endpoint: {e}"))?;
        let inner = endpoint.inner.clone();
        let serving = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = serving.serve().await {
                tracing::error!(error = %e, "SIP endpoint stopped");
            }
        });
        Ok(Self { endpoint: inner, udp, local, incoming })
    }
}

/// A server transaction seen through our types.
pub struct ServerTransaction {
    /// The stack's transaction.
    pub inner: Transaction,
}

impl ServerTransaction {
    /// Our view of the request, where it came from and over what.
    pub fn request(&self) -> Option<(Request, SocketAddr, Transport)> {
        let bytes = rsipstack::sip::SipMessage::Request(self.inner.original.clone()).to_bytes();
        let Ok(Message::Request(req)) = message::parse(&bytes) else { return None };
        let conn = self.inner.connection.as_ref()?;
        let transport = match conn {
            SipConnection::Udp(_) => Transport::Udp,
            c if c.get_addr().r#type == Some(rsipstack::sip::transport::Transport::Tls) => Transport::Tls,
            _ => Transport::Tcp,
        };
        let source = conn.get_remote_addr().and_then(|a| a.get_socketaddr().ok()).or_else(|| via_source(&req))?;
        Some((req, source, transport))
    }

    /// A handle that sends responses into this transaction from elsewhere.
    pub fn responder(&self) -> Responder {
        Responder(self.inner.tu_sender.clone())
    }

    /// The connection it came on (for requests back over the same TCP connection).
    pub fn connection(&self) -> Option<SipConnection> {
        self.inner.connection.clone()
    }

    /// Sends `response` statelessly (RFC 3261 §8.2.7: no transaction state is kept for it, so
    /// a retransmitted request gets it again). For overload refusals: an INVITE transaction
    /// completed with a final answer would otherwise wait for its ACK, and rsipstack keeps the
    /// ACK route of a dropped completed INVITE transaction for good.
    pub async fn respond_stateless(&self, response: &Response) {
        let (Some(r), Some(connection)) = (to_stack_response(response), self.inner.connection.as_ref()) else {
            return;
        };
        let _ = connection.send(r.into(), self.inner.destination.as_ref()).await;
    }

    /// Sends 100 Trying.
    pub async fn trying(&mut self) {
        let _ = self.inner.send_trying().await;
    }

    /// The next CANCEL or ACK that reaches this transaction; `None` when it is over.
    pub async fn next(&mut self) -> Option<Request> {
        loop {
            let msg = self.inner.receive().await?;
            if let rsipstack::sip::SipMessage::Request(r) = msg {
                let bytes = rsipstack::sip::SipMessage::Request(r).to_bytes();
                if let Ok(Message::Request(req)) = message::parse(&bytes) {
                    return Some(req);
                }
            }
        }
    }
}

/// Sends responses into a server transaction.
#[derive(Clone)]
pub struct Responder(TransactionEventSender);

impl Responder {
    /// Queues `response`; false when the transaction is gone.
    pub fn respond(&self, response: &Response) -> bool {
        match to_stack_response(response) {
            Some(r) => self.0.send(TransactionEvent::Respond(r)).is_ok(),
            None => false,
        }
    }
}

fn to_stack_response(response: &Response) -> Option<rsipstack::sip::Response> {
    match rsipstack::sip::SipMessage::try_from(response.to_bytes().as_slice()) {
        Ok(rsipstack::sip::SipMessage::Response(r)) => Some(r),
        _ => {
            tracing::error!(status = response.status, "a response we built does not parse");
            None
        }
    }
}

/// Sends `request` (without Via) as a new client transaction and waits for its final status;
/// `None` when it timed out or could not be sent.
pub async fn send_request(
    endpoint: &Arc<rsipstack::transaction::endpoint::EndpointInner>,
    connection: SipConnection,
    local: SocketAddr,
    transport: Transport,
    mut request: Request,
    destination: SocketAddr,
) -> Option<u16> {
    let proto = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    };
    let branch = format!("{}{}", super::ua::OUR_BRANCH_PREFIX, crate::ids::random_id(16));
    let mut headers = message::Headers::default();
    headers.push("Via", format!("SIP/2.0/{proto} {local};branch={branch};rport"));
    for (n, v) in request.headers.iter() {
        headers.push(n, v);
    }
    request.headers = headers;
    let Ok(rsipstack::sip::SipMessage::Request(stack_req)) =
        rsipstack::sip::SipMessage::try_from(request.to_bytes().as_slice())
    else {
        tracing::error!("a request we built does not parse");
        return None;
    };
    let key = TransactionKey::from_request(&stack_req, TransactionRole::Client).ok()?;
    let mut tx = Transaction::new_client(key, stack_req, endpoint.clone(), Some(connection));
    tx.destination = Some(SipAddr::from(destination));
    if tx.send().await.is_err() {
        return None;
    }
    while let Some(msg) = tx.receive().await {
        if let rsipstack::sip::SipMessage::Response(r) = msg {
            let status = u16::from(r.status_code.clone());
            if status >= 200 {
                return Some(status);
            }
        }
    }
    None
}

/// The source a Via names (`received`/`rport` when the stack added them).
fn via_source(req: &Request) -> Option<SocketAddr> {
    let via = req.headers.get("Via")?;
    let ip = message::header_param(via, "received")?.parse().ok()?;
    let port = message::header_param(via, "rport")?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n\
        f: <sip:a@10.0.0.1>;tag=1\r\nt: <sip:gw@127.0.0.1>\r\ni: x\r\nCSeq: 1 OPTIONS\r\n\r\nbody";

    #[test]
    fn joined_vias_and_a_missing_content_length_are_fixed_for_the_stack() {
        let Screened::Pass(bytes) = screen(OPTIONS.as_bytes(), 8192) else { panic!("should pass") };
        let Ok(rsipstack::sip::SipMessage::Request(r)) = rsipstack::sip::SipMessage::try_from(bytes.as_slice()) else {
            panic!("the stack reads it")
        };
        assert_eq!(r.body(), b"body", "the body runs to the end of the datagram");
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.matches("Via: ").count(), 2, "one Via per hop:\n{text}");
        let key = TransactionKey::from_request(&r, TransactionRole::Server).unwrap();
        assert!(key.to_string().contains("z9hG4bKa"), "keyed by the top hop's branch: {key}");
    }

    #[test]
    fn what_the_stack_cannot_key_is_answered_400() {
        let no_tag = OPTIONS.replace(";tag=1", "");
        match screen(no_tag.as_bytes(), 8192) {
            Screened::Answer(a) => assert!(String::from_utf8(a).unwrap().starts_with("SIP/2.0 400")),
            other => panic!("{other:?}"),
        }
        assert_eq!(screen(b"garbage garbage", 8192), Screened::Drop);
        assert!(matches!(screen(b"\r\n\r\n", 8192), Screened::Pass(_)));
    }
}
