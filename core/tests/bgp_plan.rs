//! BGP mode's plan: which peers a node keeps, which prefixes it announces to each, and which
//! Service IPs it attracts.

use ferrolb_core::announce::routes::prefix;
use ferrolb_core::announce::*;
use ferrolb_core::bgp::{Community, LargeCommunity};
use ipnet::IpNet;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn node(n: &str, rack: &str) -> NodeView {
    NodeView {
        name: NodeName::from(n),
        labels: [("rack".to_string(), rack.to_string())].into(),
        ..Default::default()
    }
}
fn rack(r: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [("rack".to_string(), r.to_string())].into(),
        ..Default::default()
    }
}
fn service(name: &str, ips: &[(&str, &str)], policy: TrafficPolicy, ready: &[&str]) -> ServiceView {
    ServiceView {
        key: ServiceKey::new("default", name),
        ips: ips.iter().map(|(i, p)| (ip(i), p.to_string())).collect(),
        external_traffic_policy: policy,
        nodes_with_ready_endpoints: ready.iter().map(|n| NodeName::from(*n)).collect(),
    }
}
fn peer(name: &str, selectors: Vec<LabelSelector>) -> BgpPeerView {
    BgpPeerView {
        name: name.into(),
        node_selectors: selectors,
    }
}
fn adv(name: &str, pools: &[&str]) -> BgpAdvView {
    BgpAdvView {
        name: name.into(),
        pools: pools.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}
fn routes_to<'a>(plan: &'a BgpPlan, peer: &str) -> Vec<&'a IpNet> {
    plan.routes[peer].keys().collect()
}

#[test]
fn every_selected_node_announces_to_every_peer_for_cluster_policy() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp"), ("2001:db8:ff::10", "bgp")],
        TrafficPolicy::Cluster,
        &[],
    );
    let peers = [peer("tor-a", vec![]), peer("tor-b", vec![])];
    for n in ["node-1", "node-2"] {
        let plan = bgp_plan(
            &node(n, "r1"),
            std::slice::from_ref(&svc),
            &peers,
            &[adv("a", &["bgp"])],
        );
        assert_eq!(plan.peers, BTreeSet::from(["tor-a".into(), "tor-b".into()]));
        for p in ["tor-a", "tor-b"] {
            assert_eq!(
                routes_to(&plan, p),
                [&net("203.0.113.10/32"), &net("2001:db8:ff::10/128")],
                "{n} to {p}"
            );
        }
        assert_eq!(
            plan.attracted,
            BTreeMap::from([
                (ip("203.0.113.10"), svc.key.clone()),
                (ip("2001:db8:ff::10"), svc.key.clone())
            ])
        );
    }
}

#[test]
fn local_policy_announces_only_from_nodes_with_a_ready_endpoint() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp")],
        TrafficPolicy::Local,
        &["node-2"],
    );
    let peers = [peer("tor", vec![])];
    let advs = [adv("a", &["bgp"])];
    let without = bgp_plan(
        &node("node-1", "r1"),
        std::slice::from_ref(&svc),
        &peers,
        &advs,
    );
    assert!(without.routes["tor"].is_empty());
    assert!(without.attracted.is_empty());
    assert_eq!(
        without.peers.len(),
        1,
        "the session stays up without routes"
    );
    let with = bgp_plan(&node("node-2", "r1"), &[svc], &peers, &advs);
    assert_eq!(routes_to(&with, "tor"), [&net("203.0.113.10/32")]);
}

#[test]
fn pools_without_an_advertisement_are_not_announced() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp"), ("192.0.2.240", "lan")],
        TrafficPolicy::Cluster,
        &[],
    );
    let plan = bgp_plan(
        &node("node-1", "r1"),
        &[svc],
        &[peer("tor", vec![])],
        &[adv("a", &["bgp"])],
    );
    assert_eq!(routes_to(&plan, "tor"), [&net("203.0.113.10/32")]);
    assert!(!plan.attracted.contains_key(&ip("192.0.2.240")));
    let none = bgp_plan(
        &node("node-1", "r1"),
        &[service(
            "x",
            &[("192.0.2.240", "lan")],
            TrafficPolicy::Cluster,
            &[],
        )],
        &[peer("tor", vec![])],
        &[],
    );
    assert!(none.routes["tor"].is_empty() && none.attracted.is_empty());
}

#[test]
fn node_selectors_of_peers_and_advertisements() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp")],
        TrafficPolicy::Cluster,
        &[],
    );
    let peers = [
        peer("tor-r1", vec![rack("r1")]),
        peer("tor-r2", vec![rack("r2")]),
    ];
    let r1 = bgp_plan(
        &node("node-1", "r1"),
        std::slice::from_ref(&svc),
        &peers,
        &[adv("a", &["bgp"])],
    );
    assert_eq!(r1.peers, BTreeSet::from(["tor-r1".to_string()]));
    assert!(!r1.routes.contains_key("tor-r2"));
    // The advertisement selects rack r2 only: r1's node keeps its session, announces nothing.
    let only_r2 = BgpAdvView {
        node_selectors: vec![rack("r2")],
        ..adv("a", &["bgp"])
    };
    let r1 = bgp_plan(
        &node("node-1", "r1"),
        std::slice::from_ref(&svc),
        &peers,
        std::slice::from_ref(&only_r2),
    );
    assert_eq!(r1.peers.len(), 1);
    assert!(r1.routes["tor-r1"].is_empty() && r1.attracted.is_empty());
    let r2 = bgp_plan(&node("node-2", "r2"), &[svc], &peers, &[only_r2]);
    assert_eq!(routes_to(&r2, "tor-r2"), [&net("203.0.113.10/32")]);
}

#[test]
fn advertisement_names_its_peers() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp")],
        TrafficPolicy::Cluster,
        &[],
    );
    let peers = [peer("tor-a", vec![]), peer("tor-b", vec![])];
    let to_b = BgpAdvView {
        peers: ["tor-b".to_string()].into(),
        ..adv("a", &["bgp"])
    };
    let plan = bgp_plan(
        &node("node-1", "r1"),
        std::slice::from_ref(&svc),
        &peers,
        &[to_b],
    );
    assert!(plan.routes["tor-a"].is_empty());
    assert_eq!(routes_to(&plan, "tor-b"), [&net("203.0.113.10/32")]);
    // Naming only a peer this node does not have: nothing announced, nothing attracted.
    let to_missing = BgpAdvView {
        peers: ["tor-z".to_string()].into(),
        ..adv("a", &["bgp"])
    };
    let plan = bgp_plan(&node("node-1", "r1"), &[svc], &peers, &[to_missing]);
    assert!(plan.routes.values().all(BTreeMap::is_empty));
    assert!(
        plan.attracted.is_empty(),
        "no route, so no traffic to carry"
    );
}

#[test]
fn excluded_or_unreachable_nodes_announce_nothing_but_keep_sessions() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp")],
        TrafficPolicy::Cluster,
        &[],
    );
    for n in [
        NodeView {
            excluded: true,
            ..node("node-1", "r1")
        },
        NodeView {
            network_unavailable: true,
            ..node("node-1", "r1")
        },
    ] {
        let plan = bgp_plan(
            &n,
            std::slice::from_ref(&svc),
            &[peer("tor", vec![])],
            &[adv("a", &["bgp"])],
        );
        assert_eq!(plan.peers.len(), 1);
        assert!(plan.routes["tor"].is_empty() && plan.attracted.is_empty());
    }
}

#[test]
fn aggregation_merges_ips_into_one_prefix() {
    let a = service("a", &[("203.0.113.10", "bgp")], TrafficPolicy::Cluster, &[]);
    let b = service("b", &[("203.0.113.20", "bgp")], TrafficPolicy::Cluster, &[]);
    let agg = BgpAdvView {
        aggregation_v4: 24,
        aggregation_v6: 64,
        ..adv("agg", &["bgp"])
    };
    let plan = bgp_plan(
        &node("node-1", "r1"),
        &[a, b],
        &[peer("tor", vec![])],
        std::slice::from_ref(&agg),
    );
    assert_eq!(routes_to(&plan, "tor"), [&net("203.0.113.0/24")]);
    assert_eq!(plan.attracted.len(), 2, "both IPs are carried");
    assert_eq!(
        prefix(ip("2001:db8:ff::1:10"), &agg),
        net("2001:db8:ff::/64")
    );
    // Out-of-range lengths (the API refuses them) are clamped, never a panic.
    let wide = BgpAdvView {
        aggregation_v4: 40,
        aggregation_v6: 200,
        ..adv("w", &["bgp"])
    };
    assert_eq!(prefix(ip("203.0.113.10"), &wide), net("203.0.113.10/32"));
    assert_eq!(
        prefix(ip("2001:db8:ff::1"), &wide),
        net("2001:db8:ff::1/128")
    );
}

#[test]
fn overlapping_advertisements_merge_communities_and_take_the_highest_local_pref() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp")],
        TrafficPolicy::Cluster,
        &[],
    );
    let one = BgpAdvView {
        local_pref: Some(100),
        communities: [Community::new(64512, 1)].into(),
        ..adv("one", &["bgp"])
    };
    let two = BgpAdvView {
        local_pref: Some(200),
        communities: [Community::new(64512, 2), Community::NO_EXPORT].into(),
        large_communities: [LargeCommunity {
            global_admin: 64512,
            local1: 1,
            local2: 2,
        }]
        .into(),
        ..adv("two", &["bgp"])
    };
    let plan = bgp_plan(
        &node("node-1", "r1"),
        &[svc],
        &[peer("tor", vec![])],
        &[one, two],
    );
    let attrs = &plan.routes["tor"][&net("203.0.113.10/32")];
    assert_eq!(attrs.local_pref, Some(200));
    assert_eq!(
        attrs.communities,
        [
            Community::new(64512, 1),
            Community::new(64512, 2),
            Community::NO_EXPORT
        ]
        .into()
    );
    assert_eq!(attrs.large_communities.len(), 1);
    assert_eq!(attrs.advertisements, ["one".into(), "two".into()].into());
}

#[test]
fn a_shared_ip_is_carried_for_the_first_service_by_name() {
    let b = service("b", &[("203.0.113.10", "bgp")], TrafficPolicy::Cluster, &[]);
    let a = service("a", &[("203.0.113.10", "bgp")], TrafficPolicy::Cluster, &[]);
    let plan = bgp_plan(
        &node("node-1", "r1"),
        &[b, a],
        &[peer("tor", vec![])],
        &[adv("x", &["bgp"])],
    );
    assert_eq!(
        plan.attracted[&ip("203.0.113.10")],
        ServiceKey::new("default", "a")
    );
}

#[test]
fn no_peers_means_no_routes_and_nothing_attracted() {
    let svc = service(
        "web",
        &[("203.0.113.10", "bgp")],
        TrafficPolicy::Cluster,
        &[],
    );
    let plan = bgp_plan(&node("node-1", "r1"), &[svc], &[], &[adv("a", &["bgp"])]);
    assert_eq!(plan, BgpPlan::default());
}

// Properties over random clusters: nodes in racks, Services over two pools with either
// policy and random ready nodes, peers and advertisements with random selectors.

fn arb_selectors() -> impl Strategy<Value = Vec<LabelSelector>> {
    prop::collection::vec(
        prop::sample::select(vec!["r1", "r2", "r3"]).prop_map(rack),
        0..2,
    )
}

fn arb_service(i: usize) -> impl Strategy<Value = ServiceView> {
    (
        prop::collection::btree_map(
            (0u8..8).prop_map(|n| ip(&format!("203.0.113.{n}"))),
            prop::sample::select(vec!["bgp", "other"]).prop_map(String::from),
            1..3,
        ),
        any::<bool>(),
        prop::collection::btree_set(
            prop::sample::select(vec!["node-1", "node-2", "node-3"]).prop_map(NodeName::from),
            0..3,
        ),
    )
        .prop_map(move |(ips, local, ready)| ServiceView {
            key: ServiceKey::new("default", format!("svc-{i}")),
            ips,
            external_traffic_policy: if local {
                TrafficPolicy::Local
            } else {
                TrafficPolicy::Cluster
            },
            nodes_with_ready_endpoints: ready,
        })
}

fn arb_cluster() -> impl Strategy<Value = (Vec<ServiceView>, Vec<BgpPeerView>, Vec<BgpAdvView>)> {
    let services = (0usize..5).prop_flat_map(|n| (0..n).map(arb_service).collect::<Vec<_>>());
    let peers = prop::collection::vec(arb_selectors(), 0..3).prop_map(|sels| {
        sels.into_iter()
            .enumerate()
            .map(|(i, s)| peer(&format!("tor-{i}"), s))
            .collect::<Vec<_>>()
    });
    let advs = prop::collection::vec(
        (
            arb_selectors(),
            prop::collection::btree_set(
                prop::sample::select(vec!["tor-0", "tor-1", "tor-9"]).prop_map(String::from),
                0..2,
            ),
            prop::sample::select(vec![24u8, 30, 32]),
            prop::option::of(0u32..300),
        ),
        0..3,
    )
    .prop_map(|advs| {
        advs.into_iter()
            .enumerate()
            .map(|(i, (node_selectors, peers, len, local_pref))| BgpAdvView {
                node_selectors,
                peers,
                aggregation_v4: len,
                local_pref,
                communities: [Community::new(64512, i as u16)].into(),
                ..adv(&format!("adv-{i}"), &["bgp"])
            })
            .collect::<Vec<_>>()
    });
    (services, peers, advs)
}

fn arb_node() -> impl Strategy<Value = NodeView> {
    (
        prop::sample::select(vec!["node-1", "node-2", "node-3"]),
        prop::sample::select(vec!["r1", "r2", "r3"]),
        any::<bool>(),
    )
        .prop_map(|(n, r, excluded)| NodeView {
            excluded,
            ..node(n, r)
        })
}

proptest! {
    #[test]
    fn every_route_is_justified((services, peers, advs) in arb_cluster(), n in arb_node()) {
        let plan = bgp_plan(&n, &services, &peers, &advs);
        // Peers: exactly those selecting the node, each with a table.
        let selected: BTreeSet<String> = peers
            .iter()
            .filter(|p| p.node_selectors.is_empty() || p.node_selectors.iter().any(|s| s.matches(&n.labels)))
            .map(|p| p.name.clone())
            .collect();
        prop_assert_eq!(&plan.peers, &selected);
        prop_assert_eq!(plan.routes.keys().cloned().collect::<BTreeSet<_>>(), selected);
        if n.excluded {
            prop_assert!(plan.attracted.is_empty());
        }
        // Every attracted IP: a Service of the IP may be announced from this node, and its
        // prefix goes to some peer.
        for (addr, key) in &plan.attracted {
            let svc = services.iter().find(|s| &s.key == key).unwrap();
            prop_assert_eq!(svc.ips.get(addr).map(String::as_str), Some("bgp"));
            prop_assert!(svc.external_traffic_policy == TrafficPolicy::Cluster
                || svc.nodes_with_ready_endpoints.contains(&n.name));
            prop_assert!(plan.routes.values().any(|r| r.keys().any(|p| p.contains(addr))));
            // The first Service by name among those announced with this IP on their own.
            for other in services.iter().filter(|s| s.key < *key) {
                let alone = bgp_plan(&n, std::slice::from_ref(other), &peers, &advs);
                prop_assert!(!alone.attracted.contains_key(addr), "{} comes first", other.key);
            }
        }
        // Every announced prefix covers an attracted IP, and comes from an advertisement that
        // selects the node and names the peer (or none).
        for (p, table) in &plan.routes {
            for (prefix, attrs) in table {
                prop_assert!(plan.attracted.keys().any(|a| prefix.contains(a)));
                for name in &attrs.advertisements {
                    let a = advs.iter().find(|a| &a.name == name).unwrap();
                    prop_assert!(a.peers.is_empty() || a.peers.contains(p));
                    prop_assert!(a.node_selectors.is_empty() || a.node_selectors.iter().any(|s| s.matches(&n.labels)));
                    prop_assert!(attrs.local_pref >= a.local_pref);
                    prop_assert!(a.communities.is_subset(&attrs.communities));
                }
            }
        }
    }

    #[test]
    fn input_order_does_not_matter((services, peers, advs) in arb_cluster(), n in arb_node()) {
        let plan = bgp_plan(&n, &services, &peers, &advs);
        let mut s = services.clone();
        s.reverse();
        let mut p = peers.clone();
        p.reverse();
        let mut a = advs.clone();
        a.reverse();
        prop_assert_eq!(bgp_plan(&n, &s, &p, &a), plan);
    }
}
