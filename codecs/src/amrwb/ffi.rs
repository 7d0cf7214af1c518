//! Declarations of Debian's AMR-WB C interfaces: `<opencore-amrwb/dec_if.h>` and
//! `<vo-amrwbenc/enc_if.h>`. Linked by build.rs through pkg-config. Nothing but declarations
//! lives here; the safe wrapper is `codec.rs` beside this file.
//!
//! Both libraries speak the RFC 4867 §5.3 storage format: one header byte `0|FT(4)|Q|00`
//! followed by the class-ordered speech bits, MSB first, zero-padded to an octet.

use std::ffi::{c_int, c_short, c_uchar, c_void};

unsafe extern "C" {
    /// Allocates a decoder state; NULL when malloc fails.
    pub(super) fn D_IF_init() -> *mut c_void;
    /// Decodes one storage-format frame into 320 samples. Reads the header byte and up to the
    /// frame size implied by its FT (at most 60 bytes), without a length argument; `bfi != 0`
    /// replaces the frame with NO_DATA.
    pub(super) fn D_IF_decode(state: *mut c_void, bits: *const c_uchar, synth: *mut c_short, bfi: c_int);
    /// Frees a decoder state from `D_IF_init`.
    pub(super) fn D_IF_exit(state: *mut c_void);

    /// Allocates an encoder state; NULL when malloc fails.
    pub(super) fn E_IF_init() -> *mut c_void;
    /// Encodes 320 samples with `mode` (0..=8) into one storage-format frame (at most 61 bytes)
    /// and returns its length including the header byte.
    pub(super) fn E_IF_encode(
        state: *mut c_void,
        mode: c_int,
        speech: *const c_short,
        out: *mut c_uchar,
        dtx: c_int,
    ) -> c_int;
    /// Frees an encoder state from `E_IF_init`.
    pub(super) fn E_IF_exit(state: *mut c_void);
}
