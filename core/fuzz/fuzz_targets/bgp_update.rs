//! An UPDATE body (after the 19-byte header); the first byte picks the negotiated context.
#![no_main]
use ferrolb_core::bgp::{AsWidth, DecodeContext, PeerKind, Update};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&b, body)) = data.split_first() {
        let as_width = if b & 1 == 0 { AsWidth::Two } else { AsWidth::Four };
        let peer_kind = if b & 2 == 0 { PeerKind::External } else { PeerKind::Internal };
        let _ = Update::decode(body, &DecodeContext { as_width, peer_kind });
    }
});
