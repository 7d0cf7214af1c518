//! How a refusal is written on the wire, in one place: the `Warning` (RFC 3261 §20.43) and
//! `Reason` (RFC 3326) values that say why, escaped one way, and the SIP status of each token
//! failure (CONTRACT §5). The call logic, the transaction layer and the transport all build
//! their refusals with these.

use crate::tokens::TokenError;

/// Text made safe for a quoted string: no quote, backslash or control character survives.
pub fn quoted_text(why: &str) -> String {
    why.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A `Warning` value from us: `<code> interwork "<why>"` (399 for a miscellaneous warning, 3xx
/// codes of RFC 3261 §20.43 for SDP problems).
pub fn warning(code: u16, why: &str) -> String {
    format!("{code} interwork \"{}\"", quoted_text(why))
}

/// A `Reason` value: `SIP;cause=<status>;text="<why>"`.
pub fn reason(status: u16, why: &str) -> String {
    format!("SIP;cause={status};text=\"{}\"", quoted_text(why))
}

/// The status a participant token failure gets: 404 when it names what does not exist, 403
/// when the token itself is not acceptable.
pub fn token_status(error: &TokenError) -> u16 {
    if error.is_not_found() { 404 } else { 403 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_peer_sends_cannot_break_out_of_the_quotes() {
        assert_eq!(warning(399, "a \"b\" \\ c\r\nVia: x"), "399 interwork \"a 'b' / c  Via: x\"");
        assert_eq!(reason(503, "over\u{7}loaded"), "SIP;cause=503;text=\"over loaded\"");
        assert_eq!(token_status(&TokenError::Expired), 403);
        assert_eq!(token_status(&TokenError::UnknownParticipant("p".into())), 404);
        assert_eq!(token_status(&TokenError::NotInSession("p".into())), 404);
    }
}
