//! SDES `a=crypto` (RFC 4568): reading the peer's lines and writing ours.
//!
//! `a=crypto:<tag> <crypto-suite> inline:<key||salt>[|<lifetime>][|<mki>:<length>] [<params>]`
//! (RFC 4568 §9.1). We accept one inline key per line, a lifetime as `2^n` or decimal, and no
//! MKI: an MKI means every SRTP packet of the peer carries that field, which our SRTP contexts
//! would have to strip and check, and none of the peers we target uses it. A line we cannot use
//! is skipped, and the next one may fit (RFC 4568 §7.1.2).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::media::params::SrtpSuite;

/// A usable `a=crypto` line of the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CryptoAttr {
    /// The tag the answer must repeat (RFC 4568 §9.1: 1–9 digits).
    pub(crate) tag: u32,
    /// The suite.
    pub(crate) suite: SrtpSuite,
    /// Master key followed by master salt, [`SrtpSuite::master_len`] bytes.
    pub(crate) key: Vec<u8>,
}

/// Why a crypto line is skipped; the caller only needs to know it was, tests check why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CryptoSkip {
    /// Not `<tag> <suite> <key-params>`.
    Malformed,
    /// A suite we do not run.
    UnknownSuite,
    /// Not `inline:`, or several keys.
    KeyMethod,
    /// Key material that is not base64 or not the suite's length.
    BadKey,
    /// A lifetime that is not `2^n` or decimal within SRTP's 2^48 packets.
    BadLifetime,
    /// An MKI (see the module docs).
    Mki,
    /// A session parameter that changes the protection, like `UNENCRYPTED_SRTP` or `KDR`.
    SessionParam,
}

/// Reads the value of one `a=crypto` attribute.
pub(crate) fn parse_crypto(value: &str) -> Result<CryptoAttr, CryptoSkip> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(tag), Some(suite), Some(key_params)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(CryptoSkip::Malformed);
    };
    let tag = match tag.parse::<u32>() {
        Ok(t) if tag.len() <= 9 && tag.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => return Err(CryptoSkip::Malformed),
    };
    let suite = SrtpSuite::from_name(suite).ok_or(CryptoSkip::UnknownSuite)?;
    // RFC 4568 §6.3: session parameters. A window size hint changes nothing for us; the others
    // change the protection or the key derivation, which our contexts do not do.
    for param in fields {
        if !param.starts_with("WSH=") {
            return Err(CryptoSkip::SessionParam);
        }
    }
    if key_params.contains(';') {
        return Err(CryptoSkip::KeyMethod);
    }
    let Some(("inline", info)) = key_params.split_once(':') else {
        return Err(CryptoSkip::KeyMethod);
    };
    let mut parts = info.split('|');
    let key_b64 = parts.next().unwrap_or_default();
    for part in parts {
        if part.contains(':') {
            return Err(CryptoSkip::Mki);
        }
        if !lifetime_ok(part) {
            return Err(CryptoSkip::BadLifetime);
        }
    }
    let key = KEY_B64.decode(key_b64).map_err(|_| CryptoSkip::BadKey)?;
    if key.len() != suite.master_len() {
        return Err(CryptoSkip::BadKey);
    }
    Ok(CryptoAttr { tag, suite, key })
}

/// Key material for `suite` (master key then master salt) from the caller's random bytes: the
/// suite's own slot, so that an offer's keys for different suites never share bytes.
pub(crate) fn fresh_key(suite: SrtpSuite, keying: &[u8; super::KEYING_LEN]) -> Vec<u8> {
    let slot = SrtpSuite::ALL.iter().position(|s| *s == suite).unwrap_or(0) * super::KEYING_SLOT;
    keying[slot..slot + suite.master_len()].to_vec()
}

/// The value of our `a=crypto` line: no lifetime (RFC 4568 §6.1: the default is the suite's
/// maximum) and no MKI.
pub(crate) fn write_crypto(tag: u32, suite: SrtpSuite, key: &[u8]) -> String {
    format!("{tag} {} inline:{}", suite.name(), KEY_B64.encode(key))
}

/// `2^n` or a decimal number of packets, at most 2^48 (RFC 3711 §9.2).
fn lifetime_ok(s: &str) -> bool {
    match s.strip_prefix("2^") {
        Some(exp) => exp.len() <= 2 && exp.parse::<u32>().is_ok_and(|e| e <= 48),
        None => s.len() <= 15 && s.parse::<u64>().is_ok_and(|n| (1..=1 << 48).contains(&n)),
    }
}

/// Base64 per RFC 4648 §4; we write the padding RFC 4568 asks for and accept keys without it.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4568 §9.1 example key.
    const KEY: &str = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    #[test]
    fn rfc4568_example() {
        let c = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"));
        assert_eq!(c, Err(CryptoSkip::Mki));
        let c = parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20")).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(c.key.len(), 30);
        assert_eq!(write_crypto(1, c.suite, &c.key), format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"));
    }

    #[test]
    fn lifetimes() {
        for ok in ["|2^31", "|2^48", "|1048576", ""] {
            assert!(parse_crypto(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}{ok}")).is_ok());
        }
        for bad in ["|2^49", "|0", "|x", "|2^", "|281474976710657"] {
            assert_eq!(
                parse_crypto(&format!("2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}{bad}")),
                Err(CryptoSkip::BadLifetime),
                "{bad}"
            );
        }
    }

    #[test]
    fn gcm_key_is_28_bytes() {
        let key = KEY_B64.encode([7u8; 28]);
        let c = parse_crypto(&format!("3 AEAD_AES_128_GCM inline:{key}")).unwrap();
        assert_eq!(c.key, vec![7u8; 28]);
        // Without padding too.
        let c = parse_crypto(&format!("3 AEAD_AES_128_GCM inline:{}", key.trim_end_matches('=')));
        assert!(c.is_ok());
        assert_eq!(parse_crypto(&format!("3 AEAD_AES_128_GCM inline:{KEY}")), Err(CryptoSkip::BadKey));
    }

    #[test]
    fn skips() {
        let cases = [
            ("1 F8_128_HMAC_SHA1_80 inline:x", CryptoSkip::UnknownSuite),
            ("1 aes_cm_128_hmac_sha1_80 inline:x", CryptoSkip::UnknownSuite),
            ("1 AES_CM_128_HMAC_SHA1_80", CryptoSkip::Malformed),
            ("x AES_CM_128_HMAC_SHA1_80 inline:x", CryptoSkip::Malformed),
            ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:x", CryptoSkip::Malformed),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:x", CryptoSkip::KeyMethod),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:a;inline:b", CryptoSkip::KeyMethod),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!", CryptoSkip::BadKey),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", CryptoSkip::BadKey),
        ];
        for (line, why) in cases {
            assert_eq!(parse_crypto(line), Err(why), "{line}");
        }
        for param in ["UNENCRYPTED_SRTP", "UNAUTHENTICATED_SRTP", "KDR=1", "FEC_ORDER=FEC_SRTP"] {
            assert_eq!(
                parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} {param}")),
                Err(CryptoSkip::SessionParam)
            );
        }
        assert!(parse_crypto(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} WSH=64")).is_ok());
    }

    #[test]
    fn keys_come_from_their_suites_own_slot_and_round_trip() {
        let keying: [u8; super::super::KEYING_LEN] = std::array::from_fn(|i| i as u8);
        let keys: Vec<Vec<u8>> = SrtpSuite::ALL.iter().map(|s| fresh_key(*s, &keying)).collect();
        for (suite, a) in SrtpSuite::ALL.iter().zip(&keys) {
            assert_eq!(a.len(), suite.master_len());
            assert_eq!(parse_crypto(&write_crypto(9, *suite, a)).unwrap().key, *a);
        }
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert!(a.iter().all(|x| !b.contains(x)), "two suites share key bytes");
            }
        }
    }
}
