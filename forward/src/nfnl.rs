//! Element-only deltas ([`ElementDelta`]) sent as one nf_tables batch over a netfilter netlink
//! socket that stays open, instead of an `nft -f` process per update (ADR 0016, "later
//! measurements"): a process that commits waits ~14 ms in `close()` of its netlink socket for
//! the kernel's deferred transaction cleanup, plus ~4 ms to start. The messages are what `nft`
//! sends for `delete element` and `add element`: one DELSETELEM and one NEWSETELEM per map,
//! between batch begin and end, each acknowledged. Encoding reads the element text the
//! renderer wrote (see `ferrolb_core::forward::nft`), whose forms are few and fixed.
//!
//! A full apply goes this way too when the table is nothing but its fixed base, the shared pick
//! chains and elements ([`TableParts`]): `nft` spends ~0.7 s of CPU parsing the 4 MB script of
//! 10,000 Services, which here is an encoding of typed parts. The messages are those `nft`
//! 1.0.6 sends for the same script (`nft --debug=mnl`), set user data included, so `nft list`
//! and later `nft -f` deltas read the table as if `nft` had built it.

use crate::ForwardError;
use ferrolb_core::forward::nft::{ElementDelta, MapName, NftConfig, TableParts};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

mod table;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_APPEND: u16 = 0x800;
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
const NF_ACCEPT: i32 = 1;

/// Element bytes per NEWSETELEM message: an attribute's length is 16 bits, so a map's elements
/// go in several messages of one batch (as `nft` splits them).
const ELEMENTS_PER_MESSAGE_BYTES: usize = 32 * 1024;
/// Socket buffers below this are raised to fit a batch and its acknowledgements.
const DEFAULT_BUFFER: usize = 208 * 1024;

/// How long to wait for the kernel's answer to a batch before giving up on it.
const ANSWER_TIMEOUT_S: i64 = 5;

/// A netfilter netlink socket, in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct NfSocket {
    fd: OwnedFd,
    seq: u32,
    /// The send and receive buffer size set so far.
    buffers: usize,
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
        Ok(Self {
            fd,
            seq: 1,
            buffers: DEFAULT_BUFFER,
        })
    }

    /// Deletes and then adds `delta`'s elements in table `inet <table>`, in one transaction:
    /// all of it or, on any error, none of it.
    pub fn apply(&mut self, table: &str, delta: &ElementDelta) -> Result<(), ForwardError> {
        let mut batch = Batch::new(self.seq);
        for (map, keys) in &delta.delete {
            let elements = keys
                .iter()
                .map(|k| Ok((encode_key(*map, k)?, None)))
                .collect::<Result<Vec<_>, ForwardError>>()?;
            batch.elements(NFT_MSG_DELSETELEM, table, *map, &elements);
        }
        for (map, elements) in &delta.add {
            let elements = encode_elements(*map, elements)?;
            batch.elements(NFT_MSG_NEWSETELEM, table, *map, &elements);
        }
        if batch.asked.is_empty() {
            return Ok(());
        }
        self.send(batch)
    }

    /// Replaces table `inet <table>` (whatever a previous run left, or none) with `parts` in
    /// one transaction: what [`ferrolb_core::forward::nft::full_transaction`]'s script does.
    pub fn apply_full(&mut self, cfg: &NftConfig, parts: &TableParts) -> Result<(), ForwardError> {
        let mut elements = Vec::new();
        for (map, els) in &parts.elements {
            elements.push((*map, encode_elements(*map, els)?));
        }
        let mut batch = Batch::new(self.seq);
        table::table_base(&mut batch, cfg);
        for pick in &parts.picks {
            table::pick_chain(&mut batch, cfg, pick);
        }
        for (map, els) in &elements {
            batch.elements(NFT_MSG_NEWSETELEM, &cfg.table, *map, els);
        }
        self.send(batch)
    }

    /// Sends `batch` (raising the socket's buffers to fit it and its answers) and waits for
    /// every answer.
    fn send(&mut self, batch: Batch) -> Result<(), ForwardError> {
        let (first, buf, asked, next) = batch.finish();
        self.seq = next;
        let fit = buf.len() + 4096;
        if fit > DEFAULT_BUFFER && fit > self.buffers {
            // Acknowledgements are small, but one error echoes its whole message.
            setsockopt(&self.fd, sockopt::SndBufForce, &fit)
                .and_then(|()| setsockopt(&self.fd, sockopt::RcvBufForce, &fit))
                .map_err(|e| netlink("sizing the socket's buffers", e.into()))?;
            self.buffers = fit;
        }
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

    /// Reads acknowledgements until every message in `asked` has one; the first error wins.
    /// Answers to earlier batches (seq below `first`) are skipped.
    fn answers(&self, first: u32, mut asked: BTreeMap<u32, String>) -> Result<(), ForwardError> {
        // Room for an error echoing the largest message of a batch.
        let mut buf = vec![0u8; 2 * ELEMENTS_PER_MESSAGE_BYTES + 64 * 1024];
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

/// One nf_tables batch being written: begin, messages (each asking for an acknowledgement),
/// end, with what each message does for error reports.
struct Batch {
    buf: Vec<u8>,
    first: u32,
    seq: u32,
    asked: BTreeMap<u32, String>,
}

impl Batch {
    fn new(seq: u32) -> Self {
        let mut batch = Self {
            buf: Vec::new(),
            first: seq,
            seq,
            asked: BTreeMap::new(),
        };
        let s = batch.next_seq();
        message(
            &mut batch.buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            s,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        batch
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1).max(1);
        s
    }

    /// Appends one nf_tables message of `kind` (family inet) with `flags` besides request and
    /// acknowledgement; `what` names it in errors.
    fn message(&mut self, kind: u16, flags: u16, what: String, body: impl FnOnce(&mut Vec<u8>)) {
        let seq = self.next_seq();
        message(
            &mut self.buf,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            NFPROTO_INET,
            0,
            body,
        );
        self.asked.insert(seq, what);
    }

    /// NEWSETELEM or DELSETELEM messages for `elements` of `map`, as many as their size needs.
    fn elements(&mut self, kind: u16, table: &str, map: MapName, elements: &[Encoded]) {
        let (flags, what) = if kind == NFT_MSG_NEWSETELEM {
            (NLM_F_CREATE, "add element")
        } else {
            (0, "delete element")
        };
        let mut rest = elements;
        while !rest.is_empty() {
            let mut size = 0;
            let n = rest
                .iter()
                .take_while(|(k, d)| {
                    size += k.len() + d.as_ref().map_or(0, Data::len) + 32;
                    size <= ELEMENTS_PER_MESSAGE_BYTES
                })
                .count()
                .max(1);
            let (chunk, later) = rest.split_at(n);
            rest = later;
            self.message(kind, flags, format!("{what} {}", map.as_str()), |b| {
                attr_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
                attr_str(b, NFTA_SET_ELEM_LIST_SET, map.as_str());
                nest(b, NFTA_SET_ELEM_LIST_ELEMENTS, |b| {
                    for (key, data) in chunk {
                        nest(b, NFTA_LIST_ELEM, |b| {
                            nest(b, NFTA_SET_ELEM_KEY, |b| attr(b, NFTA_DATA_VALUE, key));
                            if let Some(data) = data {
                                nest(b, NFTA_SET_ELEM_DATA, |b| data.encode(b));
                            }
                        });
                    }
                });
            });
        }
    }

    /// The bytes with batch end, the first sequence number, the messages asked about, and
    /// the next free sequence number.
    fn finish(mut self) -> (u32, Vec<u8>, BTreeMap<u32, String>, u32) {
        let s = self.next_seq();
        message(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            s,
            0,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        (self.first, self.buf, self.asked, self.seq)
    }
}

/// An element's key bytes and data.
type Encoded = (Vec<u8>, Option<Data>);

fn encode_elements(
    map: MapName,
    elements: &[(String, String)],
) -> Result<Vec<Encoded>, ForwardError> {
    elements
        .iter()
        .map(|(k, v)| Ok((encode_key(map, k)?, encode_value(map, v)?)))
        .collect()
}

/// An element's data: a value, or a verdict with its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Value(Vec<u8>),
    Verdict(i32, String),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Value(v) => v.len(),
            Data::Verdict(_, chain) => chain.len() + 16,
        }
    }

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
    if (out.len() > 12) != map.ipv6() {
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
    fn many_elements_go_in_several_messages_of_one_batch() {
        // 10,000 endpoint elements: ~0.4 MB, far over one attribute's 64 KB.
        let elements: Vec<(String, String)> = (0..10_000u32)
            .map(|i| {
                let vip = format!("198.18.{}.{}", 128 + i / 250, i % 250 + 1);
                (
                    format!("{vip} . 80 . 0"),
                    "198.51.100.10 . 8080".to_string(),
                )
            })
            .collect();
        let encoded = encode_elements(MapName::Be4(Protocol::Tcp), &elements).unwrap();
        let mut batch = Batch::new(41);
        batch.elements(
            NFT_MSG_NEWSETELEM,
            "ferrolb",
            MapName::Be4(Protocol::Tcp),
            &encoded,
        );
        let asked = batch.asked.len();
        let (first, buf, answers, next) = batch.finish();
        let msgs = messages(&buf);
        assert!(asked > 1, "{asked} messages");
        assert_eq!(msgs.len(), asked + 2, "begin, the element messages, end");
        assert_eq!((first, next), (41, 41 + asked as u32 + 2));
        assert_eq!(answers.len(), asked);
        assert!(msgs.iter().all(|(_, _, p)| p.len() < 64 * 1024));
        // Every element is in exactly one message: count the key attributes' keys.
        let keys = buf
            .windows(12)
            .filter(|w| w[4..12] == [198, 51, 100, 10, 0x1f, 0x90, 0, 0])
            .count();
        assert_eq!(keys, 10_000);
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
