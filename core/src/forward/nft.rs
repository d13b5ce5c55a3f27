//! Rendering a [`ForwardingPlan`] as nftables commands for `nft -f -`: one atomic transaction
//! per call, in FerroLB's own `inet` table.
//!
//! Layout (modelled on kube-proxy's nftables mode, with one chain set per Service port):
//! - maps `svc4`/`svc6`: `vip . l4proto . port : goto svc-…` (nat prerouting dispatch);
//! - maps `flt4`/`flt6`: `vip . l4proto . port : goto flt-…` for frontends that refuse someone
//!   (source ranges, no endpoints), consulted by a filter chain before DNAT;
//! - per Service port and family: `svc-…` (mark for masquerade, affinity lookups,
//!   `numgen random` over endpoints), `ep-…` per endpoint (affinity update, DNAT), `flt-…`,
//!   and `aff-…` dynamic sets with the affinity timeout;
//! - `nat-postrouting` masquerades packets carrying the mark, as kube-proxy does.
//!
//! Object names embed the Service key, so two Services never share an object and a change to
//! one Service only ever touches objects named after it.

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

/// A verdict map of the table.
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
}

impl MapName {
    /// The map's name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            MapName::Svc4 => "svc4",
            MapName::Svc6 => "svc6",
            MapName::Flt4 => "flt4",
            MapName::Flt6 => "flt6",
        }
    }
}

/// The nftables objects owned by one Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceObjects {
    /// Set name → its definition body (`{ type …; }`).
    pub sets: BTreeMap<String, String>,
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// (map, key) → verdict.
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
}

/// nft identifiers allow letters, digits and `/-_.`; IPv6 colons become dots.
fn addr_part(ip: IpAddr) -> String {
    ip.to_string().replace(':', ".")
}

/// The objects rendering `service` needs; a pure function of the key, plan and config.
pub fn service_objects(cfg: &NftConfig, key: &ServiceKey, service: &ServicePlan) -> ServiceObjects {
    let mut objs = ServiceObjects::default();
    // Frontends sharing family, protocol and port share backends, so they share chains.
    let mut groups: BTreeMap<(Family, Protocol, u16), (Vec<IpAddr>, &Backends)> = BTreeMap::new();
    for (fe, backends) in &service.frontends {
        let group = groups
            .entry((Family::of(fe.vip), fe.protocol, fe.port))
            .or_insert((Vec::new(), backends));
        group.0.push(fe.vip);
    }
    for ((fam, proto, port), (vips, backends)) in groups {
        let id = format!("{key}/{}/{port}/{}", proto.as_str(), fam.tag());
        let (svc_map, flt_map) = fam.maps();
        let filter = filter_rules(fam, proto, &service.allowed_sources, backends);
        if !filter.is_empty() {
            let chain = format!("flt-{id}");
            for vip in &vips {
                objs.elements.insert(
                    (flt_map, element_key(*vip, proto, port)),
                    format!("goto {chain}"),
                );
            }
            objs.chains.insert(chain, filter);
        }
        let Backends::Forward { backends, .. } = backends else {
            continue;
        };
        if matches!(&service.allowed_sources, AllowedSources::Only(r) if !r.iter().any(|n| Family::of(n.addr()) == fam))
        {
            continue; // every client of this family is refused: nothing to forward
        }
        let svc_chain = format!("svc-{id}");
        let mut svc_rules = Vec::new();
        if service.source_nat == SourceNat::Masquerade {
            svc_rules.push(format!(
                "meta mark set meta mark | {:#010x}",
                cfg.masquerade_mark
            ));
        }
        let mut arms = Vec::new();
        for (i, be) in backends.iter().enumerate() {
            let ep_id = format!("{id}/{}/{}", addr_part(be.ip()), be.port());
            let ep_chain = format!("ep-{ep_id}");
            let mut ep_rules = Vec::new();
            if let SessionAffinity::ClientIp { timeout_s } = service.affinity {
                let set = format!("aff-{ep_id}");
                objs.sets.insert(
                    set.clone(),
                    format!(
                        "{{ type {}; flags dynamic,timeout; timeout {timeout_s}s; }}",
                        fam.addr_type()
                    ),
                );
                svc_rules.push(format!("{} saddr @{set} goto {ep_chain}", fam.ip()));
                ep_rules.push(format!("update @{set} {{ {} saddr }}", fam.ip()));
            }
            ep_rules.push(dnat_rule(fam, proto, *be));
            objs.chains.insert(ep_chain.clone(), ep_rules);
            arms.push(format!("{i} : goto {ep_chain}"));
        }
        svc_rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            backends.len(),
            arms.join(", ")
        ));
        objs.chains.insert(svc_chain.clone(), svc_rules);
        for vip in &vips {
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
        if mine.is_empty() {
            rules.push("reject with icmpx admin-prohibited".to_string());
            return rules;
        }
        rules.push(format!(
            "{} saddr != {{ {} }} reject with icmpx admin-prohibited",
            fam.ip(),
            mine.join(", ")
        ));
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
    del_elements: Vec<String>,
    flush_chains: Vec<String>,
    del_chains: Vec<String>,
    del_sets: Vec<String>,
    add_sets: Vec<String>,
    add_chains: Vec<String>,
    add_rules: Vec<String>,
    add_elements: Vec<String>,
}

impl Transaction {
    /// Adds the commands turning `old` into `new`. Phases keep references valid inside the one
    /// kernel transaction: map elements out, referring chains flushed, objects deleted, then
    /// objects added, rules added, elements in.
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
        for ((map, key), verdict) in &old.elements {
            if new.elements.get(&(*map, key.clone())) != Some(verdict) {
                self.del_elements
                    .push(format!("delete element {t} {} {{ {key} }}", map.as_str()));
            }
        }
        for ((map, key), verdict) in &new.elements {
            if old.elements.get(&(*map, key.clone())) != Some(verdict) {
                self.add_elements.push(format!(
                    "add element {t} {} {{ {key} : {verdict} }}",
                    map.as_str()
                ));
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

    fn render(self, head: Vec<String>) -> String {
        let mut out = String::new();
        let phases = [
            head,
            self.del_elements,
            self.flush_chains,
            self.del_chains,
            self.del_sets,
            self.add_sets,
            self.add_chains,
            self.add_rules,
            self.add_elements,
        ];
        for line in phases.iter().flatten() {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// The table, its maps and base chains (hooks), without any Service.
fn base_commands(cfg: &NftConfig) -> Vec<String> {
    let t = cfg.family_table();
    let mark = cfg.masquerade_mark;
    let mut v = vec![format!("add table {t}")];
    for (map, fam) in [
        (MapName::Svc4, Family::V4),
        (MapName::Svc6, Family::V6),
        (MapName::Flt4, Family::V4),
        (MapName::Flt6, Family::V6),
    ] {
        v.push(format!(
            "add map {t} {} {{ type {} . inet_proto . inet_service : verdict; }}",
            map.as_str(),
            fam.addr_type()
        ));
    }
    v.push(format!("add chain {t} filter-prerouting {{ type filter hook prerouting priority dstnat - 10; policy accept; }}"));
    v.push(format!("add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"));
    v.push(format!("add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"));
    for fam in [Family::V4, Family::V6] {
        let (svc, flt) = fam.maps();
        let ip = fam.ip();
        v.push(format!("add rule {t} filter-prerouting ct state new {ip} daddr . meta l4proto . th dport vmap @{}", flt.as_str()));
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
/// with exactly `plan`: create-if-missing, delete, recreate.
pub fn full_transaction(cfg: &NftConfig, plan: &ForwardingPlan) -> String {
    let t = cfg.family_table();
    let mut head = vec![format!("add table {t}"), format!("delete table {t}")];
    head.extend(base_commands(cfg));
    let mut tx = Transaction::default();
    let empty = ServiceObjects::default();
    for (key, service) in &plan.services {
        tx.add_diff(&t, &empty, &service_objects(cfg, key, service));
    }
    tx.render(head)
}

/// One transaction applying `changes` to a table that holds exactly `old`; empty when nothing
/// changes. Only objects of changed Services appear in it, and only those that differ.
pub fn delta_transaction(cfg: &NftConfig, old: &ForwardingPlan, changes: &[Change]) -> String {
    let t = cfg.family_table();
    let mut tx = Transaction::default();
    for change in changes {
        let key = change.key();
        let before = old
            .services
            .get(key)
            .map(|s| service_objects(cfg, key, s))
            .unwrap_or_default();
        let after = match change {
            Change::Upsert { service, .. } => service_objects(cfg, key, service),
            Change::Remove { .. } => ServiceObjects::default(),
        };
        tx.add_diff(&t, &before, &after);
    }
    tx.render(Vec::new())
}

/// One transaction removing the table if it exists.
pub fn remove_transaction(cfg: &NftConfig) -> String {
    let t = cfg.family_table();
    format!("add table {t}\ndelete table {t}\n")
}
