//! Element-only deltas ([`ElementDelta`]) sent as one nf_tables batch over a netfilter netlink
//! socket that stays open, instead of an `nft -f` process per update (ADR 0016, "later
//! measurements"): a process that commits waits ~14 ms in `close()` of its netlink socket for
//! the kernel's deferred transaction cleanup, plus ~4 ms to start. The messages are what `nft`
//! sends for `delete element` and `add element`: one DELSETELEM and one NEWSETELEM per map,
//! between batch begin and end, each acknowledged. Encoding reads the element text the
//! renderer wrote (see `ferrolb_core::forward::nft`), whose forms are few and fixed.

use crate::ForwardError;
use ferrolb_core::forward::nft::{ElementDelta, MapName};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// How long to wait for the kernel's answer to a batch before giving up on it.
const ANSWER_TIMEOUT_S: i64 = 5;

/// A netfilter netlink socket, in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct NfSocket {
    fd: OwnedFd,
    seq: u32,
}

impl NfSocket {
    /// Opens one in the calling thread's network namespace (needs CAP_NET_ADMIN to commit).
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(ANSWER_TIMEOUT_S, 0),
        )?;
        Ok(Self { fd, seq: 1 })
    }

    /// Deletes and then adds `delta`'s elements in table `inet <table>`, in one transaction:
    /// all of it or, on any error, none of it.
    pub fn apply(&mut self, table: &str, delta: &ElementDelta) -> Result<(), ForwardError> {
        let mut ops = Vec::new();
        for (map, keys) in &delta.delete {
            let elements = keys
                .iter()
                .map(|k| Ok((encode_key(*map, k)?, None)))
                .collect::<Result<Vec<_>, ForwardError>>()?;
            ops.push((NFT_MSG_DELSETELEM, *map, elements));
        }
        for (map, elements) in &delta.add {
            let elements = elements
                .iter()
                .map(|(k, v)| Ok((encode_key(*map, k)?, encode_value(*map, v)?)))
                .collect::<Result<Vec<_>, ForwardError>>()?;
            ops.push((NFT_MSG_NEWSETELEM, *map, elements));
        }
        if ops.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        let mut buf = Vec::new();
        message(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        let mut asked = BTreeMap::new();
        for (kind, map, elements) in &ops {
            let seq = self.next_seq();
            let flags = NLM_F_REQUEST
                | NLM_F_ACK
                | if *kind == NFT_MSG_NEWSETELEM {
                    NLM_F_CREATE
                } else {
                    0
                };
            message(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                flags,
                seq,
                NFPROTO_INET,
                0,
                |b| {
                    attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
                    attr_str(b, NFTA_SET_ELEM_LIST_SET, map.as_str());
                    nest(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                        for (key, data) in elements {
                            nest(b, NFTA_LIST_ELEM, |b| {
                                nest(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, key));
                                if let Some(data) = data {
                                    nest(b, NFTA_SET_ELEM_DATA, |b| data.encode(b));
                                }
                            });
                        }
                    });
                },
            );
            let what = if *kind == NFT_MSG_NEWSETELEM {
                "add element"
            } else {
                "delete element"
            };
            asked.insert(seq, format!("{what} {}", map.as_str()));
        }
        message(
            &mut buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        let kernel = NetlinkAddr::new(0, 0);
        let sent = sendto(self.fd.as_raw_fd(), &buf, &kernel, MsgFlags::empty())
            .map_err(|e| netlink("sending the batch", e.into()))?;
        if sent != buf.len() {
            return Err(netlink(
                "sending the batch",
                io::Error::other(format!("sent {sent} of {} bytes", buf.len())),
            ));
        }
        self.answers(first, asked)
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1).max(1);
        s
    }

    /// Reads acknowledgements until every message in `asked` has one; the first error wins.
    /// Answers to earlier batches (seq below `first`) are skipped.
    fn answers(&self, first: u32, mut asked: BTreeMap<u32, String>) -> Result<(), ForwardError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut failed: Option<ForwardError> = None;
        while !asked.is_empty() {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                // After an error the kernel may leave the rest unanswered: report that error.
                Err(_) if failed.is_some() => break,
                Err(e) => return Err(netlink("waiting for the kernel's answer", e.into())),
            };
            for (kind, seq, payload) in messages(&buf[..n]) {
                if kind != NLMSG_ERROR || seq < first || payload.len() < 4 {
                    continue;
                }
                let code = i32::from_ne_bytes(payload[..4].try_into().expect("4 bytes"));
                let what = asked
                    .remove(&seq)
                    .unwrap_or_else(|| "the batch".to_string());
                if code != 0 && failed.is_none() {
                    failed = Some(netlink(&what, io::Error::from_raw_os_error(-code)));
                    if what == "the batch" {
                        // The commit itself failed: nothing else will come.
                        asked.clear();
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

fn netlink(what: &str, source: io::Error) -> ForwardError {
    ForwardError::Netlink {
        what: what.to_string(),
        source,
    }
}

/// (type, seq, payload) of each netlink message in `buf`.
fn messages(mut buf: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(buf[8..12].try_into().expect("4 bytes"));
        out.push((kind, seq, &buf[16..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one netlink message: header, nfgenmsg, then what `body` writes.
fn message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, 0]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    body(buf);
    let len = u32::try_from(buf.len() - start).expect("a message fits in u32");
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("an attribute fits in u16");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align(buf.len()), 0);
}

fn attr_str(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(buf, kind, &v);
}

fn nest(buf: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    inner(buf);
    let len = u16::try_from(buf.len() - start).expect("an attribute fits in u16");
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// An element's data: a value, or a verdict with its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Value(Vec<u8>),
    Verdict(i32, String),
}

impl Data {
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Data::Value(v) => attr(buf, NFTA_DATA_VALUE, v),
            Data::Verdict(code, chain) => nest(buf, NFTA_DATA_VERDICT, |b| {
                attr(b, NFTA_VERDICT_CODE, &code.to_be_bytes());
                attr_str(b, NFTA_VERDICT_CHAIN, chain);
            }),
        }
    }
}

fn bad(map: MapName, text: &str, why: &str) -> ForwardError {
    netlink(
        &format!("encoding {text:?} for {}", map.as_str()),
        io::Error::new(io::ErrorKind::InvalidInput, why.to_string()),
    )
}

/// One field of a concatenation, padded to the kernel's 4-byte registers.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(align(out.len()), 0);
}

fn ip_field(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => field(out, &a.octets()),
        IpAddr::V6(a) => field(out, &a.octets()),
    }
}

/// The key's bytes: `vip . proto . port` for the frontend maps and sets, `vip . port . index`
/// for the backend maps (the index is numgen's result: a 32-bit host-order integer).
fn encode_key(map: MapName, key: &str) -> Result<Vec<u8>, ForwardError> {
    let parts: Vec<&str> = key.split(" . ").collect();
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .map_err(|_| bad(map, key, "not an address"))
    };
    let port = |s: &str| s.parse::<u16>().map_err(|_| bad(map, key, "not a port"));
    let mut out = Vec::new();
    match (map, parts.as_slice()) {
        (MapName::Be4(_) | MapName::Be6(_), [vip, p, index]) => {
            ip_field(&mut out, ip(vip)?);
            field(&mut out, &port(p)?.to_be_bytes());
            let i = index
                .parse::<u32>()
                .map_err(|_| bad(map, key, "not an index"))?;
            field(&mut out, &i.to_ne_bytes());
        }
        (MapName::Be4(_) | MapName::Be6(_), _) => {
            return Err(bad(map, key, "expected vip . port . index"));
        }
        (_, [vip, proto, p]) => {
            ip_field(&mut out, ip(vip)?);
            // IANA protocol numbers, as `meta l4proto` holds them.
            let number: u8 = match *proto {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                _ => return Err(bad(map, key, "not tcp, udp or sctp")),
            };
            field(&mut out, &[number]);
            field(&mut out, &port(p)?.to_be_bytes());
        }
        _ => return Err(bad(map, key, "expected vip . protocol . port")),
    }
    let v6 = matches!(
        map,
        MapName::Svc6 | MapName::Flt6 | MapName::Conn6 | MapName::Bytes6 | MapName::Be6(_)
    );
    if (out.len() > 12) != v6 {
        return Err(bad(map, key, "address of the other family"));
    }
    Ok(out)
}

/// The element's data, `None` in a set.
fn encode_value(map: MapName, value: &str) -> Result<Option<Data>, ForwardError> {
    match map {
        MapName::Conn4 | MapName::Conn6 | MapName::Bytes4 | MapName::Bytes6 => {
            if value.is_empty() {
                Ok(None)
            } else {
                Err(bad(map, value, "a set element has no value"))
            }
        }
        MapName::Svc4 | MapName::Svc6 | MapName::Flt4 | MapName::Flt6 => {
            let (code, chain) = match value.split_once(' ') {
                Some(("goto", chain)) => (NFT_GOTO, chain),
                Some(("jump", chain)) => (NFT_JUMP, chain),
                _ => return Err(bad(map, value, "expected goto or jump <chain>")),
            };
            Ok(Some(Data::Verdict(code, chain.to_string())))
        }
        MapName::Be4(_) | MapName::Be6(_) => {
            let Some((ip, port)) = value.split_once(" . ") else {
                return Err(bad(map, value, "expected <ip> . <port>"));
            };
            let mut out = Vec::new();
            ip_field(
                &mut out,
                ip.parse().map_err(|_| bad(map, value, "not an address"))?,
            );
            let port: u16 = port.parse().map_err(|_| bad(map, value, "not a port"))?;
            field(&mut out, &port.to_be_bytes());
            Ok(Some(Data::Value(out)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_core::forward::Protocol;

    #[test]
    fn frontend_keys_are_padded_fields_in_network_order() {
        let k = encode_key(MapName::Svc4, "192.0.2.10 . tcp . 80").unwrap();
        assert_eq!(k, [192, 0, 2, 10, 6, 0, 0, 0, 0, 80, 0, 0]);
        let k = encode_key(MapName::Bytes6, "2001:db8::1 . udp . 53").unwrap();
        assert_eq!(k.len(), 24);
        assert_eq!(&k[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(&k[16..], &[17, 0, 0, 0, 0, 53, 0, 0]);
    }

    #[test]
    fn backend_keys_end_in_a_host_order_index_and_values_are_endpoints() {
        let k = encode_key(MapName::Be4(Protocol::Tcp), "192.0.2.10 . 443 . 2").unwrap();
        let mut want = vec![192, 0, 2, 10, 1, 187, 0, 0];
        want.extend_from_slice(&2u32.to_ne_bytes());
        assert_eq!(k, want);
        let v = encode_value(MapName::Be4(Protocol::Tcp), "198.51.100.7 . 8443").unwrap();
        assert_eq!(
            v,
            Some(Data::Value(vec![198, 51, 100, 7, 0x20, 0xfb, 0, 0]))
        );
    }

    #[test]
    fn verdicts_and_set_elements() {
        assert_eq!(
            encode_value(MapName::Svc4, "goto pick-v4-tcp-2-masq").unwrap(),
            Some(Data::Verdict(NFT_GOTO, "pick-v4-tcp-2-masq".into()))
        );
        assert_eq!(
            encode_value(MapName::Flt6, "jump flt-default/web/tcp-80").unwrap(),
            Some(Data::Verdict(NFT_JUMP, "flt-default/web/tcp-80".into()))
        );
        assert_eq!(encode_value(MapName::Conn4, "").unwrap(), None);
    }

    #[test]
    fn text_the_renderer_never_writes_is_refused_not_guessed() {
        // Bad inputs tried: wrong family for the map, unknown protocol, missing field, a value
        // on a set element, a verdict without a chain, a port out of range.
        assert!(encode_key(MapName::Svc4, "2001:db8::1 . tcp . 80").is_err());
        assert!(encode_key(MapName::Svc6, "192.0.2.1 . tcp . 80").is_err());
        assert!(encode_key(MapName::Svc4, "192.0.2.1 . icmp . 80").is_err());
        assert!(encode_key(MapName::Be4(Protocol::Udp), "192.0.2.1 . 80").is_err());
        assert!(encode_key(MapName::Conn4, "192.0.2.1 . tcp . 70000").is_err());
        assert!(encode_value(MapName::Conn4, "counter").is_err());
        assert!(encode_value(MapName::Svc4, "goto").is_err());
        assert!(encode_value(MapName::Svc4, "accept").is_err());
    }

    #[test]
    fn a_message_has_its_length_and_nested_attributes_their_flag() {
        let mut buf = Vec::new();
        message(&mut buf, 0x0a0c, NLM_F_REQUEST, 7, NFPROTO_INET, 0, |b| {
            attr_str(b, NFTA_SET_ELEM_LIST_TABLE, "ferrolb");
            nest(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| attr(b, 1, &[1, 2, 3]));
        });
        // 16 header + 4 nfgenmsg + 12 table ("ferrolb\0" padded) + 4 nest + 8 attr (3 + pad).
        assert_eq!(buf.len(), 44);
        assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()), 44);
        assert_eq!(u32::from_ne_bytes(buf[8..12].try_into().unwrap()), 7);
        assert_eq!(
            u16::from_ne_bytes(buf[34..36].try_into().unwrap()),
            3 | NLA_F_NESTED
        );
        assert_eq!(u16::from_ne_bytes(buf[32..34].try_into().unwrap()), 12);
        let parsed = messages(&buf);
        assert_eq!(parsed.len(), 1);
        assert_eq!((parsed[0].0, parsed[0].1), (0x0a0c, 7));
    }
}
