//! Our G.711 encoder against sox's, on every 16-bit sample value and on a tone.
mod common;

use codecs::g711::{self, Law};
use codecs::pcm::analysis::tone;

fn sox_encode(law: Law, pcm: &[i16]) -> Vec<u8> {
    let dir = common::scratch_dir(&format!("g711-sox-{law:?}"));
    let input = dir.join("in.raw");
    let output = dir.join("out.raw");
    common::write_s16le(&input, pcm);
    let encoding = match law {
        Law::Mu => "u-law",
        Law::A => "a-law",
    };
    // -D: no dither, which sox would otherwise add when going from 16 to 8 bits.
    common::run(
        "sox",
        "sox",
        &[
            "-D",
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            input.to_str().unwrap(),
            "-t",
            "raw",
            "-e",
            encoding,
            "-b",
            "8",
            output.to_str().unwrap(),
        ],
    );
    std::fs::read(&output).unwrap()
}

fn check_against_sox(law: Law, pcm: &[i16]) {
    let theirs = sox_encode(law, pcm);
    let mut ours = vec![0u8; pcm.len()];
    g711::encode(law, pcm, &mut ours).unwrap();
    assert_eq!(theirs.len(), ours.len());
    let differ: Vec<(i16, u8, u8)> = pcm
        .iter()
        .zip(ours.iter().zip(&theirs))
        .filter(|(_, (a, b))| a != b)
        .map(|(&s, (&a, &b))| (s, a, b))
        .take(10)
        .collect();
    assert!(differ.is_empty(), "{law:?}: (sample, ours, sox) {differ:?}");
}

#[test]
fn every_sample_value_encodes_like_sox() {
    let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
    check_against_sox(Law::Mu, &all);
    check_against_sox(Law::A, &all);
}

#[test]
fn a_tone_encodes_like_sox() {
    let signal = tone(8_000, 1_004.0, -3.0, 8_000);
    check_against_sox(Law::Mu, &signal);
    check_against_sox(Law::A, &signal);
}
