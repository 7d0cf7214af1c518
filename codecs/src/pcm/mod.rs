//! PCM toolbox: mixing for the media bridge ([`mix`]) and measurements the tests use to judge
//! audio ([`analysis`]).

pub mod analysis;
pub mod mix;

pub use mix::{MixError, NMinusOneMixer, mix_into};
