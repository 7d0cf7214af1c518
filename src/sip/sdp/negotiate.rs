//! The offer/answer procedures of RFC 3264: answering an offer (§6), making an offer (§5) and
//! taking the answer to it (§7), with the choices CONTRACT §6 fixes.

use super::crypto::{fresh_key, write_crypto};
use super::fmtp::{DTMF_EVENTS, write_amr_wb, write_events};
use super::media::{AudioLine, Format, is_enabled_audio, parse_bounded, read_audio};
use super::write::{Section, write_sdp};
use super::{
    AmrWbParams, Codec, Direction, LocalMedia, Negotiated, Policy, Profile, SdpError, SrtpKeys, SrtpPolicy, SrtpSuite,
};

/// Our late offer, kept until the answer arrives (in the ACK) for [`accept_answer`].
#[derive(Clone, PartialEq, Eq)]
pub struct PendingOffer {
    profile: Profile,
    /// Our `a=crypto` lines: tag, suite, our master key and salt.
    keys: Vec<(u32, SrtpSuite, Vec<u8>)>,
}

impl PendingOffer {
    /// The transport profile we offered.
    pub fn profile(&self) -> Profile {
        self.profile
    }
}

impl std::fmt::Debug for PendingOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never reach a log (STYLE §8).
        f.debug_struct("PendingOffer").field("profile", &self.profile).finish_non_exhaustive()
    }
}

/// Answers `offer` (RFC 3264 §6): the first enabled audio m-line we can use gets our address
/// and the offerer's first codec we support; every other m-line is answered with port 0, in
/// the offer's order.
///
/// `previous` is what the dialog agreed last, for a re-offer: its codec is kept while it is
/// still offered (no needless switch), and its SRTP key while the peer keeps the tag and suite.
/// See the module docs for the session version.
pub fn answer(
    offer: &[u8],
    local: &LocalMedia,
    policy: &Policy,
    previous: Option<&Negotiated>,
) -> Result<(String, Negotiated), SdpError> {
    let session = parse_bounded(offer)?;

    // 1. The first usable audio m-line; when none is, the reason of the first candidate.
    let mut chosen = None;
    let mut first_error = None;
    for (index, media) in session.medias.iter().enumerate() {
        if !is_enabled_audio(media) {
            continue;
        }
        match read_audio(&session, index).and_then(|line| choose(&line, policy, previous, &local.keying)) {
            Ok(choice) => {
                chosen = Some((index, choice));
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((chosen_index, (negotiated, events))) = chosen else {
        return Err(first_error.unwrap_or(SdpError::NoAudio));
    };

    // 2. One answer m-line per offered m-line (RFC 3264 §6).
    let sections: Vec<Section<'_>> = session
        .medias
        .iter()
        .enumerate()
        .map(|(index, media)| {
            if index == chosen_index {
                answer_section(&negotiated, events)
            } else {
                Section::Rejected { media: &media.media, proto: &media.proto, formats: &media.fmt }
            }
        })
        .collect();
    Ok((write_sdp(local, &sections), negotiated))
}

/// Our offer for an INVITE that came without one (late offer, RFC 3261 §13.2.1): AMR-WB in
/// both layouts, PCMU, PCMA, telephone-event at 16 and 8 kHz, ptime 20, sendrecv.
///
/// The profile is RTP/SAVP with one `a=crypto` per suite when the policy is `mandatory`, and
/// plain RTP/AVP otherwise: an `optional` policy cannot offer both in one m-line without
/// RFC 5939 capability negotiation, and a SAVP offer would be refused by every peer that lacks
/// SRTP, so `optional` prefers reaching the peer.
pub fn offer(local: &LocalMedia, policy: &Policy) -> (String, PendingOffer) {
    let profile = if policy.srtp == SrtpPolicy::Mandatory { Profile::Savp } else { Profile::Avp };
    let keys: Vec<_> = if profile.is_secure() {
        (1..).zip(SrtpSuite::ALL).map(|(tag, suite)| (tag, suite, fresh_key(suite, &local.keying))).collect()
    } else {
        Vec::new()
    };

    let mut attributes = Vec::new();
    for &(pt, ref codec) in &OFFERED_CODECS {
        let codec = codec_of(codec);
        attributes.push(format!("rtpmap:{pt} {}/{}", codec.encoding_name(), codec.clock_rate()));
        if let Codec::AmrWb(p) = &codec {
            // Explicit even for the default: some peers assume octet-aligned when it is absent.
            attributes.push(format!("fmtp:{pt} octet-align={}", u8::from(p.octet_align)));
        }
    }
    for &(pt, clock) in &OFFERED_EVENTS {
        attributes.push(format!("rtpmap:{pt} telephone-event/{clock}"));
        attributes.push(format!("fmtp:{pt} {}", write_events(DTMF_EVENTS)));
    }
    attributes.push(format!("ptime:{DEFAULT_PTIME_MS}"));
    attributes.push(Direction::SendRecv.attribute().to_owned());
    for (tag, suite, key) in &keys {
        attributes.push(format!("crypto:{}", write_crypto(*tag, *suite, key)));
    }
    let formats = OFFERED_CODECS.iter().map(|c| c.0).chain(OFFERED_EVENTS.iter().map(|e| e.0));
    let section = Section::Active { proto: profile.proto(), formats: formats.collect(), attributes };
    (write_sdp(local, &[section]), PendingOffer { profile, keys })
}

/// Takes the answer to our late offer (RFC 3264 §7), checking it against what we offered: the
/// first m-line is our audio stream, its codec is one we offered with the same layout, and its
/// crypto line repeats one of our tags with the same suite.
pub fn accept_answer(pending: &PendingOffer, answer: &[u8]) -> Result<Negotiated, SdpError> {
    let session = parse_bounded(answer)?;
    // 1. Our one m-line, not refused.
    match session.medias.first() {
        Some(m) if is_enabled_audio(m) => {}
        _ => return Err(SdpError::NoAudio),
    }
    let line = read_audio(&session, 0)?;
    if line.profile.is_secure() != pending.profile.is_secure() {
        return Err(SdpError::AnswerProfileMismatch);
    }

    // 2. The codec: the answerer's first, and it must be ours under the same number.
    let (payload_type, codec) = line
        .formats
        .iter()
        .find_map(|(pt, f)| match f {
            Format::Codec(c) => Some((*pt, c.clone())),
            _ => None,
        })
        .ok_or(SdpError::NoCommonCodec)?;
    let offered = OFFERED_CODECS.iter().any(|(pt, c)| *pt == payload_type && codec_of(c).same_kind(&codec));
    if !offered {
        return Err(SdpError::AnswerCodecNotOffered { pt: payload_type });
    }

    // 3. Events under one of our numbers, at the codec's clock when answered so, else at the
    //    other clock we offered (see `telephone_event`).
    let clock_rate = codec.clock_rate();
    let ours = line.formats.iter().filter_map(|(pt, f)| match f {
        Format::TelephoneEvent { clock, events } if OFFERED_EVENTS.contains(&(*pt, *clock)) => {
            Some((*pt, *clock, *events))
        }
        _ => None,
    });
    let telephone_event = telephone_event(ours, clock_rate).map(|(pt, clock, _)| (pt, clock));

    // 4. Keys: the answer's first usable line must echo one of our tags and suites.
    let srtp = if pending.profile.is_secure() {
        let theirs = line.cryptos.iter().find_map(|c| c.as_ref().ok()).ok_or(SdpError::NoAcceptableCrypto)?;
        let (tag, suite, ours) = pending
            .keys
            .iter()
            .find(|(tag, suite, _)| *tag == theirs.tag && *suite == theirs.suite)
            .ok_or(SdpError::AnswerCryptoNotOffered { tag: theirs.tag })?;
        Some(SrtpKeys { suite: *suite, tag: *tag, remote_key: theirs.key.clone(), local_key: ours.clone() })
    } else {
        None
    };

    Ok(Negotiated {
        ptime_ms: ptime(&line, &codec),
        codec,
        payload_type,
        clock_rate,
        telephone_event,
        comfort_noise: None,
        remote_rtp: line.rtp,
        remote_rtcp: line.rtcp,
        rtcp_mux: line.rtcp_mux,
        profile: line.profile,
        remote_direction: line.direction,
        local_direction: Direction::SendRecv,
        srtp,
    })
}

/// Decides our answer for one readable audio m-line; also returns the DTMF events to answer.
fn choose(
    line: &AudioLine,
    policy: &Policy,
    previous: Option<&Negotiated>,
    keying: &[u8; super::KEYING_LEN],
) -> Result<(Negotiated, u16), SdpError> {
    // 1. Transport against policy (CONTRACT §6).
    let secure = line.profile.is_secure();
    match (policy.srtp, secure) {
        (SrtpPolicy::Mandatory, false) => return Err(SdpError::SrtpRequired),
        (SrtpPolicy::Off, true) => return Err(SdpError::SrtpRefused),
        _ => {}
    }

    // 2. Codec: the previous one if still offered in the same layout, else the offerer's first.
    let codecs = || {
        line.formats.iter().filter_map(|(pt, f)| match f {
            Format::Codec(c) => Some((*pt, c)),
            _ => None,
        })
    };
    let (payload_type, codec) = previous
        .and_then(|p| codecs().find(|(_, c)| c.same_kind(&p.codec)))
        .or_else(|| codecs().next())
        .ok_or(SdpError::NoCommonCodec)?;
    let clock_rate = codec.clock_rate();

    // 3. Events (see `telephone_event`) and comfort noise at the codec's clock (RFC 3389 §5).
    let offered_events = line.formats.iter().filter_map(|(pt, f)| match f {
        Format::TelephoneEvent { clock, events } => Some((*pt, *clock, *events)),
        _ => None,
    });
    let events = telephone_event(offered_events, clock_rate);
    let comfort_noise = line.formats.iter().find_map(|(pt, f)| match f {
        Format::ComfortNoise { clock } if *clock == clock_rate => Some(*pt),
        _ => None,
    });

    // 4. Keys (RFC 4568 §7.1.2): the first line we can use; on a re-offer that keeps the tag
    //    and suite we keep our key, so an unchanged offer gets an unchanged answer.
    let srtp = if secure {
        let usable = || line.cryptos.iter().filter_map(|c| c.as_ref().ok());
        let kept = previous.and_then(|p| p.srtp.as_ref()).and_then(|prev| {
            usable().find(|c| c.tag == prev.tag && c.suite == prev.suite).map(|c| (c, prev.local_key.clone()))
        });
        let (theirs, local_key) = kept
            .or_else(|| usable().next().map(|c| (c, fresh_key(c.suite, keying))))
            .ok_or(SdpError::NoAcceptableCrypto)?;
        Some(SrtpKeys { suite: theirs.suite, tag: theirs.tag, remote_key: theirs.key.clone(), local_key })
    } else {
        None
    };

    let negotiated = Negotiated {
        ptime_ms: ptime(line, codec),
        codec: codec.clone(),
        payload_type,
        clock_rate,
        telephone_event: events.map(|(pt, clock, _)| (pt, clock)),
        comfort_noise,
        remote_rtp: line.rtp,
        remote_rtcp: line.rtcp,
        rtcp_mux: line.rtcp_mux,
        profile: line.profile,
        remote_direction: line.direction,
        // RFC 3264 §6.1; a hold (sendonly, inactive) is never answered sendrecv.
        local_direction: line.direction.answer(),
        srtp,
    };
    Ok((negotiated, events.map_or(0, |(_, _, e)| e)))
}

/// Clocks at which telephone-event is taken.
const EVENT_CLOCKS: [u32; 3] = [8_000, 16_000, 48_000];

/// The telephone-event to use among `offered` (payload type, clock, events): the one at the
/// audio codec's clock (RFC 4733 §2.1), else the first at another clock we can run. Peers do
/// offer AMR-WB/16000 with telephone-event/8000 only (baresip); refusing that would leave the
/// call without DTMF. The leg keeps the audio's timestamps for the events (one RTP clock per
/// stream) and counts their durations in the event's own clock.
fn telephone_event(offered: impl Iterator<Item = (u8, u32, u16)> + Clone, codec_clock: u32) -> Option<(u8, u32, u16)> {
    offered
        .clone()
        .find(|(_, clock, _)| *clock == codec_clock)
        .or_else(|| offered.into_iter().find(|(_, clock, _)| EVENT_CLOCKS.contains(clock)))
}

/// The m-section of our answer for what was agreed.
fn answer_section(n: &Negotiated, events: u16) -> Section<'static> {
    let mut formats = vec![n.payload_type];
    let mut attributes = vec![format!("rtpmap:{} {}/{}", n.payload_type, n.codec.encoding_name(), n.clock_rate)];
    if let Codec::AmrWb(p) = &n.codec
        && let Some(params) = write_amr_wb(p)
    {
        attributes.push(format!("fmtp:{} {params}", n.payload_type));
    }
    if let Some((pt, clock)) = n.telephone_event {
        formats.push(pt);
        attributes.push(format!("rtpmap:{pt} telephone-event/{clock}"));
        attributes.push(format!("fmtp:{pt} {}", write_events(events)));
    }
    if let Some(pt) = n.comfort_noise {
        formats.push(pt);
        attributes.push(format!("rtpmap:{pt} CN/{}", n.clock_rate));
    }
    attributes.push(format!("ptime:{}", n.ptime_ms));
    attributes.push(n.local_direction.attribute().to_owned());
    if n.rtcp_mux {
        attributes.push("rtcp-mux".to_owned());
    }
    if let Some(k) = &n.srtp {
        attributes.push(format!("crypto:{}", write_crypto(k.tag, k.suite, &k.local_key)));
    }
    Section::Active { proto: n.profile.proto(), formats, attributes }
}

/// The packetization we send with: the peer's `a=ptime` when within 10–60 ms, else 20; no more
/// than its `a=maxptime`; a whole number of codec frames.
fn ptime(line: &AudioLine, codec: &Codec) -> u32 {
    let frame = codec.frame_ms();
    let mut ms = line.ptime.filter(|p| (MIN_PTIME_MS..=MAX_PTIME_MS).contains(p)).unwrap_or(DEFAULT_PTIME_MS);
    if let Some(max) = line.maxptime {
        ms = ms.min(max);
    }
    (ms / frame * frame).max(frame)
}

/// A codec of our offer table. The table holds `bool` for AMR-WB's layout so it can be const.
fn codec_of(c: &OfferedCodec) -> Codec {
    match c {
        OfferedCodec::AmrWb { octet_align } => Codec::AmrWb(AmrWbParams::new(*octet_align)),
        OfferedCodec::Pcmu => Codec::Pcmu,
        OfferedCodec::Pcma => Codec::Pcma,
    }
}

enum OfferedCodec {
    AmrWb { octet_align: bool },
    Pcmu,
    Pcma,
}

/// What our late offer lists, in order of preference (CONTRACT §6): AMR-WB bandwidth-efficient
/// on 96, octet-aligned on 97, then G.711.
const OFFERED_CODECS: [(u8, OfferedCodec); 4] = [
    (96, OfferedCodec::AmrWb { octet_align: false }),
    (97, OfferedCodec::AmrWb { octet_align: true }),
    (0, OfferedCodec::Pcmu),
    (8, OfferedCodec::Pcma),
];

/// telephone-event in our late offer: payload type and clock, one per codec clock.
const OFFERED_EVENTS: [(u8, u32); 2] = [(101, 16_000), (100, 8_000)];

/// ptime when the peer says nothing (RFC 3551 §4.5: 20 ms is the usual default).
const DEFAULT_PTIME_MS: u32 = 20;

/// Shortest ptime we accept (CONTRACT §6).
const MIN_PTIME_MS: u32 = 10;

/// Longest ptime we accept (CONTRACT §6).
const MAX_PTIME_MS: u32 = 60;

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::sip::sdp::{MAX_SDP_LEN, same_session_content};

    /// RFC 4568 §9.1 example key, 30 bytes.
    const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    fn local() -> LocalMedia {
        LocalMedia {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            rtp_port: 30_000,
            session_id: 42,
            session_version: 1,
            keying: {
                let mut k = [0; crate::sip::sdp::KEYING_LEN];
                crate::ids::fill_random(&mut k);
                k
            },
        }
    }

    fn policy(srtp: SrtpPolicy) -> Policy {
        Policy { srtp }
    }

    const OPTIONAL: Policy = Policy { srtp: SrtpPolicy::Optional };

    /// An SDP from lines, CRLF-terminated.
    fn sdp_of(lines: &[&str]) -> Vec<u8> {
        let mut s = lines.join("\r\n");
        s.push_str("\r\n");
        s.into_bytes()
    }

    /// A session header with `c=IN IP4 10.0.0.5`, then `media`.
    fn offer_with(media: &[&str]) -> Vec<u8> {
        let mut lines = vec!["v=0", "o=- 1234 5678 IN IP4 10.0.0.5", "s=-", "c=IN IP4 10.0.0.5", "t=0 0"];
        lines.extend_from_slice(media);
        sdp_of(&lines)
    }

    fn baresip_offer() -> Vec<u8> {
        let c1 = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
        let c2 = format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}");
        offer_with(&[
            "m=audio 4000 RTP/SAVP 96 0 101",
            "b=AS:64",
            "a=rtpmap:96 AMR-WB/16000",
            "a=fmtp:96 octet-align=1;mode-set=8",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/16000",
            "a=fmtp:101 0-15",
            &c1,
            &c2,
            "a=sendrecv",
            "a=rtcp-mux",
            "a=label:1",
        ])
    }

    fn ans(offer: &[u8], p: &Policy) -> Result<(String, Negotiated), SdpError> {
        answer(offer, &local(), p, None)
    }

    fn has_line(sdp: &str, line: &str) -> bool {
        sdp.split("\r\n").any(|l| l == line)
    }

    #[test]
    fn baresip_amr_wb_srtp() {
        let (sdp, n) = ans(&baresip_offer(), &OPTIONAL).unwrap();
        let Codec::AmrWb(p) = &n.codec else { panic!("{:?}", n.codec) };
        assert!(p.octet_align);
        assert_eq!(p.mode_set, Some(vec![8]));
        assert_eq!((n.payload_type, n.clock_rate, n.ptime_ms), (96, 16_000, 20));
        assert_eq!(n.telephone_event, Some((101, 16_000)));
        assert_eq!(n.comfort_noise, None);
        assert_eq!(n.remote_rtp, "10.0.0.5:4000".parse().unwrap());
        assert!(n.rtcp_mux);
        assert_eq!(n.remote_rtcp, None);
        assert_eq!(n.profile, Profile::Savp);
        let k = n.srtp.as_ref().unwrap();
        assert_eq!((k.tag, k.suite), (1, SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(k.remote_key, STANDARD.decode(KEY).unwrap());
        assert_eq!(k.local_key.len(), 30);
        assert_ne!(k.local_key, k.remote_key);
        for line in [
            "m=audio 30000 RTP/SAVP 96 101",
            "a=rtpmap:96 AMR-WB/16000",
            "a=fmtp:96 octet-align=1;mode-set=8",
            "a=rtpmap:101 telephone-event/16000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
            "a=rtcp-mux",
            "o=interwork 42 1 IN IP4 192.0.2.10",
            "c=IN IP4 192.0.2.10",
        ] {
            assert!(has_line(&sdp, line), "{line} missing in\n{sdp}");
        }
        let crypto = sdp.split("\r\n").find_map(|l| l.strip_prefix("a=crypto:")).unwrap();
        let b64 = crypto.strip_prefix("1 AES_CM_128_HMAC_SHA1_80 inline:").unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), k.local_key);
        assert_eq!(sdp.matches("a=crypto").count(), 1);
        // Our answer is itself SDP that sdp-types reads.
        assert!(sdp_types::Session::parse(sdp.as_bytes()).is_ok());
    }

    #[test]
    fn sipp_pcmu_exact_answer() {
        let offer = sdp_of(&[
            "v=0",
            "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 6000 RTP/AVP 0",
            "a=rtpmap:0 PCMU/8000",
        ]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!(
            sdp,
            "v=0\r\no=interwork 42 1 IN IP4 192.0.2.10\r\ns=interwork\r\nc=IN IP4 192.0.2.10\r\n\
             t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
             a=sendrecv\r\n"
        );
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.remote_rtp, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(n.remote_rtcp, Some("127.0.0.1:6001".parse().unwrap()));
        assert!(!n.rtcp_mux);
        assert_eq!(n.srtp, None);
        assert_eq!((n.remote_direction, n.local_direction), (Direction::SendRecv, Direction::SendRecv));
    }

    #[test]
    fn pcma_first_static_without_rtpmap_with_cn_and_events() {
        let offer =
            offer_with(&["m=audio 6000 RTP/AVP 8 0 13 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!((n.codec.clone(), n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.comfort_noise, Some(13));
        assert_eq!(n.telephone_event, Some((101, 8_000)));
        assert!(has_line(&sdp, "m=audio 30000 RTP/AVP 8 101 13"));
        assert!(has_line(&sdp, "a=rtpmap:8 PCMA/8000"));
        assert!(has_line(&sdp, "a=fmtp:101 0-15"));
        assert!(has_line(&sdp, "a=rtpmap:13 CN/8000"));
    }

    #[test]
    fn events_at_the_codec_clock_are_preferred_and_cn_taken_only_there() {
        let offer = offer_with(&[
            "m=audio 6000 RTP/AVP 96 13 100 101",
            "a=rtpmap:96 AMR-WB/16000/1",
            "a=rtpmap:100 telephone-event/8000",
            "a=rtpmap:101 telephone-event/16000",
            "a=fmtp:101 0-11",
        ]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!(n.codec, Codec::AmrWb(AmrWbParams::new(false)));
        assert_eq!(n.telephone_event, Some((101, 16_000)));
        assert_eq!(n.comfort_noise, None);
        assert!(has_line(&sdp, "m=audio 30000 RTP/AVP 96 101"));
        assert!(has_line(&sdp, "a=fmtp:101 0-11"));
        // Bandwidth-efficient is the default: no fmtp for 96.
        assert!(!sdp.contains("a=fmtp:96"));
    }

    #[test]
    fn events_at_another_clock_are_answered_at_theirs() {
        // baresip: AMR-WB/16000 with telephone-event/8000 only.
        let offer = offer_with(&[
            "m=audio 6000 RTP/AVP 96 101",
            "a=rtpmap:96 AMR-WB/16000/1",
            "a=fmtp:96 octet-align=1",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
        ]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!(n.telephone_event, Some((101, 8_000)));
        assert!(has_line(&sdp, "m=audio 30000 RTP/AVP 96 101"), "{sdp}");
        assert!(has_line(&sdp, "a=rtpmap:101 telephone-event/8000"), "{sdp}");
        assert!(has_line(&sdp, "a=fmtp:101 0-15"), "{sdp}");
        // And the reverse: G.711 with telephone-event/16000 only.
        let g711 = offer_with(&["m=audio 6000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/16000"]);
        let (sdp, n) = ans(&g711, &OPTIONAL).unwrap();
        assert_eq!(n.telephone_event, Some((101, 16_000)));
        assert!(has_line(&sdp, "a=rtpmap:101 telephone-event/16000"), "{sdp}");
        // A clock we cannot run is left out.
        let odd = offer_with(&["m=audio 6000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/11025"]);
        assert_eq!(ans(&odd, &OPTIONAL).unwrap().1.telephone_event, None);
    }

    #[test]
    fn dynamic_payload_types_are_echoed() {
        let offer = offer_with(&[
            "m=audio 6000 RTP/AVP 118 110",
            "a=rtpmap:118 amr-wb/16000",
            "a=fmtp:118 mode-set=0,1,2;mode-change-period=2",
            "a=rtpmap:110 PCMU/8000",
        ]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!(n.payload_type, 118);
        assert!(has_line(&sdp, "a=fmtp:118 mode-set=0,1,2;mode-change-period=2"));
        // PCMU under a dynamic number.
        let offer = offer_with(&["m=audio 6000 RTP/AVP 110", "a=rtpmap:110 PCMU/8000"]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 110));
        assert!(has_line(&sdp, "a=rtpmap:110 PCMU/8000"));
    }

    #[test]
    fn unsupported_amr_wb_variants_are_skipped() {
        let offer = offer_with(&[
            "m=audio 6000 RTP/AVP 96 97 98 8",
            "a=rtpmap:96 AMR-WB/16000",
            "a=fmtp:96 octet-align=1; crc=1",
            "a=rtpmap:97 AMR-WB/16000/2",
            "a=rtpmap:98 AMR-WB/16000",
            "a=fmtp:98 interleaving=10",
        ]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap().1.codec, Codec::Pcma);
    }

    #[test]
    fn no_common_codec() {
        let offer = offer_with(&[
            "m=audio 6000 RTP/AVP 9 18 3 96 101",
            "a=rtpmap:96 opus/48000/2",
            "a=rtpmap:101 telephone-event/8000",
        ]);
        let e = ans(&offer, &OPTIONAL).unwrap_err();
        assert_eq!(e, SdpError::NoCommonCodec);
        assert!(!e.is_malformed());
    }

    #[test]
    fn policy_by_profile() {
        let crypto = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
        let with = |proto: &str| {
            let m = format!("m=audio 6000 {proto} 0");
            offer_with(&[&m, &crypto])
        };
        use SrtpPolicy::{Mandatory, Off, Optional};
        let cases = [
            (Optional, "RTP/AVP", Ok(false)),
            (Optional, "RTP/AVPF", Ok(false)),
            (Optional, "RTP/SAVP", Ok(true)),
            (Optional, "RTP/SAVPF", Ok(true)),
            (Mandatory, "RTP/AVP", Err(SdpError::SrtpRequired)),
            (Mandatory, "RTP/AVPF", Err(SdpError::SrtpRequired)),
            (Mandatory, "RTP/SAVP", Ok(true)),
            (Mandatory, "RTP/SAVPF", Ok(true)),
            (Off, "RTP/AVP", Ok(false)),
            (Off, "RTP/AVPF", Ok(false)),
            (Off, "RTP/SAVP", Err(SdpError::SrtpRefused)),
            (Off, "RTP/SAVPF", Err(SdpError::SrtpRefused)),
            (Optional, "UDP/TLS/RTP/SAVPF", Err(SdpError::UnsupportedTransport { media: 0 })),
        ];
        for (srtp, proto, expected) in cases {
            let got = ans(&with(proto), &policy(srtp));
            match (got, expected) {
                (Ok((sdp, n)), Ok(secure)) => {
                    assert_eq!(n.srtp.is_some(), secure, "{srtp:?} {proto}");
                    assert_eq!(sdp.contains("a=crypto:"), secure, "{srtp:?} {proto}");
                    assert!(sdp.contains(&format!("m=audio 30000 {proto} 0\r\n")), "{proto}");
                }
                (Err(e), Err(expected)) => {
                    assert_eq!(e, expected, "{srtp:?} {proto}");
                    assert!(!e.is_malformed());
                }
                (got, expected) => panic!("{srtp:?} {proto}: {got:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn crypto_selection() {
        let gcm = STANDARD.encode([5u8; 28]);
        let l1 = "a=crypto:1 F8_128_HMAC_SHA1_80 inline:xx".to_owned();
        let l2 = format!("a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4");
        let l3 = format!("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP");
        let l4 = format!("a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:{KEY} KDR=1");
        let l5 = format!("a=crypto:5 AEAD_AES_128_GCM inline:{gcm}");
        let l6 = format!("a=crypto:6 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31");
        let offer = offer_with(&["m=audio 6000 RTP/SAVP 0", &l1, &l2, &l3, &l4, &l5, &l6]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        let k = n.srtp.unwrap();
        assert_eq!((k.tag, k.suite), (5, SrtpSuite::AeadAes128Gcm));
        assert_eq!(k.remote_key, vec![5u8; 28]);
        assert_eq!(k.local_key.len(), 28);
        assert!(sdp.contains("a=crypto:5 AEAD_AES_128_GCM inline:"));

        let offer = offer_with(&["m=audio 6000 RTP/SAVP 0", &l1, &l2, &l3, &l6]);
        let k = ans(&offer, &OPTIONAL).unwrap().1.srtp.unwrap();
        assert_eq!((k.tag, k.suite), (6, SrtpSuite::AesCm128HmacSha1_32));

        let offer = offer_with(&["m=audio 6000 RTP/SAVP 0", &l1, &l2, &l3, &l4]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap_err(), SdpError::NoAcceptableCrypto);
        let offer = offer_with(&["m=audio 6000 RTP/SAVP 0"]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap_err(), SdpError::NoAcceptableCrypto);
    }

    #[test]
    fn fresh_key_each_answer() {
        let a = ans(&baresip_offer(), &OPTIONAL).unwrap().1.srtp.unwrap();
        let b = ans(&baresip_offer(), &OPTIONAL).unwrap().1.srtp.unwrap();
        assert_ne!(a.local_key, b.local_key);
    }

    #[test]
    fn plain_offer_with_crypto_is_answered_plain() {
        let crypto = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
        let (sdp, n) = ans(&offer_with(&["m=audio 6000 RTP/AVP 0", &crypto]), &OPTIONAL).unwrap();
        assert!(n.srtp.is_none());
        assert!(!sdp.contains("crypto"));
    }

    #[test]
    fn directions() {
        let cases: [(&[&str], &[&str], Direction, Direction); 7] = [
            (&[], &[], Direction::SendRecv, Direction::SendRecv),
            (&[], &["a=sendonly"], Direction::SendOnly, Direction::RecvOnly),
            (&[], &["a=recvonly"], Direction::RecvOnly, Direction::SendOnly),
            (&[], &["a=inactive"], Direction::Inactive, Direction::Inactive),
            (&["a=sendonly"], &[], Direction::SendOnly, Direction::RecvOnly),
            (&["a=sendonly"], &["a=sendrecv"], Direction::SendRecv, Direction::SendRecv),
            (&["a=inactive"], &["a=recvonly"], Direction::RecvOnly, Direction::SendOnly),
        ];
        for (session, media, remote, local_dir) in cases {
            let mut lines = vec!["v=0", "o=- 1 1 IN IP4 10.0.0.5", "s=-", "c=IN IP4 10.0.0.5", "t=0 0"];
            lines.extend_from_slice(session);
            lines.push("m=audio 6000 RTP/AVP 0");
            lines.extend_from_slice(media);
            let (sdp, n) = ans(&sdp_of(&lines), &OPTIONAL).unwrap();
            assert_eq!((n.remote_direction, n.local_direction), (remote, local_dir), "{lines:?}");
            assert!(has_line(&sdp, &format!("a={}", local_dir.attribute())));
        }
    }

    #[test]
    fn rfc2543_hold_with_zero_address() {
        let offer =
            sdp_of(&["v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 6000 RTP/AVP 0"]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        assert_eq!((n.remote_direction, n.local_direction), (Direction::SendOnly, Direction::RecvOnly));
        assert!(n.remote_rtp.ip().is_unspecified());
        assert!(has_line(&sdp, "a=recvonly"));
        let offer = sdp_of(&["v=0", "c=IN IP4 0.0.0.0", "m=audio 6000 RTP/AVP 0", "a=recvonly"]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap().1.local_direction, Direction::Inactive);
    }

    #[test]
    fn rtcp_addresses() {
        let n = ans(&offer_with(&["m=audio 6000 RTP/AVP 0", "a=rtcp:53020"]), &OPTIONAL).unwrap().1;
        assert_eq!(n.remote_rtcp, Some("10.0.0.5:53020".parse().unwrap()));
        let n = ans(&offer_with(&["m=audio 6000 RTP/AVP 0", "a=rtcp:53020 IN IP4 192.0.2.99"]), &OPTIONAL).unwrap().1;
        assert_eq!(n.remote_rtcp, Some("192.0.2.99:53020".parse().unwrap()));
        // Malformed a=rtcp falls back to port + 1.
        let n = ans(&offer_with(&["m=audio 6000 RTP/AVP 0", "a=rtcp:0"]), &OPTIONAL).unwrap().1;
        assert_eq!(n.remote_rtcp, Some("10.0.0.5:6001".parse().unwrap()));
        let n = ans(&offer_with(&["m=audio 65535 RTP/AVP 0"]), &OPTIONAL).unwrap().1;
        assert_eq!(n.remote_rtcp, None);
        let (sdp, n) = ans(&offer_with(&["m=audio 6000 RTP/AVP 0", "a=rtcp:6001", "a=rtcp-mux"]), &OPTIONAL).unwrap();
        assert!(n.rtcp_mux);
        assert_eq!(n.remote_rtcp, None);
        assert!(has_line(&sdp, "a=rtcp-mux"));
    }

    #[test]
    fn connection_levels_and_families() {
        let offer = offer_with(&["m=audio 6000 RTP/AVP 0", "c=IN IP4 198.51.100.7"]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap().1.remote_rtp, "198.51.100.7:6000".parse().unwrap());
        let offer = sdp_of(&["v=0", "c=IN IP6 2001:db8::1", "m=audio 6000 RTP/AVP 0"]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap().1.remote_rtp, "[2001:db8::1]:6000".parse().unwrap());
        let mut v6 = local();
        v6.addr = "2001:db8::2".parse().unwrap();
        let (sdp, _) = answer(&offer, &v6, &OPTIONAL, None).unwrap();
        assert!(has_line(&sdp, "c=IN IP6 2001:db8::2"));
        assert!(has_line(&sdp, "o=interwork 42 1 IN IP6 2001:db8::2"));

        for c in ["c=IN IP4 pbx.example.com", "c=IN IP4 224.2.1.1/127", "c=IN IP6 10.0.0.1", "c=TN RFC2543 x"] {
            let offer = sdp_of(&["v=0", c, "m=audio 6000 RTP/AVP 0"]);
            let e = ans(&offer, &OPTIONAL).unwrap_err();
            assert_eq!(e, SdpError::UnsupportedAddress { media: 0 }, "{c}");
        }
        let e = ans(&sdp_of(&["v=0", "m=audio 6000 RTP/AVP 0"]), &OPTIONAL).unwrap_err();
        assert_eq!((e.is_malformed(), e), (true, SdpError::NoConnection { media: 0 }));
    }

    #[test]
    fn several_m_lines() {
        let c = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
        let offer = offer_with(&[
            "m=video 5000 RTP/AVP 31",
            "m=audio 0 RTP/AVP 0",
            "m=audio 4000 RTP/SAVP 0",
            &c,
            "m=audio 4002 RTP/AVP 8 0",
            "m=audio 4004 RTP/AVP 0",
            "m=application 5060 udp wsip",
        ]);
        let (sdp, n) = ans(&offer, &policy(SrtpPolicy::Off)).unwrap();
        assert_eq!((n.codec, n.remote_rtp.port()), (Codec::Pcma, 4002));
        let m: Vec<&str> = sdp.split("\r\n").filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=video 0 RTP/AVP 31",
                "m=audio 0 RTP/AVP 0",
                "m=audio 0 RTP/SAVP 0",
                "m=audio 30000 RTP/AVP 8",
                "m=audio 0 RTP/AVP 0",
                "m=application 0 udp wsip",
            ]
        );
        // No usable audio: the first candidate's reason.
        let offer = offer_with(&["m=audio 4000 RTP/SAVP 0", &c, "m=audio 4002 RTP/AVP 9"]);
        assert_eq!(ans(&offer, &policy(SrtpPolicy::Off)).unwrap_err(), SdpError::SrtpRefused);
        let offer = offer_with(&["m=video 5000 RTP/AVP 31", "m=audio 0 RTP/AVP 0"]);
        let e = ans(&offer, &OPTIONAL).unwrap_err();
        assert!(!e.is_malformed());
        assert_eq!(e, SdpError::NoAudio);
        assert_eq!(ans(&offer_with(&[]), &OPTIONAL).unwrap_err(), SdpError::NoAudio);
    }

    #[test]
    fn ptime_bounds() {
        let case = |pts: &str, attrs: &[&str]| {
            let m = format!("m=audio 6000 RTP/AVP {pts}");
            let mut lines = vec![m.as_str(), "a=rtpmap:96 AMR-WB/16000"];
            lines.extend_from_slice(attrs);
            let (sdp, n) = ans(&offer_with(&lines), &OPTIONAL).unwrap();
            assert!(has_line(&sdp, &format!("a=ptime:{}", n.ptime_ms)));
            n.ptime_ms
        };
        assert_eq!(case("0", &[]), 20);
        assert_eq!(case("0", &["a=ptime:30"]), 30);
        assert_eq!(case("0", &["a=ptime:10"]), 10);
        assert_eq!(case("0", &["a=ptime:60"]), 60);
        assert_eq!(case("0", &["a=ptime:5"]), 20);
        assert_eq!(case("0", &["a=ptime:100"]), 20);
        assert_eq!(case("0", &["a=ptime:20.5"]), 20);
        assert_eq!(case("0", &["a=ptime:junk"]), 20);
        assert_eq!(case("0", &["a=maxptime:10"]), 10);
        assert_eq!(case("0", &["a=ptime:40", "a=maxptime:30"]), 30);
        assert_eq!(case("96", &["a=ptime:30"]), 20);
        assert_eq!(case("96", &["a=ptime:40"]), 40);
        assert_eq!(case("96", &["a=ptime:10"]), 20);
        assert_eq!(case("96", &["a=maxptime:10"]), 20);
        // Session-level ptime applies too.
        let offer = sdp_of(&["v=0", "c=IN IP4 10.0.0.5", "a=ptime:30", "m=audio 6000 RTP/AVP 8"]);
        assert_eq!(ans(&offer, &OPTIONAL).unwrap().1.ptime_ms, 30);
    }

    #[test]
    fn mode_set_answer_stays_within_offer() {
        let offer = offer_with(&["m=audio 6000 RTP/AVP 96", "a=rtpmap:96 AMR-WB/16000", "a=fmtp:96 mode-set=2,9,0,2"]);
        let (sdp, n) = ans(&offer, &OPTIONAL).unwrap();
        let Codec::AmrWb(p) = n.codec else { panic!() };
        assert_eq!(p.mode_set, Some(vec![0, 2]));
        assert!(has_line(&sdp, "a=fmtp:96 mode-set=0,2"));
    }

    #[test]
    fn late_offer_round_trip_with_srtp() {
        let (our_offer, pending) = offer(&local(), &policy(SrtpPolicy::Mandatory));
        assert_eq!(pending.profile(), Profile::Savp);
        assert!(has_line(&our_offer, "m=audio 30000 RTP/SAVP 96 97 0 8 101 100"));
        assert!(has_line(&our_offer, "a=fmtp:96 octet-align=0"));
        assert!(has_line(&our_offer, "a=fmtp:97 octet-align=1"));
        assert!(has_line(&our_offer, "a=rtpmap:101 telephone-event/16000"));
        assert!(has_line(&our_offer, "a=rtpmap:100 telephone-event/8000"));
        assert!(has_line(&our_offer, "a=ptime:20"));
        assert!(has_line(&our_offer, "a=sendrecv"));
        assert_eq!(our_offer.matches("a=crypto:").count(), 3);

        // The peer answers with our own answerer.
        let mut peer = local();
        peer.addr = "198.51.100.1".parse().unwrap();
        peer.rtp_port = 7000;
        let (peer_answer, peer_view) = answer(our_offer.as_bytes(), &peer, &OPTIONAL, None).unwrap();
        let n = accept_answer(&pending, peer_answer.as_bytes()).unwrap();
        assert_eq!(n.codec, Codec::AmrWb(AmrWbParams::new(false)));
        assert_eq!(n.payload_type, 96);
        assert_eq!(n.telephone_event, Some((101, 16_000)));
        assert_eq!(n.remote_rtp, "198.51.100.1:7000".parse().unwrap());
        let (ours, theirs) = (n.srtp.unwrap(), peer_view.srtp.unwrap());
        assert_eq!((ours.tag, ours.suite), (1, SrtpSuite::AesCm128HmacSha1_80));
        assert_eq!(ours.remote_key, theirs.local_key);
        assert_eq!(ours.local_key, theirs.remote_key);
    }

    #[test]
    fn late_offer_plain_and_peer_picks_pcma() {
        let (our_offer, pending) = offer(&local(), &OPTIONAL);
        assert!(has_line(&our_offer, "m=audio 30000 RTP/AVP 96 97 0 8 101 100"));
        assert!(!our_offer.contains("crypto"));
        let reply = offer_with(&["m=audio 7000 RTP/AVP 8 100", "a=rtpmap:100 telephone-event/8000", "a=sendonly"]);
        let n = accept_answer(&pending, &reply).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.telephone_event, Some((100, 8_000)));
        assert_eq!(n.remote_direction, Direction::SendOnly);
        assert_eq!(n.srtp, None);
    }

    #[test]
    fn late_offer_bad_answers() {
        let (_, plain) = offer(&local(), &OPTIONAL);
        let (_, secure) = offer(&local(), &policy(SrtpPolicy::Mandatory));
        let oa = offer_with(&["m=audio 7000 RTP/AVP 96", "a=rtpmap:96 AMR-WB/16000", "a=fmtp:96 octet-align=1"]);
        assert_eq!(accept_answer(&plain, &oa), Err(SdpError::AnswerCodecNotOffered { pt: 96 }));
        let other = offer_with(&["m=audio 7000 RTP/AVP 18"]);
        assert_eq!(accept_answer(&plain, &other), Err(SdpError::NoCommonCodec));
        let refused = offer_with(&["m=audio 0 RTP/AVP 0"]);
        assert_eq!(accept_answer(&plain, &refused), Err(SdpError::NoAudio));
        let savp = format!("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:{KEY}");
        let wrong_tag = offer_with(&["m=audio 7000 RTP/SAVP 0", &savp]);
        assert_eq!(accept_answer(&plain, &wrong_tag), Err(SdpError::AnswerProfileMismatch));
        assert_eq!(accept_answer(&secure, &wrong_tag), Err(SdpError::AnswerCryptoNotOffered { tag: 7 }));
        let wrong_suite = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}");
        let wrong_suite = offer_with(&["m=audio 7000 RTP/SAVP 0", &wrong_suite]);
        assert_eq!(accept_answer(&secure, &wrong_suite), Err(SdpError::AnswerCryptoNotOffered { tag: 1 }));
        let no_crypto = offer_with(&["m=audio 7000 RTP/SAVP 0"]);
        assert_eq!(accept_answer(&secure, &no_crypto), Err(SdpError::NoAcceptableCrypto));
        assert!(matches!(accept_answer(&secure, b"garbage"), Err(SdpError::Unparseable(_))));
    }

    #[test]
    fn reinvite_keeps_codec_and_same_offer_same_answer() {
        let first = offer_with(&["m=audio 6000 RTP/AVP 0 8"]);
        let (_, n1) = ans(&first, &OPTIONAL).unwrap();
        assert_eq!(n1.codec, Codec::Pcmu);
        // The peer reorders and moves: keep PCMU, take the new address.
        let moved = sdp_of(&["v=0", "c=IN IP4 10.0.0.9", "m=audio 6100 RTP/AVP 8 0"]);
        let (_, n2) = answer(&moved, &local(), &OPTIONAL, Some(&n1)).unwrap();
        assert_eq!(n2.codec, Codec::Pcmu);
        assert_eq!(n2.remote_rtp, "10.0.0.9:6100".parse().unwrap());
        // PCMU gone: pick anew.
        let only_pcma = offer_with(&["m=audio 6000 RTP/AVP 8"]);
        assert_eq!(answer(&only_pcma, &local(), &OPTIONAL, Some(&n2)).unwrap().1.codec, Codec::Pcma);

        // Same SRTP re-offer: same answer content, our key kept.
        let (sdp1, s1) = ans(&baresip_offer(), &OPTIONAL).unwrap();
        let mut next = local();
        next.session_version += 1;
        let (sdp2, s2) = answer(&baresip_offer(), &next, &OPTIONAL, Some(&s1)).unwrap();
        assert_ne!(sdp1, sdp2);
        assert!(same_session_content(&sdp1, &sdp2));
        assert_eq!(s1, s2);
        // A hold changes the content.
        let hold = String::from_utf8(baresip_offer()).unwrap().replace("a=sendrecv", "a=sendonly");
        let (sdp3, s3) = answer(hold.as_bytes(), &next, &OPTIONAL, Some(&s2)).unwrap();
        assert!(!same_session_content(&sdp1, &sdp3));
        assert_eq!(s3.srtp.unwrap().local_key, s1.srtp.unwrap().local_key);
    }

    #[test]
    fn limits() {
        let big = vec![b'a'; MAX_SDP_LEN + 1];
        assert_eq!(ans(&big, &OPTIONAL).unwrap_err(), SdpError::TooLarge { len: MAX_SDP_LEN + 1 });
        let many_m: Vec<&str> = std::iter::repeat_n("m=audio 0 RTP/AVP 0", 65).collect();
        let e = ans(&offer_with(&many_m), &OPTIONAL).unwrap_err();
        assert_eq!((e.is_malformed(), e), (true, SdpError::TooManyMedia { count: 65 }));
        let mut attrs = vec!["m=audio 6000 RTP/AVP 0"];
        attrs.extend(std::iter::repeat_n("a=x", 257));
        assert_eq!(ans(&offer_with(&attrs), &OPTIONAL).unwrap_err(), SdpError::TooManyAttributes { count: 257 });
        for fmt in ["128", "0 abc", "-1", "99999"] {
            let m = format!("m=audio 6000 RTP/AVP {fmt}");
            let e = ans(&offer_with(&[&m]), &OPTIONAL).unwrap_err();
            assert_eq!((e.is_malformed(), e), (true, SdpError::InvalidFormats { media: 0 }), "{fmt}");
        }
        let e = ans(&offer_with(&["m=audio 70000 RTP/AVP 0"]), &OPTIONAL).unwrap_err();
        assert!(matches!(e, SdpError::Unparseable(_)));
        assert!(e.is_malformed());
        let e = ans(&offer_with(&["m=audio 6000/2 RTP/AVP 0"]), &OPTIONAL).unwrap_err();
        assert_eq!(e, SdpError::UnsupportedTransport { media: 0 });
    }

    /// A small deterministic generator, enough to shake the parsers without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let seeds = [baresip_offer(), offer(&local(), &policy(SrtpPolicy::Mandatory)).0.into_bytes()];
        let (_, pending) = offer(&local(), &policy(SrtpPolicy::Mandatory));
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let policies = [SrtpPolicy::Optional, SrtpPolicy::Mandatory, SrtpPolicy::Off];
        for seed in &seeds {
            for cut in 0..=seed.len() {
                for srtp in policies {
                    let _ = answer(&seed[..cut], &local(), &policy(srtp), None);
                }
                let _ = accept_answer(&pending, &seed[..cut]);
            }
            let alphabet = b" :;/=|-.,0123456789\r\nmacv\x00\xffIP4";
            for _ in 0..3_000 {
                let mut s = seed.clone();
                for _ in 0..(rng.next() % 8 + 1) {
                    let i = (rng.next() % s.len() as u64) as usize;
                    match rng.next() % 3 {
                        0 => s[i] = alphabet[(rng.next() % alphabet.len() as u64) as usize],
                        1 => {
                            s.remove(i);
                        }
                        _ => s.insert(i, alphabet[(rng.next() % alphabet.len() as u64) as usize]),
                    }
                }
                let srtp = policies[(rng.next() % 3) as usize];
                let _ = answer(&s, &local(), &policy(srtp), None);
                let _ = accept_answer(&pending, &s);
            }
        }
        for _ in 0..2_000 {
            let len = (rng.next() % 200) as usize;
            let s: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = answer(&s, &local(), &OPTIONAL, None);
        }
    }
}
