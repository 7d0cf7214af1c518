//! RFC 4867 bandwidth-efficient depacketizing of arbitrary payloads: never panics, and whatever it
//! accepts packs back to a payload that depacketizes to the same frames.
#![no_main]

use codecs::amrwb::FrameRef;
use codecs::rfc4867::{Depacketizer, PacketFrames, Packetizer, PayloadConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = PayloadConfig::bandwidth_efficient();
    let mut frames = PacketFrames::new();
    let Ok(cmr) = Depacketizer::new(config).depacketize(data, &mut frames) else {
        assert!(frames.is_empty());
        return;
    };
    let refs: Vec<FrameRef<'_>> = frames.iter().collect();
    let mut payload = [0u8; 2048];
    // A reserved CMR is reported but never sent: pack with it only when it is sendable.
    if let Ok(len) = Packetizer::new(config).packetize(cmr, &refs, &mut payload) {
        let mut again = PacketFrames::new();
        Depacketizer::new(config)
            .depacketize(&payload[..len], &mut again)
            .unwrap();
        assert!(again.iter().eq(frames.iter()));
    }
});
