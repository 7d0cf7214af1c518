//! Is there a gateway at the target at all? One SIP OPTIONS over UDP before the replay, so a
//! gateway that is down or a wrong `--target` is told apart (the replay cannot run: exit 2)
//! from a gateway that answers but not as expected (an expectation fails: exit 1).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// Why the target is not a reachable SIP gateway.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    /// The host said nothing listens there (ICMP port unreachable).
    #[error("nothing listens for SIP at {0} (connection refused)")]
    Refused(SocketAddr),
    /// Datagrams went out, nothing came back.
    #[error("no answer to SIP OPTIONS from {0} within {1:.1} s")]
    Silent(SocketAddr, f64),
    /// The probe could not be sent.
    #[error("cannot send SIP to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
}

/// Sends OPTIONS to `target`, retransmitted as RFC 3261 §17.1.2 does (T1 = 500 ms, doubling),
/// and waits up to `wait` for any response; returns its status line.
pub async fn options(target: SocketAddr, wait: Duration) -> Result<String, Unreachable> {
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let io = |e| Unreachable::Io(target, e);
    let socket = UdpSocket::bind(any).await.map_err(io)?;
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED on the next call.
    socket.connect(target).await.map_err(io)?;
    let local = socket.local_addr().map_err(io)?;
    let tag = std::process::id();
    let request = format!(
        "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-replay-probe-{tag};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:replay@{local}>;tag=probe{tag}\r\nTo: <sip:{target}>\r\n\
         Call-ID: replay-probe-{tag}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let deadline = tokio::time::Instant::now() + wait;
    let mut interval = Duration::from_millis(500);
    let mut buf = vec![0u8; 65_535];
    loop {
        match socket.send(request.as_bytes()).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Unreachable::Refused(target)),
            Err(e) => return Err(io(e)),
            Ok(_) => {}
        }
        let next = (tokio::time::Instant::now() + interval).min(deadline);
        loop {
            match tokio::time::timeout_at(next, socket.recv(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(Unreachable::Refused(target));
                }
                Ok(Err(e)) => return Err(io(e)),
                Ok(Ok(n)) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    // Only an answer to this probe counts (the Call-ID is ours).
                    if text.starts_with("SIP/2.0 ") && text.contains(&format!("replay-probe-{tag}@")) {
                        return Ok(text.lines().next().unwrap_or_default().to_string());
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Unreachable::Silent(target, wait.as_secs_f64()));
        }
        interval = (interval * 2).min(Duration::from_secs(4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_silent_one_times_out() {
        // A port bound then closed: nothing listens (the kernel answers port unreachable).
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = options(closed, Duration::from_secs(3)).await.unwrap_err();
        assert!(matches!(err, Unreachable::Refused(_)), "{err}");

        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let err = options(silent.local_addr().unwrap(), Duration::from_millis(700)).await.unwrap_err();
        assert!(matches!(err, Unreachable::Silent(..)), "{err}");
        let mut buf = [0u8; 2048];
        let (n, _) = silent.recv_from(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"OPTIONS sip:"), "the probe is a SIP OPTIONS");
    }

    #[tokio::test]
    async fn any_answer_to_the_probe_counts() {
        let gateway = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = gateway.local_addr().unwrap();
        let answering = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let (n, from) = gateway.recv_from(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            // Stray traffic first, then the answer (405 counts: something speaks SIP there).
            gateway.send_to(b"SIP/2.0 200 OK\r\nCall-ID: someone-else\r\n\r\n", from).await.unwrap();
            let call_id = request.lines().find(|l| l.starts_with("Call-ID:")).unwrap();
            let answer = format!("SIP/2.0 405 Method Not Allowed\r\n{call_id}\r\nContent-Length: 0\r\n\r\n");
            gateway.send_to(answer.as_bytes(), from).await.unwrap();
        });
        let status = options(target, Duration::from_secs(5)).await.unwrap();
        assert_eq!(status, "SIP/2.0 405 Method Not Allowed");
        answering.await.unwrap();
    }
}
