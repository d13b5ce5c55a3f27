//! The table's fixed base and the shared pick chains as nf_tables messages: what `nft` sends
//! for the commands of `ferrolb_core::forward::nft` (its `base_commands` and `PickChain`
//! rules), attribute for attribute. The netns test `full_apply_over_netlink_builds_what_nft_builds`
//! compares the two tables as `nft -j` lists them, so the renderers cannot drift apart unseen.

use super::{Batch, NF_ACCEPT, NLM_F_APPEND, NLM_F_CREATE, attr, attr_str, nest};
use ferrolb_core::forward::Protocol;
use ferrolb_core::forward::nft::{MapName, NftConfig, PickChain};

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_EXPR: u16 = 17;
const NFT_SET_MAP: u32 = 0x8;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

// Registers: 1 is the first 16-byte register (32-bit registers 8-11), 2 the second (12-15);
// 9, 10 and 13 are 32-bit registers.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

// Hooks and priorities of the base chains.
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;

/// What `nft` calls a datatype, by its number (concatenations pack them 6 bits apiece).
const TYPE_INTEGER: u32 = 4;
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_PROTO: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;

fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

fn u32_attr(b: &mut Vec<u8>, kind: u16, v: u32) {
    attr(b, kind, &v.to_be_bytes());
}

/// Per family: `nfproto`, daddr offset and length, and the registers a frontend key
/// (`daddr . l4proto . dport`) and a pick key (`daddr . dport . numgen`) use after the address.
#[derive(Clone, Copy)]
struct Fam {
    v6: bool,
}

impl Fam {
    fn nfproto(self) -> u8 {
        if self.v6 { 10 } else { 2 }
    }
    fn daddr(self) -> (u32, u32) {
        if self.v6 { (24, 16) } else { (16, 4) }
    }
    /// The 32-bit register right after the address, and the one after that.
    fn regs_after_addr(self) -> (u32, u32) {
        if self.v6 { (2, 13) } else { (9, 10) }
    }
    fn maps(self) -> [MapName; 4] {
        MapName::frontends(self.v6)
    }
}

const FAMILIES: [Fam; 2] = [Fam { v6: false }, Fam { v6: true }];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// The set's id in the batch: its position in [`MapName::all`], from 1.
fn set_id(map: MapName) -> u32 {
    let i = MapName::all()
        .position(|m| m == map)
        .expect("every map is in all()");
    u32::try_from(i + 1).expect("fourteen maps")
}

/// `add table; delete table; add table`, the maps, the base and refusal chains and their rules.
pub(super) fn table_base(batch: &mut Batch, cfg: &NftConfig) {
    let t = cfg.table.as_str();
    let table = |b: &mut Vec<u8>| {
        attr_str(b, NFTA_TABLE_NAME, t);
        u32_attr(b, NFTA_TABLE_FLAGS, 0);
    };
    batch.message(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        format!("add table {t}"),
        table,
    );
    batch.message(NFT_MSG_DELTABLE, 0, format!("delete table {t}"), |b| {
        attr_str(b, NFTA_TABLE_NAME, t)
    });
    batch.message(
        NFT_MSG_NEWTABLE,
        NLM_F_CREATE,
        format!("add table {t}"),
        table,
    );
    for map in MapName::all() {
        batch.message(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            format!("add set {}", map.as_str()),
            |b| set_definition(b, t, map),
        );
    }
    let base = [
        ("nat-prerouting", "nat", NF_INET_PRE_ROUTING, -100),
        ("nat-postrouting", "nat", NF_INET_POST_ROUTING, 100),
        ("filter-forward", "filter", NF_INET_FORWARD, 0),
    ];
    for (name, kind, hook, priority) in base {
        chain(batch, t, name, Some((kind, hook, priority)));
    }
    for name in ["refuse-reset", "refuse-unreachable"] {
        chain(batch, t, name, None);
    }
    // nat-prerouting: `<ip|ip6> daddr . meta l4proto . th dport` looked up in flt (vmap),
    // conn (set) and svc (vmap).
    for fam in FAMILIES {
        let [svc, flt, conn, _] = fam.maps();
        for (map, verdict) in [(flt, true), (conn, false), (svc, true)] {
            rule(batch, t, "nat-prerouting", |b| {
                frontend_key(b, fam);
                lookup(b, map, verdict.then_some(REG_VERDICT));
            });
        }
    }
    // filter-forward: `meta nfproto … meta l4proto … ct original daddr . meta l4proto . ct
    // original proto-dst @bytes… accept`.
    for fam in FAMILIES {
        let bytes = fam.maps()[3];
        let (l4, port) = fam.regs_after_addr();
        for proto in PROTOCOLS {
            rule(batch, t, "filter-forward", |b| {
                meta_load(b, META_NFPROTO, REG_1);
                cmp(b, CMP_EQ, &[fam.nfproto()]);
                meta_load(b, META_L4PROTO, REG_1);
                cmp(b, CMP_EQ, &[proto_number(proto)]);
                ct_load(b, if fam.v6 { CT_DST_IP6 } else { CT_DST_IP }, REG_1);
                meta_load(b, META_L4PROTO, l4);
                ct_load(b, CT_PROTO_DST, port);
                lookup(b, bytes, None);
                expr(b, "immediate", |b| {
                    u32_attr(b, 1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
                    nest(b, 2, |b| {
                        // NFTA_IMMEDIATE_DATA
                        nest(b, NFTA_DATA_VERDICT, |b| {
                            attr(b, NFTA_VERDICT_CODE, &NF_ACCEPT.to_be_bytes())
                        })
                    });
                });
            });
        }
    }
    // nat-postrouting: `meta mark & M != 0 meta mark set meta mark & ~M masquerade fully-random`.
    let mark = cfg.masquerade_mark;
    rule(batch, t, "nat-postrouting", |b| {
        meta_load(b, META_MARK, REG_1);
        bitwise(b, mark, 0);
        expr(b, "cmp", |b| {
            u32_attr(b, 1, REG_1);
            u32_attr(b, 2, CMP_NEQ);
            nest(b, 3, |b| attr(b, NFTA_DATA_VALUE, &0u32.to_ne_bytes()));
        });
        meta_load(b, META_MARK, REG_1);
        bitwise(b, !mark, 0);
        meta_set(b, META_MARK, REG_1);
        expr(b, "masq", |b| {
            u32_attr(b, 1, NF_NAT_RANGE_PROTO_RANDOM_FULLY)
        });
    });
    rule(batch, t, "refuse-reset", |b| {
        meta_load(b, META_L4PROTO, REG_1);
        cmp(b, CMP_EQ, &[proto_number(Protocol::Tcp)]);
        reject(b, 1, 0); // NFT_REJECT_TCP_RST
    });
    rule(batch, t, "refuse-unreachable", |b| reject(b, 2, 1)); // icmpx port-unreachable
}

/// A NEWCHAIN: a base chain with its (type, hook, priority) and policy accept, or a regular one.
fn chain(batch: &mut Batch, table: &str, name: &str, base: Option<(&str, u32, i32)>) {
    batch.message(
        NFT_MSG_NEWCHAIN,
        NLM_F_CREATE,
        format!("add chain {name}"),
        |b| {
            attr_str(b, NFTA_CHAIN_TABLE, table);
            attr_str(b, NFTA_CHAIN_NAME, name);
            if let Some((kind, hook, priority)) = base {
                attr_str(b, NFTA_CHAIN_TYPE, kind);
                u32_attr(b, NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
                nest(b, NFTA_CHAIN_HOOK, |b| {
                    u32_attr(b, NFTA_HOOK_HOOKNUM, hook);
                    attr(b, NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
                });
            }
        },
    );
}

/// A shared pick chain with its rule.
pub(super) fn pick_chain(batch: &mut Batch, cfg: &NftConfig, pick: &PickChain) {
    let name = pick.name();
    chain(batch, &cfg.table, &name, None);
    rule(batch, &cfg.table, &name, |b| pick_rule(b, cfg, pick));
}

/// The pick chain's rule: `[meta mark set meta mark | M] dnat <ip|ip6> to <ip|ip6> daddr .
/// <proto> dport . numgen random mod N map @be…`.
fn pick_rule(b: &mut Vec<u8>, cfg: &NftConfig, pick: &PickChain) {
    let fam = Fam { v6: pick.ipv6 };
    if pick.masquerade {
        meta_load(b, META_MARK, REG_1);
        bitwise(b, !cfg.masquerade_mark, cfg.masquerade_mark);
        meta_set(b, META_MARK, REG_1);
    }
    meta_load(b, META_NFPROTO, REG_1);
    cmp(b, CMP_EQ, &[fam.nfproto()]);
    meta_load(b, META_L4PROTO, REG_1);
    cmp(b, CMP_EQ, &[proto_number(pick.protocol)]);
    let (offset, len) = fam.daddr();
    let (port, index) = fam.regs_after_addr();
    payload(b, REG_1, BASE_NETWORK, offset, len);
    payload(b, port, BASE_TRANSPORT, 2, 2);
    expr(b, "numgen", |b| {
        u32_attr(b, 1, index); // NFTA_NG_DREG
        u32_attr(b, 2, u32::try_from(pick.endpoints).unwrap_or(u32::MAX)); // NFTA_NG_MODULUS
        u32_attr(b, 3, 1); // NFTA_NG_TYPE: random
        u32_attr(b, 4, 0); // NFTA_NG_OFFSET
    });
    lookup(b, pick.backends(), Some(REG_1));
    expr(b, "nat", |b| {
        u32_attr(b, 1, 1); // NFTA_NAT_TYPE: dnat
        u32_attr(b, 2, u32::from(fam.nfproto())); // NFTA_NAT_FAMILY
        u32_attr(b, 3, REG_1); // NFTA_NAT_REG_ADDR_MIN
        u32_attr(b, 5, port); // NFTA_NAT_REG_PROTO_MIN
    });
}

/// A NEWRULE appending `body`'s expressions to `chain`.
fn rule(batch: &mut Batch, table: &str, chain: &str, body: impl FnOnce(&mut Vec<u8>)) {
    batch.message(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        format!("add rule {chain}"),
        |b| {
            attr_str(b, NFTA_RULE_TABLE, table);
            attr_str(b, NFTA_RULE_CHAIN, chain);
            nest(b, NFTA_RULE_EXPRESSIONS, body);
        },
    );
}

fn expr(b: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    nest(b, NFTA_LIST_ELEM, |b| {
        attr_str(b, NFTA_EXPR_NAME, name);
        nest(b, NFTA_EXPR_DATA, data);
    });
}

const META_MARK: u32 = 3;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CT_PROTO_DST: u32 = 12;
const CT_DST_IP: u32 = 20;
const CT_DST_IP6: u32 = 22;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const NF_NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

fn meta_load(b: &mut Vec<u8>, key: u32, dreg: u32) {
    expr(b, "meta", |b| {
        u32_attr(b, 2, key); // NFTA_META_KEY
        u32_attr(b, 1, dreg); // NFTA_META_DREG
    });
}

fn meta_set(b: &mut Vec<u8>, key: u32, sreg: u32) {
    expr(b, "meta", |b| {
        u32_attr(b, 2, key); // NFTA_META_KEY
        u32_attr(b, 3, sreg); // NFTA_META_SREG
    });
}

/// Compares register 1 with `value`.
fn cmp(b: &mut Vec<u8>, op: u32, value: &[u8]) {
    expr(b, "cmp", |b| {
        u32_attr(b, 1, REG_1); // NFTA_CMP_SREG
        u32_attr(b, 2, op); // NFTA_CMP_OP
        nest(b, 3, |b| attr(b, NFTA_DATA_VALUE, value)); // NFTA_CMP_DATA
    });
}

fn payload(b: &mut Vec<u8>, dreg: u32, base: u32, offset: u32, len: u32) {
    expr(b, "payload", |b| {
        u32_attr(b, 1, dreg);
        u32_attr(b, 2, base);
        u32_attr(b, 3, offset);
        u32_attr(b, 4, len);
    });
}

fn ct_load(b: &mut Vec<u8>, key: u32, dreg: u32) {
    expr(b, "ct", |b| {
        u32_attr(b, 2, key); // NFTA_CT_KEY
        u32_attr(b, 1, dreg); // NFTA_CT_DREG
        attr(b, 3, &[0]); // NFTA_CT_DIRECTION: original
    });
}

/// Register 1 = (register 1 & mask) ^ xor, on the 32-bit mark (host byte order).
fn bitwise(b: &mut Vec<u8>, mask: u32, xor: u32) {
    expr(b, "bitwise", |b| {
        u32_attr(b, 1, REG_1); // NFTA_BITWISE_SREG
        u32_attr(b, 2, REG_1); // NFTA_BITWISE_DREG
        u32_attr(b, 6, 0); // NFTA_BITWISE_OP: mask and xor
        u32_attr(b, 3, 4); // NFTA_BITWISE_LEN
        nest(b, 4, |b| attr(b, NFTA_DATA_VALUE, &mask.to_ne_bytes()));
        nest(b, 5, |b| attr(b, NFTA_DATA_VALUE, &xor.to_ne_bytes()));
    });
}

/// Looks register 1 up in `map`; a map's data goes to `dreg`.
fn lookup(b: &mut Vec<u8>, map: MapName, dreg: Option<u32>) {
    expr(b, "lookup", |b| {
        u32_attr(b, 2, REG_1); // NFTA_LOOKUP_SREG
        if let Some(d) = dreg {
            u32_attr(b, 3, d); // NFTA_LOOKUP_DREG
        }
        attr_str(b, 1, map.as_str()); // NFTA_LOOKUP_SET
        u32_attr(b, 4, set_id(map)); // NFTA_LOOKUP_SET_ID
    });
}

fn reject(b: &mut Vec<u8>, kind: u32, code: u8) {
    expr(b, "reject", |b| {
        u32_attr(b, 1, kind);
        attr(b, 2, &[code]);
    });
}

/// `daddr . meta l4proto . th dport` into registers 1, then the two after the address, after
/// `meta nfproto` matched the family.
fn frontend_key(b: &mut Vec<u8>, fam: Fam) {
    let (offset, len) = fam.daddr();
    let (l4, port) = fam.regs_after_addr();
    meta_load(b, META_NFPROTO, REG_1);
    cmp(b, CMP_EQ, &[fam.nfproto()]);
    payload(b, REG_1, BASE_NETWORK, offset, len);
    meta_load(b, META_L4PROTO, l4);
    payload(b, port, BASE_TRANSPORT, 2, 2);
}

/// NEWSET attributes: key and data types and lengths, and the user data `nft` keeps there to
/// print the set back (byte orders; `typeof` expressions for the backend maps).
fn set_definition(b: &mut Vec<u8>, table: &str, map: MapName) {
    attr_str(b, NFTA_SET_TABLE, table);
    attr_str(b, NFTA_SET_NAME, map.as_str());
    let v6 = map.ipv6();
    let (addr_type, addr_len) = if v6 {
        (TYPE_IPV6_ADDR, 16)
    } else {
        (TYPE_IPV4_ADDR, 4)
    };
    let mut udata = Vec::new();
    match map {
        MapName::Svc4 | MapName::Svc6 | MapName::Flt4 | MapName::Flt6 => {
            u32_attr(b, NFTA_SET_FLAGS, NFT_SET_MAP);
            u32_attr(b, NFTA_SET_KEY_TYPE, frontend_type(addr_type));
            u32_attr(b, NFTA_SET_KEY_LEN, addr_len + 8);
            u32_attr(b, NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            u32_attr(b, NFTA_SET_DATA_LEN, 0);
            u32_attr(b, NFTA_SET_ID, set_id(map));
            byteorders(&mut udata, true);
            typeof_concat(&mut udata, UDATA_KEY_TYPEOF, &[]);
            tlv(&mut udata, UDATA_DATA_INTERVAL, &0u32.to_ne_bytes());
            attr(b, NFTA_SET_USERDATA, &udata);
        }
        MapName::Conn4 | MapName::Conn6 | MapName::Bytes4 | MapName::Bytes6 => {
            u32_attr(b, NFTA_SET_FLAGS, 0);
            u32_attr(b, NFTA_SET_KEY_TYPE, frontend_type(addr_type));
            u32_attr(b, NFTA_SET_KEY_LEN, addr_len + 8);
            u32_attr(b, NFTA_SET_ID, set_id(map));
            byteorders(&mut udata, false);
            typeof_concat(&mut udata, UDATA_KEY_TYPEOF, &[]);
            attr(b, NFTA_SET_USERDATA, &udata);
            // Every element gets its own counter (the kernel clones the set's expression).
            nest(b, NFTA_SET_EXPR, |b| {
                attr_str(b, NFTA_EXPR_NAME, "counter");
                nest(b, NFTA_EXPR_DATA, |_| {});
            });
        }
        MapName::Be4(p) | MapName::Be6(p) => {
            u32_attr(b, NFTA_SET_FLAGS, NFT_SET_MAP);
            let key = [addr_type, TYPE_INET_SERVICE, TYPE_INTEGER];
            u32_attr(b, NFTA_SET_KEY_TYPE, concat_type(&key));
            u32_attr(b, NFTA_SET_KEY_LEN, addr_len + 8);
            u32_attr(b, NFTA_SET_DATA_TYPE, concat_type(&key[..2]));
            u32_attr(b, NFTA_SET_DATA_LEN, addr_len + 4);
            u32_attr(b, NFTA_SET_ID, set_id(map));
            byteorders(&mut udata, true);
            let daddr = TypeofExpr::Payload {
                desc: if v6 { PROTO_IP6 } else { PROTO_IP },
                field: if v6 { IP6_DADDR } else { IP_DADDR },
            };
            let dport = TypeofExpr::Payload {
                desc: match p {
                    Protocol::Tcp => PROTO_TCP,
                    Protocol::Udp => PROTO_UDP,
                    Protocol::Sctp => PROTO_SCTP,
                },
                field: TH_DPORT,
            };
            typeof_concat(
                &mut udata,
                UDATA_KEY_TYPEOF,
                &[daddr, dport, TypeofExpr::NumgenRandomMod1],
            );
            typeof_concat(&mut udata, UDATA_DATA_TYPEOF, &[daddr, dport]);
            tlv(&mut udata, UDATA_DATA_INTERVAL, &0u32.to_ne_bytes());
            attr(b, NFTA_SET_USERDATA, &udata);
        }
    }
}

fn frontend_type(addr_type: u32) -> u32 {
    concat_type(&[addr_type, TYPE_INET_PROTO, TYPE_INET_SERVICE])
}

// libnftnl's set user data: type-length-value records with one-byte types and lengths.
const UDATA_KEYBYTEORDER: u8 = 0;
const UDATA_DATABYTEORDER: u8 = 1;
const UDATA_KEY_TYPEOF: u8 = 3;
const UDATA_DATA_TYPEOF: u8 = 4;
const UDATA_DATA_INTERVAL: u8 = 6;
// Expression kinds and payload descriptions as `nft` numbers them in `typeof` records.
const EXPR_PAYLOAD: u32 = 7;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;
const PROTO_UDP: u32 = 6;
const PROTO_TCP: u32 = 8;
const PROTO_SCTP: u32 = 10;
const PROTO_IP: u32 = 12;
const PROTO_IP6: u32 = 13;
const IP_DADDR: u32 = 12;
const IP6_DADDR: u32 = 9;
const TH_DPORT: u32 = 2;

#[derive(Clone, Copy)]
enum TypeofExpr {
    Payload { desc: u32, field: u32 },
    NumgenRandomMod1,
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    out.push(kind);
    out.push(u8::try_from(value.len()).expect("a user data record fits in 255 bytes"));
    out.extend_from_slice(value);
}

fn byteorders(out: &mut Vec<u8>, map: bool) {
    tlv(out, UDATA_KEYBYTEORDER, &0u32.to_ne_bytes());
    if map {
        tlv(out, UDATA_DATABYTEORDER, &0u32.to_ne_bytes());
    }
}

/// A `typeof` record of a concatenation of `parts` (none: a key given by `type`).
fn typeof_concat(out: &mut Vec<u8>, kind: u8, parts: &[TypeofExpr]) {
    let mut elems = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let mut data = Vec::new();
        let expr = match part {
            TypeofExpr::Payload { desc, field } => {
                tlv(&mut data, 0, &desc.to_ne_bytes());
                tlv(&mut data, 1, &field.to_ne_bytes());
                EXPR_PAYLOAD
            }
            TypeofExpr::NumgenRandomMod1 => {
                tlv(&mut data, 0, &1u32.to_ne_bytes()); // random
                tlv(&mut data, 1, &1u32.to_ne_bytes()); // mod 1
                tlv(&mut data, 2, &0u32.to_ne_bytes()); // offset 0
                EXPR_NUMGEN
            }
        };
        let mut elem = Vec::new();
        tlv(&mut elem, 0, &expr.to_ne_bytes());
        tlv(&mut elem, 1, &data);
        tlv(&mut elems, u8::try_from(i).expect("three parts"), &elem);
    }
    let mut record = Vec::new();
    tlv(&mut record, 0, &EXPR_CONCAT.to_ne_bytes());
    tlv(&mut record, 1, &elems);
    tlv(out, kind, &record);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// User data `nft` 1.0.6 wrote for `typeof ip daddr . tcp dport . numgen random mod 1 :
    /// ip daddr . tcp dport` (`nft --debug=mnl`, NFTA_SET_USERDATA of `be4tcp`).
    const BE4TCP_UDATA: &str = "000400000000010400000000035000040d00000001480014000407000000010c00040c00000001040c0000000114000407000000010c000408000000010402000000021a0004170000000112000401000000010401000000020400000000043400040d000000012c0014000407000000010c00040c00000001040c0000000114000407000000010c000408000000010402000000060400000000";
    /// For `type ipv4_addr . inet_proto . inet_service : verdict` (`svc4`).
    const SVC4_UDATA: &str = "000400000000010400000000030800040d0000000100060400000000";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn udata_of(map: MapName) -> String {
        let mut b = Vec::new();
        set_definition(&mut b, "ferrolb", map);
        // The user data is the attribute of type 13; walk the attributes to it.
        let mut rest = b.as_slice();
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            let kind = u16::from_ne_bytes([rest[2], rest[3]]);
            if kind == NFTA_SET_USERDATA {
                return hex(&rest[4..len]);
            }
            rest = &rest[(len + 3) & !3..];
        }
        panic!("no user data");
    }

    #[test]
    fn set_user_data_is_what_nft_writes() {
        if cfg!(target_endian = "little") {
            assert_eq!(udata_of(MapName::Be4(Protocol::Tcp)), BE4TCP_UDATA);
            assert_eq!(udata_of(MapName::Svc4), SVC4_UDATA);
        }
    }

    #[test]
    fn concatenated_types_pack_six_bits_per_part() {
        assert_eq!(frontend_type(TYPE_IPV4_ADDR), 0x730d);
        assert_eq!(frontend_type(TYPE_IPV6_ADDR), 0x830d);
        assert_eq!(
            concat_type(&[TYPE_IPV4_ADDR, TYPE_INET_SERVICE, TYPE_INTEGER]),
            0x7344
        );
        assert_eq!(concat_type(&[TYPE_IPV6_ADDR, TYPE_INET_SERVICE]), 0x20d);
    }
}
