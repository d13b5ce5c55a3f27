//! The PROXY protocol decoder on arbitrary bytes; a decoded header re-encodes and decodes to itself.
#![no_main]
use ferrolb_core::proxy_protocol::{Header, Transport, Version, decode, encode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((header, used)) = decode(data) {
        assert!(used <= data.len());
        let version = if data[0] == b'P' { Version::V1 } else { Version::V2 };
        // v1 has no datagrams: those come back as UNKNOWN by design.
        let v1_udp = matches!(header, Header::Proxy { transport: Transport::Datagram, .. });
        if !(version == Version::V1 && v1_udp) {
            let again = encode(version, &header);
            assert_eq!(decode(&again), Ok((header, again.len())));
        }
    }
});
