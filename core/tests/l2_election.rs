//! The owner election: determinism, rendezvous minimal movement, balanced caps and movement.

use ferrolb_core::announce::{Mode, NodeName, assign, owner};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn ips(n: usize, salt: u32) -> Vec<IpAddr> {
    (0..n as u32)
        .map(|i| {
            if i % 3 == 0 {
                IpAddr::V6(Ipv6Addr::from(
                    0x2001_0db8_0000_0001_0000_0000_0000_0000u128 + u128::from(i * 7 + salt),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(0xcb00_7100u32 + i * 5 + salt))
            }
        })
        .collect()
}

fn nodes(k: usize, salt: u32) -> Vec<NodeName> {
    (0..k)
        .map(|i| NodeName(format!("worker-{salt}-{i}")))
        .collect()
}

fn uniform(ips: &[IpAddr], nodes: &[NodeName]) -> BTreeMap<IpAddr, Vec<NodeName>> {
    ips.iter().map(|ip| (*ip, nodes.to_vec())).collect()
}

fn moved(a: &BTreeMap<IpAddr, NodeName>, b: &BTreeMap<IpAddr, NodeName>) -> usize {
    a.iter().filter(|(ip, n)| b.get(*ip) != Some(*n)).count()
}

fn loads(a: &BTreeMap<IpAddr, NodeName>) -> BTreeMap<&NodeName, usize> {
    let mut l = BTreeMap::new();
    for n in a.values() {
        *l.entry(n).or_default() += 1;
    }
    l
}

/// Bound on IPs moved by Balanced when the node count goes from `k_from` to `k_to`: the IPs the
/// leaving (joining) node held (takes), plus IPs that return home because the cap changed on
/// every node, plus displacement chains. See docs/decisions/0008-l2-announcing.md.
fn balanced_bound(n: usize, k_from: usize, k_to: usize) -> usize {
    let (c_from, c_to) = (n.div_ceil(k_from), n.div_ceil(k_to));
    2 * c_from.max(c_to) + k_from.max(k_to) * c_from.abs_diff(c_to) + 2
}

#[test]
fn owner_is_none_without_nodes() {
    assert_eq!(owner(ips(1, 0)[0], &[]), None);
    assert!(assign(&uniform(&ips(3, 0), &[]), Mode::Balanced).is_empty());
    assert!(assign(&uniform(&ips(3, 0), &[]), Mode::Hash).is_empty());
}

#[test]
fn hash_spreads_reasonably() {
    let (ips, nodes) = (ips(1000, 1), nodes(5, 1));
    let a = assign(&uniform(&ips, &nodes), Mode::Hash);
    for (n, l) in loads(&a) {
        assert!((140..=260).contains(&l), "{n}: {l}");
    }
}

#[test]
fn balanced_example() {
    // 7 IPs over 3 nodes: nobody above ceil(7/3) = 3.
    let a = assign(&uniform(&ips(7, 2), &nodes(3, 2)), Mode::Balanced);
    assert_eq!(a.len(), 7);
    assert!(loads(&a).values().all(|l| *l <= 3), "{a:?}");
}

#[test]
fn balanced_with_different_eligible_sets_keeps_ips_on_their_nodes() {
    let ns = nodes(3, 3);
    let ip = ips(6, 3);
    // Only node 0 may announce the first four IPs (e.g. ETP Local): the cap (2) cannot hold.
    let mut c: BTreeMap<IpAddr, Vec<NodeName>> =
        ip[..4].iter().map(|i| (*i, vec![ns[0].clone()])).collect();
    c.extend(ip[4..].iter().map(|i| (*i, ns.clone())));
    let a = assign(&c, Mode::Balanced);
    assert_eq!(a.len(), 6);
    for i in &ip[..4] {
        assert_eq!(a[i], ns[0]);
    }
    for i in &ip[4..] {
        assert_ne!(a[i], ns[0], "the flexible IPs go where there is room");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn owner_ignores_order_and_duplicates(salt in 0u32..1000, k in 1usize..10, n in 1usize..20, rot in 0usize..10) {
        let ns = nodes(k, salt);
        let mut shuffled = ns.clone();
        shuffled.rotate_left(rot % k);
        shuffled.reverse();
        shuffled.push(ns[0].clone());
        for ip in ips(n, salt) {
            prop_assert_eq!(owner(ip, &ns), owner(ip, &shuffled));
        }
    }

    #[test]
    fn assign_ignores_order(salt in 0u32..1000, k in 1usize..8, n in 0usize..40, rot in 0usize..8, balanced in any::<bool>()) {
        let mode = if balanced { Mode::Balanced } else { Mode::Hash };
        let (ip, ns) = (ips(n, salt), nodes(k, salt));
        let mut other = ns.clone();
        other.rotate_left(rot % k);
        other.reverse();
        let a = assign(&uniform(&ip, &ns), mode);
        let b = assign(&uniform(&ip, &other), mode);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn hash_removing_a_node_moves_only_its_ips(salt in 0u32..1000, k in 2usize..10, n in 1usize..60, victim in 0usize..10) {
        let (ip, ns) = (ips(n, salt), nodes(k, salt));
        let gone = ns[victim % k].clone();
        let rest: Vec<NodeName> = ns.iter().filter(|x| **x != gone).cloned().collect();
        let before = assign(&uniform(&ip, &ns), Mode::Hash);
        let after = assign(&uniform(&ip, &rest), Mode::Hash);
        for (i, n) in &before {
            if *n != gone {
                prop_assert_eq!(&after[i], n, "an IP of a surviving node moved");
            }
        }
    }

    #[test]
    fn hash_adding_a_node_moves_ips_only_to_it(salt in 0u32..1000, k in 1usize..10, n in 1usize..60) {
        let (ip, ns) = (ips(n, salt), nodes(k + 1, salt));
        let before = assign(&uniform(&ip, &ns[..k]), Mode::Hash);
        let after = assign(&uniform(&ip, &ns), Mode::Hash);
        for (i, n) in &after {
            prop_assert!(before[i] == *n || *n == ns[k]);
        }
    }

    #[test]
    fn balanced_respects_the_cap(salt in 0u32..1000, k in 1usize..12, n in 0usize..120) {
        let (ip, ns) = (ips(n, salt), nodes(k, salt));
        let a = assign(&uniform(&ip, &ns), Mode::Balanced);
        prop_assert_eq!(a.len(), n);
        let cap = n.div_ceil(k);
        for (node, l) in loads(&a) {
            prop_assert!(l <= cap, "{} holds {} > {}", node, l, cap);
        }
    }

    #[test]
    fn balanced_membership_change_moves_few(salt in 0u32..1000, k in 2usize..12, n in 1usize..120, victim in 0usize..12) {
        let (ip, ns) = (ips(n, salt), nodes(k, salt));
        let gone = ns[victim % k].clone();
        let rest: Vec<NodeName> = ns.iter().filter(|x| **x != gone).cloned().collect();
        let before = assign(&uniform(&ip, &ns), Mode::Balanced);
        let after = assign(&uniform(&ip, &rest), Mode::Balanced);
        // Removal and, read backwards, addition.
        let m = moved(&before, &after);
        prop_assert!(m <= balanced_bound(n, k, k - 1), "moved {} of {} (k {} -> {})", m, n, k, k - 1);
        // The IPs of the node that left always move, and it is most of the movement on average.
        prop_assert!(m >= before.values().filter(|x| **x == gone).count());
    }

    #[test]
    fn balanced_heterogeneous_sets_stay_within_candidates(
        salt in 0u32..1000, k in 1usize..8, n in 0usize..40, masks in proptest::collection::vec(1u8..=255, 40),
    ) {
        let (ip, ns) = (ips(n, salt), nodes(k, salt));
        let c: BTreeMap<IpAddr, Vec<NodeName>> = ip.iter().zip(&masks).map(|(i, m)| {
            let mut set: Vec<NodeName> = ns.iter().enumerate().filter(|(j, _)| m & (1 << (j % 8)) != 0).map(|(_, x)| x.clone()).collect();
            if set.is_empty() { set.push(ns[0].clone()); }
            (*i, set)
        }).collect();
        let a = assign(&c, Mode::Balanced);
        prop_assert_eq!(a.len(), n);
        for (i, owner) in &a {
            prop_assert!(c[i].contains(owner));
        }
        let h = assign(&c, Mode::Hash);
        let hosts: BTreeSet<&NodeName> = h.values().collect();
        prop_assert!(hosts.iter().all(|x| ns.contains(x)));
    }
}
