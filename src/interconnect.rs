//! How a SIP leg relates to its participant: a call concept shared by the tokens (a claim),
//! the SIP side, the API's callbacks and the config (`sip.default_mode`). A leaf module, so
//! that none of them imports another for it.

use serde::{Deserialize, Serialize};

/// How a SIP leg relates to its participant (`X-Interconnect-Mode`, the token's `mode` claim,
/// `sip.default_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterconnectMode {
    /// One dialog is the participant's media for its whole life.
    Transfer,
    /// Independent lifetimes: the participant outlives its legs.
    Bridge,
    /// Many legs mixed by the gateway.
    Conference,
}
