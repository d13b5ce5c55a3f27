//! Property tests: random pool changes, Service changes, releases and restarts, driven the way
//! the controller glue drives the allocator, with the invariants checked after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ferrolb_core::alloc::{
    AddressRange, AllocError, Allocator, AutoAssign, BuggyIps, Family, FamilyPolicy, FamilyRequest,
    LabelSelector, Pool, PoolAllocation, Protocol, ServiceKey, ServiceRequest,
};
use proptest::prelude::*;

const POOL_NAMES: [&str; 3] = ["a", "b", "c"];
const SERVICES: usize = 7;

/// A small address space crossing a .255/.0 boundary, and a small IPv6 one.
fn addr(family: Family, offset: u32) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(192, 0, 2, 248)) + offset,
        )),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(offset))),
    }
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::V4), Just(Family::V6)]
}

fn range() -> impl Strategy<Value = AddressRange> {
    (family(), 0u32..14, 0u32..5).prop_map(|(f, start, len)| {
        AddressRange::new(addr(f, start), addr(f, start + len)).unwrap()
    })
}

fn web() -> LabelSelector {
    LabelSelector {
        match_labels: [("tier".to_string(), "web".to_string())].into(),
        ..LabelSelector::default()
    }
}

fn pool() -> impl Strategy<Value = Pool> {
    (
        0usize..3,
        prop::collection::vec(range(), 1..3),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0i32..3),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(n, ranges, auto, avoid, priority, ns_only, web_only)| Pool {
                name: POOL_NAMES[n].to_string(),
                ranges,
                auto_assign: if auto {
                    AutoAssign::Yes
                } else {
                    AutoAssign::No
                },
                avoid_buggy_ips: if avoid {
                    BuggyIps::Avoid
                } else {
                    BuggyIps::Use
                },
                allocation: PoolAllocation {
                    priority,
                    namespaces: if ns_only {
                        vec!["ns0".to_string()]
                    } else {
                        vec![]
                    },
                    namespace_selectors: vec![],
                    service_selectors: if web_only { vec![web()] } else { vec![] },
                },
            },
        )
}

fn pools() -> impl Strategy<Value = Vec<Pool>> {
    prop::collection::vec(pool(), 0..4).prop_map(|ps| {
        let mut seen = BTreeSet::new();
        ps.into_iter()
            .filter(|p| seen.insert(p.name.clone()))
            .collect()
    })
}

fn families() -> impl Strategy<Value = FamilyRequest> {
    use FamilyPolicy::*;
    prop_oneof![
        3 => Just(FamilyRequest::v4()),
        1 => Just(FamilyRequest::v6()),
        1 => Just(FamilyRequest::new(PreferDualStack, &[Family::V4, Family::V6])),
        1 => Just(FamilyRequest::new(PreferDualStack, &[Family::V6, Family::V4])),
        1 => Just(FamilyRequest::new(RequireDualStack, &[Family::V4, Family::V6])),
    ]
}

fn spec(i: usize) -> impl Strategy<Value = ServiceRequest> {
    (
        any::<bool>(),
        families(),
        prop::option::weighted(0.2, (family(), 0u32..20)),
        prop::option::weighted(0.2, 0usize..4),
        prop::option::weighted(0.6, 0usize..2),
        prop::collection::btree_set(0usize..3, 0..3),
        prop::option::weighted(0.3, 0usize..2),
    )
        .prop_map(
            move |(is_web, families, requested, pool, key, ports, local)| {
                let all_ports = [
                    (Protocol::Tcp, 80),
                    (Protocol::Tcp, 443),
                    (Protocol::Udp, 53),
                ];
                ServiceRequest {
                    key: ServiceKey::new(format!("ns{}", i % 2), format!("s{i}")),
                    namespace_labels: BTreeMap::new(),
                    service_labels: if is_web {
                        web().match_labels
                    } else {
                        BTreeMap::new()
                    },
                    families,
                    requested_ips: requested.map(|(f, o)| vec![addr(f, o)]).unwrap_or_default(),
                    requested_pool: pool.map(|p| ["a", "b", "c", "zzz"][p].to_string()),
                    sharing_key: key.map(|k| format!("k{k}")),
                    ports: ports.into_iter().map(|p| all_ports[p]).collect(),
                    local_traffic_selector: local
                        .map(|l| [("app".to_string(), format!("app{l}"))].into()),
                    current_ips: vec![],
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    SetPools(Vec<Pool>),
    Assign(Box<ServiceRequest>),
    Release(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => pools().prop_map(Op::SetPools),
        8 => (0..SERVICES).prop_flat_map(spec).prop_map(|s| Op::Assign(Box::new(s))),
        2 => (0..SERVICES).prop_map(Op::Release),
        1 => Just(Op::Restart),
    ]
}

/// The allocator plus what the glue would have written to the API server.
struct World {
    alloc: Allocator,
    pools: Vec<Pool>,
    specs: BTreeMap<ServiceKey, ServiceRequest>,
    /// `status.loadBalancer.ingress` per Service (absent: pending).
    status: BTreeMap<ServiceKey, Vec<IpAddr>>,
}

impl World {
    fn request(&self, key: &ServiceKey) -> ServiceRequest {
        let current_ips = self.status.get(key).cloned().unwrap_or_default();
        ServiceRequest {
            current_ips,
            ..self.specs[key].clone()
        }
    }

    /// Assigns like the glue does, checking idempotence on success.
    fn assign(&mut self, key: &ServiceKey) -> Result<(), TestCaseError> {
        let req = self.request(key);
        match self.alloc.assign(&req) {
            Ok(got) => {
                let again = ServiceRequest {
                    current_ips: got.addresses(),
                    ..req.clone()
                };
                let second = self.alloc.assign(&again).expect("unchanged request fails");
                prop_assert_eq!(&second.ips, &got.ips, "not idempotent for {}", key);
                prop_assert!(!second.changed);
                prop_assert_eq!(got.changed, got.addresses() != req.current_ips);
                self.status.insert(key.clone(), got.addresses());
            }
            Err(e) => {
                prop_assert!(
                    self.alloc.held(key).is_empty(),
                    "{} holds IPs after {e}",
                    key
                );
                if let AllocError::PoolExhausted { pool, family } = &e {
                    // Exhausted means it: no free address of that family in any pool tried.
                    for name in pool.split(", ") {
                        let c = self.alloc.pool_counts(name);
                        let free = match family {
                            Family::V4 => c.available_v4,
                            Family::V6 => c.available_v6,
                        };
                        prop_assert_eq!(
                            free,
                            0,
                            "{} exhausted with {} free in {}",
                            key,
                            free,
                            name
                        );
                    }
                }
                self.status.remove(key);
            }
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::SetPools(pools) => {
                self.pools = pools.clone();
                let report = self.alloc.set_pools(pools);
                for key in &report.invalidated {
                    self.status.remove(key);
                }
                for key in report.invalidated {
                    self.assign(&key)?;
                }
            }
            Op::Assign(spec) => {
                let key = spec.key.clone();
                self.specs.insert(key.clone(), *spec);
                self.assign(&key)?;
            }
            Op::Release(i) => {
                let key = ServiceKey::new(format!("ns{}", i % 2), format!("s{i}"));
                self.alloc.release(&key);
                self.specs.remove(&key);
                self.status.remove(&key);
            }
            Op::Restart => self.restart()?,
        }
        self.check()
    }

    /// A new allocator rebuilt from the Services' status: restore holders, then assign all.
    fn restart(&mut self) -> Result<(), TestCaseError> {
        self.alloc = Allocator::new();
        self.alloc.set_pools(self.pools.clone());
        let before = self.status.clone();
        for key in before.keys() {
            let kept = self.alloc.restore(&self.request(key));
            let kept: Vec<IpAddr> = kept.into_iter().map(|(ip, _)| ip).collect();
            prop_assert_eq!(&kept, &before[key], "restore moved {}", key);
        }
        let holders = before.keys().cloned();
        let pending = self
            .specs
            .keys()
            .filter(|k| !before.contains_key(*k))
            .cloned();
        let order: Vec<ServiceKey> = holders.chain(pending).collect();
        for key in order {
            self.assign(&key)?;
            if let Some(old) = before.get(&key) {
                let new = self.status.get(&key).cloned().unwrap_or_default();
                prop_assert!(
                    old.iter().all(|ip| new.contains(ip)),
                    "restart moved {}: {:?} -> {:?}",
                    key,
                    old,
                    new
                );
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
        for (key, ips) in &self.status {
            let held = self.alloc.held(key);
            let held_ips: Vec<IpAddr> = held.iter().map(|(ip, _)| *ip).collect();
            prop_assert_eq!(&held_ips, ips, "allocator and status disagree on {}", key);
            let fams: BTreeSet<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
            prop_assert_eq!(fams.len(), ips.len(), "{} holds two IPs of one family", key);
            let req = &self.specs[key];
            for (ip, pool_name) in &held {
                by_ip.entry(*ip).or_default().push(key);
                let pool = self.pools.iter().find(|p| &p.name == pool_name);
                prop_assert!(
                    pool.is_some(),
                    "{} holds {} from missing pool {}",
                    key,
                    ip,
                    pool_name
                );
                let pool = pool.unwrap();
                prop_assert!(
                    pool.contains(*ip),
                    "{} holds {} outside pool {}",
                    key,
                    ip,
                    pool_name
                );
                prop_assert!(pool.serves_namespace(&key.namespace, &req.namespace_labels));
                prop_assert!(pool.serves_service(&req.service_labels));
                if let Some(p) = &req.requested_pool {
                    prop_assert_eq!(p, pool_name);
                }
                if !req.requested_ips.is_empty() {
                    prop_assert!(req.requested_ips.contains(ip));
                }
            }
        }
        for key in self.specs.keys().filter(|k| !self.status.contains_key(*k)) {
            prop_assert!(self.alloc.held(key).is_empty());
        }
        for (ip, holders) in &by_ip {
            let mut sorted: Vec<ServiceKey> = holders.iter().map(|k| (*k).clone()).collect();
            sorted.sort();
            prop_assert_eq!(self.alloc.holders(*ip), sorted);
            for (i, a) in holders.iter().enumerate() {
                for b in &holders[i + 1..] {
                    let (ra, rb) = (&self.specs[*a], &self.specs[*b]);
                    prop_assert!(
                        ra.sharing_key.is_some() && ra.sharing_key == rb.sharing_key,
                        "{} given to {} and {} without a common sharing key",
                        ip,
                        a,
                        b
                    );
                    prop_assert!(
                        ra.ports.iter().all(|p| !rb.ports.contains(p)),
                        "{} shared by {} and {} with a common port",
                        ip,
                        a,
                        b
                    );
                    prop_assert_eq!(&ra.local_traffic_selector, &rb.local_traffic_selector);
                }
            }
        }
        // Counts: available is exact (checked by enumerating these small pools); every held
        // address is counted as assigned in exactly one pool.
        let mut assigned = 0u128;
        for pool in &self.pools {
            let c = self.alloc.pool_counts(&pool.name);
            assigned += c.assigned_v4 + c.assigned_v6;
            for (fam, avail) in [(Family::V4, c.available_v4), (Family::V6, c.available_v6)] {
                let free = (0..24)
                    .map(|o| addr(fam, o))
                    .filter(|ip| pool.contains(*ip) && !by_ip.contains_key(ip))
                    .count() as u128;
                prop_assert_eq!(avail, free, "available {} in pool {}", fam, pool.name);
            }
        }
        prop_assert_eq!(assigned, by_ip.len() as u128);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_the_invariants(
        initial in pools(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut w = World { alloc: Allocator::new(), pools: vec![], specs: BTreeMap::new(), status: BTreeMap::new() };
        w.step(Op::SetPools(initial))?;
        for op in ops {
            w.step(op)?;
        }
        w.restart()?;
        w.check()?;
    }
}
