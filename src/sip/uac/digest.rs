//! Digest access authentication for requests we send (RFC 3261 §22, RFC 7616, RFC 8760):
//! reading a `WWW-Authenticate` / `Proxy-Authenticate` challenge and answering it with an
//! `Authorization` / `Proxy-Authorization` value. MD5, SHA-256 and SHA-512-256, each also as
//! `-sess`; `qop=auth` with `nc` and `cnonce` when the challenge offers it, the RFC 2069 form
//! when it offers no qop. `auth-int` alone is refused: nothing we send needs it and a server
//! that requires only it is rare.
//!
//! Pure: the client nonce is an input, so answers are reproducible in tests.

use std::fmt::Write as _;

use md5::Digest as _;

/// A hash algorithm a challenge may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617; still what most trunks send).
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
    /// SHA-512/256 (RFC 7616).
    Sha512_256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
            Self::Sha512_256 => "SHA-512-256",
        }
    }

    fn hash(self, data: &str) -> String {
        match self {
            Self::Md5 => hex(&md5::Md5::digest(data.as_bytes())),
            Self::Sha256 => hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data.as_bytes()).as_ref()),
            Self::Sha512_256 => {
                hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512_256, data.as_bytes()).as_ref())
            }
        }
    }
}

/// A parsed challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// Returned unchanged.
    pub opaque: Option<String>,
    /// The hash.
    pub algorithm: Algorithm,
    /// `-sess` variant: A1 includes the nonces.
    pub session: bool,
    /// The server offers `qop=auth` (else the RFC 2069 form is used).
    pub qop_auth: bool,
    /// The previous answer was refused only because the nonce went stale: retry with this one.
    pub stale: bool,
    /// Whether it came in `Proxy-Authenticate` (answered in `Proxy-Authorization`).
    pub proxy: bool,
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// Not a Digest challenge.
    #[error("not a Digest challenge")]
    NotDigest,
    /// A required parameter is missing.
    #[error("the challenge has no {0}")]
    Missing(&'static str),
    /// The algorithm is not one we implement.
    #[error("unsupported digest algorithm {0}")]
    Algorithm(String),
    /// qop offered, but not `auth`.
    #[error("the challenge offers no qop we support: {0}")]
    Qop(String),
}

impl Challenge {
    /// Parses a `WWW-Authenticate` (or, with `proxy`, `Proxy-Authenticate`) value.
    pub fn parse(value: &str, proxy: bool) -> Result<Self, ChallengeError> {
        let value = value.trim_start();
        let rest = match value.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("Digest") => rest,
            _ => return Err(ChallengeError::NotDigest),
        };
        let params = auth_params(rest);
        let get = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let realm = get("realm").ok_or(ChallengeError::Missing("realm"))?.to_string();
        let nonce = get("nonce").ok_or(ChallengeError::Missing("nonce"))?.to_string();
        let algorithm_name = get("algorithm").unwrap_or("MD5");
        let (base, session) = match algorithm_name.len().checked_sub(5) {
            Some(i) if algorithm_name.is_char_boundary(i) && algorithm_name[i..].eq_ignore_ascii_case("-sess") => {
                (&algorithm_name[..i], true)
            }
            _ => (algorithm_name, false),
        };
        let algorithm = match base.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "SHA-256" => Algorithm::Sha256,
            "SHA-512-256" => Algorithm::Sha512_256,
            _ => return Err(ChallengeError::Algorithm(algorithm_name.to_string())),
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(qop) if qop.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")) => true,
            Some(qop) => return Err(ChallengeError::Qop(qop.to_string())),
        };
        Ok(Self {
            realm,
            nonce,
            opaque: get("opaque").map(str::to_string),
            algorithm,
            session,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            proxy,
        })
    }

    /// The header that answers it.
    pub fn answer_header(&self) -> &'static str {
        if self.proxy { "Proxy-Authorization" } else { "Authorization" }
    }

    /// The answer's value for `method` to `uri`, as the `nc`-th use of this nonce with client
    /// nonce `cnonce`.
    pub fn answer(&self, username: &str, password: &str, method: &str, uri: &str, nc: u32, cnonce: &str) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&format!("{username}:{}:{password}", self.realm));
        if self.session {
            ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = alg.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}{}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            alg.name(),
            if self.session { "-sess" } else { "" },
        );
        if self.qop_auth {
            let _ = write!(out, ", qop=auth, nc={nc}, cnonce=\"{}\"", quote(cnonce));
        }
        if let Some(opaque) = &self.opaque {
            let _ = write!(out, ", opaque=\"{}\"", quote(opaque));
        }
        out
    }
}

/// `name=value` pairs of an auth header, values unquoted (commas inside quotes kept).
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_string();
        if name.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied().filter(|c| *c != ',') {
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name, value));
    }
}

/// A quoted-string's content: `"` and `\` escaped, line breaks dropped (they would end the header).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|c| *c != '\r' && *c != '\n') {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(answer: &str) -> &str {
        let i = answer.find("response=\"").unwrap() + 10;
        &answer[i..i + answer[i..].find('"').unwrap()]
    }

    /// RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
    #[test]
    fn rfc_7616_examples() {
        let header = |alg: &str| {
            format!(
                "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            )
        };
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let md5 = Challenge::parse(&header("MD5"), false).unwrap();
        let a = md5.answer("Mufasa", "Circle of Life", "GET", "/dir/index.html", 1, cnonce);
        assert_eq!(response_of(&a), "8ca523f5e9506fed4657c9700eebdbec");
        assert!(a.contains("nc=00000001") && a.contains("qop=auth,") && a.contains("opaque=\"FQhe/"), "{a}");
        let sha = Challenge::parse(&header("SHA-256"), false).unwrap();
        let a = sha.answer("Mufasa", "Circle of Life", "GET", "/dir/index.html", 1, cnonce);
        assert_eq!(response_of(&a), "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        assert!(a.contains("algorithm=SHA-256"), "{a}");
    }

    /// RFC 2617 §3.5's example (MD5, qop=auth, no algorithm parameter).
    #[test]
    fn rfc_2617_example() {
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\",qop=\"auth,auth-int\",\
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\",opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
            true,
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.answer_header(), "Proxy-Authorization");
        let a = c.answer("Mufasa", "Circle Of Life", "GET", "/dir/index.html", 1, "0a4f113b");
        assert_eq!(response_of(&a), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn without_qop_the_rfc_2069_form_has_no_nc_or_cnonce() {
        let c = Challenge::parse("Digest realm=\"r\", nonce=\"n\"", false).unwrap();
        let a = c.answer("u", "p", "INVITE", "sip:x@y", 1, "c");
        // H(H(u:r:p):n:H(INVITE:sip:x@y)), computed independently of `answer`.
        let ha1 = Algorithm::Md5.hash("u:r:p");
        let ha2 = Algorithm::Md5.hash("INVITE:sip:x@y");
        assert_eq!(response_of(&a), Algorithm::Md5.hash(&format!("{ha1}:n:{ha2}")));
        assert!(!a.contains("nc=") && !a.contains("cnonce"), "{a}");
    }

    #[test]
    fn sess_stale_and_nc_are_honoured() {
        let c =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=auth, algorithm=SHA-256-sess, stale=TRUE", false)
                .unwrap();
        assert!(c.session && c.stale && c.algorithm == Algorithm::Sha256);
        let a = c.answer("u", "p", "BYE", "sip:x@y", 3, "cn");
        assert!(a.contains("nc=00000003") && a.contains("algorithm=SHA-256-sess"), "{a}");
        let ha1 = Algorithm::Sha256.hash(&format!("{}:n:cn", Algorithm::Sha256.hash("u:r:p")));
        let ha2 = Algorithm::Sha256.hash("BYE:sip:x@y");
        assert_eq!(response_of(&a), Algorithm::Sha256.hash(&format!("{ha1}:n:00000003:cn:auth:{ha2}")));
    }

    #[test]
    fn bad_challenges_are_refused_with_a_reason() {
        assert_eq!(Challenge::parse("Basic realm=\"x\"", false), Err(ChallengeError::NotDigest));
        assert_eq!(Challenge::parse("Digest nonce=\"n\"", false), Err(ChallengeError::Missing("realm")));
        assert_eq!(Challenge::parse("Digest realm=\"r\"", false), Err(ChallengeError::Missing("nonce")));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1", false),
            Err(ChallengeError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"", false),
            Err(ChallengeError::Qop(_))
        ));
        // Hostile input: quotes, escapes and line breaks never escape the quoted string.
        let c = Challenge::parse("Digest realm=\"a\\\"b,c\", nonce=\"n\r\nX: y\"", false).unwrap();
        assert_eq!(c.realm, "a\"b,c");
        let a = c.answer("u\"", "p", "INVITE", "sip:x", 1, "c");
        assert!(!a.contains('\n') && a.contains("realm=\"a\\\"b,c\"") && a.contains("username=\"u\\\"\""), "{a}");
        for junk in ["", "Digest", "Digest ,,,", "Digest realm", "Digest realm=\"unterminated", "Digest =x"] {
            let _ = Challenge::parse(junk, false);
        }
    }
}
