//! Rendering a [`ForwardingPlan`] as nftables commands for `nft -f -`: one atomic transaction
//! per call, in FerroLB's own `inet` table.
//!
//! Layout: per-Service state is *data* (map elements and named counters), so the table holds a
//! handful of chains whatever the number of Services (ADR 0016). Per family, the nat
//! prerouting chain looks the packet's `daddr . l4proto . dport` up in
//! - `flt4`/`flt6` (`: jump flt-…` / `: goto refuse-…`): frontends that refuse some clients
//!   (source ranges, a per-Service chain) or all (no endpoints, a shared chain);
//! - `conn4`/`conn6`: a set with a counter per element (the kernel counts an element's
//!   lookups). Nat chains see only a connection's first packet, so an element's packets are
//!   the frontend's forwarded connections;
//! - `svc4`/`svc6` (`: goto pick-<v4|v6>-<proto>-<N>[-masq]`): a shared pick chain per
//!   family, protocol, endpoint count and source NAT, created while some Service uses it, whose
//!   one rule is `[meta mark set …] dnat to daddr . dport . numgen random mod N map @be4tcp`
//!   (the mark is what `nat-postrouting` masquerades, kube-proxy's scheme with another bit,
//!   for policy Cluster): the shared `be…` maps hold
//!   `vip . port . index : endpoint . port`. An endpoint swap is then element changes only (no
//!   table validation in the kernel); an endpoint count change moves one `svc4` element.
//!   With ClientIP affinity the element goes to the Service's own `svc-…` chain instead, which
//!   checks per-endpoint `aff-…` dynamic sets and picks through per-endpoint `ep-…` chains.
//!
//! A filter chain on the forward hook counts bytes per frontend (both directions) in the
//! element counters of `bytes4`/`bytes6`, looked up by the connection's original destination.
//! Counters are element data, not named objects, so `nft` has no objects to dump into its cache
//! before each transaction; they live while their frontend forwards ([`counter_sets`],
//! [`frontend_key`]). Few rules use each named map: the kernel walks a map's bindings whenever
//! a rule binds to it (0009), so no rule is ever added per Service.
//!
//! Object names and element keys belong to one Service (its frontends), so a change to one
//! Service only touches its own elements, counters and chains, plus a shared pick chain created
//! when the first Service needs it or deleted when the last one leaves it.

use super::{
    AllowedSources, Backends, Change, ForwardingPlan, Frontend, Protocol, ServiceKey, ServicePlan,
    SessionAffinity, SourceNat,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Settings for FerroLB's nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftConfig {
    /// Table name (family `inet`).
    pub table: String,
    /// Packet mark bit meaning "masquerade this connection" (kube-proxy uses 0x4000; we do not).
    pub masquerade_mark: u32,
}

impl Default for NftConfig {
    fn default() -> Self {
        Self {
            table: "ferrolb".into(),
            masquerade_mark: 0x0000_2000,
        }
    }
}

impl NftConfig {
    /// A config for the named table with the default mark.
    pub fn with_table(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            ..Self::default()
        }
    }

    fn family_table(&self) -> String {
        format!("inet {}", self.table)
    }
}

/// A map (or set) of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapName {
    /// IPv4 frontends that forward: the pick chain.
    Svc4,
    /// IPv6 frontends that forward: the pick chain.
    Svc6,
    /// IPv4 frontends that refuse some or all clients.
    Flt4,
    /// IPv6 frontends that refuse some or all clients.
    Flt6,
    /// IPv4 frontends that forward, each with its connection counter (a set).
    Conn4,
    /// IPv6 frontends that forward, each with its connection counter (a set).
    Conn6,
    /// IPv4 frontends that forward, each with its byte counter (a set).
    Bytes4,
    /// IPv6 frontends that forward, each with its byte counter (a set).
    Bytes6,
    /// `vip . port . index` → IPv4 endpoint and port, per protocol (nft 1.0.6 cannot read back
    /// a `th dport` map used after `meta l4proto tcp`, so each protocol gets its own typed map).
    Be4(Protocol),
    /// `vip . port . index` → IPv6 endpoint and port, per protocol.
    Be6(Protocol),
}

impl MapName {
    /// The map's name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            MapName::Svc4 => "svc4",
            MapName::Svc6 => "svc6",
            MapName::Flt4 => "flt4",
            MapName::Flt6 => "flt6",
            MapName::Conn4 => "conn4",
            MapName::Conn6 => "conn6",
            MapName::Bytes4 => "bytes4",
            MapName::Bytes6 => "bytes6",
            MapName::Be4(Protocol::Tcp) => "be4tcp",
            MapName::Be4(Protocol::Udp) => "be4udp",
            MapName::Be4(Protocol::Sctp) => "be4sctp",
            MapName::Be6(Protocol::Tcp) => "be6tcp",
            MapName::Be6(Protocol::Udp) => "be6udp",
            MapName::Be6(Protocol::Sctp) => "be6sctp",
        }
    }

    /// `add map …` or `add set …` with the definition body.
    fn definition(self, t: &str) -> String {
        let frontend = |fam: Family| format!("{} . inet_proto . inet_service", fam.addr_type());
        let (kind, body) = match self {
            MapName::Svc4 | MapName::Flt4 => ("map", format!("{} : verdict", frontend(Family::V4))),
            MapName::Svc6 | MapName::Flt6 => ("map", format!("{} : verdict", frontend(Family::V6))),
            MapName::Conn4 | MapName::Bytes4 => {
                ("set", format!("{}; counter", frontend(Family::V4)))
            }
            MapName::Conn6 | MapName::Bytes6 => {
                ("set", format!("{}; counter", frontend(Family::V6)))
            }
            MapName::Be4(p) | MapName::Be6(p) => {
                let (ip, p) = (
                    if matches!(self, MapName::Be4(_)) {
                        "ip"
                    } else {
                        "ip6"
                    },
                    p.as_str(),
                );
                let typeof_ = format!(
                    "typeof {ip} daddr . {p} dport . numgen random mod 1 : {ip} daddr . {p} dport"
                );
                return format!("add map {t} {} {{ {typeof_}; }}", self.as_str());
            }
        };
        format!("add {kind} {t} {} {{ type {body}; }}", self.as_str())
    }

    /// A family's maps and sets keyed by frontend: svc, flt, conn, bytes.
    pub fn frontends(ipv6: bool) -> [MapName; 4] {
        if ipv6 {
            [
                MapName::Svc6,
                MapName::Flt6,
                MapName::Conn6,
                MapName::Bytes6,
            ]
        } else {
            [
                MapName::Svc4,
                MapName::Flt4,
                MapName::Conn4,
                MapName::Bytes4,
            ]
        }
    }

    /// Whether its keys start with an IPv6 address.
    pub fn ipv6(self) -> bool {
        matches!(
            self,
            MapName::Svc6 | MapName::Flt6 | MapName::Conn6 | MapName::Bytes6 | MapName::Be6(_)
        )
    }

    /// Every map and set of the table, in the order the table creates them.
    pub fn all() -> impl Iterator<Item = MapName> {
        let protos = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
        [
            MapName::Svc4,
            MapName::Svc6,
            MapName::Flt4,
            MapName::Flt6,
            MapName::Conn4,
            MapName::Conn6,
            MapName::Bytes4,
            MapName::Bytes6,
        ]
        .into_iter()
        .chain(protos.map(MapName::Be4))
        .chain(protos.map(MapName::Be6))
    }
}

/// The nftables objects one Service needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceObjects {
    /// Set name → its definition body (`{ type …; }`).
    pub sets: BTreeMap<String, String>,
    /// Chain name → its rules, in order (the Service's own chains).
    pub chains: BTreeMap<String, Vec<String>>,
    /// (map, key) → value (a verdict, a counter, an endpoint; empty for a set element).
    pub elements: BTreeMap<(MapName, String), String>,
    /// Shared pick chains its elements jump to, by name.
    pub shared: BTreeMap<String, PickChain>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
    fn tag(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    fn ip(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    /// svc, flt, conn, bytes.
    fn maps(self) -> [MapName; 4] {
        MapName::frontends(self == Family::V6)
    }
    fn backends(self, proto: Protocol) -> MapName {
        match self {
            Family::V4 => MapName::Be4(proto),
            Family::V6 => MapName::Be6(proto),
        }
    }
}

/// nft identifiers allow letters, digits and `/-_.`; IPv6 colons become dots.
fn addr_part(ip: IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

/// The match that makes rule `i` of `n` pick its backend with probability 1/(n-i) among the
/// rules left, so each of the `n` is picked with probability 1/n (as kube-proxy's iptables mode).
fn pick(i: usize, n: usize) -> String {
    if i + 1 == n {
        String::new()
    } else {
        format!("numgen random mod {} 0 ", n - i)
    }
}

/// Frontends of one Service grouped by what they share: family, protocol and port.
struct Group<'a> {
    fam: Family,
    proto: Protocol,
    port: u16,
    vips: Vec<IpAddr>,
    backends: &'a Backends,
}

impl Group<'_> {
    /// `<proto>/<port>/<v4|v6>`, the group's name inside its Service.
    fn name(&self) -> String {
        format!("{}/{}/{}", self.proto.as_str(), self.port, self.fam.tag())
    }

    /// The backends this group forwards to, or `None` when it forwards nothing.
    fn forwarded<'b>(&'b self, service: &ServicePlan) -> Option<&'b [SocketAddr]> {
        let Backends::Forward { backends, .. } = self.backends else {
            return None;
        };
        if matches!(&service.allowed_sources, AllowedSources::Only(r) if !r.iter().any(|n| Family::of(n.addr()) == self.fam))
        {
            return None; // every client of this family is refused: nothing to forward
        }
        Some(backends)
    }
}

fn groups(service: &ServicePlan) -> Vec<Group<'_>> {
    let mut by: BTreeMap<(Family, Protocol, u16), Group<'_>> = BTreeMap::new();
    for (fe, backends) in &service.frontends {
        let (fam, proto, port) = (Family::of(fe.vip), fe.protocol, fe.port);
        by.entry((fam, proto, port))
            .or_insert(Group {
                fam,
                proto,
                port,
                vips: Vec::new(),
                backends,
            })
            .vips
            .push(fe.vip);
    }
    by.into_values().collect()
}

/// What an element counter of the table counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CounterKind {
    /// Its packets are the frontend's forwarded connections.
    Connections,
    /// Its bytes are the frontend's forwarded bytes, both directions, IP headers included.
    Bytes,
}

/// The rule marking a connection for masquerading in `nat-postrouting`.
fn mark_rule(cfg: &NftConfig) -> String {
    format!("meta mark set meta mark | {:#010x}", cfg.masquerade_mark)
}

/// A shared pick chain: one per family, protocol, endpoint count and source NAT in use, whose
/// one rule is `[meta mark set …] dnat to daddr . dport . numgen random mod N map @be…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PickChain {
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
    /// The frontends' protocol.
    pub protocol: Protocol,
    /// N: how many endpoints it picks among (index `0..N` in the backend map).
    pub endpoints: usize,
    /// Whether it marks connections for masquerading (policy Cluster).
    pub masquerade: bool,
}

impl PickChain {
    fn family(&self) -> Family {
        if self.ipv6 { Family::V6 } else { Family::V4 }
    }

    /// `pick-<v4|v6>-<proto>-<N>[-masq]`.
    pub fn name(&self) -> String {
        let suffix = if self.masquerade { "-masq" } else { "" };
        format!(
            "pick-{}-{}-{}{suffix}",
            self.family().tag(),
            self.protocol.as_str(),
            self.endpoints
        )
    }

    /// The backend map its rule looks endpoints up in.
    pub fn backends(&self) -> MapName {
        self.family().backends(self.protocol)
    }

    /// Its rules as nft text.
    fn rules(&self, cfg: &NftConfig) -> Vec<String> {
        let (ip, p) = (self.family().ip(), self.protocol.as_str());
        let mark = if self.masquerade {
            format!("{} ", mark_rule(cfg))
        } else {
            String::new()
        };
        vec![format!(
            "{mark}dnat {ip} to {ip} daddr . {p} dport . numgen random mod {} map @{}",
            self.endpoints,
            self.backends().as_str()
        )]
    }
}

/// The objects rendering `service` needs; a pure function of its arguments.
pub fn service_objects(cfg: &NftConfig, key: &ServiceKey, service: &ServicePlan) -> ServiceObjects {
    let mut objs = ServiceObjects::default();
    for group in groups(service) {
        let (fam, proto, port) = (group.fam, group.proto, group.port);
        let id = format!("{key}/{}", group.name());
        let [svc_map, flt_map, conn_map, bytes_map] = fam.maps();
        let filter = filter_rules(fam, proto, &service.allowed_sources, group.backends);
        if let Some(verdict) = filter_verdict(&id, &filter, proto) {
            for vip in &group.vips {
                objs.elements
                    .insert((flt_map, element_key(*vip, proto, port)), verdict.clone());
            }
            if verdict.starts_with("jump ") {
                objs.chains.insert(format!("flt-{id}"), filter);
            }
        }
        let Some(backends) = group.forwarded(service) else {
            continue;
        };
        let n = backends.len();
        let mut per_vip = vec![(conn_map, String::new()), (bytes_map, String::new())];
        let target = match service.affinity {
            SessionAffinity::None => {
                let pick = PickChain {
                    ipv6: fam == Family::V6,
                    protocol: proto,
                    endpoints: n,
                    masquerade: service.source_nat == SourceNat::Masquerade,
                };
                let chain = pick.name();
                objs.shared.insert(chain.clone(), pick);
                let be_map = fam.backends(proto);
                for vip in &group.vips {
                    for (i, be) in backends.iter().enumerate() {
                        objs.elements.insert(
                            (be_map, format!("{vip} . {port} . {i}")),
                            format!("{} . {}", be.ip(), be.port()),
                        );
                    }
                }
                chain
            }
            SessionAffinity::ClientIp { timeout_s } => {
                let svc_chain = format!("svc-{id}");
                let mut svc_rules = Vec::new();
                if service.source_nat == SourceNat::Masquerade {
                    svc_rules.push(mark_rule(cfg));
                }
                let mut picks = Vec::new();
                for (i, be) in backends.iter().enumerate() {
                    let ep_id = format!("{id}/{}/{}", addr_part(be.ip()), be.port());
                    let (ep_chain, set) = (format!("ep-{ep_id}"), format!("aff-{ep_id}"));
                    objs.sets.insert(
                        set.clone(),
                        format!(
                            "{{ type {}; flags dynamic,timeout; timeout {timeout_s}s; }}",
                            fam.addr_type()
                        ),
                    );
                    svc_rules.push(format!("{} saddr @{set} goto {ep_chain}", fam.ip()));
                    let ep_rules = vec![
                        format!("update @{set} {{ {} saddr }}", fam.ip()),
                        dnat_rule(fam, proto, *be),
                    ];
                    objs.chains.insert(ep_chain.clone(), ep_rules);
                    picks.push(format!("{}goto {ep_chain}", pick(i, n)));
                }
                svc_rules.extend(picks);
                objs.chains.insert(svc_chain.clone(), svc_rules);
                svc_chain
            }
        };
        per_vip.push((svc_map, format!("goto {target}")));
        for vip in &group.vips {
            for (map, value) in &per_vip {
                objs.elements
                    .insert((*map, element_key(*vip, proto, port)), value.clone());
            }
        }
    }
    objs
}

fn element_key(vip: IpAddr, proto: Protocol, port: u16) -> String {
    format!("{vip} . {} . {port}", proto.as_str())
}

/// A frontend's element key as `nft list set` prints it.
pub fn frontend_key(fe: &Frontend) -> String {
    element_key(fe.vip, fe.protocol, fe.port)
}

/// The sets whose element counters hold each frontend's connections (their packets) and
/// bytes (their bytes).
pub fn counter_sets() -> [(MapName, CounterKind); 4] {
    [
        (MapName::Conn4, CounterKind::Connections),
        (MapName::Conn6, CounterKind::Connections),
        (MapName::Bytes4, CounterKind::Bytes),
        (MapName::Bytes6, CounterKind::Bytes),
    ]
}

fn dnat_rule(fam: Family, proto: Protocol, be: SocketAddr) -> String {
    format!("meta l4proto {} dnat {} to {be}", proto.as_str(), fam.ip())
}

/// The shared chains refusing every client of a frontend with no endpoints.
const REFUSE_TCP: &str = "refuse-reset";
const REFUSE_OTHER: &str = "refuse-unreachable";

/// The `flt` element's verdict for these filter rules: a shared refusal when the frontend
/// refuses everyone for want of endpoints, else a jump to the Service's own `flt-…` chain.
fn filter_verdict(id: &str, filter: &[String], proto: Protocol) -> Option<String> {
    match filter {
        [] => None,
        [only] if *only == no_endpoints_rule(proto) => Some(format!(
            "goto {}",
            match proto {
                Protocol::Tcp => REFUSE_TCP,
                Protocol::Udp | Protocol::Sctp => REFUSE_OTHER,
            }
        )),
        _ => Some(format!("jump flt-{id}")),
    }
}

fn no_endpoints_rule(proto: Protocol) -> String {
    match proto {
        Protocol::Tcp => "meta l4proto tcp reject with tcp reset".to_string(),
        Protocol::Udp | Protocol::Sctp => "reject with icmpx port-unreachable".to_string(),
    }
}

fn filter_rules(
    fam: Family,
    proto: Protocol,
    allowed: &AllowedSources,
    backends: &Backends,
) -> Vec<String> {
    let mut rules = Vec::new();
    if let AllowedSources::Only(ranges) = allowed {
        let mine: Vec<String> = ranges
            .iter()
            .filter(|n| Family::of(n.addr()) == fam)
            .map(|n| n.to_string())
            .collect();
        // TCP is refused with a reset: ICMP errors are rate-limited per client by the kernel
        // (icmp_ratelimit), so a refused client that retries would see timeouts instead.
        let refuse = match proto {
            Protocol::Tcp => "meta l4proto tcp reject with tcp reset",
            Protocol::Udp | Protocol::Sctp => "reject with icmpx admin-prohibited",
        };
        if mine.is_empty() {
            rules.push(refuse.to_string());
            return rules;
        }
        // One range needs no set; several make an anonymous one (sets are what cost at scale).
        let allowed = match mine.as_slice() {
            [one] => one.clone(),
            _ => format!("{{ {} }}", mine.join(", ")),
        };
        rules.push(format!("{} saddr != {allowed} {refuse}", fam.ip()));
    }
    if let Backends::Reject(_) = backends {
        rules.push(no_endpoints_rule(proto));
    }
    rules
}

/// The shared pick chains that exist, with how many Service groups use each: kept by whoever
/// applies transactions, so a chain is created with its first user and deleted after its last.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedChains {
    users: BTreeMap<String, (u32, PickChain)>,
}

impl SharedChains {
    /// The names of the shared chains in use.
    pub fn names(&self) -> BTreeSet<String> {
        self.users.keys().cloned().collect()
    }

    fn acquire(&mut self, chains: &BTreeMap<String, PickChain>) {
        for (name, pick) in chains {
            self.users.entry(name.clone()).or_insert((0, *pick)).0 += 1;
        }
    }

    fn release(&mut self, chains: &BTreeMap<String, PickChain>) {
        for name in chains.keys() {
            if let Some(entry) = self.users.get_mut(name) {
                entry.0 -= 1;
                if entry.0 == 0 {
                    self.users.remove(name);
                }
            }
        }
    }

    /// Commands creating the chains in use now that were not in `before`, and deleting those in
    /// `before` no longer in use.
    fn add_changes(&self, cfg: &NftConfig, before: &BTreeSet<String>, tx: &mut Transaction) {
        let t = cfg.family_table();
        for (name, (_, pick)) in &self.users {
            if !before.contains(name) {
                tx.add_chains.push(format!("add chain {t} {name}"));
                tx.add_rules.extend(
                    pick.rules(cfg)
                        .iter()
                        .map(|r| format!("add rule {t} {name} {r}")),
                );
            }
        }
        for name in before.iter().filter(|n| !self.users.contains_key(*n)) {
            tx.flush_chains.push(format!("flush chain {t} {name}"));
            tx.del_chains.push(format!("delete chain {t} {name}"));
        }
    }
}

/// Commands in dependency order; see [`Transaction::add_diff`].
#[derive(Debug, Default)]
struct Transaction {
    del_elements: BTreeMap<MapName, Vec<String>>,
    flush_chains: Vec<String>,
    del_chains: Vec<String>,
    del_sets: Vec<String>,
    add_sets: Vec<String>,
    add_chains: Vec<String>,
    add_rules: Vec<String>,
    add_elements: BTreeMap<MapName, Vec<(String, String)>>,
}

impl Transaction {
    /// Adds the commands turning `old` into `new` (shared chains aside). Phases keep references
    /// valid inside the one kernel transaction: map elements out, referring chains flushed,
    /// objects deleted, then objects added, rules added, elements in. An element another
    /// Service freed in the same transaction is therefore deleted before it is added again.
    fn add_diff(&mut self, t: &str, old: &ServiceObjects, new: &ServiceObjects) {
        let changed_sets: BTreeSet<&String> = old
            .sets
            .iter()
            .filter(|(n, def)| new.sets.get(*n) != Some(*def))
            .map(|(n, _)| n)
            .collect();
        let refers_to_changed_set = |rules: &[String]| {
            rules
                .iter()
                .any(|r| changed_sets.iter().any(|s| r.contains(&format!("@{s} "))))
        };
        for ((map, key), value) in &old.elements {
            if new.elements.get(&(*map, key.clone())) != Some(value) {
                self.del_elements.entry(*map).or_default().push(key.clone());
            }
        }
        for ((map, key), value) in &new.elements {
            if old.elements.get(&(*map, key.clone())) != Some(value) {
                self.add_elements
                    .entry(*map)
                    .or_default()
                    .push((key.clone(), value.clone()));
            }
        }
        for (name, rules) in &old.chains {
            match new.chains.get(name) {
                None => {
                    self.flush_chains.push(format!("flush chain {t} {name}"));
                    self.del_chains.push(format!("delete chain {t} {name}"));
                }
                Some(new_rules) if new_rules != rules || refers_to_changed_set(rules) => {
                    self.flush_chains.push(format!("flush chain {t} {name}"));
                }
                Some(_) => {}
            }
        }
        for name in &changed_sets {
            self.del_sets.push(format!("delete set {t} {name}"));
        }
        for (name, def) in &new.sets {
            if old.sets.get(name) != Some(def) {
                self.add_sets.push(format!("add set {t} {name} {def}"));
            }
        }
        for (name, rules) in &new.chains {
            let rewrite = match old.chains.get(name) {
                None => {
                    self.add_chains.push(format!("add chain {t} {name}"));
                    true
                }
                Some(old_rules) => old_rules != rules || refers_to_changed_set(old_rules),
            };
            if rewrite {
                self.add_rules
                    .extend(rules.iter().map(|r| format!("add rule {t} {name} {r}")));
            }
        }
    }

    /// The script; elements go one command per map and phase (one netlink message each, where
    /// one command per element costs the CLI a parse and a message apiece).
    fn render(&self, t: &str, head: Vec<String>) -> String {
        let mut out = String::new();
        for line in &head {
            let _ = writeln!(out, "{line}");
        }
        for (map, keys) in &self.del_elements {
            let _ = writeln!(
                out,
                "delete element {t} {} {{ {} }}",
                map.as_str(),
                keys.join(", ")
            );
        }
        for line in self.objects().into_iter().flatten() {
            let _ = writeln!(out, "{line}");
        }
        for (map, elements) in &self.add_elements {
            let elements: Vec<String> = elements
                .iter()
                .map(|(key, value)| {
                    if value.is_empty() {
                        key.clone()
                    } else {
                        format!("{key} : {value}")
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "add element {t} {} {{ {} }}",
                map.as_str(),
                elements.join(", ")
            );
        }
        out
    }

    /// The commands other than elements, phase by phase in script order.
    fn objects(&self) -> [&Vec<String>; 6] {
        [
            &self.flush_chains,
            &self.del_chains,
            &self.del_sets,
            &self.add_sets,
            &self.add_chains,
            &self.add_rules,
        ]
    }

    /// The element changes alone, if that is all this transaction holds.
    fn elements_only(self) -> Option<ElementDelta> {
        self.objects()
            .iter()
            .all(|v| v.is_empty())
            .then_some(ElementDelta {
                delete: self.del_elements,
                add: self.add_elements,
            })
    }
}

/// A delta that only deletes and adds elements of the table's maps and sets: no set, chain or
/// rule changes. Most updates are one (an endpoint swap; an endpoint count change onto a pick
/// chain other Services already use), and a caller may send it as element messages instead of
/// a script: the same transaction, without a process per update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ElementDelta {
    /// Per map, the keys to delete, first (as `nft list` prints them).
    pub delete: BTreeMap<MapName, Vec<String>>,
    /// Per map, the (key, value) elements to add after the deletes; the value is a verdict
    /// (`goto <chain>`, `jump <chain>`), an endpoint (`<ip> . <port>`), or empty in a set.
    pub add: BTreeMap<MapName, Vec<(String, String)>>,
}

/// One incremental transaction: the script, and its element changes when that is all it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// The `nft -f` script (empty when nothing changes).
    pub script: String,
    /// The same changes as element operations, if the script holds nothing else.
    pub elements: Option<ElementDelta>,
}

/// The table, its maps, base chains (hooks) and shared refusal chains, without any Service.
fn base_commands(cfg: &NftConfig) -> Vec<String> {
    let t = cfg.family_table();
    let mark = cfg.masquerade_mark;
    let mut v = vec![format!("add table {t}")];
    v.extend(MapName::all().map(|m| m.definition(&t)));
    v.push(format!("add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"));
    v.push(format!("add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"));
    v.push(format!("add chain {t} filter-forward {{ type filter hook forward priority filter; policy accept; }}"));
    v.push(format!("add chain {t} {REFUSE_TCP}"));
    v.push(format!("add chain {t} {REFUSE_OTHER}"));
    for fam in [Family::V4, Family::V6] {
        let [svc, flt, conn, _] = fam.maps();
        let key = format!("{} daddr . meta l4proto . th dport", fam.ip());
        v.push(format!(
            "add rule {t} nat-prerouting {key} vmap @{}",
            flt.as_str()
        ));
        v.push(format!(
            "add rule {t} nat-prerouting {key} @{}",
            conn.as_str()
        ));
        v.push(format!(
            "add rule {t} nat-prerouting {key} vmap @{}",
            svc.as_str()
        ));
    }
    // `ct original proto-dst` has a type only after a protocol match (nft 1.0.6), hence one
    // rule per protocol; a rule whose protocol differs stops at its first comparison. A counted
    // packet leaves the chain at once (`accept` ends this base chain only: every other chain
    // on the hook still judges the packet), so the rules after it cost it nothing: this chain
    // is the kernel path's only per-packet work beyond conntrack.
    for fam in [Family::V4, Family::V6] {
        let bytes = fam.maps()[3];
        for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            v.push(format!(
                "add rule {t} filter-forward meta nfproto {} meta l4proto {} ct original {} daddr . meta l4proto . ct original proto-dst @{} accept",
                fam.nfproto(),
                proto.as_str(),
                fam.ip(),
                bytes.as_str()
            ));
        }
    }
    v.push(format!(
        "add rule {t} nat-postrouting meta mark & {mark:#010x} != 0 meta mark set meta mark & {:#010x} masquerade fully-random",
        !mark
    ));
    v.push(format!(
        "add rule {t} {REFUSE_TCP} {}",
        no_endpoints_rule(Protocol::Tcp)
    ));
    v.push(format!(
        "add rule {t} {REFUSE_OTHER} {}",
        no_endpoints_rule(Protocol::Udp)
    ));
    v
}

/// One transaction that replaces whatever the table holds (left by a previous run or not)
/// with exactly `plan`: create-if-missing, delete, recreate. Returns it with the shared chains
/// it created, which later [`delta_transaction`]s continue from.
pub fn full_transaction(cfg: &NftConfig, plan: &ForwardingPlan) -> (String, SharedChains) {
    let f = full(cfg, plan);
    (f.script, f.shared)
}

/// The whole table as typed parts, for a caller that sends it as netlink messages instead of
/// a script: the fixed base of [`full_transaction`] (table, maps, base and refusal chains with
/// their rules), these pick chains, then these elements, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableParts {
    /// The shared pick chains in use.
    pub picks: Vec<PickChain>,
    /// Per map, every (key, value) element, as in [`ElementDelta::add`].
    pub elements: BTreeMap<MapName, Vec<(String, String)>>,
}

/// A full transaction: the script, the shared chains it creates, and the same table as
/// [`TableParts`] when no Service needs chains or sets of its own (source ranges, ClientIP
/// affinity: rules only the script describes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    /// The `nft -f` script.
    pub script: String,
    /// The shared chains it creates.
    pub shared: SharedChains,
    /// The same table as parts, if it holds nothing but the base, pick chains and elements.
    pub parts: Option<TableParts>,
}

/// [`full_transaction`], with the table as [`TableParts`] where it can be.
pub fn full(cfg: &NftConfig, plan: &ForwardingPlan) -> Full {
    let t = cfg.family_table();
    let mut head = vec![format!("add table {t}"), format!("delete table {t}")];
    head.extend(base_commands(cfg));
    let mut shared = SharedChains::default();
    let mut tx = Transaction::default();
    let empty = ServiceObjects::default();
    let mut own_objects = false;
    for (key, service) in &plan.services {
        let objs = service_objects(cfg, key, service);
        own_objects |= !objs.sets.is_empty() || !objs.chains.is_empty();
        tx.add_diff(&t, &empty, &objs);
        shared.acquire(&objs.shared);
    }
    shared.add_changes(cfg, &BTreeSet::new(), &mut tx);
    let script = tx.render(&t, head);
    let parts = (!own_objects).then(|| TableParts {
        picks: shared.users.values().map(|(_, pick)| *pick).collect(),
        elements: tx.add_elements,
    });
    Full {
        script,
        shared,
        parts,
    }
}

/// One transaction applying `changes` to a table that holds exactly `old` with `shared` chains,
/// which it updates; empty when nothing changes. Only objects of changed Services appear in it,
/// and only those that differ, plus shared chains gaining their first or losing their last user.
pub fn delta_transaction(
    cfg: &NftConfig,
    old: &ForwardingPlan,
    shared: &mut SharedChains,
    changes: &[Change],
) -> String {
    delta(cfg, old, shared, changes).script
}

/// [`delta_transaction`], with the element operations when the delta is nothing else.
pub fn delta(
    cfg: &NftConfig,
    old: &ForwardingPlan,
    shared: &mut SharedChains,
    changes: &[Change],
) -> Delta {
    let t = cfg.family_table();
    let mut tx = Transaction::default();
    let before = shared.names();
    for change in changes {
        let key = change.key();
        let old_objs = old
            .services
            .get(key)
            .map(|s| service_objects(cfg, key, s))
            .unwrap_or_default();
        let new_objs = match change {
            Change::Upsert { service, .. } => service_objects(cfg, key, service),
            Change::Remove { .. } => ServiceObjects::default(),
        };
        tx.add_diff(&t, &old_objs, &new_objs);
        shared.release(&old_objs.shared);
        shared.acquire(&new_objs.shared);
    }
    shared.add_changes(cfg, &before, &mut tx);
    let script = tx.render(&t, Vec::new());
    Delta {
        script,
        elements: tx.elements_only(),
    }
}

/// One transaction removing the table if it exists.
pub fn remove_transaction(cfg: &NftConfig) -> String {
    let t = cfg.family_table();
    format!("add table {t}\ndelete table {t}\n")
}
