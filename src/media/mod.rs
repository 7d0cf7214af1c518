//! The media bridge: per SIP leg a pipeline of small pure stages on reused buffers (SRTP, RTP
//! (de)packetizing, jitter buffer with PLC, decode, N-1 mix, encode) and a router that fans one
//! encoded stream out to many subscribers.
//!
//! Still to come (issue 6). It will follow who hears whom through
//! [`crate::rooms::Rooms::audience`] and the rooms change channel.
