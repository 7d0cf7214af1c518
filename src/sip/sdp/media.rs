//! The typed reading of one offered or answered audio m-line: transport, addresses,
//! direction, packetization, payload formats and crypto lines.

use std::net::{IpAddr, SocketAddr};

use sdp_types::{AddrType, Attribute, Connection, Media, NetType, Session};

use super::crypto::{CryptoAttr, CryptoSkip, parse_crypto};
use super::fmtp::{parse_amr_wb, parse_events, split_fmtp};
use super::rtpmap::{RtpMap, parse_pt, parse_rtpmap, static_rtpmap};
use super::{Codec, Direction, MAX_ATTRIBUTES, MAX_FORMATS, MAX_MEDIA, MAX_SDP_LEN, Profile, SdpError};

/// What one payload type of an m-line means to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// A codec we speak, with parameters we support.
    Codec(Codec),
    /// RFC 4733 events at this clock, as a mask of events 0–15.
    TelephoneEvent { clock: u32, events: u16 },
    /// RFC 3389 comfort noise at this clock.
    ComfortNoise { clock: u32 },
    /// Anything else, or one of the above with parameters we cannot honour.
    Unsupported,
}

/// One enabled audio m-line, read.
#[derive(Clone, Debug)]
pub(crate) struct AudioLine {
    /// Transport profile.
    pub(crate) profile: Profile,
    /// Where the peer receives RTP.
    pub(crate) rtp: SocketAddr,
    /// Where the peer receives RTCP, from `a=rtcp` or port + 1; `None` with rtcp-mux or when
    /// port + 1 does not exist.
    pub(crate) rtcp: Option<SocketAddr>,
    /// `a=rtcp-mux` present.
    pub(crate) rtcp_mux: bool,
    /// Declared direction, with a `c=0.0.0.0` hold applied.
    pub(crate) direction: Direction,
    /// Payload types in the peer's order of preference, with their meaning.
    pub(crate) formats: Vec<(u8, Format)>,
    /// `a=ptime`, media level else session level.
    pub(crate) ptime: Option<u32>,
    /// `a=maxptime`, media level else session level.
    pub(crate) maxptime: Option<u32>,
    /// Every `a=crypto` line in order, read or skipped.
    pub(crate) cryptos: Vec<Result<CryptoAttr, CryptoSkip>>,
}

/// Parses `sdp` after checking the bounds of [`super::MAX_SDP_LEN`] and friends.
pub(crate) fn parse_bounded(sdp: &[u8]) -> Result<Session, SdpError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge { len: sdp.len() });
    }
    // Bound the m-line count before building the model: the parser allocates per line.
    let count = sdp.split(|&b| b == b'\n').filter(|l| l.starts_with(b"m=")).count();
    if count > MAX_MEDIA {
        return Err(SdpError::TooManyMedia { count });
    }
    let session = Session::parse(sdp).map_err(SdpError::Unparseable)?;
    let too_many = std::iter::once(session.attributes.len())
        .chain(session.medias.iter().map(|m| m.attributes.len()))
        .find(|&n| n > MAX_ATTRIBUTES);
    if let Some(count) = too_many {
        return Err(SdpError::TooManyAttributes { count });
    }
    Ok(session)
}

/// True for an m-line we may use for audio: `m=audio` with a non-zero port (RFC 3264 §5.1:
/// port 0 disables a stream).
pub(crate) fn is_enabled_audio(media: &Media) -> bool {
    media.media.eq_ignore_ascii_case("audio") && media.port != 0
}

/// Reads m-line number `index` of `session`, an enabled audio m-line.
pub(crate) fn read_audio(session: &Session, index: usize) -> Result<AudioLine, SdpError> {
    let media = &session.medias[index];
    // 1. Transport: one RTP profile, one port (RFC 4566 §5.14 `<port>/<number of ports>`
    //    means layered streams, which we do not do).
    let profile = Profile::from_proto(&media.proto)
        .filter(|_| media.num_ports.is_none_or(|n| n == 1))
        .ok_or(SdpError::UnsupportedTransport { media: index })?;

    // 2. Connection: media level overrides session level (RFC 4566 §5.7).
    let connection =
        media.connections.first().or(session.connection.as_ref()).ok_or(SdpError::NoConnection { media: index })?;
    let ip = connection_ip(connection).ok_or(SdpError::UnsupportedAddress { media: index })?;
    let rtp = SocketAddr::new(ip, media.port);

    // 3. RTCP: mux (RFC 5761), else `a=rtcp` (RFC 3605), else port + 1 (RFC 3550 §11).
    let rtcp_mux = has(&media.attributes, "rtcp-mux");
    let rtcp = if rtcp_mux {
        None
    } else {
        first(&media.attributes, "rtcp")
            .and_then(|v| parse_rtcp(v, ip))
            .or_else(|| media.port.checked_add(1).map(|p| SocketAddr::new(ip, p)))
    };

    // 4. Direction: media level, else session level, else sendrecv (RFC 4566 §6); the RFC 2543
    //    hold `c=0.0.0.0` means the peer does not want to receive (RFC 3264 §8.4).
    let mut direction =
        direction_of(&media.attributes).or_else(|| direction_of(&session.attributes)).unwrap_or(Direction::SendRecv);
    if ip.is_unspecified() {
        direction = match direction {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        };
    }

    // 5. Payload formats in the peer's order.
    let pts = media.fmt.split_ascii_whitespace();
    let mut formats = Vec::new();
    for pt in pts {
        let pt = parse_pt(pt).ok_or(SdpError::InvalidFormats { media: index })?;
        if formats.len() == MAX_FORMATS {
            return Err(SdpError::InvalidFormats { media: index });
        }
        formats.push((pt, classify(&media.attributes, pt)));
    }
    if formats.is_empty() {
        return Err(SdpError::InvalidFormats { media: index });
    }

    // 6. Packetization and keys.
    let ms = |name| first(&media.attributes, name).or_else(|| first(&session.attributes, name)).and_then(parse_ms);
    let cryptos = values(&media.attributes, "crypto").map(parse_crypto).collect();
    Ok(AudioLine {
        profile,
        rtp,
        rtcp,
        rtcp_mux,
        direction,
        formats,
        ptime: ms("ptime"),
        maxptime: ms("maxptime"),
        cryptos,
    })
}

/// What payload type `pt` of an m-line with `attributes` means: its rtpmap, or the static
/// assignment of RFC 3551 when there is none, then its fmtp.
fn classify(attributes: &[Attribute], pt: u8) -> Format {
    let rtpmap =
        values(attributes, "rtpmap").filter_map(parse_rtpmap).find(|m| m.pt == pt).or_else(|| static_rtpmap(pt));
    let Some(RtpMap { encoding, clock, channels, .. }) = rtpmap else {
        return Format::Unsupported;
    };
    let params =
        values(attributes, "fmtp").filter_map(split_fmtp).find(|&(p, _)| p == pt).map_or("", |(_, params)| params);
    let mono = channels.is_none_or(|c| c == 1);
    let is = |name: &str| encoding.eq_ignore_ascii_case(name);
    match clock {
        16_000 if is("AMR-WB") => {
            parse_amr_wb(params, channels).map_or(Format::Unsupported, |p| Format::Codec(Codec::AmrWb(p)))
        }
        8_000 if is("PCMU") && mono => Format::Codec(Codec::Pcmu),
        8_000 if is("PCMA") && mono => Format::Codec(Codec::Pcma),
        8_000 | 16_000 if is("telephone-event") => parse_events(params)
            .filter(|&e| e != 0)
            .map_or(Format::Unsupported, |events| Format::TelephoneEvent { clock, events }),
        8_000 | 16_000 if is("CN") && mono => Format::ComfortNoise { clock },
        _ => Format::Unsupported,
    }
}

/// The unicast IP address of a `c=` line. RFC 4566 §5.7: `IN IP4 <addr>` or `IN IP6 <addr>`.
fn connection_ip(c: &Connection) -> Option<IpAddr> {
    if c.nettype != NetType::In {
        return None;
    }
    let ip: IpAddr = c.connection_address.parse().ok()?;
    let family_ok = match c.addrtype {
        AddrType::Ip4 => ip.is_ipv4(),
        AddrType::Ip6 => ip.is_ipv6(),
        AddrType::Other(_) => false,
    };
    (family_ok && !ip.is_multicast()).then_some(ip)
}

/// `a=rtcp:<port> [IN IP4|IP6 <addr>]` (RFC 3605 §2.1). `None` when malformed.
fn parse_rtcp(value: &str, rtp_ip: IpAddr) -> Option<SocketAddr> {
    let mut f = value.split_ascii_whitespace();
    let port: u16 = f.next()?.parse().ok().filter(|&p| p != 0)?;
    let ip = match (f.next(), f.next(), f.next()) {
        (None, ..) => rtp_ip,
        (Some(nettype), Some(addrtype), Some(addr)) if nettype.eq_ignore_ascii_case("IN") => {
            let ip: IpAddr = addr.parse().ok()?;
            let family_ok = (addrtype.eq_ignore_ascii_case("IP4") && ip.is_ipv4())
                || (addrtype.eq_ignore_ascii_case("IP6") && ip.is_ipv6());
            family_ok.then_some(ip)?
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The direction attribute among `attributes`, if any; the first wins.
fn direction_of(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| {
        let name = a.attribute.as_str();
        [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive]
            .into_iter()
            .find(|d| d.attribute().eq_ignore_ascii_case(name))
    })
}

/// Milliseconds of `a=ptime` / `a=maxptime`; RFC 4566 allows a fraction, which we truncate.
fn parse_ms(value: &str) -> Option<u32> {
    let value = value.trim();
    let int = value.split_once('.').map_or(value, |(int, _)| int);
    int.parse().ok().filter(|&ms| ms > 0)
}

/// Values of every attribute called `name` (case-insensitive).
pub(crate) fn values<'a>(attributes: &'a [Attribute], name: &'a str) -> impl Iterator<Item = &'a str> {
    attributes
        .iter()
        .filter(move |a| a.attribute.eq_ignore_ascii_case(name))
        .map(|a| a.value.as_deref().unwrap_or_default())
}

fn first<'a>(attributes: &'a [Attribute], name: &'a str) -> Option<&'a str> {
    values(attributes, name).next()
}

fn has(attributes: &[Attribute], name: &str) -> bool {
    attributes.iter().any(|a| a.attribute.eq_ignore_ascii_case(name))
}
