//! Participant tokens (CONTRACT §3): minting ES256 JWTs with the node's key, publishing the
//! public keys as a JWKS, and the one verification function that the SIP side, the device
//! signaling and anything else admitting a participant calls.
//!
//! Tokens ride in a SIP `User-to-User` header that voice platforms cap at 350 characters, so the
//! node's tokens are kept at most 300 characters with `;encoding=jwt`: short ids, a short `iss`,
//! no `typ` and no `kid` in the header (verifiers try the node's keys in turn; there are few).
//!
//! Verification takes the time as an argument so that tests can move it; `exp` and `nbf` are
//! checked here, with a small leeway, rather than by the JWT library's own clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ids::{self, ParticipantId, SessionId};
use crate::interconnect::InterconnectMode;

/// `[tokens]` of the config file (read by `crate::config`).
#[derive(Clone, Debug)]
pub struct TokensConfig {
    /// Lifetime of the tokens the node mints.
    pub ttl: Duration,
    /// `iss` of the node's tokens. Short on purpose: tokens must fit a UUI header.
    pub issuer: String,
    /// PEM (PKCS#8) ES256 key to sign with; when empty the node generates one in the state
    /// directory on first start.
    pub signing_key: Option<PathBuf>,
    /// `iss` of an external issuer whose tokens are accepted too.
    pub external_issuer: String,
    /// The external issuer's public key (PEM).
    pub external_public_key: Option<PathBuf>,
    /// The external issuer's keys as a JWKS file.
    pub external_jwks: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// The `aud` of every participant token.
pub const AUDIENCE: &str = "interwork";

/// Longest token text considered at all; anything longer is refused before parsing.
const MAX_TOKEN_LEN: usize = 4096;

/// Length of a generated `jti`.
const JTI_LEN: usize = 8;

/// Why a token was not accepted. Variants are grouped by what the caller answers: the first
/// group is a bad credential (SIP 403), the second a participant that cannot be found (SIP 404).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT at all, or a part of it does not decode.
    #[error("not a well-formed JWT")]
    Malformed,
    /// The header names an algorithm we never accept (`none`, HMAC) or not the key's.
    #[error("algorithm {0} is not accepted")]
    AlgorithmRefused(String),
    /// No configured key matches the header (kid or algorithm).
    #[error("no key of a trusted issuer matches this token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `aud` is not `interwork`.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is not the issuer of the key that verified the token.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A claim every token must carry is missing.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// `exp` has passed (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// The `sub` names no participant.
    #[error("participant {0} does not exist")]
    UnknownParticipant(String),
    /// The participant exists but is in no session (or not in the token's `sid`).
    #[error("participant {0} is not in a session")]
    NotInSession(String),
}

impl TokenError {
    /// Whether the token is fine but names what does not exist (a participant unknown, or in
    /// no session), as opposed to a token that is not acceptable. Each side maps this to its
    /// own wire (SIP 404/403, device close codes).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::UnknownParticipant(_) | Self::NotInSession(_))
    }
}

/// Why the node's signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("{path}: not a PEM PKCS#8 P-256 private key ({reason})")]
    Invalid {
        /// The key file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// The claims of a token the node mints (CONTRACT §3).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Participant id.
    pub sub: String,
    /// Session id, when the token is for one session.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The node's issuer name.
    pub iss: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// Interconnect mode for SIP legs admitted with this token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<InterconnectMode>,
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The participant.
    pub participant: ParticipantId,
    /// The session the token is limited to, if any.
    pub session: Option<SessionId>,
    /// The interconnect mode the token asks for, if any.
    pub mode: Option<InterconnectMode>,
    /// Who issued it.
    pub issuer: String,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
}

/// A verified token whose participant exists and is in a session: what admission needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The token's content.
    pub token: VerifiedToken,
    /// The session the participant is admitted to: the token's `sid`, else the participant's
    /// first session.
    pub session: SessionId,
}

/// What the verifier needs to know about participants: which sessions one is in, or `None`
/// when it does not exist. The rooms implement it.
pub trait ParticipantDirectory {
    /// Sessions of `participant`, or `None` when there is no such participant.
    fn sessions_of(&self, participant: &ParticipantId) -> Option<Vec<SessionId>>;
}

/// The node's ES256 key pair.
pub struct NodeKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    x: String,
    y: String,
}

impl NodeKey {
    /// Loads the key at `path`, or generates one there (mode 0600) when the file does not exist.
    /// Returns the key and whether it was generated.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), KeyError> {
        let io = |source| KeyError::Io { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(pem) => Ok((Self::from_pem(&pem, path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| {
                    KeyError::Invalid { path: path.display().to_string(), reason: "key generation failed".into() }
                })?;
                let pem = pem_encode("PRIVATE KEY", der.as_ref());
                crate::private_file::write_private_file(path, pem.as_bytes()).map_err(io)?;
                Ok((Self::from_pem(&pem, path)?, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Reads a PEM PKCS#8 P-256 private key.
    pub fn from_pem(pem: &str, path: &Path) -> Result<Self, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid { path: path.display().to_string(), reason: reason.into() };
        let der = pem_decode(pem, "PRIVATE KEY").ok_or_else(|| invalid("no PRIVATE KEY block"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| invalid("the PKCS#8 document is not a P-256 key"))?;
        let point = pair.public_key().as_ref();
        // An uncompressed SEC1 point: 0x04, then X and Y of 32 bytes each.
        if point.len() != 65 || point[0] != 0x04 {
            return Err(invalid("unexpected public key encoding"));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|_| invalid("bad public key"))?;
        Ok(Self { encoding: EncodingKey::from_ec_der(&der), decoding, kid: thumbprint(&x, &y), x, y })
    }

    /// The key's id: the start of its RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "use": "sig", "alg": "ES256", "kid": self.kid,
        })
    }
}

/// Mints the node's participant tokens.
#[derive(Clone)]
pub struct Minter {
    key: Arc<NodeKey>,
    issuer: String,
    ttl: Duration,
}

impl Minter {
    /// A minter signing with `key` as `issuer`, tokens valid for `ttl`.
    pub fn new(key: Arc<NodeKey>, issuer: &str, ttl: Duration) -> Self {
        Self { key, issuer: issuer.to_string(), ttl }
    }

    /// A token for `participant`, optionally limited to `session` and carrying a `mode`.
    pub fn mint(
        &self,
        participant: &ParticipantId,
        session: Option<&SessionId>,
        mode: Option<InterconnectMode>,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> String {
        let iat = unix_seconds(now);
        let claims = Claims {
            sub: participant.to_string(),
            sid: session.map(|s| s.to_string()),
            aud: AUDIENCE.into(),
            iss: self.issuer.clone(),
            iat,
            exp: iat + ttl.unwrap_or(self.ttl).as_secs().max(1),
            jti: ids::random_id(JTI_LEN),
            mode,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = None;
        // Signing with a key that was checked when it was loaded cannot fail.
        jsonwebtoken::encode(&header, &claims, &self.key.encoding).expect("ES256 signing with a valid key")
    }
}

/// One key the verifier trusts, and what it accepts.
struct TrustedKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    issuer: String,
}

/// The keys trusted at one time, and the clock leeway.
struct Keyring {
    keys: Vec<TrustedKey>,
    leeway: Duration,
}

/// Checks participant tokens: the node's own and an external issuer's. The external keys can
/// be reloaded while the daemon runs (SIGHUP); a check uses the keys of the moment it starts.
pub struct Verifier {
    ring: std::sync::RwLock<std::sync::Arc<Keyring>>,
}

/// Why the external issuer's keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ExternalKeyError {
    /// The config key naming the file.
    pub key: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl Verifier {
    /// A verifier trusting the node's key and, when configured, the external issuer's keys.
    pub fn new(node: &NodeKey, config: &TokensConfig) -> Result<Self, ExternalKeyError> {
        Ok(Self { ring: std::sync::RwLock::new(std::sync::Arc::new(Keyring::load(node, config)?)) })
    }

    /// Reads the external issuer's keys and the leeway again; on an error the keys in use stay.
    /// Returns how many keys are trusted now.
    pub fn reload(&self, node: &NodeKey, config: &TokensConfig) -> Result<usize, ExternalKeyError> {
        let ring = std::sync::Arc::new(Keyring::load(node, config)?);
        let count = ring.keys.len();
        *self.ring.write().unwrap_or_else(std::sync::PoisonError::into_inner) = ring;
        Ok(count)
    }

    /// Checks signature, algorithm, audience, issuer, `exp` and `nbf` at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, TokenError> {
        self.keys().verify(token, now)
    }

    /// The keys of the moment: a check keeps them even if a reload replaces them meanwhile.
    fn keys(&self) -> Arc<Keyring> {
        self.ring.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// [`Verifier::verify`] for one owner that remembers the tokens it saw: a token whose
    /// signature, audience and issuer passed with the keys in use is not checked again (a
    /// participant calling back costs a lookup, not an ECDSA verification); its times are,
    /// every time. New keys (a reload) forget every remembered token.
    pub fn verify_remembered(
        &self,
        token: &str,
        now: SystemTime,
        memory: &mut VerifiedTokens,
    ) -> Result<VerifiedToken, TokenError> {
        let ring = self.keys();
        if !memory.ring.as_ref().is_some_and(|r| Arc::ptr_eq(r, &ring)) {
            memory.claims.clear();
            memory.ring = Some(ring.clone());
        }
        if let Some(claims) = memory.claims.get(token) {
            return ring.check_times(claims.clone(), now);
        }
        let claims = ring.verify_signature(token)?;
        if memory.claims.len() >= MAX_REMEMBERED_TOKENS
            && let Some(any) = memory.claims.keys().next().cloned()
        {
            // Bounded, one out for one in: past the bound, callers in turn still find most of
            // their tokens (clearing it all would make every one of them verify again).
            memory.claims.remove(&any);
        }
        memory.claims.insert(token.into(), claims.clone());
        ring.check_times(claims, now)
    }

    /// [`Verifier::verify`], then checks that the participant exists and is in a session (the
    /// token's `sid` when it has one). This is the admission check of CONTRACT §3 and §5.
    pub fn verify_participant(
        &self,
        token: &str,
        now: SystemTime,
        directory: &dyn ParticipantDirectory,
    ) -> Result<Admission, TokenError> {
        admission(self.verify(token, now)?, directory)
    }
}

/// Most tokens a [`VerifiedTokens`] remembers (each some hundreds of bytes: a few MB at most).
/// Only tokens that passed are remembered, so their number is the participants the accounts
/// made, not what a flood sends; an account of thousands calling in turn fits.
pub const MAX_REMEMBERED_TOKENS: usize = 16_384;

/// The tokens one owner (the SIP endpoint) has verified with the keys in use, for
/// [`Verifier::verify_remembered`]. Owned, not shared: no lock.
#[derive(Default)]
pub struct VerifiedTokens {
    /// The keys the remembered tokens were verified with.
    ring: Option<Arc<Keyring>>,
    /// Claims by the whole token text (signature included).
    claims: HashMap<Box<str>, VerifyClaims>,
}

impl VerifiedTokens {
    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

/// Admission of a verified token: the participant exists and is in a session (the token's
/// `sid` when it has one).
pub fn admission(token: VerifiedToken, directory: &dyn ParticipantDirectory) -> Result<Admission, TokenError> {
    let sessions = directory
        .sessions_of(&token.participant)
        .ok_or_else(|| TokenError::UnknownParticipant(token.participant.to_string()))?;
    let session = match &token.session {
        Some(sid) => sessions.iter().find(|s| *s == sid).cloned(),
        None => sessions.first().cloned(),
    }
    .ok_or_else(|| TokenError::NotInSession(token.participant.to_string()))?;
    Ok(Admission { token, session })
}

impl Keyring {
    fn load(node: &NodeKey, config: &TokensConfig) -> Result<Self, ExternalKeyError> {
        let mut keys = vec![TrustedKey {
            kid: Some(node.kid.clone()),
            algorithm: Algorithm::ES256,
            key: node.decoding.clone(),
            issuer: config.issuer.clone(),
        }];
        if let Some(path) = &config.external_public_key {
            let key = "tokens.external_public_key";
            let pem = std::fs::read_to_string(path).map_err(|e| ExternalKeyError { key, reason: e.to_string() })?;
            let (algorithm, decoding) = public_key_from_pem(&pem).map_err(|reason| ExternalKeyError { key, reason })?;
            keys.push(TrustedKey { kid: None, algorithm, key: decoding, issuer: config.external_issuer.clone() });
        }
        if let Some(path) = &config.external_jwks {
            let key = "tokens.external_jwks";
            let text = std::fs::read_to_string(path).map_err(|e| ExternalKeyError { key, reason: e.to_string() })?;
            let set: jsonwebtoken::jwk::JwkSet =
                serde_json::from_str(&text).map_err(|e| ExternalKeyError { key, reason: e.to_string() })?;
            if set.keys.is_empty() {
                return Err(ExternalKeyError { key, reason: "the JWKS holds no keys".into() });
            }
            for jwk in &set.keys {
                let algorithm = jwk_algorithm(jwk).map_err(|reason| ExternalKeyError { key, reason })?;
                let decoding = DecodingKey::from_jwk(jwk)
                    .map_err(|e| ExternalKeyError { key, reason: format!("unusable key: {e}") })?;
                keys.push(TrustedKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key: decoding,
                    issuer: config.external_issuer.clone(),
                });
            }
        }
        Ok(Self { keys, leeway: config.leeway })
    }

    fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, TokenError> {
        self.check_times(self.verify_signature(token)?, now)
    }

    /// Shape, algorithm, key, signature, audience and issuer: everything but the times.
    fn verify_signature(&self, token: &str) -> Result<VerifyClaims, TokenError> {
        // 1. Shape and header, read by hand so that `none` and HMAC get a precise refusal.
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let (alg, kid) = raw_header(token)?;
        let algorithm = match alg.as_str() {
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "RS256" => Algorithm::RS256,
            "PS256" => Algorithm::PS256,
            "EdDSA" => Algorithm::EdDSA,
            _ => return Err(TokenError::AlgorithmRefused(alg)),
        };
        // 2. Candidate keys: the algorithm must be the key's own (no RS/HS confusion), and a
        //    kid, when given, must match.
        let candidates: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.algorithm == algorithm)
            .filter(|k| match (&kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(if self.keys.iter().any(|k| k.algorithm == algorithm) {
                TokenError::UnknownKey
            } else {
                TokenError::AlgorithmRefused(alg)
            });
        }
        // 3. Signature, audience and issuer; the first key that verifies wins.
        let mut last = TokenError::BadSignature;
        for candidate in candidates {
            let mut validation = Validation::new(algorithm);
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation.set_audience(&[AUDIENCE]);
            validation.set_issuer(&[&candidate.issuer]);
            validation.set_required_spec_claims(&["sub", "aud", "exp", "iss"]);
            match jsonwebtoken::decode::<VerifyClaims>(token, &candidate.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => TokenError::BadSignature,
                        ErrorKind::InvalidAudience => TokenError::WrongAudience,
                        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
                        _ => TokenError::Malformed,
                    };
                    // A key that verified the signature but refused a claim is the answer.
                    if last != TokenError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn check_times(&self, claims: VerifyClaims, now: SystemTime) -> Result<VerifiedToken, TokenError> {
        let now = unix_seconds(now);
        let leeway = self.leeway.as_secs();
        let exp = claims.exp.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
        if now > exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        if !ids::is_valid_id(&claims.sub) || claims.sid.as_deref().is_some_and(|s| !ids::is_valid_id(s)) {
            return Err(TokenError::Malformed);
        }
        Ok(VerifiedToken {
            participant: ParticipantId::from(claims.sub),
            session: claims.sid.map(SessionId::from),
            mode: claims.mode,
            issuer: claims.iss,
            expires_at: exp,
        })
    }
}

/// The claims read when verifying; `aud` is checked by the library and may be a list.
#[derive(Clone, Deserialize)]
struct VerifyClaims {
    sub: String,
    #[serde(default)]
    sid: Option<String>,
    iss: String,
    /// Optional here so that its absence is reported as such, not as malformed JSON.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    mode: Option<InterconnectMode>,
}

/// The header's `alg` and `kid`, read without trusting anything else in it.
fn raw_header(token: &str) -> Result<(String, Option<String>), TokenError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let first = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(first).map_err(|_| TokenError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    Ok((header.alg, header.kid))
}

/// The algorithm a JWK's key is used with: its `alg` when given, else the one its type implies.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Algorithm, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err("unsupported elliptic curve".into()),
        },
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) keys are never accepted".into()),
        #[allow(unreachable_patterns)]
        _ => return Err("unsupported key type".into()),
    };
    Ok(match jwk.common.key_algorithm {
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(other) => return Err(format!("algorithm {other:?} is not accepted")),
        None => implied,
    })
}

/// Reads an external issuer's public key (PEM SubjectPublicKeyInfo) and the one algorithm it
/// may be used with, told by the key's algorithm identifier.
fn public_key_from_pem(pem: &str) -> Result<(Algorithm, DecodingKey), String> {
    const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let der = pem_decode(pem, "PUBLIC KEY").ok_or("no PUBLIC KEY block")?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let bad = |e: jsonwebtoken::errors::Error| format!("unusable key: {e}");
    if has(OID_P256) {
        Ok((Algorithm::ES256, DecodingKey::from_ec_pem(pem.as_bytes()).map_err(bad)?))
    } else if has(OID_P384) {
        Ok((Algorithm::ES384, DecodingKey::from_ec_pem(pem.as_bytes()).map_err(bad)?))
    } else if has(OID_ED25519) {
        Ok((Algorithm::EdDSA, DecodingKey::from_ed_pem(pem.as_bytes()).map_err(bad)?))
    } else if has(OID_RSA) {
        Ok((Algorithm::RS256, DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(bad)?))
    } else {
        Err("not a P-256, P-384, Ed25519 or RSA public key".into())
    }
}

/// The node's public keys as a JWKS document, for `/.well-known/jwks.json`.
pub fn jwks(node: &NodeKey) -> serde_json::Value {
    serde_json::json!({ "keys": [node.jwk()] })
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn thumbprint(x: &str, y: &str) -> String {
    // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())[..16].to_string()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Directory(HashMap<ParticipantId, Vec<SessionId>>);

    impl ParticipantDirectory for Directory {
        fn sessions_of(&self, p: &ParticipantId) -> Option<Vec<SessionId>> {
            self.0.get(p).cloned()
        }
    }

    /// The config file's defaults.
    fn config() -> TokensConfig {
        TokensConfig {
            ttl: Duration::from_secs(3600),
            issuer: "iw".into(),
            signing_key: None,
            external_issuer: String::new(),
            external_public_key: None,
            external_jwks: None,
            leeway: Duration::from_secs(30),
        }
    }

    fn node_key(dir: &Path) -> NodeKey {
        NodeKey::load_or_generate(&dir.join("key.pem")).unwrap().0
    }

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_000_000)
    }

    fn sign(header: &serde_json::Value, claims: &serde_json::Value, sig: &str) -> String {
        format!("{}.{}.{sig}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    fn setup() -> (tempfile::TempDir, Arc<NodeKey>, Minter, Verifier) {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(node_key(dir.path()));
        let cfg = config();
        let minter = Minter::new(key.clone(), &cfg.issuer, cfg.ttl);
        let verifier = Verifier::new(&key, &cfg).unwrap();
        (dir, key, minter, verifier)
    }

    #[test]
    fn a_minted_token_verifies_and_carries_its_claims() {
        let (_dir, _key, minter, verifier) = setup();
        let p = ParticipantId::generate();
        let s = SessionId::generate();
        let token = minter.mint(&p, Some(&s), Some(InterconnectMode::Bridge), None, t0());
        let v = verifier.verify(&token, t0()).unwrap();
        assert_eq!(v.participant, p);
        assert_eq!(v.session, Some(s));
        assert_eq!(v.mode, Some(InterconnectMode::Bridge));
        assert_eq!(v.expires_at, unix_seconds(t0()) + 3600);
    }

    #[test]
    fn a_node_token_with_encoding_fits_300_characters() {
        let (_dir, _key, minter, _verifier) = setup();
        let p = ParticipantId::generate();
        let s = SessionId::generate();
        for session in [None, Some(&s)] {
            let uui = format!("{};encoding=jwt", minter.mint(&p, session, None, None, t0()));
            assert!(uui.len() <= 300, "{} characters: {uui}", uui.len());
        }
        // With every optional claim the token still fits the 350 characters voice platforms allow.
        let uui = format!("{};encoding=jwt", minter.mint(&p, Some(&s), Some(InterconnectMode::Conference), None, t0()));
        assert!(uui.len() <= 350, "{} characters", uui.len());
    }

    #[test]
    fn the_key_is_generated_once_with_mode_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let (first, generated) = NodeKey::load_or_generate(&path).unwrap();
        assert!(generated);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, generated) = NodeKey::load_or_generate(&path).unwrap();
        assert!(!generated);
        assert_eq!(first.kid(), again.kid());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(NodeKey::load_or_generate(&path), Err(KeyError::Invalid { .. })));
    }

    #[test]
    fn expiry_and_not_before_use_the_given_clock_with_leeway() {
        let (_dir, _key, minter, verifier) = setup();
        let p = ParticipantId::generate();
        let token = minter.mint(&p, None, None, Some(Duration::from_secs(60)), t0());
        let at = |s| t0() + Duration::from_secs(s);
        assert!(verifier.verify(&token, at(60 + 30)).is_ok(), "inside the leeway");
        assert_eq!(verifier.verify(&token, at(60 + 31)), Err(TokenError::Expired));
    }

    #[test]
    fn not_before_in_the_future_is_refused() {
        let (dir, _key, _minter, verifier) = setup();
        let pem = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
        let enc = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let now = unix_seconds(t0());
        let claims =
            serde_json::json!({"sub": "abc", "aud": AUDIENCE, "iss": "iw", "exp": now + 600, "nbf": now + 120});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &enc).unwrap();
        assert_eq!(verifier.verify(&token, t0()), Err(TokenError::NotYetValid));
    }

    #[test]
    fn alg_none_and_hmac_confusion_are_refused() {
        let (_dir, key, _minter, verifier) = setup();
        let now = unix_seconds(t0());
        let claims = serde_json::json!({"sub": "abc", "aud": AUDIENCE, "iss": "iw", "exp": now + 600});
        let none = sign(&serde_json::json!({"alg": "none"}), &claims, "");
        assert_eq!(verifier.verify(&none, t0()), Err(TokenError::AlgorithmRefused("none".into())));
        // HS256 keyed with the public key's bytes: the classic confusion attack.
        let secret = serde_json::to_vec(&key.jwk()).unwrap();
        let hs =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(verifier.verify(&hs, t0()), Err(TokenError::AlgorithmRefused("HS256".into())));
        // RS256 claimed over an EC node key: no key of that algorithm.
        let rs = sign(&serde_json::json!({"alg": "RS256"}), &claims, "AAAA");
        assert_eq!(verifier.verify(&rs, t0()), Err(TokenError::AlgorithmRefused("RS256".into())));
    }

    #[test]
    fn tampering_audience_issuer_and_garbage_are_refused() {
        let (dir, _key, minter, verifier) = setup();
        let p = ParticipantId::generate();
        let token = minter.mint(&p, None, None, None, t0());
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = "someoneelse".into();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert_eq!(verifier.verify(&parts.join("."), t0()), Err(TokenError::BadSignature));

        let pem = std::fs::read_to_string(dir.path().join("key.pem")).unwrap();
        let enc = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let now = unix_seconds(t0());
        let wrong_aud = serde_json::json!({"sub": "abc", "aud": "other", "iss": "iw", "exp": now + 600});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &wrong_aud, &enc).unwrap();
        assert_eq!(verifier.verify(&t, t0()), Err(TokenError::WrongAudience));
        let wrong_iss = serde_json::json!({"sub": "abc", "aud": AUDIENCE, "iss": "evil", "exp": now + 600});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &wrong_iss, &enc).unwrap();
        assert_eq!(verifier.verify(&t, t0()), Err(TokenError::WrongIssuer));
        let no_exp = serde_json::json!({"sub": "abc", "aud": AUDIENCE, "iss": "iw"});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &no_exp, &enc).unwrap();
        assert_eq!(verifier.verify(&t, t0()), Err(TokenError::MissingClaim("exp".into())));

        for garbage in ["", "a.b", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.!!!.x", &"a".repeat(5000)] {
            assert!(verifier.verify(garbage, t0()).is_err(), "{garbage:?}");
        }
        // A token signed by another node's key.
        let other = tempfile::tempdir().unwrap();
        let other = Minter::new(Arc::new(node_key(other.path())), "iw", Duration::from_secs(60));
        assert_eq!(verifier.verify(&other.mint(&p, None, None, None, t0()), t0()), Err(TokenError::BadSignature));
    }

    #[test]
    fn admission_needs_an_existing_participant_in_a_session() {
        let (_dir, _key, minter, verifier) = setup();
        let (inside, lonely, ghost) = (ParticipantId::generate(), ParticipantId::generate(), ParticipantId::generate());
        let (s1, s2) = (SessionId::generate(), SessionId::generate());
        let dir = Directory(HashMap::from([(inside.clone(), vec![s1.clone()]), (lonely.clone(), vec![])]));
        let admit = |p: &ParticipantId, s: Option<&SessionId>| {
            verifier.verify_participant(&minter.mint(p, s, None, None, t0()), t0(), &dir)
        };
        assert_eq!(admit(&inside, None).unwrap().session, s1);
        assert_eq!(admit(&inside, Some(&s1)).unwrap().session, s1);
        let err = admit(&inside, Some(&s2)).unwrap_err();
        assert_eq!((err.is_not_found(), err), (true, TokenError::NotInSession(inside.to_string())));
        assert!(admit(&lonely, None).unwrap_err().is_not_found());
        assert_eq!(admit(&ghost, None).unwrap_err(), TokenError::UnknownParticipant(ghost.to_string()));
        assert!(!verifier.verify_participant("x.y.z", t0(), &dir).unwrap_err().is_not_found());
    }

    #[test]
    fn an_external_issuer_by_jwks_or_public_key_is_trusted() {
        let (dir, key, _minter, _verifier) = setup();
        // The external issuer: another P-256 key, published as a JWKS file or a PEM public key.
        let ext_dir = tempfile::tempdir().unwrap();
        let ext = node_key(ext_dir.path());
        let ext_pem = std::fs::read_to_string(ext_dir.path().join("key.pem")).unwrap();
        let ext_enc = EncodingKey::from_ec_pem(ext_pem.as_bytes()).unwrap();
        let jwks_path = dir.path().join("ext.json");
        std::fs::write(&jwks_path, jwks(&ext).to_string()).unwrap();
        let der = pem_decode(&ext_pem, "PRIVATE KEY").unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
        let spki = spki_p256(pair.public_key().as_ref());
        let pub_path = dir.path().join("ext.pem");
        std::fs::write(&pub_path, pem_encode("PUBLIC KEY", &spki)).unwrap();

        let now = unix_seconds(t0());
        let claims =
            serde_json::json!({"sub": "p1", "aud": [AUDIENCE], "iss": "idp", "exp": now + 60, "mode": "conference"});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &ext_enc).unwrap();
        let wrong_iss = serde_json::json!({"sub": "p1", "aud": AUDIENCE, "iss": "iw", "exp": now + 60});
        let impostor = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &wrong_iss, &ext_enc).unwrap();

        for (jwks_file, pem_file) in [(Some(jwks_path.clone()), None), (None, Some(pub_path.clone()))] {
            let mut cfg = config();
            cfg.external_issuer = "idp".into();
            cfg.external_jwks = jwks_file;
            cfg.external_public_key = pem_file;
            let verifier = Verifier::new(&key, &cfg).unwrap();
            let v = verifier.verify(&token, t0()).unwrap();
            assert_eq!((v.participant.as_str(), v.issuer.as_str()), ("p1", "idp"));
            assert_eq!(v.mode, Some(InterconnectMode::Conference));
            // The external key cannot speak for the node's issuer.
            assert!(verifier.verify(&impostor, t0()).is_err());
        }
        // Without the external issuer configured, its tokens are refused.
        let verifier = Verifier::new(&key, &config()).unwrap();
        assert!(verifier.verify(&token, t0()).is_err());

        // Reloaded (SIGHUP) with the issuer configured: accepted from then on.
        let mut cfg = config();
        cfg.external_issuer = "idp".into();
        cfg.external_jwks = Some(jwks_path.clone());
        assert_eq!(verifier.reload(&key, &cfg).unwrap(), 2);
        assert!(verifier.verify(&token, t0()).is_ok());
        // A reload that fails keeps the keys in use.
        std::fs::write(&jwks_path, "{\"keys\": []}").unwrap();
        assert!(verifier.reload(&key, &cfg).is_err());
        assert!(verifier.verify(&token, t0()).is_ok());

        // Remembered tokens follow the keys: once a reload drops the issuer, its token is
        // refused again although it was remembered.
        let mut memory = VerifiedTokens::default();
        assert!(verifier.verify_remembered(&token, t0(), &mut memory).is_ok());
        assert!(verifier.verify_remembered(&token, t0(), &mut memory).is_ok());
        assert_eq!(memory.len(), 1);
        assert_eq!(verifier.reload(&key, &config()).unwrap(), 1);
        assert!(verifier.verify_remembered(&token, t0(), &mut memory).is_err());
        assert!(memory.is_empty());
    }

    #[test]
    fn a_remembered_token_still_expires_and_bad_ones_are_not_remembered() {
        let (_dir, _key, minter, verifier) = setup();
        let p = ParticipantId::generate();
        let token = minter.mint(&p, None, None, Some(Duration::from_secs(60)), t0());
        let mut memory = VerifiedTokens::default();
        let first = verifier.verify_remembered(&token, t0(), &mut memory).unwrap();
        assert_eq!(first, verifier.verify(&token, t0()).unwrap());
        assert_eq!(verifier.verify_remembered(&token, t0(), &mut memory).unwrap(), first);
        assert_eq!(memory.len(), 1);
        // Past exp and the leeway, the remembered claims no longer admit it.
        let later = t0() + Duration::from_secs(3600);
        assert_eq!(verifier.verify_remembered(&token, later, &mut memory), Err(TokenError::Expired));
        // A forged signature is refused every time and never remembered.
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 64]));
        for _ in 0..2 {
            assert_eq!(verifier.verify_remembered(&forged, t0(), &mut memory), Err(TokenError::BadSignature));
        }
        assert_eq!(memory.len(), 1);
        // Bounded, and past the bound one token is forgotten for each new one: most stay.
        for _ in 0..MAX_REMEMBERED_TOKENS + 10 {
            let t = minter.mint(&ParticipantId::generate(), None, None, None, t0());
            verifier.verify_remembered(&t, t0(), &mut memory).unwrap();
            assert!(memory.len() <= MAX_REMEMBERED_TOKENS);
        }
        assert_eq!(memory.len(), MAX_REMEMBERED_TOKENS, "full, not started over");
    }

    #[test]
    fn jwks_publishes_the_node_key() {
        let (_dir, key, _minter, _verifier) = setup();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks(&key)).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].common.key_id.as_deref(), Some(key.kid()));
        assert_eq!(jwk_algorithm(&set.keys[0]).unwrap(), Algorithm::ES256);
    }

    /// SubjectPublicKeyInfo for an uncompressed P-256 point (RFC 5480).
    fn spki_p256(point: &[u8]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(point);
        der
    }
}
