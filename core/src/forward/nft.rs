//! Rendering a [`ForwardingPlan`] as nftables commands for `nft -f -`: one atomic transaction
//! per call, in FerroLB's own `inet` table.
//!
//! Layout (kube-proxy's nftables dispatch, without its per-Service anonymous verdict maps: the
//! number of sets, and of rules bound to a named map, does not grow with Services):
//! - maps `svc4`/`svc6`: `vip . l4proto . port : goto svc-…` (nat prerouting dispatch);
//! - maps `flt4`/`flt6`: `vip . l4proto . port : jump flt-…` for frontends that refuse someone
//!   (source ranges, no endpoints), consulted first in the same nat chain (it still sees the
//!   VIP; a client that is not refused returns and goes on to `svc4`). Nat chains see only a
//!   connection's first packet, so established traffic passes one hook of ours, not two;
//! - per Service port and family one `svc-…` chain: the masquerade mark, then up to
//!   [`INLINE_MAX`] backends one `numgen random mod k 0 dnat …` rule each (uniform overall);
//!   above that `dnat to numgen random mod N offset <base> map @be4tcp`, where `be4tcp`,
//!   `be6udp`, … are shared slot → `endpoint . port` maps and the Service owns a [`Slots`] range;
//! - with ClientIP affinity: per endpoint an `ep-…` chain (affinity update, DNAT) and an
//!   `aff-…` dynamic set with the timeout, which the `svc-…` chain checks before picking;
//! - `nat-postrouting` masquerades packets carrying the mark, as kube-proxy does;
//! - per Service one named counter `conn-<namespace>/<name>`, counted by the first rule of its
//!   `svc-…` chains: nat chains see only a connection's first packet, so its packets are the
//!   Service's forwarded connections ([`connection_counter`]; read back with
//!   `nft -j list counters table …`).
//!
//! Object names and slot ranges belong to one Service, so a change to one Service only ever
//! touches its own chains and elements.

use super::slots::Slots;
use super::{
    AllowedSources, Backends, Change, ForwardingPlan, Protocol, ServiceKey, ServicePlan,
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
    /// Up to this many backends a Service port picks by one rule per backend, above it through
    /// the shared slot maps (default [`INLINE_MAX`]).
    pub inline_max: usize,
}

impl Default for NftConfig {
    fn default() -> Self {
        Self {
            table: "ferrolb".into(),
            masquerade_mark: 0x0000_2000,
            inline_max: INLINE_MAX,
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

/// A map of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MapName {
    /// IPv4 frontends that forward.
    Svc4,
    /// IPv6 frontends that forward.
    Svc6,
    /// IPv4 frontends that refuse some or all clients.
    Flt4,
    /// IPv6 frontends that refuse some or all clients.
    Flt6,
    /// Slot → IPv4 endpoint and port, per protocol (nft 1.0.6 cannot read back a `th dport`
    /// map used after `meta l4proto tcp`, so each protocol gets its own typed map).
    Be4(Protocol),
    /// Slot → IPv6 endpoint and port, per protocol.
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
            MapName::Be4(Protocol::Tcp) => "be4tcp",
            MapName::Be4(Protocol::Udp) => "be4udp",
            MapName::Be4(Protocol::Sctp) => "be4sctp",
            MapName::Be6(Protocol::Tcp) => "be6tcp",
            MapName::Be6(Protocol::Udp) => "be6udp",
            MapName::Be6(Protocol::Sctp) => "be6sctp",
        }
    }

    /// The map's definition body.
    fn definition(self) -> String {
        match self {
            MapName::Svc4 | MapName::Flt4 => {
                "{ type ipv4_addr . inet_proto . inet_service : verdict; }".into()
            }
            MapName::Svc6 | MapName::Flt6 => {
                "{ type ipv6_addr . inet_proto . inet_service : verdict; }".into()
            }
            MapName::Be4(p) => format!(
                "{{ typeof numgen random mod 1 : ip daddr . {} dport; }}",
                p.as_str()
            ),
            MapName::Be6(p) => format!(
                "{{ typeof numgen random mod 1 : ip6 daddr . {} dport; }}",
                p.as_str()
            ),
        }
    }

    /// Every map of the table.
    fn all() -> impl Iterator<Item = MapName> {
        let protos = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
        [MapName::Svc4, MapName::Svc6, MapName::Flt4, MapName::Flt6]
            .into_iter()
            .chain(protos.map(MapName::Be4))
            .chain(protos.map(MapName::Be6))
    }
}

/// The nftables objects owned by one Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceObjects {
    /// Set name → its definition body (`{ type …; }`).
    pub sets: BTreeMap<String, String>,
    /// Named counters.
    pub counters: BTreeSet<String>,
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// (map, key) → value (a verdict, or an endpoint for the `be` maps).
    pub elements: BTreeMap<(MapName, String), String>,
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
    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
    fn maps(self) -> (MapName, MapName) {
        match self {
            Family::V4 => (MapName::Svc4, MapName::Flt4),
            Family::V6 => (MapName::Svc6, MapName::Flt6),
        }
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

/// The default [`NftConfig::inline_max`]: up to this many backends a Service port picks one by
/// a rule per backend; above it, through its slot range in the shared `be…` map. Every rule that uses a named map costs the kernel a
/// walk of that map's bindings when it is added, so binding one per Service port is quadratic.
pub const INLINE_MAX: usize = 16;

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

/// The backend slots `service` needs, per group name, for [`Slots::assign`].
pub fn slot_demand(cfg: &NftConfig, service: &ServicePlan) -> BTreeMap<String, u32> {
    groups(service)
        .iter()
        .filter_map(|g| Some((g.name(), g.forwarded(service)?.len())))
        .filter(|(_, n)| *n > cfg.inline_max && service.affinity == SessionAffinity::None)
        .map(|(g, n)| (g, n as u32))
        .collect()
}

/// The name of the counter of `key`'s forwarded connections (see the module docs).
pub fn connection_counter(key: &ServiceKey) -> String {
    format!("conn-{key}")
}

/// The Service a [`connection_counter`] name belongs to.
pub fn counter_service(counter: &str) -> Option<ServiceKey> {
    let (namespace, name) = counter.strip_prefix("conn-")?.split_once('/')?;
    Some(ServiceKey::new(namespace, name))
}

/// The objects rendering `service` needs, given the slots `slots` assigned to it (see
/// [`slot_demand`]); a pure function of its arguments.
pub fn service_objects(
    cfg: &NftConfig,
    key: &ServiceKey,
    service: &ServicePlan,
    slots: &Slots,
) -> ServiceObjects {
    let mut objs = ServiceObjects::default();
    for group in groups(service) {
        let (fam, proto, port) = (group.fam, group.proto, group.port);
        let id = format!("{key}/{}", group.name());
        let (svc_map, flt_map) = fam.maps();
        let be_map = fam.backends(proto);
        let filter = filter_rules(fam, proto, &service.allowed_sources, group.backends);
        if !filter.is_empty() {
            let chain = format!("flt-{id}");
            for vip in &group.vips {
                objs.elements.insert(
                    (flt_map, element_key(*vip, proto, port)),
                    format!("jump {chain}"),
                );
            }
            objs.chains.insert(chain, filter);
        }
        let Some(backends) = group.forwarded(service) else {
            continue;
        };
        let n = backends.len();
        let svc_chain = format!("svc-{id}");
        let counter = connection_counter(key);
        let mut svc_rules = vec![format!("counter name {counter}")];
        objs.counters.insert(counter);
        if service.source_nat == SourceNat::Masquerade {
            svc_rules.push(format!(
                "meta mark set meta mark | {:#010x}",
                cfg.masquerade_mark
            ));
        }
        match service.affinity {
            SessionAffinity::None if n > cfg.inline_max => {
                let base = slots
                    .get(key, &group.name())
                    .expect("slots assigned before rendering")
                    .base;
                for (i, be) in backends.iter().enumerate() {
                    objs.elements.insert(
                        (be_map, (base + i as u32).to_string()),
                        format!("{} . {}", be.ip(), be.port()),
                    );
                }
                svc_rules.push(format!(
                    "meta l4proto {} dnat {} to numgen random mod {n} offset {base} map @{}",
                    proto.as_str(),
                    fam.ip(),
                    be_map.as_str()
                ));
            }
            SessionAffinity::None => {
                for (i, be) in backends.iter().enumerate() {
                    svc_rules.push(format!("{}{}", pick(i, n), dnat_rule(fam, proto, *be)));
                }
            }
            SessionAffinity::ClientIp { timeout_s } => {
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
            }
        }
        objs.chains.insert(svc_chain.clone(), svc_rules);
        for vip in &group.vips {
            objs.elements.insert(
                (svc_map, element_key(*vip, proto, port)),
                format!("goto {svc_chain}"),
            );
        }
    }
    objs
}

fn element_key(vip: IpAddr, proto: Protocol, port: u16) -> String {
    format!("{vip} . {} . {port}", proto.as_str())
}

fn dnat_rule(fam: Family, proto: Protocol, be: SocketAddr) -> String {
    format!("meta l4proto {} dnat {} to {be}", proto.as_str(), fam.ip())
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
        rules.push(match proto {
            Protocol::Tcp => "meta l4proto tcp reject with tcp reset".to_string(),
            Protocol::Udp | Protocol::Sctp => "reject with icmpx port-unreachable".to_string(),
        });
    }
    rules
}

/// Commands in dependency order; see [`Transaction::add_diff`].
#[derive(Debug, Default)]
struct Transaction {
    del_elements: BTreeMap<MapName, Vec<String>>,
    flush_chains: Vec<String>,
    del_chains: Vec<String>,
    del_sets: Vec<String>,
    del_counters: Vec<String>,
    add_counters: Vec<String>,
    add_sets: Vec<String>,
    add_chains: Vec<String>,
    add_rules: Vec<String>,
    add_elements: BTreeMap<MapName, Vec<String>>,
}

impl Transaction {
    /// Adds the commands turning `old` into `new`. Phases keep references valid inside the one
    /// kernel transaction: map elements out, referring chains flushed, objects deleted, then
    /// objects added, rules added, elements in. A slot another Service freed in the same
    /// transaction is therefore deleted before it is added again.
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
                    .push(format!("{key} : {value}"));
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
        // Counters are kept while the Service has one, so its count survives rule changes.
        for name in old.counters.difference(&new.counters) {
            self.del_counters.push(format!("delete counter {t} {name}"));
        }
        for name in new.counters.difference(&old.counters) {
            self.add_counters.push(format!("add counter {t} {name}"));
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
    fn render(self, t: &str, head: Vec<String>) -> String {
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
        let phases = [
            self.flush_chains,
            self.del_chains,
            self.del_sets,
            self.del_counters,
            self.add_counters,
            self.add_sets,
            self.add_chains,
            self.add_rules,
        ];
        for line in phases.iter().flatten() {
            let _ = writeln!(out, "{line}");
        }
        for (map, elements) in &self.add_elements {
            let _ = writeln!(
                out,
                "add element {t} {} {{ {} }}",
                map.as_str(),
                elements.join(", ")
            );
        }
        out
    }
}

/// The table, its maps and base chains (hooks), without any Service.
fn base_commands(cfg: &NftConfig) -> Vec<String> {
    let t = cfg.family_table();
    let mark = cfg.masquerade_mark;
    let mut v = vec![format!("add table {t}")];
    for map in MapName::all() {
        v.push(format!("add map {t} {} {}", map.as_str(), map.definition()));
    }
    v.push(format!("add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"));
    v.push(format!("add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"));
    for fam in [Family::V4, Family::V6] {
        let (svc, flt) = fam.maps();
        let ip = fam.ip();
        v.push(format!(
            "add rule {t} nat-prerouting {ip} daddr . meta l4proto . th dport vmap @{}",
            flt.as_str()
        ));
        v.push(format!(
            "add rule {t} nat-prerouting {ip} daddr . meta l4proto . th dport vmap @{}",
            svc.as_str()
        ));
    }
    v.push(format!(
        "add rule {t} nat-postrouting meta mark & {mark:#010x} != 0 meta mark set meta mark & {:#010x} masquerade fully-random",
        !mark
    ));
    v
}

/// One transaction that replaces whatever the table holds (left by a previous run or not)
/// with exactly `plan`: create-if-missing, delete, recreate. Returns it with the slot
/// assignment it used, which later [`delta_transaction`]s continue from.
pub fn full_transaction(cfg: &NftConfig, plan: &ForwardingPlan) -> (String, Slots) {
    let t = cfg.family_table();
    let mut head = vec![format!("add table {t}"), format!("delete table {t}")];
    head.extend(base_commands(cfg));
    let mut slots = Slots::default();
    let mut tx = Transaction::default();
    let empty = ServiceObjects::default();
    for (key, service) in &plan.services {
        slots.assign(key, &slot_demand(cfg, service));
        tx.add_diff(&t, &empty, &service_objects(cfg, key, service, &slots));
    }
    (tx.render(&t, head), slots)
}

/// One transaction applying `changes` to a table that holds exactly `old` with slots `slots`,
/// which it updates; empty when nothing changes. Only objects of changed Services appear in it,
/// and only those that differ.
pub fn delta_transaction(
    cfg: &NftConfig,
    old: &ForwardingPlan,
    slots: &mut Slots,
    changes: &[Change],
) -> String {
    let t = cfg.family_table();
    let mut tx = Transaction::default();
    for change in changes {
        let key = change.key();
        let before = old
            .services
            .get(key)
            .map(|s| service_objects(cfg, key, s, slots))
            .unwrap_or_default();
        let after = match change {
            Change::Upsert { service, .. } => {
                slots.assign(key, &slot_demand(cfg, service));
                service_objects(cfg, key, service, slots)
            }
            Change::Remove { .. } => {
                slots.remove(key);
                ServiceObjects::default()
            }
        };
        tx.add_diff(&t, &before, &after);
    }
    tx.render(&t, Vec::new())
}

/// One transaction removing the table if it exists.
pub fn remove_transaction(cfg: &NftConfig) -> String {
    let t = cfg.family_table();
    format!("add table {t}\ndelete table {t}\n")
}
