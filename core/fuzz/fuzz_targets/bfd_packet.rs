//! A BFD control packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ferrolb_core::bfd::ControlPacket::decode(data);
});
