//! Property tests of the forwarding plan, its diff, and its nftables transactions.

use ferrolb_core::forward::nft::{NftConfig, delta, delta_transaction, full_transaction};
use ferrolb_core::forward::{
    Backends, Endpoint, EndpointConditions, EndpointPool, ForwardService, Protocol, ServiceKey,
    ServicePort, SessionAffinity, TrafficPolicy, diff, plan,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

const NODE: &str = "node-a";

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (1u8..6).prop_map(|i| IpAddr::from([198, 18, 1, i])),
        (1u16..4).prop_map(|i| IpAddr::from([0x2001, 0xdb8, 0xb1, 0, 0, 0, 0, i])),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        ip(),
        prop::sample::subsequence(vec!["a", "b"], 0..=2),
        any::<[bool; 3]>(),
        prop::option::of(0..3u8),
    )
        .prop_map(
            |(ip, names, [ready, serving, terminating], node)| Endpoint {
                ip,
                ports: names
                    .into_iter()
                    .map(|n| (n.to_string(), if n == "a" { 8080 } else { 8443 }))
                    .collect(),
                conditions: EndpointConditions {
                    ready,
                    serving,
                    terminating,
                },
                node: node.map(|n| format!("node-{}", (b'a' + n) as char)),
            },
        )
}

fn service() -> impl Strategy<Value = ForwardService> {
    let vip = prop_oneof![
        (10u8..13).prop_map(|i| IpAddr::from([192, 0, 2, i])),
        (10u16..12).prop_map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i])),
    ];
    (
        0..4usize,
        prop::collection::vec(vip, 0..3),
        prop::sample::subsequence(
            vec![
                ("a", Protocol::Tcp, 80u16),
                ("b", Protocol::Udp, 53),
                ("a", Protocol::Sctp, 80),
            ],
            1..=3,
        ),
        any::<bool>(),
        prop::option::of(1u32..100),
        prop::sample::subsequence(
            vec!["192.0.2.0/28", "192.0.2.0/24", "2001:db8:1::/64"],
            0..=2,
        ),
        prop::collection::vec(endpoint(), 0..5),
    )
        .prop_map(
            |(name, vips, ports, local, aff, ranges, endpoints)| ForwardService {
                key: ServiceKey::new("ns", format!("svc{name}")),
                vips,
                ports: ports
                    .into_iter()
                    .map(|(n, protocol, port)| ServicePort {
                        name: n.into(),
                        protocol,
                        port,
                    })
                    .collect(),
                external_traffic_policy: if local {
                    TrafficPolicy::Local
                } else {
                    TrafficPolicy::Cluster
                },
                session_affinity: aff.map_or(SessionAffinity::None, |timeout_s| {
                    SessionAffinity::ClientIp { timeout_s }
                }),
                source_ranges: ranges.into_iter().map(|r| r.parse().unwrap()).collect(),
                endpoints,
            },
        )
}

/// Services with distinct keys, as Kubernetes guarantees.
fn services() -> impl Strategy<Value = Vec<ForwardService>> {
    prop::collection::vec(service(), 0..5).prop_map(|v| {
        let mut seen = BTreeSet::new();
        v.into_iter()
            .filter(|s| seen.insert(s.key.clone()))
            .collect()
    })
}

/// A model of the kernel's table that enforces what a transaction must respect: objects exist
/// before use, nothing referenced is deleted, no element is added twice.
#[derive(Debug, Default, PartialEq)]
struct Model {
    sets: BTreeMap<String, String>,
    counters: BTreeSet<String>,
    chains: BTreeMap<String, Vec<String>>,
    elements: BTreeMap<(String, String), String>,
}

/// Backend maps: `vip . port . index : endpoint . port`, read by the shared pick chains.
const BACKEND_MAPS: [&str; 6] = ["be4tcp", "be4udp", "be4sctp", "be6tcp", "be6udp", "be6sctp"];

impl Model {
    fn referenced(&self, name: &str) -> bool {
        let word = |s: &str| s.split([' ', '@', ',']).any(|w| w == name);
        self.chains.values().flatten().any(|r| word(r)) || self.elements.values().any(|v| word(v))
    }

    fn run(&mut self, script: &str) {
        for line in script.lines() {
            let w: Vec<&str> = line.splitn(6, ' ').collect();
            match (w[0], w[1]) {
                ("add", "table") | ("delete", "table") => *self = Model::default(),
                ("add", "map") => {}
                ("add", "counter") => assert!(self.counters.insert(w[4].into()), "{line}"),
                ("delete", "counter") => {
                    assert!(!self.referenced(w[4]), "counter still used: {line}");
                    assert!(self.counters.remove(w[4]), "{line}");
                }
                ("add", "set") => assert!(
                    self.sets.insert(w[4].into(), w[5].into()).is_none(),
                    "{line}"
                ),
                ("delete", "set") => {
                    assert!(!self.referenced(w[4]), "set still used: {line}");
                    self.sets.remove(w[4]).expect(line);
                }
                ("add", "chain") => assert!(
                    self.chains.insert(w[4].into(), vec![]).is_none() || w.len() > 5,
                    "{line}"
                ),
                ("flush", "chain") => self.chains.get_mut(w[4]).expect(line).clear(),
                ("delete", "chain") => {
                    assert!(!self.referenced(w[4]), "chain still used: {line}");
                    self.chains.remove(w[4]).expect(line);
                }
                ("add", "rule") => {
                    for t in w[5]
                        .split([' ', '@', ','])
                        .filter(|t| ["ep-", "aff-"].iter().any(|p| t.starts_with(p)))
                    {
                        assert!(
                            self.chains.contains_key(t)
                                || self.sets.contains_key(t)
                                || self.counters.contains(t),
                            "dangling {t}: {line}"
                        );
                    }
                    self.chains.get_mut(w[4]).expect(line).push(w[5].into());
                }
                ("add", "element") => {
                    for element in w[5].trim_matches(['{', '}', ' ']).split(", ") {
                        let (key, value) = element.split_once(" : ").unwrap_or((element, ""));
                        if let Some(target) = value
                            .strip_prefix("goto ")
                            .or_else(|| value.strip_prefix("jump "))
                        {
                            assert!(
                                self.chains.contains_key(target),
                                "dangling {target}: {line}"
                            );
                        }
                        let old = self
                            .elements
                            .insert((w[4].into(), key.into()), value.into());
                        assert!(old.is_none(), "element exists: {line}");
                    }
                }
                ("delete", "element") => {
                    for key in w[5].trim_matches(['{', '}', ' ']).split(", ") {
                        self.elements
                            .remove(&(w[4].to_string(), key.to_string()))
                            .expect(line);
                    }
                }
                _ => panic!("unknown command {line}"),
            }
        }
    }

    /// Panics unless every frontend sent to a shared pick chain of N endpoints has exactly
    /// backend elements 0..N, no backend element belongs to no such frontend (a leak), and
    /// every pick chain is in use; returns the model for comparison.
    fn checked(&self) -> &Model {
        let mut wanted = BTreeSet::new();
        for ((map, key), value) in &self.elements {
            let Some(pick) = value.strip_prefix("goto pick-") else {
                continue;
            };
            assert!(map.starts_with("svc"), "{map} {key} {value}");
            let p: Vec<&str> = pick.split('-').collect();
            let n: u32 = p[2].parse().unwrap();
            let k: Vec<&str> = key.split(" . ").collect();
            let be = format!("be{}{}", &p[0][1..], p[1]);
            for i in 0..n {
                wanted.insert((be.clone(), format!("{} . {} . {i}", k[0], k[2])));
            }
        }
        let have: BTreeSet<(String, String)> = self
            .elements
            .keys()
            .filter(|(m, _)| BACKEND_MAPS.contains(&m.as_str()))
            .cloned()
            .collect();
        assert_eq!(
            have, wanted,
            "backend elements differ from what the pick chains read"
        );
        for name in self.chains.keys().filter(|c| c.starts_with("pick-")) {
            assert!(self.referenced(name), "unused shared chain {name}");
        }
        self
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plan_is_deterministic(mut services in services()) {
        let a = plan(&services, NODE);
        services.reverse();
        prop_assert_eq!(a, plan(&services, NODE));
    }

    #[test]
    fn backends_follow_kube_proxy_rules(services in services()) {
        let planned = plan(&services, NODE);
        for svc in &services {
            let Some(sp) = planned.plan.services.get(&svc.key) else { continue };
            let local = svc.external_traffic_policy == TrafficPolicy::Local;
            for (fe, backends) in &sp.frontends {
                let name = &svc.ports.iter().find(|p| p.protocol == fe.protocol && p.port == fe.port).unwrap().name;
                let usable: Vec<&Endpoint> = svc.endpoints.iter()
                    .filter(|e| e.ip.is_ipv4() == fe.vip.is_ipv4() && e.ports.contains_key(name))
                    .filter(|e| !local || e.node.as_deref() == Some(NODE))
                    .collect();
                let addrs = |f: &dyn Fn(&EndpointConditions) -> bool| -> BTreeSet<_> {
                    usable.iter().filter(|e| f(&e.conditions)).map(|e| std::net::SocketAddr::new(e.ip, e.ports[name])).collect()
                };
                let ready = addrs(&|c| c.ready);
                let term = addrs(&|c| c.serving && c.terminating);
                match backends {
                    Backends::Forward { backends, pool: EndpointPool::Ready } => {
                        prop_assert_eq!(backends.iter().copied().collect::<BTreeSet<_>>(), ready);
                    }
                    Backends::Forward { backends, pool: EndpointPool::Terminating } => {
                        prop_assert!(ready.is_empty());
                        prop_assert_eq!(backends.iter().copied().collect::<BTreeSet<_>>(), term);
                    }
                    Backends::Reject(_) => prop_assert!(ready.is_empty() && term.is_empty()),
                }
            }
        }
    }

    #[test]
    fn diff_of_equal_plans_is_empty(services in services()) {
        let p = plan(&services, NODE).plan;
        prop_assert!(diff(&p, &p).is_empty());
    }

    #[test]
    fn applying_diff_gives_target(a in services(), b in services()) {
        let (pa, pb) = (plan(&a, NODE).plan, plan(&b, NODE).plan);
        let changes = diff(&pa, &pb);
        let mut applied = pa.clone();
        applied.apply(&changes);
        prop_assert_eq!(&applied, &pb);
        prop_assert!(changes.windows(2).all(|w| w[0].key() < w[1].key()), "changes in key order, each Service once");
        for c in &changes {
            prop_assert!(pa.services.get(c.key()) != pb.services.get(c.key()), "unchanged service in diff");
        }
    }

    #[test]
    fn delta_transaction_reaches_the_full_ruleset(a in services(), b in services()) {
        let cfg = NftConfig::default();
        let (pa, pb) = (plan(&a, NODE).plan, plan(&b, NODE).plan);
        let mut incremental = Model::default();
        let (script, mut shared) = full_transaction(&cfg, &pa);
        incremental.run(&script);
        let d = delta(&cfg, &pa, &mut shared, &diff(&pa, &pb));
        // The element operations exist exactly when the script is element commands alone,
        // and they hold its elements (one deleted or added key per listed element).
        let element_lines = d.script.lines().all(|l| l.contains(" element "));
        prop_assert_eq!(d.elements.is_some(), element_lines, "{}", d.script);
        if let Some(e) = &d.elements {
            let listed = |verb: &str| d.script.lines().filter(|l| l.starts_with(verb)).map(|l| l.matches(", ").count() + 1).sum::<usize>();
            prop_assert_eq!(e.delete.values().map(Vec::len).sum::<usize>(), listed("delete element"));
            prop_assert_eq!(e.add.values().map(Vec::len).sum::<usize>(), listed("add element"));
        }
        incremental.run(&d.script);
        let mut fresh = Model::default();
        fresh.run(&full_transaction(&cfg, &pb).0);
        prop_assert_eq!(incremental.checked(), fresh.checked());
    }

    #[test]
    fn chained_deltas_share_pick_chains_and_reach_the_full_ruleset(a in services(), b in services(), c in services()) {
        let cfg = NftConfig::default();
        let plans: Vec<_> = [a, b, c].iter().map(|s| plan(s, NODE).plan).collect();
        let mut incremental = Model::default();
        let (script, mut shared) = full_transaction(&cfg, &plans[0]);
        incremental.run(&script);
        for w in plans.windows(2) {
            incremental.run(&delta_transaction(&cfg, &w[0], &mut shared, &diff(&w[0], &w[1])));
        }
        let mut fresh = Model::default();
        fresh.run(&full_transaction(&cfg, &plans[2]).0);
        prop_assert_eq!(incremental.checked(), fresh.checked());
    }
}
