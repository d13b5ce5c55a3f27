//! The PROXY protocol header (versions 1 and 2, as HAProxy's proxy-protocol.txt defines them):
//! what the userspace forwarder writes to a backend before the client's bytes, so the backend
//! learns the client's address. Encoder and decoder over plain bytes; the decoder exists for
//! tests, the fuzz target and backends written in Rust.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The longest version 1 line, CRLF included (the spec's bound).
pub const V1_MAX_LEN: usize = 107;

/// Which header version to send (`ferrolb.io/proxy-protocol: v1|v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// The human-readable line.
    V1,
    /// The binary header.
    V2,
}

impl Version {
    /// Parses an annotation value (`v1`, `v2`); anything else is `None`.
    pub fn parse(value: &str) -> Option<Version> {
        match value.trim() {
            "v1" => Some(Version::V1),
            "v2" => Some(Version::V2),
            _ => None,
        }
    }
}

/// The transport the proxied connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A stream (TCP).
    Stream,
    /// Datagrams (UDP); version 2 only.
    Datagram,
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection was proxied for this client, to this destination.
    Proxy {
        /// Stream or datagram.
        transport: Transport,
        /// The client.
        source: SocketAddr,
        /// The address the client connected to (the VIP and Service port).
        destination: SocketAddr,
    },
    /// No address information: v1 `UNKNOWN`, v2 `LOCAL` command or an unsupported family.
    Unknown,
}

/// Why bytes are not a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Too few bytes yet; at least this many are needed in all.
    Incomplete(usize),
    /// Neither the v1 prefix nor the v2 signature.
    NotProxyProtocol,
    /// A v1 line that is malformed (the reason).
    BadV1(&'static str),
    /// A v2 header that is malformed (the reason).
    BadV2(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Incomplete(n) => write!(f, "incomplete header: need {n} bytes"),
            DecodeError::NotProxyProtocol => f.write_str("not a PROXY protocol header"),
            DecodeError::BadV1(why) => write!(f, "bad PROXY v1 line: {why}"),
            DecodeError::BadV2(why) => write!(f, "bad PROXY v2 header: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Source and destination in one family, as the header carries them; mixed families (an IPv4
/// client on an IPv6 VIP cannot happen with our listeners) map IPv4 into IPv6.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    fn v6(a: SocketAddr) -> SocketAddr {
        match a.ip() {
            IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
            IpAddr::V6(_) => a,
        }
    }
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (source, destination),
        _ => (v6(source), v6(destination)),
    }
}

/// Encodes `header` in `version`. A v1 datagram header is written as `UNKNOWN` (v1 has no UDP).
pub fn encode(version: Version, header: &Header) -> Vec<u8> {
    match version {
        Version::V1 => encode_v1(header),
        Version::V2 => encode_v2(header),
    }
}

fn encode_v1(header: &Header) -> Vec<u8> {
    match *header {
        Header::Proxy {
            transport: Transport::Stream,
            source,
            destination,
        } => {
            let (s, d) = same_family(source, destination);
            let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes()
        }
        _ => b"PROXY UNKNOWN\r\n".to_vec(),
    }
}

fn encode_v2(header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    match *header {
        Header::Proxy {
            transport,
            source,
            destination,
        } => {
            let (s, d) = same_family(source, destination);
            let proto = match transport {
                Transport::Stream => 0x1,
                Transport::Datagram => 0x2,
            };
            out.push(0x21); // version 2, command PROXY
            match (s.ip(), d.ip()) {
                (IpAddr::V4(si), IpAddr::V4(di)) => {
                    out.push(0x10 | proto);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&si.octets());
                    out.extend_from_slice(&di.octets());
                }
                (IpAddr::V6(si), IpAddr::V6(di)) => {
                    out.push(0x20 | proto);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&si.octets());
                    out.extend_from_slice(&di.octets());
                }
                _ => unreachable!("same_family returns one family"),
            }
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        Header::Unknown => {
            out.push(0x20); // version 2, command LOCAL
            out.push(0x00); // AF_UNSPEC
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
    out
}

/// Decodes a header at the start of `data`: the header and how many bytes it took.
pub fn decode(data: &[u8]) -> Result<(Header, usize), DecodeError> {
    if data.first() == Some(&b'P') {
        decode_v1(data)
    } else if data.first() == Some(&V2_SIGNATURE[0]) {
        decode_v2(data)
    } else if data.is_empty() {
        Err(DecodeError::Incomplete(1))
    } else {
        Err(DecodeError::NotProxyProtocol)
    }
}

fn decode_v1(data: &[u8]) -> Result<(Header, usize), DecodeError> {
    let prefix = b"PROXY ";
    let n = data.len().min(prefix.len());
    if data[..n] != prefix[..n] {
        return Err(DecodeError::NotProxyProtocol);
    }
    let window = &data[..data.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if data.len() >= V1_MAX_LEN {
            Err(DecodeError::BadV1("no CRLF within 107 bytes"))
        } else {
            Err(DecodeError::Incomplete(data.len() + 1))
        };
    };
    let line = std::str::from_utf8(&data[prefix.len().min(end)..end])
        .map_err(|_| DecodeError::BadV1("not ASCII"))?;
    let used = end + 2;
    if end < prefix.len() {
        return Err(DecodeError::BadV1("CRLF inside the prefix"));
    }
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok((Header::Unknown, used)),
        [fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *fam == "TCP4";
            let ip = |s: &str| -> Result<IpAddr, DecodeError> {
                let ip = if v4 {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6)
                };
                ip.map_err(|_| DecodeError::BadV1("address does not match the family"))
            };
            let port = |s: &str| -> Result<u16, DecodeError> {
                // The spec forbids leading zeros and signs; u16::parse would accept "+1".
                let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                if !digits || (s.len() > 1 && s.starts_with('0')) {
                    return Err(DecodeError::BadV1("bad port"));
                }
                s.parse().map_err(|_| DecodeError::BadV1("bad port"))
            };
            Ok((
                Header::Proxy {
                    transport: Transport::Stream,
                    source: SocketAddr::new(ip(src)?, port(sport)?),
                    destination: SocketAddr::new(ip(dst)?, port(dport)?),
                },
                used,
            ))
        }
        _ => Err(DecodeError::BadV1(
            "expected TCP4, TCP6 or UNKNOWN and four fields",
        )),
    }
}

fn decode_v2(data: &[u8]) -> Result<(Header, usize), DecodeError> {
    let n = data.len().min(V2_SIGNATURE.len());
    if data[..n] != V2_SIGNATURE[..n] {
        return Err(DecodeError::NotProxyProtocol);
    }
    if data.len() < 16 {
        return Err(DecodeError::Incomplete(16));
    }
    let ver_cmd = data[12];
    if ver_cmd >> 4 != 2 {
        return Err(DecodeError::BadV2("version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([data[14], data[15]]));
    let total = 16 + len;
    if data.len() < total {
        return Err(DecodeError::Incomplete(total));
    }
    let body = &data[16..total];
    match ver_cmd & 0x0F {
        0x0 => return Ok((Header::Unknown, total)),
        0x1 => {}
        _ => return Err(DecodeError::BadV2("unknown command")),
    }
    let transport = match data[13] & 0x0F {
        0x1 => Transport::Stream,
        0x2 => Transport::Datagram,
        // UNSPEC or unknown transport: the receiver must ignore the addresses.
        _ => return Ok((Header::Unknown, total)),
    };
    let (source, destination) = match data[13] >> 4 {
        0x1 => {
            let b = body
                .get(..12)
                .ok_or(DecodeError::BadV2("IPv4 addresses need 12 bytes"))?;
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]));
            (
                SocketAddr::new(ip(0), u16::from_be_bytes([b[8], b[9]])),
                SocketAddr::new(ip(4), u16::from_be_bytes([b[10], b[11]])),
            )
        }
        0x2 => {
            let b = body
                .get(..36)
                .ok_or(DecodeError::BadV2("IPv6 addresses need 36 bytes"))?;
            let ip = |i: usize| {
                let o: [u8; 16] = b[i..i + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(o))
            };
            (
                SocketAddr::new(ip(0), u16::from_be_bytes([b[32], b[33]])),
                SocketAddr::new(ip(16), u16::from_be_bytes([b[34], b[35]])),
            )
        }
        // AF_UNSPEC, AF_UNIX, unknown: no IP addresses to report.
        _ => return Ok((Header::Unknown, total)),
    };
    Ok((
        Header::Proxy {
            transport,
            source,
            destination,
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(src: &str, dst: &str) -> Header {
        Header::Proxy {
            transport: Transport::Stream,
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    #[test]
    fn v1_golden_lines() {
        let h = tcp("192.0.2.7:51234", "198.18.0.10:80");
        assert_eq!(
            encode(Version::V1, &h),
            b"PROXY TCP4 192.0.2.7 198.18.0.10 51234 80\r\n"
        );
        let h6 = tcp("[2001:db8::7]:1", "[2001:db8:ff::10]:443");
        assert_eq!(
            encode(Version::V1, &h6),
            b"PROXY TCP6 2001:db8::7 2001:db8:ff::10 1 443\r\n"
        );
        assert_eq!(encode(Version::V1, &Header::Unknown), b"PROXY UNKNOWN\r\n");
        // The longest possible line stays within the spec's 107 bytes.
        let long = tcp(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535",
        );
        assert_eq!(encode(Version::V1, &long).len(), 104);
    }

    #[test]
    fn v2_golden_bytes() {
        let h = tcp("192.0.2.7:51234", "198.18.0.10:80");
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        want.extend_from_slice(&[192, 0, 2, 7, 198, 18, 0, 10]);
        want.extend_from_slice(&[0xC8, 0x22, 0x00, 0x50]); // 51234, 80
        assert_eq!(encode(Version::V2, &h), want);

        let h6 = Header::Proxy {
            transport: Transport::Datagram,
            source: "[2001:db8::7]:53".parse().unwrap(),
            destination: "[2001:db8:ff::10]:5353".parse().unwrap(),
        };
        let got = encode(Version::V2, &h6);
        assert_eq!(&got[12..16], &[0x21, 0x22, 0x00, 0x24]);
        assert_eq!(got.len(), 16 + 36);
        assert_eq!(&got[16..20], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(&got[48..52], &[0x00, 0x35, 0x14, 0xE9]);

        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(encode(Version::V2, &Header::Unknown), local);
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let h = tcp("192.0.2.7:1000", "[2001:db8:ff::10]:80");
        assert_eq!(
            encode(Version::V1, &h),
            b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8:ff::10 1000 80\r\n"
        );
    }

    #[test]
    fn round_trips_with_trailing_payload() {
        for h in [
            tcp("192.0.2.7:51234", "198.18.0.10:80"),
            tcp("[2001:db8::7]:1", "[2001:db8:ff::10]:443"),
            Header::Unknown,
        ] {
            for v in [Version::V1, Version::V2] {
                let mut bytes = encode(v, &h);
                let n = bytes.len();
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
                assert_eq!(decode(&bytes), Ok((h, n)), "{v:?} {h:?}");
                for cut in 0..n {
                    assert!(
                        matches!(decode(&bytes[..cut]), Err(DecodeError::Incomplete(_))),
                        "{v:?} cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_headers_are_refused() {
        let cases: [&[u8]; 7] = [
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n",
            b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
        ];
        for c in cases {
            let r = decode(c);
            assert!(
                matches!(
                    r,
                    Err(DecodeError::NotProxyProtocol | DecodeError::BadV1(_))
                ),
                "{:?}: {r:?}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(
            decode(&[b'P'; 200]),
            Err(DecodeError::NotProxyProtocol),
            "no PROXY prefix"
        );
        let mut no_crlf = b"PROXY ".to_vec();
        no_crlf.resize(200, b'1');
        assert!(matches!(decode(&no_crlf), Err(DecodeError::BadV1(_))));
        let mut v3 = encode(Version::V2, &tcp("192.0.2.7:1", "192.0.2.8:2"));
        v3[12] = 0x31;
        assert!(matches!(decode(&v3), Err(DecodeError::BadV2(_))));
        let mut short = encode(Version::V2, &tcp("192.0.2.7:1", "192.0.2.8:2"));
        short[15] = 4; // length too small for two IPv4 addresses and ports
        assert!(matches!(decode(&short), Err(DecodeError::BadV2(_))));
    }

    #[test]
    fn annotation_values() {
        assert_eq!(Version::parse("v1"), Some(Version::V1));
        assert_eq!(Version::parse(" v2 "), Some(Version::V2));
        for bad in ["v3", "V2", "", "2", "true"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
    }
}
