//! Golden tests for the nftables rendering of forwarding plans.

use ferrolb_core::forward::nft::{
    ElementDelta, MapName, NftConfig, PickChain, delta, delta_transaction, full, full_transaction,
    remove_transaction,
};
use ferrolb_core::forward::{
    Endpoint, EndpointConditions, ForwardService, Protocol, ServiceKey, ServicePort,
    SessionAffinity, TrafficPolicy, diff, plan,
};

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        ports: [("http".to_string(), port)].into(),
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        node: Some("node-a".into()),
    }
}

fn web() -> ForwardService {
    ForwardService {
        key: ServiceKey::new("default", "web"),
        vips: vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ],
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
        }],
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: SessionAffinity::None,
        source_ranges: vec![],
        endpoints: vec![
            ep("198.18.1.2", 8080),
            ep("198.18.2.2", 8080),
            ep("2001:db8:b1::2", 8080),
        ],
    }
}

fn dns() -> ForwardService {
    ForwardService {
        key: ServiceKey::new("kube-system", "dns"),
        vips: vec!["192.0.2.11".parse().unwrap()],
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Udp,
            port: 53,
        }],
        external_traffic_policy: TrafficPolicy::Local,
        session_affinity: SessionAffinity::ClientIp { timeout_s: 30 },
        source_ranges: vec!["192.0.2.0/28".parse().unwrap()],
        endpoints: vec![ep("198.18.1.3", 5353)],
    }
}

fn empty() -> ForwardService {
    ForwardService {
        key: ServiceKey::new("default", "empty"),
        vips: vec!["192.0.2.12".parse().unwrap()],
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 443,
        }],
        external_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: SessionAffinity::None,
        source_ranges: vec![],
        endpoints: vec![],
    }
}

const FULL: &str = "\
add table inet ferrolb
delete table inet ferrolb
add table inet ferrolb
add map inet ferrolb svc4 { type ipv4_addr . inet_proto . inet_service : verdict; }
add map inet ferrolb svc6 { type ipv6_addr . inet_proto . inet_service : verdict; }
add map inet ferrolb flt4 { type ipv4_addr . inet_proto . inet_service : verdict; }
add map inet ferrolb flt6 { type ipv6_addr . inet_proto . inet_service : verdict; }
add set inet ferrolb conn4 { type ipv4_addr . inet_proto . inet_service; counter; }
add set inet ferrolb conn6 { type ipv6_addr . inet_proto . inet_service; counter; }
add set inet ferrolb bytes4 { type ipv4_addr . inet_proto . inet_service; counter; }
add set inet ferrolb bytes6 { type ipv6_addr . inet_proto . inet_service; counter; }
add map inet ferrolb be4tcp { typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport; }
add map inet ferrolb be4udp { typeof ip daddr . udp dport . numgen random mod 1 : ip daddr . udp dport; }
add map inet ferrolb be4sctp { typeof ip daddr . sctp dport . numgen random mod 1 : ip daddr . sctp dport; }
add map inet ferrolb be6tcp { typeof ip6 daddr . tcp dport . numgen random mod 1 : ip6 daddr . tcp dport; }
add map inet ferrolb be6udp { typeof ip6 daddr . udp dport . numgen random mod 1 : ip6 daddr . udp dport; }
add map inet ferrolb be6sctp { typeof ip6 daddr . sctp dport . numgen random mod 1 : ip6 daddr . sctp dport; }
add chain inet ferrolb nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain inet ferrolb nat-postrouting { type nat hook postrouting priority srcnat; policy accept; }
add chain inet ferrolb filter-forward { type filter hook forward priority filter; policy accept; }
add chain inet ferrolb refuse-reset
add chain inet ferrolb refuse-unreachable
add rule inet ferrolb nat-prerouting ip daddr . meta l4proto . th dport vmap @flt4
add rule inet ferrolb nat-prerouting ip daddr . meta l4proto . th dport @conn4
add rule inet ferrolb nat-prerouting ip daddr . meta l4proto . th dport vmap @svc4
add rule inet ferrolb nat-prerouting ip6 daddr . meta l4proto . th dport vmap @flt6
add rule inet ferrolb nat-prerouting ip6 daddr . meta l4proto . th dport @conn6
add rule inet ferrolb nat-prerouting ip6 daddr . meta l4proto . th dport vmap @svc6
add rule inet ferrolb filter-forward meta nfproto ipv4 meta l4proto tcp ct original ip daddr . meta l4proto . ct original proto-dst @bytes4 accept
add rule inet ferrolb filter-forward meta nfproto ipv4 meta l4proto udp ct original ip daddr . meta l4proto . ct original proto-dst @bytes4 accept
add rule inet ferrolb filter-forward meta nfproto ipv4 meta l4proto sctp ct original ip daddr . meta l4proto . ct original proto-dst @bytes4 accept
add rule inet ferrolb filter-forward meta nfproto ipv6 meta l4proto tcp ct original ip6 daddr . meta l4proto . ct original proto-dst @bytes6 accept
add rule inet ferrolb filter-forward meta nfproto ipv6 meta l4proto udp ct original ip6 daddr . meta l4proto . ct original proto-dst @bytes6 accept
add rule inet ferrolb filter-forward meta nfproto ipv6 meta l4proto sctp ct original ip6 daddr . meta l4proto . ct original proto-dst @bytes6 accept
add rule inet ferrolb nat-postrouting meta mark & 0x00002000 != 0 meta mark set meta mark & 0xffffdfff masquerade fully-random
add rule inet ferrolb refuse-reset meta l4proto tcp reject with tcp reset
add rule inet ferrolb refuse-unreachable reject with icmpx port-unreachable
add set inet ferrolb aff-kube-system/dns/udp/53/v4/198.18.1.3/5353 { type ipv4_addr; flags dynamic,timeout; timeout 30s; }
add chain inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
add chain inet ferrolb flt-kube-system/dns/udp/53/v4
add chain inet ferrolb svc-kube-system/dns/udp/53/v4
add chain inet ferrolb pick-v4-tcp-2-masq
add chain inet ferrolb pick-v6-tcp-1-masq
add rule inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353 update @aff-kube-system/dns/udp/53/v4/198.18.1.3/5353 { ip saddr }
add rule inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353 meta l4proto udp dnat ip to 198.18.1.3:5353
add rule inet ferrolb flt-kube-system/dns/udp/53/v4 ip saddr != 192.0.2.0/28 reject with icmpx admin-prohibited
add rule inet ferrolb svc-kube-system/dns/udp/53/v4 ip saddr @aff-kube-system/dns/udp/53/v4/198.18.1.3/5353 goto ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
add rule inet ferrolb svc-kube-system/dns/udp/53/v4 goto ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
add rule inet ferrolb pick-v4-tcp-2-masq meta mark set meta mark | 0x00002000 dnat ip to ip daddr . tcp dport . numgen random mod 2 map @be4tcp
add rule inet ferrolb pick-v6-tcp-1-masq meta mark set meta mark | 0x00002000 dnat ip6 to ip6 daddr . tcp dport . numgen random mod 1 map @be6tcp
add element inet ferrolb svc4 { 192.0.2.10 . tcp . 80 : goto pick-v4-tcp-2-masq, 192.0.2.11 . udp . 53 : goto svc-kube-system/dns/udp/53/v4 }
add element inet ferrolb svc6 { 2001:db8::10 . tcp . 80 : goto pick-v6-tcp-1-masq }
add element inet ferrolb flt4 { 192.0.2.12 . tcp . 443 : goto refuse-reset, 192.0.2.11 . udp . 53 : jump flt-kube-system/dns/udp/53/v4 }
add element inet ferrolb conn4 { 192.0.2.10 . tcp . 80, 192.0.2.11 . udp . 53 }
add element inet ferrolb conn6 { 2001:db8::10 . tcp . 80 }
add element inet ferrolb bytes4 { 192.0.2.10 . tcp . 80, 192.0.2.11 . udp . 53 }
add element inet ferrolb bytes6 { 2001:db8::10 . tcp . 80 }
add element inet ferrolb be4tcp { 192.0.2.10 . 80 . 0 : 198.18.1.2 . 8080, 192.0.2.10 . 80 . 1 : 198.18.2.2 . 8080 }
add element inet ferrolb be6tcp { 2001:db8::10 . 80 . 0 : 2001:db8:b1::2 . 8080 }
";

#[test]
fn full_ruleset_golden() {
    let p = plan(&[web(), dns(), empty()], "node-a").plan;
    let (got, shared) = full_transaction(&NftConfig::default(), &p);
    if std::env::var_os("FERROLB_PRINT_GOLDEN").is_some() {
        print!("{got}");
    }
    assert_eq!(got, FULL);
    assert_eq!(
        shared.names().into_iter().collect::<Vec<_>>(),
        ["pick-v4-tcp-2-masq", "pick-v6-tcp-1-masq"]
    );
}

#[test]
fn full_table_as_parts_is_the_scripts_pick_chains_and_elements() {
    let cfg = NftConfig::default();
    let p = plan(&[web(), empty()], "node-a").plan;
    let f = full(&cfg, &p);
    let parts = f.parts.expect("no Service here has chains of its own");
    let names: Vec<String> = parts.picks.iter().map(PickChain::name).collect();
    assert_eq!(names, f.shared.names().into_iter().collect::<Vec<_>>());
    assert_eq!(
        parts.picks[0],
        PickChain {
            ipv6: false,
            protocol: Protocol::Tcp,
            endpoints: 2,
            masquerade: true
        }
    );
    // Each map's elements are the script's one `add element` command for it.
    for (map, elements) in &parts.elements {
        let rendered: Vec<String> = elements
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k} : {v}")
                }
            })
            .collect();
        let line = format!(
            "add element inet ferrolb {} {{ {} }}\n",
            map.as_str(),
            rendered.join(", ")
        );
        assert!(f.script.contains(&line), "{line}");
    }
    let element_lines = f
        .script
        .lines()
        .filter(|l| l.starts_with("add element"))
        .count();
    assert_eq!(parts.elements.len(), element_lines);

    // Source ranges (a Service's own filter chain) or ClientIP affinity (its own chains and
    // sets): only the script describes those.
    let mut ranged = web();
    ranged.source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    let mut sticky = web();
    sticky.session_affinity = SessionAffinity::ClientIp { timeout_s: 60 };
    for other in [ranged, sticky, dns()] {
        let p = plan(&[other, empty()], "node-a").plan;
        let f = full(&cfg, &p);
        assert_eq!(f.parts, None);
        assert_eq!(f.script, full_transaction(&cfg, &p).0);
    }
}

/// web with its second IPv4 endpoint replaced, or with one more.
fn web_with(endpoints: &[&str]) -> ForwardService {
    let mut w = web();
    w.endpoints.retain(|e| e.ip.is_ipv6());
    w.endpoints.extend(endpoints.iter().map(|ip| ep(ip, 8080)));
    w
}

#[test]
fn endpoint_swap_rewrites_one_backend_element_and_no_chain() {
    let cfg = NftConfig::default();
    let old = plan(&[web(), dns(), empty()], "node-a").plan;
    let new = plan(
        &[web_with(&["198.18.1.2", "198.18.3.2"]), dns(), empty()],
        "node-a",
    )
    .plan;
    let changes = diff(&old, &new);
    assert_eq!(changes.len(), 1);
    let mut shared = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut shared, &changes);
    assert_eq!(
        got,
        "\
delete element inet ferrolb be4tcp { 192.0.2.10 . 80 . 1 }
add element inet ferrolb be4tcp { 192.0.2.10 . 80 . 1 : 198.18.3.2 . 8080 }
"
    );
}

#[test]
fn endpoint_count_change_moves_the_frontend_to_another_shared_pick_chain() {
    let cfg = NftConfig::default();
    let old = plan(&[web(), dns(), empty()], "node-a").plan;
    let three = ["198.18.1.2", "198.18.2.2", "198.18.3.2"];
    let new = plan(&[web_with(&three), dns(), empty()], "node-a").plan;
    let mut shared = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut shared, &diff(&old, &new));
    // web was pick-v4-tcp-2-masq's only user: that chain goes, pick-v4-tcp-3-masq comes.
    assert_eq!(
        got,
        "\
delete element inet ferrolb svc4 { 192.0.2.10 . tcp . 80 }
flush chain inet ferrolb pick-v4-tcp-2-masq
delete chain inet ferrolb pick-v4-tcp-2-masq
add chain inet ferrolb pick-v4-tcp-3-masq
add rule inet ferrolb pick-v4-tcp-3-masq meta mark set meta mark | 0x00002000 dnat ip to ip daddr . tcp dport . numgen random mod 3 map @be4tcp
add element inet ferrolb svc4 { 192.0.2.10 . tcp . 80 : goto pick-v4-tcp-3-masq }
add element inet ferrolb be4tcp { 192.0.2.10 . 80 . 2 : 198.18.3.2 . 8080 }
"
    );
    // Another Service with two endpoints: pick-v4-tcp-2-masq is created again, and web's chain,
    // elements and counters do not appear.
    let mut other = web_with(&["198.18.5.2", "198.18.6.2"]);
    other.key = ServiceKey::new("default", "other");
    other.vips = vec!["192.0.2.20".parse().unwrap()];
    let newer = plan(&[web_with(&three), other, dns(), empty()], "node-a").plan;
    let got = delta_transaction(&cfg, &new, &mut shared, &diff(&new, &newer));
    assert!(!got.contains("web"), "{got}");
    assert!(
        got.contains("add chain inet ferrolb pick-v4-tcp-2-masq\n"),
        "{got}"
    );
    assert!(!got.contains("pick-v4-tcp-3"), "{got}");
}

#[test]
fn element_only_deltas_come_as_element_operations_too() {
    let cfg = NftConfig::default();
    let old = plan(&[web(), dns(), empty()], "node-a").plan;
    let swap = plan(
        &[web_with(&["198.18.1.2", "198.18.3.2"]), dns(), empty()],
        "node-a",
    )
    .plan;
    let mut shared = full_transaction(&cfg, &old).1;
    let d = delta(&cfg, &old, &mut shared, &diff(&old, &swap));
    assert_eq!(
        d.elements,
        Some(ElementDelta {
            delete: [(
                MapName::Be4(Protocol::Tcp),
                vec!["192.0.2.10 . 80 . 1".to_string()]
            )]
            .into(),
            add: [(
                MapName::Be4(Protocol::Tcp),
                vec![(
                    "192.0.2.10 . 80 . 1".to_string(),
                    "198.18.3.2 . 8080".to_string()
                )]
            )]
            .into(),
        })
    );
    assert!(
        d.script.lines().all(|l| l.contains(" element ")),
        "{}",
        d.script
    );
    // A count change whose pick chain must be created is more than elements.
    let three = ["198.18.1.2", "198.18.2.2", "198.18.3.2"];
    let grown = plan(&[web_with(&three), dns(), empty()], "node-a").plan;
    let d = delta(&cfg, &swap, &mut shared, &diff(&swap, &grown));
    assert!(d.script.contains("add chain"), "{}", d.script);
    assert_eq!(d.elements, None);
}

#[test]
fn losing_all_endpoints_swaps_forwarding_for_rejection() {
    let cfg = NftConfig::default();
    let old = plan(&[dns()], "node-a").plan;
    let mut gone = dns();
    gone.endpoints.clear();
    let new = plan(&[gone], "node-a").plan;
    let mut shared = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut shared, &diff(&old, &new));
    assert_eq!(
        got,
        "\
delete element inet ferrolb svc4 { 192.0.2.11 . udp . 53 }
delete element inet ferrolb conn4 { 192.0.2.11 . udp . 53 }
delete element inet ferrolb bytes4 { 192.0.2.11 . udp . 53 }
flush chain inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
flush chain inet ferrolb flt-kube-system/dns/udp/53/v4
flush chain inet ferrolb svc-kube-system/dns/udp/53/v4
delete chain inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
delete chain inet ferrolb svc-kube-system/dns/udp/53/v4
delete set inet ferrolb aff-kube-system/dns/udp/53/v4/198.18.1.3/5353
add rule inet ferrolb flt-kube-system/dns/udp/53/v4 ip saddr != 192.0.2.0/28 reject with icmpx admin-prohibited
add rule inet ferrolb flt-kube-system/dns/udp/53/v4 reject with icmpx port-unreachable
"
    );
    // Without source ranges the refusal is a shared chain: one element, no chain of its own.
    let mut open = dns();
    open.source_ranges.clear();
    open.session_affinity = SessionAffinity::None;
    let old = plan(&[open.clone()], "node-a").plan;
    open.endpoints.clear();
    let new = plan(&[open], "node-a").plan;
    let mut shared = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut shared, &diff(&old, &new));
    assert!(
        got.contains(
            "add element inet ferrolb flt4 { 192.0.2.11 . udp . 53 : goto refuse-unreachable }\n"
        ) && got.contains("delete chain inet ferrolb pick-v4-udp-1\n")
            && !got.contains("add chain"),
        "{got}"
    );
    assert!(shared.names().is_empty());
}

#[test]
fn unchanged_plan_renders_nothing_and_removal_drops_the_table() {
    let cfg = NftConfig::default();
    let p = plan(&[web(), dns()], "node-a").plan;
    let mut shared = full_transaction(&cfg, &p).1;
    assert_eq!(delta_transaction(&cfg, &p, &mut shared, &diff(&p, &p)), "");
    assert_eq!(
        remove_transaction(&cfg),
        "add table inet ferrolb\ndelete table inet ferrolb\n"
    );
}

#[test]
fn affinity_timeout_change_recreates_set_and_its_users() {
    let cfg = NftConfig::default();
    let old = plan(&[dns()], "node-a").plan;
    let mut longer = dns();
    longer.session_affinity = SessionAffinity::ClientIp { timeout_s: 60 };
    let new = plan(&[longer], "node-a").plan;
    let mut shared = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut shared, &diff(&old, &new));
    let pos = |needle: &str| {
        got.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from {got}"))
    };
    assert!(pos("flush chain inet ferrolb ep-kube-system") < pos("delete set"));
    assert!(pos("flush chain inet ferrolb svc-kube-system") < pos("delete set"));
    assert!(pos("delete set") < pos("add set"));
    assert!(pos("timeout 60s") < pos("add rule inet ferrolb ep-kube-system"));
}
