//! The lab's address plan for one node and pod IP allocation from its pod CIDRs. Pure.
//!
//! Node N: LAN 192.0.2.(10+N) and 2001:db8:0:1::(10+N); pods 198.18.N.0/24 and
//! 2001:db8:1:N::/64 with the gateway at .1 / ::1 on `cbr0`. IPv6 host parts are written
//! with the same decimal digits as the IPv4 ones (pod 198.18.1.25 is 2001:db8:1:1::25),
//! so a reader can pair them at a glance.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The highest node index the plan has room for (LAN host 10+N must stay below 255).
pub const MAX_NODE_INDEX: u8 = 244;

/// First and last pod host numbers (.1 is the gateway, .255 broadcast).
const FIRST_HOST: u8 = 2;
const LAST_HOST: u8 = 254;

/// IPv6 address whose last group is `digits` read as hex, so it shows the same digits.
fn v6(prefix: &str, digits: u32) -> Ipv6Addr {
    format!("{prefix}::{digits}")
        .parse()
        .expect("decimal digits up to 255 are a valid IPv6 group")
}

/// One node's slice of the address plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePlan {
    /// The node index N (1-based).
    pub index: u8,
}

impl NodePlan {
    /// The plan of node `index`; `None` outside `1..=MAX_NODE_INDEX`.
    pub fn new(index: u8) -> Option<Self> {
        (1..=MAX_NODE_INDEX)
            .contains(&index)
            .then_some(Self { index })
    }

    /// The node's LAN IPv4 address.
    pub fn lan4(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, 10 + self.index)
    }

    /// The node's LAN IPv6 address.
    pub fn lan6(&self) -> Ipv6Addr {
        v6("2001:db8:0:1", 10 + u32::from(self.index))
    }

    /// The node's IPv4 pod CIDR.
    pub fn pod_cidr4(&self) -> String {
        format!("198.18.{}.0/24", self.index)
    }

    /// The node's IPv6 pod CIDR.
    pub fn pod_cidr6(&self) -> String {
        format!("2001:db8:1:{}::/64", self.index)
    }

    /// The IPv4 gateway on `cbr0`.
    pub fn gateway4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 1)
    }

    /// The IPv6 gateway on `cbr0`.
    pub fn gateway6(&self) -> Ipv6Addr {
        v6(&format!("2001:db8:1:{}", self.index), 1)
    }

    /// The addresses of pod host number `host`.
    pub fn pod(&self, host: u8) -> PodAddrs {
        PodAddrs {
            host,
            v4: Ipv4Addr::new(198, 18, self.index, host),
            v6: v6(&format!("2001:db8:1:{}", self.index), u32::from(host)),
        }
    }
}

/// A pod's addresses (prefixes /24 and /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodAddrs {
    /// The host number shared by both families.
    pub host: u8,
    /// IPv4 address.
    pub v4: Ipv4Addr,
    /// IPv6 address.
    pub v6: Ipv6Addr,
}

/// Pod address allocation for one node.
///
/// Round-robin rather than lowest-free, like CNI's host-local: an address just released is
/// not handed out again at once, so stale neighbour entries and connections elsewhere do not
/// reach a new pod.
#[derive(Debug, Clone)]
pub struct Ipam {
    plan: NodePlan,
    used: BTreeSet<u8>,
    last: u8,
}

impl Ipam {
    /// An empty allocator for `plan`.
    pub fn new(plan: NodePlan) -> Self {
        Self {
            plan,
            used: BTreeSet::new(),
            last: FIRST_HOST - 1,
        }
    }

    /// The next free addresses, or `None` when all 253 are in use.
    pub fn allocate(&mut self) -> Option<PodAddrs> {
        let span = u16::from(LAST_HOST - FIRST_HOST) + 1;
        // `last` starts one below FIRST_HOST, so the first allocation is FIRST_HOST.
        let last = u16::from(self.last) + span - u16::from(FIRST_HOST);
        for step in 1..=span {
            let host = FIRST_HOST + u8::try_from((last + step) % span).expect("below span");
            if self.used.insert(host) {
                self.last = host;
                return Some(self.plan.pod(host));
            }
        }
        None
    }

    /// Gives `host` back.
    pub fn release(&mut self, host: u8) {
        self.used.remove(&host);
    }

    /// How many addresses are in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_plan_uses_literal_decimal_digits() {
        let p = NodePlan::new(1).unwrap();
        assert_eq!(p.lan4().to_string(), "192.0.2.11");
        assert_eq!(p.lan6().to_string(), "2001:db8:0:1::11");
        assert_eq!(p.pod_cidr4(), "198.18.1.0/24");
        assert_eq!(p.pod_cidr6(), "2001:db8:1:1::/64");
        assert_eq!(p.gateway6().to_string(), "2001:db8:1:1::1");
        let pod = NodePlan::new(3).unwrap().pod(25);
        assert_eq!(pod.v4.to_string(), "198.18.3.25");
        assert_eq!(pod.v6.to_string(), "2001:db8:1:3::25");
        assert_eq!(NodePlan::new(0), None);
        assert_eq!(NodePlan::new(245), None);
        assert_eq!(
            NodePlan::new(244).unwrap().lan6().to_string(),
            "2001:db8:0:1::254"
        );
    }

    #[test]
    fn allocation_is_round_robin_and_skips_used() {
        let mut ipam = Ipam::new(NodePlan::new(2).unwrap());
        let a = ipam.allocate().unwrap();
        let b = ipam.allocate().unwrap();
        assert_eq!((a.host, b.host), (2, 3));
        ipam.release(a.host);
        assert_eq!(
            ipam.allocate().unwrap().host,
            4,
            "a released address is not reused at once"
        );
        assert_eq!(ipam.in_use(), 2);
    }

    #[test]
    fn allocation_wraps_and_exhausts() {
        let mut ipam = Ipam::new(NodePlan::new(1).unwrap());
        let all: Vec<u8> = std::iter::from_fn(|| ipam.allocate().map(|a| a.host)).collect();
        assert_eq!(all.len(), 253);
        assert_eq!((all[0], all[252]), (2, 254));
        assert_eq!(ipam.allocate(), None);
        ipam.release(100);
        assert_eq!(
            ipam.allocate().unwrap().host,
            100,
            "wraps around to the free one"
        );
    }
}
