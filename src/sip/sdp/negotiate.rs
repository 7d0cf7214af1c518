//! The offer/answer procedures of RFC 3264: answering an offer (§6), making an offer (§5) and
//! taking the answer to it (§7), with the choices CONTRACT §6 fixes.

use super::crypto::{fresh_key, write_crypto};
use super::fmtp::{DTMF_EVENTS, write_amr_wb, write_events};
use super::media::{AudioLine, Format, is_enabled_audio, parse_bounded, read_audio};
use super::write::{Section, write_sdp};
use super::{
    AmrWbParams, Codec, Direction, LocalMedia, Negotiated, Policy, Profile, SdpError, SrtpKeys,
    SrtpPolicy, SrtpSuite,
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
        f.debug_struct("PendingOffer")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
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
        match read_audio(&session, index).and_then(|line| choose(&line, policy, previous)) {
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
                Section::Rejected {
                    media: &media.media,
                    proto: &media.proto,
                    formats: &media.fmt,
                }
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
    let profile = if policy.srtp == SrtpPolicy::Mandatory {
        Profile::Savp
    } else {
        Profile::Avp
    };
    let keys: Vec<_> = if profile.is_secure() {
        (1..)
            .zip(SrtpSuite::ALL)
            .map(|(tag, suite)| (tag, suite, fresh_key(suite)))
            .collect()
    } else {
        Vec::new()
    };

    let mut attributes = Vec::new();
    for &(pt, ref codec) in &OFFERED_CODECS {
        let codec = codec_of(codec);
        attributes.push(format!(
            "rtpmap:{pt} {}/{}",
            codec.encoding_name(),
            codec.clock_rate()
        ));
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
    let formats = OFFERED_CODECS
        .iter()
        .map(|c| c.0)
        .chain(OFFERED_EVENTS.iter().map(|e| e.0));
    let section = Section::Active {
        proto: profile.proto(),
        formats: formats.collect(),
        attributes,
    };
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
    let offered = OFFERED_CODECS
        .iter()
        .any(|(pt, c)| *pt == payload_type && codec_of(c).same_kind(&codec));
    if !offered {
        return Err(SdpError::AnswerCodecNotOffered { pt: payload_type });
    }

    // 3. Events under one of our numbers at the codec's clock.
    let clock_rate = codec.clock_rate();
    let telephone_event = line.formats.iter().find_map(|(pt, f)| match f {
        Format::TelephoneEvent { clock, .. }
            if *clock == clock_rate && OFFERED_EVENTS.contains(&(*pt, *clock)) =>
        {
            Some((*pt, *clock))
        }
        _ => None,
    });

    // 4. Keys: the answer's first usable line must echo one of our tags and suites.
    let srtp = if pending.profile.is_secure() {
        let theirs = line
            .cryptos
            .iter()
            .find_map(|c| c.as_ref().ok())
            .ok_or(SdpError::NoAcceptableCrypto)?;
        let (tag, suite, ours) = pending
            .keys
            .iter()
            .find(|(tag, suite, _)| *tag == theirs.tag && *suite == theirs.suite)
            .ok_or(SdpError::AnswerCryptoNotOffered { tag: theirs.tag })?;
        Some(SrtpKeys {
            suite: *suite,
            tag: *tag,
            remote_key: theirs.key.clone(),
            local_key: ours.clone(),
        })
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

    // 3. Events and comfort noise at the codec's clock (RFC 4733 §2.1, RFC 3389 §5).
    let events = line.formats.iter().find_map(|(pt, f)| match f {
        Format::TelephoneEvent { clock, events } if *clock == clock_rate => Some((*pt, *events)),
        _ => None,
    });
    let comfort_noise = line.formats.iter().find_map(|(pt, f)| match f {
        Format::ComfortNoise { clock } if *clock == clock_rate => Some(*pt),
        _ => None,
    });

    // 4. Keys (RFC 4568 §7.1.2): the first line we can use; on a re-offer that keeps the tag
    //    and suite we keep our key, so an unchanged offer gets an unchanged answer.
    let srtp = if secure {
        let usable = || line.cryptos.iter().filter_map(|c| c.as_ref().ok());
        let kept = previous.and_then(|p| p.srtp.as_ref()).and_then(|prev| {
            usable()
                .find(|c| c.tag == prev.tag && c.suite == prev.suite)
                .map(|c| (c, prev.local_key.clone()))
        });
        let (theirs, local_key) = kept
            .or_else(|| usable().next().map(|c| (c, fresh_key(c.suite))))
            .ok_or(SdpError::NoAcceptableCrypto)?;
        Some(SrtpKeys {
            suite: theirs.suite,
            tag: theirs.tag,
            remote_key: theirs.key.clone(),
            local_key,
        })
    } else {
        None
    };

    let negotiated = Negotiated {
        ptime_ms: ptime(line, codec),
        codec: codec.clone(),
        payload_type,
        clock_rate,
        telephone_event: events.map(|(pt, _)| (pt, clock_rate)),
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
    Ok((negotiated, events.map_or(0, |(_, e)| e)))
}

/// The m-section of our answer for what was agreed.
fn answer_section(n: &Negotiated, events: u16) -> Section<'static> {
    let mut formats = vec![n.payload_type];
    let mut attributes = vec![format!(
        "rtpmap:{} {}/{}",
        n.payload_type,
        n.codec.encoding_name(),
        n.clock_rate
    )];
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
        attributes.push(format!(
            "crypto:{}",
            write_crypto(k.tag, k.suite, &k.local_key)
        ));
    }
    Section::Active {
        proto: n.profile.proto(),
        formats,
        attributes,
    }
}

/// The packetization we send with: the peer's `a=ptime` when within 10–60 ms, else 20; no more
/// than its `a=maxptime`; a whole number of codec frames.
fn ptime(line: &AudioLine, codec: &Codec) -> u32 {
    let frame = codec.frame_ms();
    let mut ms = line
        .ptime
        .filter(|p| (MIN_PTIME_MS..=MAX_PTIME_MS).contains(p))
        .unwrap_or(DEFAULT_PTIME_MS);
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
