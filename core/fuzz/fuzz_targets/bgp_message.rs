//! A whole BGP message (header included); the first byte picks the negotiated context.
#![no_main]
use ferrolb_core::bgp::{AsWidth, DecodeContext, Message, PeerKind};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&b, msg)) = data.split_first() {
        let as_width = if b & 1 == 0 { AsWidth::Two } else { AsWidth::Four };
        let peer_kind = if b & 2 == 0 { PeerKind::External } else { PeerKind::Internal };
        let _ = Message::decode(msg, &DecodeContext { as_width, peer_kind });
    }
});
