//! Saturating mixing and the N-1 mixer.
//!
//! In a conference each participant hears everyone but themselves. Summing N-1 inputs for
//! each of N outputs costs N² additions; [`NMinusOneMixer`] sums everyone once into 32-bit
//! accumulators and gives each output `sum - own input`, saturated to 16 bits: 2N per sample.
//! Buffers are allocated once in `new` for the largest call; `mix` allocates nothing.

use thiserror::Error;

/// Adds `input` into `acc` sample by sample, saturating at the 16-bit limits.
///
/// # Panics
/// When the lengths differ: both are frames of the same leg, so a mismatch is a caller bug.
pub fn mix_into(acc: &mut [i16], input: &[i16]) {
    assert_eq!(acc.len(), input.len(), "mix_into: frames of different lengths");
    acc.iter_mut().zip(input).for_each(|(a, &b)| *a = a.saturating_add(b));
}

/// Mixes every participant's frame minus their own, in one pass.
#[derive(Debug, Clone)]
pub struct NMinusOneMixer {
    frame_len: usize,
    max_participants: usize,
    participants: usize,
    sum: Vec<i32>,
    everyone: Vec<i16>,
    outputs: Vec<i16>,
}

/// Misuse of the mixer's frame layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MixError {
    /// More inputs than the mixer was built for.
    #[error("{given} participants, the mixer holds {max}")]
    TooManyParticipants {
        /// Inputs given.
        given: usize,
        /// The mixer's capacity.
        max: usize,
    },
    /// An input frame of the wrong length.
    #[error("participant {participant} gave {len} samples, frames are {frame_len}")]
    WrongFrameLength {
        /// Index of the input.
        participant: usize,
        /// Its length.
        len: usize,
        /// The mixer's frame length.
        frame_len: usize,
    },
}

impl NMinusOneMixer {
    /// A mixer for up to `max_participants` inputs of `frame_len` samples (320 for 20 ms at
    /// 16 kHz, the bridge's mixing rate).
    pub fn new(max_participants: usize, frame_len: usize) -> Self {
        Self {
            frame_len,
            max_participants,
            participants: 0,
            sum: vec![0; frame_len],
            everyone: vec![0; frame_len],
            outputs: vec![0; frame_len * max_participants],
        }
    }

    /// Mixes one frame. `inputs[i]` is participant `i`'s frame, or `None` when they sent
    /// nothing (muted, DTX, or a listener that does not publish). Afterwards [`Self::output`]
    /// gives each participant's mix and [`Self::everyone`] the sum of all.
    pub fn mix(&mut self, inputs: &[Option<&[i16]>]) -> Result<(), MixError> {
        // 1. Check the whole frame first so a bad input leaves the previous mix intact.
        if inputs.len() > self.max_participants {
            return Err(MixError::TooManyParticipants { given: inputs.len(), max: self.max_participants });
        }
        for (participant, input) in inputs.iter().enumerate() {
            if let Some(frame) = input
                && frame.len() != self.frame_len
            {
                return Err(MixError::WrongFrameLength { participant, len: frame.len(), frame_len: self.frame_len });
            }
        }
        // 2. One sum in 32 bits: 65,536 full-scale inputs fit before it could overflow.
        self.sum.fill(0);
        for frame in inputs.iter().flatten() {
            self.sum.iter_mut().zip(frame.iter()).for_each(|(s, &x)| *s += i32::from(x));
        }
        for (e, &s) in self.everyone.iter_mut().zip(&self.sum) {
            *e = saturate(s);
        }
        // 3. Each output is the sum without its own input.
        self.participants = inputs.len();
        for (input, out) in inputs.iter().zip(self.outputs.chunks_exact_mut(self.frame_len)) {
            match input {
                Some(own) => {
                    for ((o, &s), &x) in out.iter_mut().zip(&self.sum).zip(own.iter()) {
                        *o = saturate(s - i32::from(x));
                    }
                }
                None => out.copy_from_slice(&self.everyone),
            }
        }
        Ok(())
    }

    /// What participant `index` hears from the last [`Self::mix`]: everyone else.
    ///
    /// # Panics
    /// When `index` is not below the number of inputs of the last mix.
    pub fn output(&self, index: usize) -> &[i16] {
        assert!(index < self.participants, "no participant {index} in the last mix");
        &self.outputs[index * self.frame_len..(index + 1) * self.frame_len]
    }

    /// The sum of every input of the last mix (for a listener who publishes nothing).
    pub fn everyone(&self) -> &[i16] {
        &self.everyone
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }
}

fn saturate(sample: i32) -> i16 {
    sample.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_into_saturates_both_ways() {
        let mut acc = [30_000, -30_000, 100, i16::MIN];
        mix_into(&mut acc, &[10_000, -10_000, -50, -1]);
        assert_eq!(acc, [i16::MAX, i16::MIN, 50, i16::MIN]);
    }

    #[test]
    fn each_output_is_the_naive_sum_of_the_others() {
        let frames: Vec<Vec<i16>> =
            (0..5).map(|p| (0..8).map(|i| ((p * 7919 + i * 104_729) % 40_000 - 20_000) as i16).collect()).collect();
        let mut inputs: Vec<Option<&[i16]>> = frames.iter().map(|f| Some(f.as_slice())).collect();
        inputs[3] = None;
        let mut mixer = NMinusOneMixer::new(6, 8);
        mixer.mix(&inputs).unwrap();
        for me in 0..inputs.len() {
            for i in 0..8 {
                let naive: i32 = inputs
                    .iter()
                    .enumerate()
                    .filter(|(p, _)| *p != me)
                    .filter_map(|(_, f)| f.map(|f| i32::from(f[i])))
                    .sum();
                assert_eq!(mixer.output(me)[i], saturate(naive), "participant {me} sample {i}");
            }
        }
        let all: i32 = inputs.iter().flatten().map(|f| i32::from(f[0])).sum();
        assert_eq!(mixer.everyone()[0], saturate(all));
    }

    #[test]
    fn saturation_happens_after_the_subtraction() {
        // Two loud talkers and one quiet: the quiet one hears the clipped sum of the loud
        // ones, and each loud one hears the other plus the quiet one exactly.
        let loud = [30_000i16; 4];
        let quiet = [10i16; 4];
        let mut mixer = NMinusOneMixer::new(3, 4);
        mixer.mix(&[Some(&loud), Some(&loud), Some(&quiet)]).unwrap();
        assert_eq!(mixer.output(0), [30_010; 4]);
        assert_eq!(mixer.output(2), [i16::MAX; 4]);
    }

    #[test]
    fn bad_inputs_are_errors_and_leave_the_mix_alone() {
        let mut mixer = NMinusOneMixer::new(2, 4);
        let a = [1i16; 4];
        mixer.mix(&[Some(&a), None]).unwrap();
        let short = [1i16; 3];
        assert_eq!(
            mixer.mix(&[Some(&a), Some(&short)]),
            Err(MixError::WrongFrameLength { participant: 1, len: 3, frame_len: 4 })
        );
        assert_eq!(mixer.mix(&[None, None, None]), Err(MixError::TooManyParticipants { given: 3, max: 2 }));
        assert_eq!(mixer.output(1), [1; 4]);
        assert_eq!(mixer.output(0), [0; 4]);
    }
}
