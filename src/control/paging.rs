//! Paged listings (`GET /sessions`, `GET /participants`): the `limit` and `cursor` query
//! parameters and the opaque cursor. A cursor names the last id of the page before it, with the
//! kind of listing it belongs to, in unpadded URL-safe base64; clients pass it back unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ids;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1000;

/// The query of a listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
    /// Where to go on: the `nextCursor` of the page before; absent for the first page.
    pub cursor: Option<String>,
}

/// Which listing a cursor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// `GET /sessions`.
    Sessions,
    /// `GET /participants`.
    Participants,
}

/// Why a listing's query is refused (400 INVALID_ARGUMENT, mapped in [`super::error`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PagingError {
    /// `limit` out of range.
    #[error("limit must be 1 to {max}, not {given}")]
    Limit {
        /// What was asked for.
        given: u32,
        /// [`MAX_LIMIT`].
        max: u32,
    },
    /// Not a cursor of this listing.
    #[error("cursor is not one this listing gave out")]
    Cursor,
}

/// A checked listing query: how many, and after which id.
#[derive(Debug, PartialEq, Eq)]
pub struct Paging {
    /// Items per page.
    pub limit: usize,
    /// The id the page starts after.
    pub after: Option<String>,
}

impl PageQuery {
    /// Checks the limit and decodes the cursor for `listing`.
    pub fn check(&self, listing: Listing) -> Result<Paging, PagingError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(PagingError::Limit { given: limit, max: MAX_LIMIT });
        }
        let after = self.cursor.as_deref().map(|c| decode(listing, c)).transpose()?;
        Ok(Paging { limit: limit as usize, after })
    }
}

/// The cursor of a page whose last item has the id `last`.
pub fn encode(listing: Listing, last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{last}", prefix(listing)))
}

fn decode(listing: Listing, cursor: &str) -> Result<String, PagingError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| PagingError::Cursor)?;
    let text = String::from_utf8(bytes).map_err(|_| PagingError::Cursor)?;
    let id = text.strip_prefix(prefix(listing)).and_then(|t| t.strip_prefix(':')).ok_or(PagingError::Cursor)?;
    if !ids::is_valid_id(id) {
        return Err(PagingError::Cursor);
    }
    Ok(id.to_string())
}

fn prefix(listing: Listing) -> &'static str {
    match listing {
        Listing::Sessions => "s1",
        Listing::Participants => "p1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<u32>, cursor: Option<&str>) -> PageQuery {
        PageQuery { limit, cursor: cursor.map(str::to_string) }
    }

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(query(None, None).check(Listing::Sessions), Ok(Paging { limit: 100, after: None }));
        assert_eq!(query(Some(1), None).check(Listing::Sessions).unwrap().limit, 1);
        assert_eq!(query(Some(1000), None).check(Listing::Sessions).unwrap().limit, 1000);
        assert_eq!(query(Some(0), None).check(Listing::Sessions), Err(PagingError::Limit { given: 0, max: 1000 }));
        assert_eq!(
            query(Some(1001), None).check(Listing::Sessions),
            Err(PagingError::Limit { given: 1001, max: 1000 })
        );
    }

    #[test]
    fn cursors_round_trip_and_belong_to_their_listing() {
        let c = encode(Listing::Sessions, "abc-1");
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "URL-safe: {c}");
        assert_eq!(query(None, Some(&c)).check(Listing::Sessions).unwrap().after.as_deref(), Some("abc-1"));
        assert_eq!(query(None, Some(&c)).check(Listing::Participants), Err(PagingError::Cursor));
        for bad in ["", "!!", "abc-1", &URL_SAFE_NO_PAD.encode("s1:"), &URL_SAFE_NO_PAD.encode("s1:a b")] {
            assert_eq!(query(None, Some(bad)).check(Listing::Sessions), Err(PagingError::Cursor), "{bad:?}");
        }
    }
}
