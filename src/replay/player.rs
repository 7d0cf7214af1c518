//! The thin tokio layer of the replay: per call one SIP socket (UDP, or a TCP connection) and
//! one RTP socket; a loop that feeds the call's sans-IO core ([`super::call::CallCore`]) with
//! messages and timeouts and carries out what it asks; a media task that sends the captured
//! RTP on the capture's clock and collects what the gateway sends. Every wait has a deadline.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::audio::{ReceiveFormat, ReceivedAudio, decode};
use super::call::{CallConfig, CallCore, MediaUpdate, Output};
use super::capture::{Transport, message_len};
use super::expect::RequestOutcome;
use super::rewrite::CallRewriter;
use super::script::{Call, MediaPacket};
use crate::media::srtp::SrtpSession;
use crate::sip::message;
use crate::sip::sdp::{SrtpKeys, SrtpSuite};

/// How the player runs.
#[derive(Clone, Debug)]
pub struct PlayOptions {
    /// The gateway's SIP address.
    pub target: SocketAddr,
    /// 1.0 = the capture's timing; 2.0 = twice as fast.
    pub speed: f64,
    /// How long a request may wait for its final answer.
    pub timeout: Duration,
    /// `X-Interconnect-Mode` for every INVITE, when set.
    pub mode: Option<String>,
}

/// What happened to one call.
#[derive(Debug)]
pub struct CallResult {
    /// Each client request, in order.
    pub requests: Vec<RequestOutcome>,
    /// What the gateway sent us, decoded (when media was negotiated).
    pub audio: Option<ReceivedAudio>,
    /// Things worth telling (the gateway hung up, we sent a BYE to end the call).
    pub notes: Vec<String>,
}

/// Plays one call from `start` (the capture's first SIP message).
pub async fn play_call(
    call: Arc<Call>,
    tokens: HashMap<String, String>,
    opts: PlayOptions,
    start: Instant,
) -> CallResult {
    let unreachable =
        |why: String| CallResult { requests: call.unanswered(Some(&why)), audio: None, notes: Vec::new() };
    let mut link = match Link::open(call.transport, opts.target, opts.timeout).await {
        Ok(l) => l,
        Err(e) => return unreachable(format!("cannot reach {} over {}: {e}", opts.target, call.transport.via_name())),
    };
    let rtp = match UdpSocket::bind(SocketAddr::new(link.local.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => return unreachable(format!("cannot bind an RTP socket: {e}")),
    };
    let local_rtp = rtp.local_addr().unwrap_or(SocketAddr::new(link.local.ip(), 0));
    let mut rw = CallRewriter::new(link.local, call.transport, opts.target, local_rtp);
    rw.tokens = tokens;
    let (media_tx, media_rx) = mpsc::channel(16);
    let (media_done_tx, mut media_done) = oneshot::channel();
    let media = tokio::spawn(run_media(
        rtp,
        call.media.clone(),
        call.captured_key.clone(),
        opts.speed,
        start,
        media_rx,
        media_done_tx,
    ));
    let config = CallConfig { speed: opts.speed, timeout: opts.timeout, mode: opts.mode.clone() };
    let mut core = CallCore::new((*call).clone(), rw, config, start.into_std());
    let mut media_reported = false;
    core.handle_timeout(Instant::now().into_std());
    loop {
        while let Some(output) = core.poll_output() {
            match output {
                Output::Send { bytes, to } => {
                    // A failed send is a lost datagram: the transaction's timers deal with it.
                    let _ = link.send(&bytes, to.unwrap_or(opts.target)).await;
                }
                Output::Media(update) => {
                    let _ = media_tx.send(MediaCmd::Negotiated(update)).await;
                }
                Output::StopMedia => {
                    let _ = media_tx.send(MediaCmd::Stop).await;
                }
            }
        }
        let Some(at) = core.poll_timeout() else { break };
        tokio::select! {
            incoming = link.rx.recv() => match incoming {
                Some((bytes, from)) => core.handle_message(Instant::now().into_std(), &bytes, from),
                None => core.handle_closed(Instant::now().into_std()),
            },
            // Sent everything, or stopped (then the sender is gone): either way, done.
            _ = &mut media_done, if !media_reported => {
                media_reported = true;
                core.handle_media_done(Instant::now().into_std());
            }
            _ = sleep_until(Instant::from_std(at)) => core.handle_timeout(Instant::now().into_std()),
        }
    }
    let _ = media_tx.send(MediaCmd::Stop).await;
    let audio = match tokio::time::timeout(Duration::from_secs(5), media).await {
        Ok(Ok(r)) => r,
        _ => None,
    };
    let (requests, notes) = core.into_outcome();
    CallResult { requests, audio, notes }
}

/// The SIP transport of one call, with a task reading into `rx`.
struct Link {
    local: SocketAddr,
    rx: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    udp: Option<Arc<UdpSocket>>,
    tcp: Option<tokio::net::tcp::OwnedWriteHalf>,
}

impl Link {
    async fn open(transport: Transport, target: SocketAddr, limit: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(64);
        match transport {
            Transport::Udp => {
                let any = if target.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                // The address the kernel would send from toward the target: ours in Via/Contact.
                let probe = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
                probe.connect(target).await?;
                let ip = probe.local_addr()?.ip();
                let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
                let local = socket.local_addr()?;
                let reader = socket.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    while let Ok((n, from)) = reader.recv_from(&mut buf).await {
                        if tx.send((buf[..n].to_vec(), from)).await.is_err() {
                            break;
                        }
                    }
                });
                Ok(Self { local, rx, udp: Some(socket), tcp: None })
            }
            Transport::Tcp => {
                let stream = tokio::time::timeout(limit, TcpStream::connect(target))
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
                let local = stream.local_addr()?;
                let (mut read, write) = stream.into_split();
                tokio::spawn(async move {
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = vec![0u8; 16 * 1024];
                    while let Ok(n) = read.read(&mut chunk).await {
                        if n == 0 || buf.len() > message::MAX_MESSAGE_LEN * 4 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        loop {
                            let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                            buf.drain(..skip);
                            let Some(len) = message_len(&buf) else { break };
                            let msg: Vec<u8> = buf.drain(..len).collect();
                            if tx.send((msg, target)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
                Ok(Self { local, rx, udp: None, tcp: Some(write) })
            }
        }
    }

    async fn send(&mut self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        if let Some(s) = &self.udp {
            s.send_to(bytes, to).await.map(|_| ())
        } else if let Some(w) = &mut self.tcp {
            w.write_all(bytes).await
        } else {
            Ok(())
        }
    }
}

/// Orders for the media task.
enum MediaCmd {
    /// Where to send and with which keys; what the gateway sends.
    Negotiated(MediaUpdate),
    /// Stop sending and hand over what was received.
    Stop,
}

/// Sends the captured RTP (decrypted with the captured key, protected with ours) on the
/// capture's clock from the moment the gateway's address is known, and collects what the
/// gateway sends. Returns the decoded audio when a format was negotiated.
async fn run_media(
    socket: UdpSocket,
    packets: Vec<MediaPacket>,
    captured_key: Option<(SrtpSuite, Vec<u8>)>,
    speed: f64,
    start: Instant,
    mut cmds: mpsc::Receiver<MediaCmd>,
    done: oneshot::Sender<()>,
) -> Option<ReceivedAudio> {
    let mut done = Some(done);
    let mut remote: Option<SocketAddr> = None;
    let mut format: Option<ReceiveFormat> = None;
    let mut tx: Option<SrtpSession> = None;
    let mut rx: Option<SrtpSession> = None;
    let mut their_key_now: Option<(SrtpSuite, Vec<u8>)> = None;
    let mut lag = Duration::ZERO;
    let mut next = 0usize;
    let mut received: Vec<Vec<u8>> = Vec::new();
    let mut bad_rx = 0usize;
    let mut buf = vec![0u8; 2048];
    let mut plain = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    loop {
        if next >= packets.len()
            && let Some(d) = done.take()
        {
            let _ = d.send(());
        }
        let due = packets.get(next).filter(|_| remote.is_some()).map(|p| start + p.at.div_f64(speed) + lag);
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                Some(MediaCmd::Negotiated(MediaUpdate { remote: r, their_key, our_key, format: f, lag: l })) => {
                    if remote.is_none() {
                        // The first packets are due now at the latest: a slow answer shifts them.
                        let first_due = packets.get(next).map(|p| start + p.at.div_f64(speed) + l);
                        lag = l + first_due.map_or(Duration::ZERO, |d| Instant::now().saturating_duration_since(d));
                    }
                    if r.is_some() {
                        remote = r;
                    }
                    if f.is_some() {
                        format = f;
                    }
                    if let (Some((suite, ours)), Some((_, captured))) = (&our_key, &captured_key)
                        && tx.is_none()
                    {
                        tx = SrtpSession::new(&SrtpKeys { suite: *suite, tag: 1, remote_key: captured.clone(), local_key: ours.clone() }).ok();
                    }
                    if their_key != their_key_now
                        && let Some((suite, theirs)) = &their_key
                    {
                        let local_key = our_key.as_ref().map_or_else(|| theirs.clone(), |(_, k)| k.clone());
                        rx = SrtpSession::new(&SrtpKeys { suite: *suite, tag: 1, remote_key: theirs.clone(), local_key }).ok();
                        their_key_now = their_key.clone();
                    }
                }
                // The call is over: what is still in flight is not waited for.
                Some(MediaCmd::Stop) | None => break,
            },
            got = socket.recv_from(&mut buf) => {
                let Ok((n, _)) = got else { continue };
                if n < 12 || (200..=206).contains(&buf[1]) {
                    continue;
                }
                match rx.as_mut() {
                    Some(s) => match s.unprotect_rtp(&buf[..n], &mut plain) {
                        Ok(len) => received.push(plain[..len].to_vec()),
                        Err(_) => bad_rx += 1,
                    },
                    None => received.push(buf[..n].to_vec()),
                }
            },
            _ = sleep_until(due.unwrap_or(Instant::now() + Duration::from_secs(3600))), if due.is_some() => {
                let data = &packets[next].data;
                next += 1;
                let Some(to) = remote else { continue };
                let len = match (&captured_key, tx.as_mut()) {
                    // Captured SRTP: opened with the captured key, closed with ours (one session
                    // holds both: remote = captured, local = ours).
                    (Some(_), Some(session)) => match session.unprotect_rtp(data, &mut plain) {
                        Ok(n) => {
                            out[..n].copy_from_slice(&plain[..n]);
                            match session.protect_rtp(&mut out, n) {
                                Ok(m) => m,
                                Err(_) => continue,
                            }
                        }
                        Err(_) => continue,
                    },
                    _ => {
                        let n = data.len().min(out.len());
                        out[..n].copy_from_slice(&data[..n]);
                        n
                    }
                };
                let _ = socket.send_to(&out[..len], to).await;
            }
        }
    }
    let format = format?;
    let mut audio = decode(&format, &received);
    audio.bad += bad_rx;
    Some(audio)
}
