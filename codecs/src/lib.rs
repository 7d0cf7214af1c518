//! Audio codecs and RTP payload formats for the interwork media bridge: G.711, AMR-WB with
//! the RFC 4867 payload formats, Opus, RFC 4733 telephone events and a PCM toolbox.
//! No I/O, no async: every function turns bytes into PCM or PCM into bytes.
