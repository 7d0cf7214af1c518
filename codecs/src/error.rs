//! One error for callers that drive several of this crate's modules (the media bridge's leg
//! task), so `?` works across them. Each variant keeps the module's own typed error.

use thiserror::Error;

use crate::amrwb::AmrWbError;
use crate::g711::G711Error;
use crate::opus::OpusError;
use crate::pcm::MixError;
use crate::rfc4733::Rfc4733Error;
use crate::rfc4867::{DepacketizeError, FmtpError, PacketizeError, UnsupportedOption};

/// Any error of the codecs crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum CodecError {
    /// From [`crate::g711`].
    #[error(transparent)]
    G711(#[from] G711Error),
    /// From [`crate::amrwb`].
    #[error(transparent)]
    AmrWb(#[from] AmrWbError),
    /// A received AMR-WB payload was refused.
    #[error(transparent)]
    Depacketize(#[from] DepacketizeError),
    /// AMR-WB frames could not be packed.
    #[error(transparent)]
    Packetize(#[from] PacketizeError),
    /// A bad AMR-WB fmtp value.
    #[error(transparent)]
    Fmtp(#[from] FmtpError),
    /// An AMR-WB fmtp option we refuse.
    #[error(transparent)]
    Unsupported(#[from] UnsupportedOption),
    /// From [`crate::opus`].
    #[error(transparent)]
    Opus(#[from] OpusError),
    /// From [`crate::rfc4733`].
    #[error(transparent)]
    TelephoneEvent(#[from] Rfc4733Error),
    /// From [`crate::pcm::mix`].
    #[error(transparent)]
    Mix(#[from] MixError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rfc4867::{Depacketizer, PacketFrames, PayloadConfig};

    #[test]
    fn module_errors_convert_with_question_mark() {
        fn leg_step(payload: &[u8]) -> Result<usize, CodecError> {
            let mut frames = PacketFrames::new();
            Depacketizer::new(PayloadConfig::octet_aligned()).depacketize(payload, &mut frames)?;
            Ok(frames.len())
        }
        let err = leg_step(&[]).unwrap_err();
        assert_eq!(err, CodecError::Depacketize(DepacketizeError::Truncated { needed_bits: 8, available_bits: 0 }));
        assert_eq!(err.to_string(), DepacketizeError::Truncated { needed_bits: 8, available_bits: 0 }.to_string());
    }
}
