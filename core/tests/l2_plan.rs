//! Eligibility, the election over Services, the plan, its diff and the gratuitous schedule.

use ferrolb_core::announce::plan::{GRATUITOUS_OFFSETS, plan_from};
use ferrolb_core::announce::*;
use ferrolb_core::l2::arp::ArpPacket;
use ferrolb_core::l2::ethernet::Frame;
use ferrolb_core::l2::ipv6::solicited_node;
use ferrolb_core::l2::{Decision, DropReason, MacAddr, ResponderState, decide_arp};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn name(s: &str) -> NodeName {
    NodeName::from(s)
}
fn node(n: &str, zone: &str, ifaces: &[(&str, &[&str])]) -> NodeView {
    NodeView {
        name: name(n),
        labels: [("zone".to_string(), zone.to_string())].into(),
        interfaces: ifaces
            .iter()
            .map(|(i, addrs)| InterfaceView {
                name: i.to_string(),
                addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            })
            .collect(),
        ..Default::default()
    }
}
fn lan(n: &str, zone: &str) -> NodeView {
    node(
        n,
        zone,
        &[("eth0", &["192.0.2.11/24", "2001:db8:0:1::11/64"])],
    )
}
fn service(ns_name: &str, ips: &[&str], policy: TrafficPolicy, endpoints: &[&str]) -> ServiceView {
    ServiceView {
        key: ServiceKey::new("default", ns_name),
        ips: ips.iter().map(|i| (ip(i), "lan".to_string())).collect(),
        external_traffic_policy: policy,
        nodes_with_ready_endpoints: endpoints.iter().map(|n| name(n)).collect(),
    }
}
fn adv(selectors: Vec<LabelSelector>, interfaces: &[&str]) -> L2AdvView {
    L2AdvView {
        name: "l2".into(),
        pools: ["lan".to_string()].into(),
        node_selectors: selectors,
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
    }
}
fn zone(z: &str) -> LabelSelector {
    LabelSelector {
        match_labels: [("zone".to_string(), z.to_string())].into(),
        ..Default::default()
    }
}
fn live(ns: &[&str]) -> BTreeSet<NodeName> {
    ns.iter().map(|n| name(n)).collect()
}
fn eligible(i: &str) -> Eligibility {
    Eligibility::Eligible {
        interface: i.into(),
    }
}
fn no(r: Ineligible) -> Eligibility {
    Eligibility::Ineligible(r)
}

#[test]
fn eligibility_reasons() {
    let nodes = vec![
        lan("a-ok", "a"),
        NodeView {
            excluded: true,
            ..lan("b-excluded", "a")
        },
        NodeView {
            network_unavailable: true,
            ..lan("c-network", "a")
        },
        lan("d-dead", "a"),
        lan("e-other-zone", "b"),
        node("f-other-subnet", "a", &[("eth0", &["198.51.100.1/24"])]),
        lan("g-no-endpoint", "a"),
    ];
    let alive = live(&[
        "a-ok",
        "b-excluded",
        "c-network",
        "e-other-zone",
        "f-other-subnet",
        "g-no-endpoint",
    ]);
    let svc = service(
        "web",
        &["192.0.2.10"],
        TrafficPolicy::Local,
        &[
            "a-ok",
            "b-excluded",
            "c-network",
            "d-dead",
            "e-other-zone",
            "f-other-subnet",
        ],
    );
    let got = eligible_nodes(
        ip("192.0.2.10"),
        &svc,
        &nodes,
        &[adv(vec![zone("a")], &[])],
        &alive,
    );
    let want = vec![
        (name("a-ok"), eligible("eth0")),
        (name("b-excluded"), no(Ineligible::Excluded)),
        (name("c-network"), no(Ineligible::NetworkUnavailable)),
        (name("d-dead"), no(Ineligible::NotAlive)),
        (name("e-other-zone"), no(Ineligible::NotSelected)),
        (name("f-other-subnet"), no(Ineligible::NoInterfaceInSubnet)),
        (name("g-no-endpoint"), no(Ineligible::NoLocalEndpoint)),
    ];
    assert_eq!(got, want);
}

#[test]
fn eligibility_advertisement_cases() {
    let nodes = vec![
        lan("a", "a"),
        node("b", "a", &[("eth0", &["192.0.2.12/24"]), ("bond0", &[])]),
    ];
    let alive = live(&["a", "b"]);
    let svc = service("web", &["192.0.2.10"], TrafficPolicy::Cluster, &["a"]);
    let e = |advs: &[L2AdvView], s: &ServiceView| {
        eligible_nodes(ip("192.0.2.10"), s, &nodes, advs, &alive)
    };

    let other_pool = L2AdvView {
        pools: ["elsewhere".to_string()].into(),
        ..adv(vec![], &[])
    };
    assert_eq!(
        e(&[other_pool], &svc),
        vec![
            (name("a"), no(Ineligible::NoAdvertisement)),
            (name("b"), no(Ineligible::NoAdvertisement))
        ]
    );
    // Any one selector of the list selects; an empty list selects all.
    assert_eq!(
        e(&[adv(vec![zone("x"), zone("a")], &[])], &svc)[0].1,
        eligible("eth0")
    );
    // Listed interfaces win over subnets; a node with none of them is told so.
    assert_eq!(
        e(&[adv(vec![], &["bond0"])], &svc),
        vec![
            (name("a"), no(Ineligible::NoListedInterface)),
            (name("b"), eligible("bond0"))
        ]
    );
    // No ready endpoint anywhere: still announced, whatever the policy, so the forwarder can
    // refuse connections (a client must not wait on ARP nobody answers).
    for policy in [TrafficPolicy::Cluster, TrafficPolicy::Local] {
        let none_ready = service("web", &["192.0.2.10"], policy, &[]);
        assert_eq!(
            e(&[adv(vec![], &[])], &none_ready)[1].1,
            eligible("eth0"),
            "{policy:?}"
        );
    }
    assert_eq!(e(&[adv(vec![], &[])], &svc)[1].1, eligible("eth0"));
    // An IP that is not the Service's has no pool.
    assert_eq!(
        eligible_nodes(ip("192.0.2.99"), &svc, &nodes, &[adv(vec![], &[])], &alive)[0].1,
        no(Ineligible::NoAdvertisement)
    );
}

#[test]
fn most_specific_subnet_wins() {
    let n = node(
        "a",
        "a",
        &[
            ("eth0", &["192.0.2.11/16"]),
            ("eth1", &["192.0.2.11/24"]),
            ("eth2", &["192.0.2.11/24"]),
        ],
    );
    let svc = service("web", &["192.0.2.10"], TrafficPolicy::Cluster, &["a"]);
    let got = eligible_nodes(
        ip("192.0.2.10"),
        &svc,
        &[n],
        &[adv(vec![], &[])],
        &live(&["a"]),
    );
    assert_eq!(
        got[0].1,
        eligible("eth1"),
        "longest prefix, then first name"
    );
}

struct World {
    services: Vec<ServiceView>,
    nodes: Vec<NodeView>,
    advs: Vec<L2AdvView>,
    live: BTreeSet<NodeName>,
}

impl World {
    fn new() -> Self {
        World {
            services: vec![
                service(
                    "web",
                    &["192.0.2.10", "2001:db8:0:1::10"],
                    TrafficPolicy::Cluster,
                    &["a"],
                ),
                service("dns", &["192.0.2.20"], TrafficPolicy::Local, &["b"]),
            ],
            nodes: vec![lan("a", "a"), lan("b", "a"), lan("c", "a")],
            advs: vec![adv(vec![], &[])],
            live: live(&["a", "b", "c"]),
        }
    }
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            services: &self.services,
            nodes: &self.nodes,
            advertisements: &self.advs,
            live: &self.live,
            mode: Mode::Hash,
        }
    }
}

#[test]
fn every_ip_gets_one_owner_and_local_policy_follows_the_endpoint() {
    let w = World::new();
    let e = elect(&w.inputs());
    assert_eq!(e.len(), 3);
    assert_eq!(
        e[&ip("192.0.2.20")].owner,
        Some(name("b")),
        "ETP Local: only b has an endpoint"
    );
    let t0 = Instant::now();
    let plans: Vec<Plan> = ["a", "b", "c"]
        .iter()
        .map(|n| plan(&name(n), &w.inputs(), &Plan::default(), t0))
        .collect();
    let total: usize = plans.iter().map(|p| p.announcements.len()).sum();
    assert_eq!(total, 3, "each IP announced by exactly one node");
    let mut w2 = World::new();
    w2.services[1].nodes_with_ready_endpoints = [name("c")].into();
    assert_eq!(
        elect(&w2.inputs())[&ip("192.0.2.20")].owner,
        Some(name("c")),
        "the owner follows the endpoint"
    );
}

#[test]
fn shared_ip_needs_every_service_eligible() {
    let mut w = World::new();
    w.services.push(service(
        "web-udp",
        &["192.0.2.10"],
        TrafficPolicy::Local,
        &["c"],
    ));
    let e = &elect(&w.inputs())[&ip("192.0.2.10")];
    assert_eq!(e.services.len(), 2);
    assert_eq!(e.owner, Some(name("c")));
    assert_eq!(
        e.eligibility(&name("a")),
        Some(&no(Ineligible::NoLocalEndpoint))
    );
}

#[test]
fn failover_moves_only_the_dead_nodes_ips_and_diffs_into_actions() {
    let mut w = World::new();
    let t0 = Instant::now();
    let before = elect(&w.inputs());
    let (victim, _) = before[&ip("192.0.2.10")]
        .owner_interface()
        .map(|(n, i)| (n.clone(), i.to_owned()))
        .unwrap();
    w.live.remove(&victim);
    let after = elect(&w.inputs());
    for (i, e) in &before {
        if e.owner.as_ref() != Some(&victim) {
            assert_eq!(after[i].owner, e.owner, "{i} moved though its owner lives");
        }
    }
    let heir = after[&ip("192.0.2.10")].owner.clone().unwrap();
    assert_ne!(heir, victim);
    let old = plan_from(&heir, &before, &Plan::default(), t0);
    let t1 = t0 + Duration::from_secs(30);
    let new = plan_from(&heir, &after, &old, t1);
    let actions = diff(&old, &new, t1);
    let started: Vec<IpAddr> = actions
        .iter()
        .filter_map(|a| match a {
            Action::StartAnnouncing { ip, gratuitous, .. } => {
                assert_eq!(gratuitous.times()[0], t1, "first gratuitous round at once");
                Some(*ip)
            }
            _ => None,
        })
        .collect();
    assert!(started.contains(&ip("192.0.2.10")));
    for (i, a) in &old.announcements {
        assert_eq!(
            new.announcements[i].since, a.since,
            "kept IPs keep their start time"
        );
    }
}

#[test]
fn diff_orders_stop_leave_join_start() {
    let t0 = Instant::now();
    let ann = |i: &str| Announcement {
        services: BTreeSet::new(),
        interface: i.into(),
        since: t0,
    };
    let current = Plan {
        announcements: [
            (ip("192.0.2.10"), ann("eth0")),
            (ip("2001:db8:0:1::10"), ann("eth0")),
            (ip("192.0.2.30"), ann("eth0")),
        ]
        .into(),
    };
    let desired = Plan {
        announcements: [
            (ip("192.0.2.30"), ann("eth1")),
            (ip("2001:db8:0:1::20"), ann("eth0")),
            (ip("192.0.2.40"), ann("eth0")),
        ]
        .into(),
    };
    let group = |s: &str| solicited_node(s.parse::<Ipv6Addr>().unwrap());
    let got: Vec<String> = diff(&current, &desired, t0)
        .iter()
        .map(|a| match a {
            Action::StopAnnouncing { ip, interface } => format!("stop {ip} {interface}"),
            Action::LeaveSolicitedNode { interface, group } => format!("leave {group} {interface}"),
            Action::JoinSolicitedNode { interface, group } => format!("join {group} {interface}"),
            Action::StartAnnouncing { ip, interface, .. } => format!("start {ip} {interface}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            "stop 192.0.2.10 eth0".to_string(),
            "stop 192.0.2.30 eth0".into(),
            "stop 2001:db8:0:1::10 eth0".into(),
            format!("leave {} eth0", group("2001:db8:0:1::10")),
            format!("join {} eth0", group("2001:db8:0:1::20")),
            "start 192.0.2.30 eth1".into(),
            "start 192.0.2.40 eth0".into(),
            "start 2001:db8:0:1::20 eth0".into(),
        ]
    );
    assert!(
        diff(&desired, &desired, t0).is_empty(),
        "no change, no action"
    );
    // Giving everything up (graceful stop): only stops and leaves.
    let down = diff(&desired, &Plan::default(), t0);
    assert!(down.iter().all(|a| matches!(
        a,
        Action::StopAnnouncing { .. } | Action::LeaveSolicitedNode { .. }
    )));
}

#[test]
fn shared_solicited_node_group_is_joined_once_and_kept() {
    let t0 = Instant::now();
    let ann = || Announcement {
        services: BTreeSet::new(),
        interface: "eth0".into(),
        since: t0,
    };
    // Same low 24 bits: one solicited-node group.
    let one = Plan {
        announcements: [(ip("2001:db8:0:1::ab:cdef"), ann())].into(),
    };
    let two = Plan {
        announcements: [
            (ip("2001:db8:0:1::ab:cdef"), ann()),
            (ip("2001:db8:0:2::ab:cdef"), ann()),
        ]
        .into(),
    };
    let joins = |a: &[Action]| {
        a.iter()
            .filter(|x| matches!(x, Action::JoinSolicitedNode { .. }))
            .count()
    };
    let leaves = |a: &[Action]| {
        a.iter()
            .filter(|x| matches!(x, Action::LeaveSolicitedNode { .. }))
            .count()
    };
    assert_eq!(joins(&diff(&Plan::default(), &two, t0)), 1);
    assert_eq!(
        leaves(&diff(&two, &one, t0)),
        0,
        "still needed by the other address"
    );
    assert_eq!(leaves(&diff(&one, &Plan::default(), t0)), 1);
}

#[test]
fn gratuitous_schedule_is_driven_by_now() {
    let t0 = Instant::now();
    let mut g = GratuitousSchedule::starting(t0);
    assert_eq!(g.times().len(), GRATUITOUS_OFFSETS.len());
    assert!(
        *GRATUITOUS_OFFSETS.last().unwrap() >= Duration::from_secs(5),
        "repeats span at least 5 s"
    );
    assert_eq!(g.poll(t0), Poll::Send);
    assert_eq!(g.last_sent(), Some(t0));
    assert_eq!(g.poll(t0), Poll::Wait(t0 + Duration::from_millis(500)));
    assert_eq!(
        g.poll(t0 + Duration::from_millis(499)),
        Poll::Wait(t0 + Duration::from_millis(500))
    );
    assert_eq!(g.poll(t0 + Duration::from_millis(500)), Poll::Send);
    // Late by several rounds: one send, not a burst.
    assert_eq!(g.poll(t0 + Duration::from_millis(4100)), Poll::Send);
    assert_eq!(g.next_deadline(), Some(t0 + Duration::from_secs(6)));
    assert_eq!(g.poll(t0 + Duration::from_secs(6)), Poll::Send);
    assert_eq!(g.poll(t0 + Duration::from_secs(60)), Poll::Done);
}

#[test]
fn responder_state_from_the_plan_answers_only_the_owner() {
    let w = World::new();
    let t0 = Instant::now();
    let e = elect(&w.inputs());
    let owner = e[&ip("192.0.2.10")].owner.clone().unwrap();
    let client = MacAddr([2, 0, 0, 0, 0xc, 1]);
    let request = Frame::arp(
        MacAddr::BROADCAST,
        client,
        None,
        ArpPacket::request(
            client,
            "192.0.2.100".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        ),
    )
    .encode();
    let mut replies = 0;
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let p = plan_from(&name(n), &e, &Plan::default(), t0);
        let s = ResponderState {
            interface: "eth0".into(),
            mac: MacAddr([2, 0, 0, 0, 0xa, i as u8]),
            link_local: None,
            ips: p.statuses(&name(n), &e),
        };
        match decide_arp(&request, &s) {
            Decision::Reply(_) => replies += 1,
            Decision::Drop(r) => assert_eq!(
                r,
                DropReason::NotOwner {
                    owner: owner.clone()
                },
                "{n}"
            ),
        }
        // Elected but not yet applied: says so.
        let pending = ResponderState {
            ips: Plan::default().statuses(&name(n), &e),
            ..s
        };
        if *n == owner.as_str() {
            assert_eq!(
                decide_arp(&request, &pending),
                Decision::Drop(DropReason::NotYetAnnounced)
            );
        }
    }
    assert_eq!(replies, 1, "exactly one node answers");
    let _: BTreeMap<IpAddr, Election> = e;
}
