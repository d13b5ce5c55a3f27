//! Golden tests for the nftables rendering of forwarding plans.

use ferrolb_core::forward::nft::{
    NftConfig, delta_transaction, full_transaction, remove_transaction,
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
add map inet ferrolb be4tcp { typeof numgen random mod 1 : ip daddr . tcp dport; }
add map inet ferrolb be4udp { typeof numgen random mod 1 : ip daddr . udp dport; }
add map inet ferrolb be4sctp { typeof numgen random mod 1 : ip daddr . sctp dport; }
add map inet ferrolb be6tcp { typeof numgen random mod 1 : ip6 daddr . tcp dport; }
add map inet ferrolb be6udp { typeof numgen random mod 1 : ip6 daddr . udp dport; }
add map inet ferrolb be6sctp { typeof numgen random mod 1 : ip6 daddr . sctp dport; }
add chain inet ferrolb nat-prerouting { type nat hook prerouting priority dstnat; policy accept; }
add chain inet ferrolb nat-postrouting { type nat hook postrouting priority srcnat; policy accept; }
add rule inet ferrolb nat-prerouting ip daddr . meta l4proto . th dport vmap @flt4
add rule inet ferrolb nat-prerouting ip daddr . meta l4proto . th dport vmap @svc4
add rule inet ferrolb nat-prerouting ip6 daddr . meta l4proto . th dport vmap @flt6
add rule inet ferrolb nat-prerouting ip6 daddr . meta l4proto . th dport vmap @svc6
add rule inet ferrolb nat-postrouting meta mark & 0x00002000 != 0 meta mark set meta mark & 0xffffdfff masquerade fully-random
add counter inet ferrolb conn-default/web
add counter inet ferrolb conn-kube-system/dns
add set inet ferrolb aff-kube-system/dns/udp/53/v4/198.18.1.3/5353 { type ipv4_addr; flags dynamic,timeout; timeout 30s; }
add chain inet ferrolb flt-default/empty/tcp/443/v4
add chain inet ferrolb svc-default/web/tcp/80/v4
add chain inet ferrolb svc-default/web/tcp/80/v6
add chain inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
add chain inet ferrolb flt-kube-system/dns/udp/53/v4
add chain inet ferrolb svc-kube-system/dns/udp/53/v4
add rule inet ferrolb flt-default/empty/tcp/443/v4 meta l4proto tcp reject with tcp reset
add rule inet ferrolb svc-default/web/tcp/80/v4 counter name conn-default/web
add rule inet ferrolb svc-default/web/tcp/80/v4 meta mark set meta mark | 0x00002000
add rule inet ferrolb svc-default/web/tcp/80/v4 numgen random mod 2 0 meta l4proto tcp dnat ip to 198.18.1.2:8080
add rule inet ferrolb svc-default/web/tcp/80/v4 meta l4proto tcp dnat ip to 198.18.2.2:8080
add rule inet ferrolb svc-default/web/tcp/80/v6 counter name conn-default/web
add rule inet ferrolb svc-default/web/tcp/80/v6 meta mark set meta mark | 0x00002000
add rule inet ferrolb svc-default/web/tcp/80/v6 meta l4proto tcp dnat ip6 to [2001:db8:b1::2]:8080
add rule inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353 update @aff-kube-system/dns/udp/53/v4/198.18.1.3/5353 { ip saddr }
add rule inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353 meta l4proto udp dnat ip to 198.18.1.3:5353
add rule inet ferrolb flt-kube-system/dns/udp/53/v4 ip saddr != 192.0.2.0/28 reject with icmpx admin-prohibited
add rule inet ferrolb svc-kube-system/dns/udp/53/v4 counter name conn-kube-system/dns
add rule inet ferrolb svc-kube-system/dns/udp/53/v4 ip saddr @aff-kube-system/dns/udp/53/v4/198.18.1.3/5353 goto ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
add rule inet ferrolb svc-kube-system/dns/udp/53/v4 goto ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
add element inet ferrolb svc4 { 192.0.2.10 . tcp . 80 : goto svc-default/web/tcp/80/v4, 192.0.2.11 . udp . 53 : goto svc-kube-system/dns/udp/53/v4 }
add element inet ferrolb svc6 { 2001:db8::10 . tcp . 80 : goto svc-default/web/tcp/80/v6 }
add element inet ferrolb flt4 { 192.0.2.12 . tcp . 443 : jump flt-default/empty/tcp/443/v4, 192.0.2.11 . udp . 53 : jump flt-kube-system/dns/udp/53/v4 }
";

#[test]
fn full_ruleset_golden() {
    let p = plan(&[web(), dns(), empty()], "node-a").plan;
    let (got, _) = full_transaction(&NftConfig::default(), &p);
    if std::env::var_os("FERROLB_PRINT_GOLDEN").is_some() {
        print!("{got}");
    }
    assert_eq!(got, FULL);
}

#[test]
fn endpoint_change_touches_only_that_service() {
    let cfg = NftConfig::default();
    let old = plan(&[web(), dns(), empty()], "node-a").plan;
    let mut web2 = web();
    web2.endpoints.retain(|e| e.ip.to_string() != "198.18.2.2");
    web2.endpoints.push(ep("198.18.3.2", 8080));
    let new = plan(&[web2, dns(), empty()], "node-a").plan;
    let changes = diff(&old, &new);
    assert_eq!(changes.len(), 1);
    let mut slots = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut slots, &changes);
    assert_eq!(
        got,
        "\
flush chain inet ferrolb svc-default/web/tcp/80/v4
add rule inet ferrolb svc-default/web/tcp/80/v4 counter name conn-default/web
add rule inet ferrolb svc-default/web/tcp/80/v4 meta mark set meta mark | 0x00002000
add rule inet ferrolb svc-default/web/tcp/80/v4 numgen random mod 2 0 meta l4proto tcp dnat ip to 198.18.1.2:8080
add rule inet ferrolb svc-default/web/tcp/80/v4 meta l4proto tcp dnat ip to 198.18.3.2:8080
"
    );
}

#[test]
fn large_services_use_slot_ranges_and_change_only_their_elements() {
    let cfg = NftConfig {
        inline_max: 1,
        ..NftConfig::default()
    };
    let old = plan(&[web(), dns(), empty()], "node-a").plan;
    let (full, mut slots) = full_transaction(&cfg, &old);
    assert!(full.contains("add rule inet ferrolb svc-default/web/tcp/80/v4 meta l4proto tcp dnat ip to numgen random mod 2 offset 0 map @be4tcp\n"), "{full}");
    assert!(
        full.contains(
            "add element inet ferrolb be4tcp { 0 : 198.18.1.2 . 8080, 1 : 198.18.2.2 . 8080 }\n"
        ),
        "{full}"
    );
    // One IPv6 backend and the affinity Service stay inline.
    assert!(
        !full.contains("element inet ferrolb be6tcp")
            && !full.contains("element inet ferrolb be4udp"),
        "{full}"
    );

    let mut web2 = web();
    web2.endpoints.retain(|e| e.ip.to_string() != "198.18.2.2");
    web2.endpoints.push(ep("198.18.3.2", 8080));
    let new = plan(&[web2, dns(), empty()], "node-a").plan;
    let got = delta_transaction(&cfg, &old, &mut slots, &diff(&old, &new));
    // Same endpoint count: only the slot that changed is rewritten; no chain is touched.
    assert_eq!(
        got,
        "\
delete element inet ferrolb be4tcp { 1 }
add element inet ferrolb be4tcp { 1 : 198.18.3.2 . 8080 }
"
    );
    let mut web3 = web();
    web3.endpoints.push(ep("198.18.3.2", 8080));
    let grown = plan(&[web3, dns(), empty()], "node-a").plan;
    let got = delta_transaction(&cfg, &new, &mut slots, &diff(&new, &grown));
    // Three endpoints outgrow the range of two: a new range of four, and the one chain.
    assert_eq!(
        got,
        "\
delete element inet ferrolb be4tcp { 0, 1 }
flush chain inet ferrolb svc-default/web/tcp/80/v4
add rule inet ferrolb svc-default/web/tcp/80/v4 counter name conn-default/web
add rule inet ferrolb svc-default/web/tcp/80/v4 meta mark set meta mark | 0x00002000
add rule inet ferrolb svc-default/web/tcp/80/v4 meta l4proto tcp dnat ip to numgen random mod 3 offset 2 map @be4tcp
add element inet ferrolb be4tcp { 2 : 198.18.1.2 . 8080, 3 : 198.18.2.2 . 8080, 4 : 198.18.3.2 . 8080 }
"
    );
}

#[test]
fn losing_all_endpoints_swaps_forwarding_for_rejection() {
    let cfg = NftConfig::default();
    let old = plan(&[dns()], "node-a").plan;
    let mut gone = dns();
    gone.endpoints.clear();
    let new = plan(&[gone], "node-a").plan;
    let mut slots = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut slots, &diff(&old, &new));
    assert_eq!(
        got,
        "\
delete element inet ferrolb svc4 { 192.0.2.11 . udp . 53 }
flush chain inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
flush chain inet ferrolb flt-kube-system/dns/udp/53/v4
flush chain inet ferrolb svc-kube-system/dns/udp/53/v4
delete chain inet ferrolb ep-kube-system/dns/udp/53/v4/198.18.1.3/5353
delete chain inet ferrolb svc-kube-system/dns/udp/53/v4
delete set inet ferrolb aff-kube-system/dns/udp/53/v4/198.18.1.3/5353
delete counter inet ferrolb conn-kube-system/dns
add rule inet ferrolb flt-kube-system/dns/udp/53/v4 ip saddr != 192.0.2.0/28 reject with icmpx admin-prohibited
add rule inet ferrolb flt-kube-system/dns/udp/53/v4 reject with icmpx port-unreachable
"
    );
}

#[test]
fn unchanged_plan_renders_nothing_and_removal_drops_the_table() {
    let cfg = NftConfig::default();
    let p = plan(&[web(), dns()], "node-a").plan;
    let mut slots = full_transaction(&cfg, &p).1;
    assert_eq!(delta_transaction(&cfg, &p, &mut slots, &diff(&p, &p)), "");
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
    let mut slots = full_transaction(&cfg, &old).1;
    let got = delta_transaction(&cfg, &old, &mut slots, &diff(&old, &new));
    let pos = |needle: &str| {
        got.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing from {got}"))
    };
    assert!(pos("flush chain inet ferrolb ep-kube-system") < pos("delete set"));
    assert!(pos("flush chain inet ferrolb svc-kube-system") < pos("delete set"));
    assert!(pos("delete set") < pos("add set"));
    assert!(pos("timeout 60s") < pos("add rule inet ferrolb ep-kube-system"));
}
