//! The audio the gateway sent to a replayed call: RTP payloads decoded with the `codecs` crate
//! (PCMU, PCMA, AMR-WB in both RFC 4867 layouts, RFC 4733 events) and judged against
//! [`AudioExpect`]: dominant frequency, level, SNR against a reference WAV, digits.

use std::path::Path;

use codecs::amrwb::{AmrWbDecoder, FRAME_SAMPLES};
use codecs::g711::{self, Law};
use codecs::pcm::analysis;
use codecs::rfc4733::EventPayload;
use codecs::rfc4867::{Depacketizer, PacketFrames, PayloadConfig};

use super::expect::AudioExpect;
use crate::sip::sdp::{Codec, Format};

/// What the gateway's answer says it sends: the codec's payload type and the events'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveFormat {
    /// The codec.
    pub codec: Codec,
    /// Its payload type.
    pub pt: u8,
    /// telephone-event's payload type.
    pub event_pt: Option<u8>,
}

impl ReceiveFormat {
    /// The first codec of the gateway's SDP (its answer names the one it picked first).
    pub fn from_sdp(sdp: &[u8]) -> Option<Self> {
        let session = crate::sip::sdp::parse_bounded(sdp).ok()?;
        let index = session.medias.iter().position(crate::sip::sdp::is_enabled_audio)?;
        let line = crate::sip::sdp::read_audio(&session, index).ok()?;
        let (pt, codec) = line.formats.iter().find_map(|(pt, f)| match f {
            Format::Codec(c) => Some((*pt, c.clone())),
            _ => None,
        })?;
        let event_pt =
            line.formats.iter().find_map(|(pt, f)| matches!(f, Format::TelephoneEvent { .. }).then_some(*pt));
        Some(Self { codec, pt, event_pt })
    }

    /// Samples per second of the decoded audio.
    pub fn rate(&self) -> u32 {
        self.codec.clock_rate()
    }
}

/// Decoded audio and events of one call.
#[derive(Clone, Debug, Default)]
pub struct ReceivedAudio {
    /// Sample rate of `pcm` (0 when nothing was negotiated).
    pub rate: u32,
    /// The audio, in arrival order.
    pub pcm: Vec<i16>,
    /// RFC 4733 digits whose end packet arrived.
    pub digits: String,
    /// RTP packets received.
    pub packets: usize,
    /// Packets that could not be decrypted or decoded.
    pub bad: usize,
}

/// Decodes RTP packets (already decrypted) in arrival order.
pub fn decode(format: &ReceiveFormat, packets: &[Vec<u8>]) -> ReceivedAudio {
    let mut out = ReceivedAudio { rate: format.rate(), ..ReceivedAudio::default() };
    let depacketizer = match &format.codec {
        Codec::AmrWb(p) if p.octet_align => Some(Depacketizer::new(PayloadConfig::octet_aligned())),
        Codec::AmrWb(_) => Some(Depacketizer::new(PayloadConfig::bandwidth_efficient())),
        _ => None,
    };
    let mut decoder = depacketizer.as_ref().and_then(|_| AmrWbDecoder::new().ok());
    let mut frames = PacketFrames::new();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut last_event_ts = None;
    for packet in packets {
        out.packets += 1;
        let Some((pt, ts, payload)) = rtp_payload(packet) else {
            out.bad += 1;
            continue;
        };
        if Some(pt) == format.event_pt {
            // One digit per event: its end packet is sent three times with one timestamp.
            if let Ok(ev) = EventPayload::parse(payload)
                && ev.end
                && last_event_ts != Some(ts)
            {
                last_event_ts = Some(ts);
                out.digits.extend(ev.event.dtmf());
            }
            continue;
        }
        if pt != format.pt {
            continue;
        }
        match (&format.codec, depacketizer.as_ref(), decoder.as_mut()) {
            (Codec::Pcmu | Codec::Pcma, _, _) => {
                let law = if format.codec == Codec::Pcmu { Law::Mu } else { Law::A };
                let start = out.pcm.len();
                out.pcm.resize(start + payload.len(), 0);
                match g711::decode(law, payload, &mut out.pcm[start..]) {
                    Ok(n) => out.pcm.truncate(start + n),
                    Err(_) => {
                        out.pcm.truncate(start);
                        out.bad += 1;
                    }
                }
            }
            (Codec::AmrWb(_), Some(d), Some(dec)) => match d.depacketize(payload, &mut frames) {
                Ok(_) => {
                    for f in frames.iter() {
                        if dec.decode(f, &mut pcm).is_ok() {
                            out.pcm.extend_from_slice(&pcm);
                        }
                    }
                }
                Err(_) => out.bad += 1,
            },
            _ => out.bad += 1,
        }
    }
    out
}

/// Payload type, timestamp and payload of an RTP packet (CSRCs, extension and padding skipped).
pub fn rtp_payload(packet: &[u8]) -> Option<(u8, u32, &[u8])> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    Some((packet[1] & 0x7f, ts, packet.get(start..end)?))
}

/// The measured audio, for the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Dominant frequency of the judged part.
    pub hz: f64,
    /// Its RMS level.
    pub dbfs: f64,
    /// Its length.
    pub seconds: f64,
}

/// Judges `audio` against `expect`; returns the measurement and one line per failure.
/// `base` is the directory of the expectations file (for `reference_wav`).
pub fn check(expect: &AudioExpect, audio: &ReceivedAudio, base: &Path) -> (Measured, Vec<String>) {
    let mut failures = Vec::new();
    let rate = audio.rate.max(1);
    let skip = ((expect.skip_seconds.max(0.0) * f64::from(rate)) as usize).min(audio.pcm.len());
    let judged = &audio.pcm[skip..];
    let measured = Measured {
        hz: analysis::dominant_frequency(judged, rate),
        dbfs: analysis::rms_dbfs(judged),
        seconds: judged.len() as f64 / f64::from(rate),
    };
    if measured.seconds < expect.min_seconds {
        failures.push(format!(
            "audio: {:.2} s decoded after the first {:.1} s ({} packets, {} bad), expected at least {:.2} s",
            measured.seconds, expect.skip_seconds, audio.packets, audio.bad, expect.min_seconds
        ));
        return (measured, failures);
    }
    if let Some(hz) = expect.tone_hz
        && (measured.hz - hz).abs() > expect.tolerance_hz
    {
        failures.push(format!(
            "audio: dominant frequency {:.1} Hz, expected {hz:.1} ± {:.1} Hz",
            measured.hz, expect.tolerance_hz
        ));
    }
    if let Some(min) = expect.min_dbfs
        && (measured.dbfs < min || measured.dbfs.is_nan())
    {
        failures.push(format!("audio: level {:.1} dBFS, expected at least {min:.1}", measured.dbfs));
    }
    if let Some(max) = expect.max_dbfs
        && (measured.dbfs > max || measured.dbfs.is_nan())
    {
        failures.push(format!("audio: level {:.1} dBFS, expected at most {max:.1}", measured.dbfs));
    }
    if let Some(wav) = &expect.reference_wav {
        let path = base.join(wav);
        match read_wav(&path) {
            Ok((wav_rate, reference)) if wav_rate == rate => {
                let max_delay = (rate as usize).min(judged.len() / 2);
                let delay = analysis::best_delay(&reference, judged, max_delay);
                let snr = analysis::snr_db(&reference, &judged[delay..]);
                if let Some(min) = expect.min_snr_db
                    && (snr < min || snr.is_nan())
                {
                    failures
                        .push(format!("audio: SNR {snr:.1} dB against {}, expected at least {min:.1}", path.display()));
                }
            }
            Ok((wav_rate, _)) => {
                failures.push(format!("audio: {} is {wav_rate} Hz, the call's audio {rate} Hz", path.display()))
            }
            Err(e) => failures.push(format!("audio: reference {}: {e}", path.display())),
        }
    }
    if let Some(digits) = &expect.digits
        && !audio.digits.contains(digits.as_str())
    {
        failures.push(format!("audio: digits {:?} received, expected {digits:?}", audio.digits));
    }
    (measured, failures)
}

/// A mono 16-bit PCM WAV: its rate and samples.
pub fn read_wav(path: &Path) -> Result<(u32, Vec<i16>), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let (mut pos, mut rate, mut format_ok) = (12, 0, false);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
        let body = bytes.get(pos + 8..pos + 8 + len).ok_or("a chunk runs past the end")?;
        if id == b"fmt " && body.len() >= 16 {
            let (format, channels, bits) = (
                u16::from_le_bytes([body[0], body[1]]),
                u16::from_le_bytes([body[2], body[3]]),
                u16::from_le_bytes([body[14], body[15]]),
            );
            rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            format_ok = format == 1 && channels == 1 && bits == 16;
        } else if id == b"data" {
            if !format_ok {
                return Err("only mono 16-bit PCM is supported".into());
            }
            return Ok((rate, body.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect()));
        }
        pos += 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt, 0, 1];
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn pcmu_tone_is_measured_and_judged() {
        let tone = analysis::tone(8000, 440.0, -6.0, 8000 * 3);
        let packets: Vec<Vec<u8>> = tone
            .chunks(160)
            .enumerate()
            .map(|(i, c)| {
                let mut payload = [0u8; 160];
                g711::encode(Law::Mu, c, &mut payload).unwrap();
                rtp(0, i as u32 * 160, &payload)
            })
            .collect();
        let format = ReceiveFormat { codec: Codec::Pcmu, pt: 0, event_pt: Some(101) };
        let audio = decode(&format, &packets);
        assert_eq!(audio.pcm.len(), 8000 * 3);
        let mut expect = crate::replay::expect::parse("[[call]]\n[call.audio]\ntone_hz = 440.0\nmin_dbfs = -15.0\n")
            .unwrap()
            .calls[0]
            .audio
            .clone()
            .unwrap();
        let (m, failures) = check(&expect, &audio, Path::new("."));
        assert!(failures.is_empty(), "{failures:?} {m:?}");
        expect.tone_hz = Some(1000.0);
        let (_, failures) = check(&expect, &audio, Path::new("."));
        assert_eq!(failures.len(), 1);
        assert!(failures[0].contains("expected 1000.0"), "{failures:?}");
    }

    #[test]
    fn digits_are_read_once_per_event() {
        let end = [5u8, 0x80 | 10, 3, 0x20];
        let packets = vec![rtp(101, 800, &end), rtp(101, 800, &end), rtp(101, 1600, &[9, 0x80, 3, 0x20])];
        let format = ReceiveFormat { codec: Codec::Pcmu, pt: 0, event_pt: Some(101) };
        assert_eq!(decode(&format, &packets).digits, "59");
    }

    #[test]
    fn answers_name_their_codec() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=audio 20000 RTP/AVP 96 101\r\na=rtpmap:96 AMR-WB/16000\r\na=fmtp:96 octet-align=1\r\n\
            a=rtpmap:101 telephone-event/16000\r\na=fmtp:101 0-15\r\n";
        let f = ReceiveFormat::from_sdp(sdp).unwrap();
        assert_eq!((f.pt, f.event_pt, f.rate()), (96, Some(101), 16000));
        assert!(matches!(f.codec, Codec::AmrWb(ref p) if p.octet_align));
    }
}
