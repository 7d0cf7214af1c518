//! Cutting SIP messages out of a TCP or TLS byte stream (RFC 3261 §18.3), sans-IO.
//!
//! A message on a stream ends after its headers' blank line plus Content-Length bytes of body
//! (a missing Content-Length counts as 0). Between messages a peer may send RFC 5626 keep-alives:
//! a double CRLF ("ping") is answered with one CRLF ("pong"); a single CRLF is skipped. A message
//! that would exceed the size limit is refused from its head alone: the transport answers 513
//! and closes, since the rest of the stream can no longer be trusted to be in step.

/// What the framer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A keep-alive ping: answer with [`PONG`].
    Ping,
    /// One whole message, ready for the parser.
    Message(Vec<u8>),
}

/// The answer to a keep-alive ping (RFC 5626 §4.4.1).
pub const PONG: &[u8] = b"\r\n";

/// Why the stream cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message (head, or head plus the body it announces) is over the limit; `head` holds
    /// what was read of it, enough to address an answer.
    #[error("message over {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// The start of the message.
        head: Vec<u8>,
    },
    /// Content-Length is not a number, or two disagree.
    #[error("malformed Content-Length")]
    BadLength {
        /// The message's head.
        head: Vec<u8>,
    },
}

impl FrameError {
    /// The bytes that name the refused request.
    pub fn head(&self) -> &[u8] {
        match self {
            Self::TooLarge { head, .. } | Self::BadLength { head } => head,
        }
    }
}

/// One connection's receive side.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    limit: usize,
    /// How far the search for the end of the head has looked.
    scanned: usize,
}

impl StreamFramer {
    /// A framer for messages of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { buf: Vec::new(), limit, scanned: 0 }
    }

    /// Bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether part of a message is waiting for the rest (for the incomplete-message timeout).
    pub fn in_message(&self) -> bool {
        self.buf.iter().any(|b| *b != b'\r' && *b != b'\n')
    }

    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, `None` until more bytes come.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.buf.as_slice() {
                [] => return Ok(None),
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.consume(4);
                    return Ok(Some(Frame::Ping));
                }
                // Maybe the start of a ping: wait.
                [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                [b'\r', b'\n', ..] => self.consume(2),
                [b'\n', ..] => self.consume(1),
                _ => break,
            }
        }
        let Some(head_len) = self.head_len() else {
            if self.buf.len() > self.limit {
                return Err(FrameError::TooLarge { limit: self.limit, head: self.take_head(self.limit) });
            }
            return Ok(None);
        };
        let head = &self.buf[..head_len];
        let Some(body_len) = content_length(head) else {
            return Err(FrameError::BadLength { head: self.take_head(head_len) });
        };
        let total = head_len.saturating_add(body_len);
        if total > self.limit {
            return Err(FrameError::TooLarge { limit: self.limit, head: self.take_head(head_len) });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let message = self.buf[..total].to_vec();
        self.consume(total);
        Ok(Some(Frame::Message(message)))
    }

    /// The length of the head including its blank line, once it is all here.
    fn head_len(&mut self) -> Option<usize> {
        let from = self.scanned.saturating_sub(3);
        let found = self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i + 4);
        if found.is_none() {
            self.scanned = self.buf.len();
        }
        found
    }

    fn take_head(&mut self, len: usize) -> Vec<u8> {
        let head = self.buf[..len.min(self.buf.len())].to_vec();
        self.buf = Vec::new();
        self.scanned = 0;
        head
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.scanned = 0;
        if self.buf.is_empty() && self.buf.capacity() > 16 * 1024 {
            // A large message passed: give its memory back.
            self.buf = Vec::new();
        }
    }
}

/// The Content-Length a head announces (0 when absent); `None` when malformed or conflicting.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    let mut found: Option<usize> = None;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            let n: usize = value.trim().parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    Some(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:gw@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
        From: <sip:a@h>;tag=1\r\nTo: <sip:gw@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nl: 4\r\n\r\nbody";

    fn frames(framer: &mut StreamFramer) -> Vec<Frame> {
        std::iter::from_fn(|| framer.next_frame().unwrap()).collect()
    }

    #[test]
    fn messages_and_keepalives_come_out_the_same_however_the_stream_is_cut() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(OPTIONS);
        let want = vec![Frame::Ping, Frame::Message(OPTIONS.to_vec()), Frame::Message(OPTIONS.to_vec())];
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut f = StreamFramer::new(65_535);
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                f.push(piece);
                got.extend(frames(&mut f));
            }
            assert_eq!(got, want, "cut every {chunk} bytes");
            assert!(!f.in_message());
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_head() {
        let sdp = vec![b'a'; 70_000];
        let mut msg = String::from_utf8_lossy(OPTIONS).replace("l: 4", &format!("Content-Length: {}", sdp.len()));
        msg.truncate(msg.len() - 4);
        let mut f = StreamFramer::new(65_535);
        f.push(msg.as_bytes());
        let err = f.next_frame().unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
        assert!(err.head().starts_with(b"OPTIONS"));
        // A head that never ends is refused too, once past the limit.
        let mut f = StreamFramer::new(1024);
        f.push(&[b'x'; 1025]);
        assert!(matches!(f.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_partial_message_is_held_and_a_bad_length_refused() {
        let mut f = StreamFramer::new(65_535);
        f.push(&OPTIONS[..OPTIONS.len() - 1]);
        assert_eq!(f.next_frame(), Ok(None));
        assert!(f.in_message());
        f.push(b"y");
        assert!(matches!(f.next_frame(), Ok(Some(Frame::Message(_)))));
        let bad = String::from_utf8_lossy(OPTIONS).replace("l: 4", "l: 4\r\nContent-Length: 5");
        let mut f = StreamFramer::new(65_535);
        f.push(bad.as_bytes());
        assert!(matches!(f.next_frame().unwrap_err(), FrameError::BadLength { .. }));
    }
}
