//! Writing our SDP (RFC 4566 §5 order: v, o, s, c, t, then the m-sections).

use std::fmt::Write as _;
use std::net::IpAddr;

use super::LocalMedia;

/// One m-section of what we send.
pub(crate) enum Section<'a> {
    /// Our audio stream: the `m=` proto and formats, then attribute lines without `a=`.
    Active { proto: &'static str, formats: Vec<u8>, attributes: Vec<String> },
    /// A stream we refuse: the offer's media, proto and formats with port 0 (RFC 3264 §6).
    Rejected { media: &'a str, proto: &'a str, formats: &'a str },
}

/// The whole SDP, lines ended by CRLF (RFC 4566 §5).
pub(crate) fn write_sdp(local: &LocalMedia, sections: &[Section<'_>]) -> String {
    let addr = match local.addr {
        IpAddr::V4(a) => format!("IP4 {a}"),
        IpAddr::V6(a) => format!("IP6 {a}"),
    };
    let mut out = String::with_capacity(512);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "v=0\r\no=interwork {} {} IN {addr}\r\ns=interwork\r\nc=IN {addr}\r\nt=0 0\r\n",
        local.session_id, local.session_version
    );
    for section in sections {
        match section {
            Section::Active { proto, formats, attributes } => {
                let _ = write!(out, "m=audio {} {proto}", local.rtp_port);
                for pt in formats {
                    let _ = write!(out, " {pt}");
                }
                out.push_str("\r\n");
                for a in attributes {
                    let _ = write!(out, "a={a}\r\n");
                }
            }
            Section::Rejected { media, proto, formats } => {
                let _ = write!(out, "m={media} 0 {proto} {formats}\r\n");
            }
        }
    }
    out
}
