//! User-to-User (RFC 7433): finds the participant token among the `User-to-User` values of an
//! INVITE.
//!
//! CONTRACT §5: the participant is named by `User-to-User: <jwt>;encoding=jwt`. Voice platforms
//! send more than one element, as a repeated header or a comma-separated list, e.g.
//! `<callId>;encoding=base64,<jwt>;encoding=jwt`. The one element with `encoding=jwt` is the
//! token; the others are kept for logs and callbacks.
//!
//! Grammar (RFC 7433 §4.1, RFC 3261 §25.1 for quoting):
//!
//! ```text
//! UUI        = "User-to-User" HCOLON uui-value *(COMMA uui-value)
//! uui-value  = uui-data *(SEMI uui-param)
//! uui-data   = token / quoted-string
//! uui-param  = "purpose" / "content" / "encoding" EQUAL value / generic-param
//! ```
//!
//! A value without `encoding` is hex (RFC 7433 §4.1). Commas and semicolons inside quoted strings
//! do not split. The parser is a plain function of `&str` so a fuzzer can drive it; it bounds the
//! work it does by [`MAX_ELEMENTS`] and [`MAX_ELEMENT_LEN`] and never panics.
//!
//! The caller answers every [`UuiError`] with 403 Forbidden (CONTRACT §5, "no User-to-User, or
//! not a JWT").

/// The participant token and the other User-to-User elements of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UuiToken {
    /// The compact JWT, unquoted and trimmed; checked only for shape (three base64url parts),
    /// the signature is [`crate::tokens`]' job.
    pub token: String,
    /// Every other element in the order received, for logs and callbacks.
    pub others: Vec<UuiElement>,
}

/// One User-to-User element that is not the participant token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UuiElement {
    /// The data as sent, unquoted; not decoded.
    pub data: String,
    /// How `data` is encoded.
    pub encoding: UuiEncoding,
    /// The `purpose` parameter (RFC 7433 §4.1), if any.
    pub purpose: Option<String>,
}

/// The `encoding` parameter of a User-to-User element (RFC 7433 §4.1 and §9.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UuiEncoding {
    /// `hex`, also the meaning of an absent `encoding` (RFC 7433 §4.1).
    Hex,
    /// `base64`.
    Base64,
    /// `jwt`: a participant token (our convention, CONTRACT §5).
    Jwt,
    /// Any other value, lower-cased; kept so logs show what the platform sent.
    Other(String),
}

/// Why no participant token could be taken from the User-to-User headers. Each is answered 403.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UuiError {
    /// The request has no `User-to-User` header, or only empty ones.
    #[error("no User-to-User header")]
    Missing,
    /// No element has `encoding=jwt`.
    #[error("no User-to-User element with encoding=jwt among {elements}")]
    NoToken {
        /// How many elements there were.
        elements: usize,
    },
    /// More than one element has `encoding=jwt`; we will not guess which is meant.
    #[error("{count} User-to-User elements have encoding=jwt")]
    MultipleTokens {
        /// How many elements claim to be the token.
        count: usize,
    },
    /// More than [`MAX_ELEMENTS`] elements.
    #[error("more than {max} User-to-User elements", max = MAX_ELEMENTS)]
    TooManyElements,
    /// An element is longer than [`MAX_ELEMENT_LEN`] characters.
    #[error("User-to-User element {index} is {len} bytes, over {max}", max = MAX_ELEMENT_LEN)]
    ElementTooLong {
        /// Zero-based position of the element across all headers.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A quoted string is not closed.
    #[error("User-to-User element {index} has an unterminated quoted string")]
    UnterminatedQuote {
        /// Zero-based position of the element across all headers.
        index: usize,
    },
    /// The `encoding=jwt` element is not three non-empty base64url parts separated by dots.
    #[error("the encoding=jwt User-to-User element is not a compact JWT")]
    NotAJwt,
}

/// Most elements accepted across all `User-to-User` headers of one request. Platforms send one
/// or two; 16 leaves room and bounds the work a hostile request costs.
pub const MAX_ELEMENTS: usize = 16;

/// Longest element accepted, in bytes. RFC 7433 §4.1 lets platforms cap the header near 130
/// octets of data; our tokens stay under 350 characters (see [`crate::ids`]), so 1,000 is
/// generous.
pub const MAX_ELEMENT_LEN: usize = 1_000;

/// Finds the participant token among `values`, the raw values of every `User-to-User` header
/// of the request, in order.
///
/// Steps: (1) split every value into elements at commas outside quoted strings, bounding count
/// and length; (2) split each element into its data and parameters; (3) exactly one element must
/// have `encoding=jwt`, and its data must look like a compact JWT.
pub fn participant_token(values: &[&str]) -> Result<UuiToken, UuiError> {
    // 1. Elements, bounded.
    let mut raw = Vec::new();
    for value in values {
        for element in split_outside_quotes(value, b',') {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            let index = raw.len();
            if index == MAX_ELEMENTS {
                return Err(UuiError::TooManyElements);
            }
            if element.len() > MAX_ELEMENT_LEN {
                return Err(UuiError::ElementTooLong { index, len: element.len() });
            }
            raw.push(element);
        }
    }
    if raw.is_empty() {
        return Err(UuiError::Missing);
    }

    // 2. Data and parameters.
    let mut token = None;
    let mut jwt_count = 0;
    let mut others = Vec::new();
    for (index, element) in raw.iter().enumerate() {
        let parsed = parse_element(element).ok_or(UuiError::UnterminatedQuote { index })?;
        if parsed.encoding == UuiEncoding::Jwt {
            jwt_count += 1;
            token.get_or_insert(parsed.data);
        } else {
            others.push(parsed);
        }
    }

    // 3. Exactly one well-shaped token.
    match (token, jwt_count) {
        (None, _) => Err(UuiError::NoToken { elements: raw.len() }),
        (Some(_), count) if count > 1 => Err(UuiError::MultipleTokens { count }),
        (Some(token), _) if is_compact_jwt(&token) => Ok(UuiToken { token, others }),
        (Some(_), _) => Err(UuiError::NotAJwt),
    }
}

/// Splits `element` into data and parameters. `None` when a quoted string is not closed.
fn parse_element(element: &str) -> Option<UuiElement> {
    if !quotes_balanced(element) {
        return None;
    }
    let mut parts = split_outside_quotes(element, b';');
    // The first part always exists, even for an empty element.
    let data = unquote(parts.next().unwrap_or_default().trim());
    let mut encoding = UuiEncoding::Hex;
    let mut purpose = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), unquote(value.trim())),
            None => (param.trim(), String::new()),
        };
        if name.eq_ignore_ascii_case("encoding") {
            encoding = match value.to_ascii_lowercase().as_str() {
                "hex" => UuiEncoding::Hex,
                "base64" => UuiEncoding::Base64,
                "jwt" => UuiEncoding::Jwt,
                _ => UuiEncoding::Other(value.to_ascii_lowercase()),
            };
        } else if name.eq_ignore_ascii_case("purpose") {
            purpose = Some(value);
        }
        // `content` and generic parameters are accepted and ignored (CONTRACT §5).
    }
    Some(UuiElement { data, encoding, purpose })
}

/// Splits `s` at every `sep` that is not inside a quoted string (RFC 3261 §25.1: a quoted string
/// runs from `"` to the next `"` not escaped by a backslash). An unterminated quote swallows the
/// rest, which [`quotes_balanced`] then reports.
fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut pos = 0;
    let mut in_quote = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while pos < bytes.len() {
            let b = bytes[pos];
            if in_quote && b == b'\\' {
                pos += 2;
                continue;
            }
            if b == b'"' {
                in_quote = !in_quote;
            } else if b == sep && !in_quote {
                // `sep` is ASCII, so both ends are on character boundaries.
                let part = &s[start..pos];
                pos += 1;
                start = pos;
                return Some(part);
            }
            pos += 1;
        }
        done = true;
        Some(&s[start.min(s.len())..])
    })
}

/// True when every quoted string in `s` is closed.
fn quotes_balanced(s: &str) -> bool {
    let mut in_quote = false;
    let mut escaped = false;
    for b in s.bytes() {
        match (in_quote, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => in_quote = !in_quote,
            _ => {}
        }
    }
    !in_quote
}

/// Removes the quotes and backslash escapes of a quoted string; other text is returned as is.
fn unquote(s: &str) -> String {
    let inner = match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) if s.len() >= 2 => inner,
        _ => return s.to_owned(),
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// True for `header.payload.signature`, each part non-empty unpadded base64url (RFC 7515 §7.1).
fn is_compact_jwt(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
    }
    parts == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJwIjoiYWJjIn0.c2lnbmF0dXJl";

    #[test]
    fn jwt_alone() {
        let t = participant_token(&[&format!("{JWT};encoding=jwt")]).unwrap();
        assert_eq!(t.token, JWT);
        assert!(t.others.is_empty());
    }

    #[test]
    fn voice_platform_list_keeps_the_call_id() {
        // CONTRACT §5: `<callId>;encoding=base64,<jwt>;encoding=jwt`.
        let v = format!("Y2FsbC0xMjM=;encoding=base64,{JWT};encoding=jwt");
        let t = participant_token(&[&v]).unwrap();
        assert_eq!(t.token, JWT);
        assert_eq!(
            t.others,
            vec![UuiElement { data: "Y2FsbC0xMjM=".into(), encoding: UuiEncoding::Base64, purpose: None }]
        );
    }

    #[test]
    fn repeated_headers() {
        let jwt = format!("{JWT};encoding=jwt");
        let t = participant_token(&["56a390f3d2b7310023a2;purpose=isdn-uui", &jwt]).unwrap();
        assert_eq!(t.token, JWT);
        assert_eq!(t.others[0].encoding, UuiEncoding::Hex);
        assert_eq!(t.others[0].purpose.as_deref(), Some("isdn-uui"));
    }

    #[test]
    fn rfc7433_examples_are_hex_without_encoding() {
        // RFC 7433 §4.2 examples.
        let v = "56a390f3d2b7310023a2;encoding=hex;purpose=isdn-uui;content=isdn-uui";
        assert_eq!(participant_token(&[v]), Err(UuiError::NoToken { elements: 1 }));
        let e = parse_element("56a390f3d2b7310023a2").unwrap();
        assert_eq!(e.encoding, UuiEncoding::Hex);
    }

    #[test]
    fn quoted_token_and_params_case_whitespace() {
        let v = format!(" \"{JWT}\" ; Encoding = \"JWT\" ; purpose=\"a,b;c\" , 00ff ");
        let t = participant_token(&[&v]).unwrap();
        assert_eq!(t.token, JWT);
        assert_eq!(t.others.len(), 1);
        assert_eq!(t.others[0].data, "00ff");
    }

    #[test]
    fn comma_inside_quotes_does_not_split() {
        let v = format!("\"a,b\";encoding=base64,{JWT};encoding=jwt");
        let t = participant_token(&[&v]).unwrap();
        assert_eq!(t.others[0].data, "a,b");
    }

    #[test]
    fn other_encoding_kept() {
        let v = format!("x;encoding=Utf8,{JWT};encoding=jwt");
        let t = participant_token(&[&v]).unwrap();
        assert_eq!(t.others[0].encoding, UuiEncoding::Other("utf8".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(participant_token(&[]), Err(UuiError::Missing));
        assert_eq!(participant_token(&["", " , ,"]), Err(UuiError::Missing));
        assert_eq!(participant_token(&[JWT]), Err(UuiError::NoToken { elements: 1 }));
        let two = format!("{JWT};encoding=jwt,{JWT};encoding=jwt");
        assert_eq!(participant_token(&[&two]), Err(UuiError::MultipleTokens { count: 2 }));
        assert_eq!(participant_token(&["a.b;encoding=jwt"]), Err(UuiError::NotAJwt));
        assert_eq!(participant_token(&["a..c;encoding=jwt"]), Err(UuiError::NotAJwt));
        assert_eq!(participant_token(&["a.b.c.d;encoding=jwt"]), Err(UuiError::NotAJwt));
        assert_eq!(participant_token(&["a.b+.c;encoding=jwt"]), Err(UuiError::NotAJwt));
        assert_eq!(participant_token(&[";encoding=jwt"]), Err(UuiError::NotAJwt));
        assert_eq!(participant_token(&["\"abc;encoding=jwt"]), Err(UuiError::UnterminatedQuote { index: 0 }));
    }

    #[test]
    fn bounds() {
        let long = format!("{};encoding=jwt", "a".repeat(MAX_ELEMENT_LEN));
        assert_eq!(
            participant_token(&["00", &long]),
            Err(UuiError::ElementTooLong { index: 1, len: MAX_ELEMENT_LEN + 13 })
        );
        let many = vec!["00"; MAX_ELEMENTS + 1].join(",");
        assert_eq!(participant_token(&[&many]), Err(UuiError::TooManyElements));
        let exactly = format!("{},{JWT};encoding=jwt", vec!["00"; MAX_ELEMENTS - 1].join(","));
        assert_eq!(participant_token(&[&exactly]).unwrap().others.len(), MAX_ELEMENTS - 1);
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let samples = [
            "\"",
            "\\",
            "\"\\",
            "\"\\\"",
            ";;;;",
            "=;=;=",
            ",,,,",
            "é;encoding=jwt",
            "\"é\\é\";encoding=jwt",
            "a.b.c;encoding",
            "a.b.c;encoding=",
            "\u{0};\u{0}",
            "\"a\"\"b\";encoding=jwt",
            "a.b.c;encoding=jwt;encoding=hex",
        ];
        for s in samples {
            let _ = participant_token(&[s]);
            for cut in 0..=s.len() {
                if s.is_char_boundary(cut) {
                    let _ = participant_token(&[&s[..cut], &s[cut..]]);
                }
            }
        }
        // Every prefix of a real value.
        let v = format!("\"Y2Fs\";encoding=base64;purpose=\"x\",{JWT};encoding=jwt");
        for cut in 0..=v.len() {
            let _ = participant_token(&[&v[..cut]]);
        }
    }
}
