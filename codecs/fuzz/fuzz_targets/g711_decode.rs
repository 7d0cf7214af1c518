//! G.711 decoding of arbitrary payloads into buffers of arbitrary size.
#![no_main]

use codecs::g711::{self, Law};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut pcm = [0i16; 512];
    let capacity = data.first().map_or(0, |&b| usize::from(b) * 2);
    for law in [Law::Mu, Law::A] {
        let result = g711::decode(law, data, &mut pcm[..capacity]);
        assert_eq!(result.is_ok(), data.len() <= capacity);
    }
});
