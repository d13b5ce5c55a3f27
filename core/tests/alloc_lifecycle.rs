//! The allocator's rules, continued from `alloc_rules.rs`: sharing, IP families, pool changes
//! and counts, restarts.

use ferrolb_core::alloc::{
    AllocError, Allocator, BuggyIps, Family, FamilyPolicy, FamilyRequest, PoolCounts, Protocol,
    ServiceRequest,
};

mod alloc_support;
use alloc_support::*;

// ---- sharing --------------------------------------------------------------------------------

#[test]
fn same_key_distinct_ports_share() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let x = ips(&mut a, &shared("a", "k", &[80]));
    let y = ips(&mut a, &shared("b", "k", &[443]));
    assert_eq!(x, y);
    assert_eq!(a.holders(x[0]), [key("a"), key("b")]);
    assert_eq!(a.pool_counts("p").assigned_v4, 1);
    a.release(&key("a"));
    assert_eq!(a.holders(x[0]), [key("b")]);
    // Still shareable under "k".
    assert_eq!(ips(&mut a, &shared("c", "k", &[22])), x);
}

#[test]
fn same_key_same_port_gets_another_ip() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let x = ips(&mut a, &shared("a", "k", &[80]));
    let y = ips(&mut a, &shared("b", "k", &[80]));
    assert_ne!(x, y);
}

#[test]
fn same_port_different_protocol_shares() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let x = ips(&mut a, &shared("a", "k", &[53]));
    let udp = ServiceRequest {
        ports: vec![(Protocol::Udp, 53)],
        ..shared("b", "k", &[])
    };
    assert_eq!(ips(&mut a, &udp), x);
}

#[test]
fn requested_shared_ip_with_port_collision_is_a_sharing_conflict() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let x = ips(&mut a, &shared("a", "k", &[80, 443]));
    let r = ServiceRequest {
        requested_ips: x.clone(),
        ..shared("b", "k", &[443])
    };
    let e = a.assign(&r).unwrap_err();
    assert_eq!(e.reason(), "SharingConflict");
    assert!(
        e.to_string().contains("443/TCP") && e.to_string().contains("default/a"),
        "{e}"
    );
}

#[test]
fn no_sharing_key_never_shares() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let x = ips(&mut a, &req("a"));
    let r = ServiceRequest {
        requested_ips: x,
        ..shared("b", "k", &[1])
    };
    assert_eq!(a.assign(&r).unwrap_err().reason(), "RequestedIPInUse");
}

#[test]
fn local_traffic_policy_needs_same_pods() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let local = |name: &str, app: &str, port: u16| ServiceRequest {
        local_traffic_selector: Some(labels(&[("app", app)])),
        ..shared(name, "k", &[port])
    };
    let x = ips(&mut a, &local("a", "web", 80));
    assert_eq!(ips(&mut a, &local("b", "web", 443)), x);
    let other_pods = ServiceRequest {
        requested_ips: x.clone(),
        ..local("c", "db", 5432)
    };
    let e = a.assign(&other_pods).unwrap_err();
    assert_eq!(e.reason(), "SharingConflict");
    assert!(e.to_string().contains("select different pods"), "{e}");
    let cluster = ServiceRequest {
        requested_ips: x.clone(),
        ..shared("d", "k", &[8080])
    };
    let e = a.assign(&cluster).unwrap_err();
    assert_eq!(e.reason(), "SharingConflict");
    assert!(e.to_string().contains("Local"), "{e}");
    // Without an explicit request they simply get another address.
    assert_ne!(ips(&mut a, &local("e", "db", 5432)), x);
}

#[test]
fn sharing_stays_within_allowed_pools() {
    let mut a = alloc(vec![
        pool("x", &["192.0.2.0/24"]),
        pool("y", &["198.51.100.0/24"]),
    ]);
    let first = ips(&mut a, &shared("a", "k", &[80]));
    let in_y = ServiceRequest {
        requested_pool: Some("y".into()),
        ..shared("b", "k", &[443])
    };
    let second = ips(&mut a, &in_y);
    assert_ne!(first, second);
    assert_eq!(second, [ip("198.51.100.0")]);
}

#[test]
fn sharer_whose_ports_change_to_collide_moves() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let x = ips(&mut a, &shared("a", "k", &[80]));
    ips(&mut a, &shared("b", "k", &[443]));
    let r = ServiceRequest {
        current_ips: x.clone(),
        ..shared("b", "k", &[80])
    };
    let got = a.assign(&r).unwrap();
    assert!(got.changed);
    assert_ne!(got.addresses(), x);
}

// ---- families -------------------------------------------------------------------------------

#[test]
fn single_stack_v6() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8:ff::/64"])]);
    let r = ServiceRequest {
        families: FamilyRequest::v6(),
        ..req("a")
    };
    assert_eq!(ips(&mut a, &r), [ip("2001:db8:ff::")]);
}

#[test]
fn dual_stack_from_one_pool_in_family_order() {
    let mut a = alloc(vec![
        pool("a-v4only", &["198.51.100.0/24"]),
        pool("both", &["192.0.2.0/24", "2001:db8:ff::/64"]),
    ]);
    let mut r = dual("s", FamilyPolicy::RequireDualStack);
    r.families.ip_families = vec![Family::V6, Family::V4];
    let got = a.assign(&r).unwrap();
    assert_eq!(
        got.ips,
        vec![
            (ip("2001:db8:ff::"), "both".into()),
            (ip("192.0.2.0"), "both".into())
        ]
    );
}

#[test]
fn prefer_dual_stack_takes_what_exists() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    assert_eq!(
        ips(&mut a, &dual("a", FamilyPolicy::PreferDualStack)),
        [ip("192.0.2.0")]
    );
}

#[test]
fn prefer_dual_stack_with_v4_exhausted_gets_v6() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/32", "2001:db8::/126"])]);
    ips(&mut a, &req("x"));
    assert_eq!(
        ips(&mut a, &dual("a", FamilyPolicy::PreferDualStack)),
        [ip("2001:db8::")]
    );
}

#[test]
fn require_dual_stack_with_only_v4_pool() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let e = a
        .assign(&dual("a", FamilyPolicy::RequireDualStack))
        .unwrap_err();
    assert_eq!(e.reason(), "NoMatchingPool");
    assert!(e.to_string().contains("IPv6"), "{e}");
    assert!(a.held(&key("a")).is_empty());
    assert_eq!(a.pool_counts("p").assigned_v4, 0);
}

#[test]
fn require_dual_stack_with_v6_exhausted() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8::/128"])]);
    ips(
        &mut a,
        &ServiceRequest {
            families: FamilyRequest::v6(),
            ..req("x")
        },
    );
    let e = a
        .assign(&dual("a", FamilyPolicy::RequireDualStack))
        .unwrap_err();
    assert_eq!(
        e,
        AllocError::PoolExhausted {
            pool: "p".into(),
            family: Family::V6
        }
    );
}

#[test]
fn dual_stack_requested_ips() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8::/64"])]);
    let r = ServiceRequest {
        requested_ips: vec![ip("2001:db8::5"), ip("192.0.2.5")],
        ..dual("a", FamilyPolicy::RequireDualStack)
    };
    assert_eq!(ips(&mut a, &r), [ip("192.0.2.5"), ip("2001:db8::5")]);
}

#[test]
fn going_single_stack_drops_the_other_family() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8::/64"])]);
    let both = ips(&mut a, &dual("a", FamilyPolicy::PreferDualStack));
    assert_eq!(both.len(), 2);
    let r = ServiceRequest {
        current_ips: both.clone(),
        ..req("a")
    };
    let got = a.assign(&r).unwrap();
    assert_eq!((got.addresses(), got.changed), (vec![both[0]], true));
    assert_eq!(a.pool_counts("p").assigned_v6, 0);
}

#[test]
fn adding_a_family_keeps_the_first() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8::/64"])]);
    ips(&mut a, &req("x"));
    let v4 = ips(&mut a, &req("a"));
    let r = ServiceRequest {
        current_ips: v4.clone(),
        ..dual("a", FamilyPolicy::PreferDualStack)
    };
    assert_eq!(ips(&mut a, &r), [v4[0], ip("2001:db8::")]);
}

#[test]
fn empty_ip_families_default_to_v4() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8::/64"])]);
    let r = ServiceRequest {
        families: FamilyRequest::default(),
        ..req("a")
    };
    assert_eq!(ips(&mut a, &r), [ip("192.0.2.0")]);
    let r6 = ServiceRequest {
        families: FamilyRequest::default(),
        requested_ips: vec![ip("2001:db8::9")],
        ..req("b")
    };
    assert_eq!(ips(&mut a, &r6), [ip("2001:db8::9")]);
}

// ---- pool changes and counts ----------------------------------------------------------------

#[test]
fn overlaps_are_reported_not_fatal() {
    let mut a = Allocator::new();
    let report = a.set_pools(vec![
        pool("b", &["192.0.2.0/24"]),
        pool("a", &["192.0.2.128/25", "2001:db8::/64"]),
        pool("c", &["198.51.100.0/24"]),
    ]);
    assert_eq!(report.overlaps.len(), 1);
    let o = &report.overlaps[0];
    assert_eq!(
        (o.a.as_str(), o.b.as_str(), o.example),
        ("a", "b", ip("192.0.2.128"))
    );
    assert_eq!(report.overlapping_with("b"), ["a"]);
    assert!(report.overlapping_with("c").is_empty());
    assert!(a.assign(&req("s")).is_ok());
}

#[test]
fn overlapping_pools_never_hand_out_one_ip_twice() {
    let mut px = pool("x", &["192.0.2.0/30"]);
    px.allocation.priority = Some(1);
    let mut a = alloc(vec![px, pool("y", &["192.0.2.0/31"])]);
    let pinned_y = |n: &str| ServiceRequest {
        requested_pool: Some("y".into()),
        ..req(n)
    };
    assert_eq!(ips(&mut a, &req("a")), [ip("192.0.2.0")]);
    assert_eq!(ips(&mut a, &pinned_y("b")), [ip("192.0.2.1")]);
    assert_eq!(
        a.assign(&pinned_y("c")).unwrap_err().reason(),
        "PoolExhausted"
    );
    assert_eq!(
        a.pool_counts("y"),
        PoolCounts {
            assigned_v4: 1,
            ..PoolCounts::default()
        }
    );
    assert_eq!(a.pool_counts("x").available_v4, 2);
}

#[test]
fn shrinking_a_pool_invalidates_only_those_outside() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/29"])]);
    for n in ["a", "b", "c", "d"] {
        ips(&mut a, &req(n));
    }
    let report = a.set_pools(vec![pool("p", &["192.0.2.0/31"])]);
    assert_eq!(report.invalidated, vec![key("c"), key("d")]);
    assert!(a.held(&key("c")).is_empty());
    assert_eq!(a.held(&key("a")), [(ip("192.0.2.0"), "p".to_string())]);
    assert_eq!(a.pool_counts("p").assigned_v4, 2);
    let e = a
        .assign(&ServiceRequest {
            current_ips: vec![ip("192.0.2.2")],
            ..req("c")
        })
        .unwrap_err();
    assert_eq!(e.reason(), "PoolExhausted");
}

#[test]
fn renamed_pool_keeps_ips_and_reports_repooled() {
    let mut a = alloc(vec![pool("old", &["192.0.2.0/29"])]);
    let got = ips(&mut a, &req("a"));
    let report = a.set_pools(vec![pool("new", &["192.0.2.0/24"])]);
    assert!(report.invalidated.is_empty());
    assert_eq!(report.repooled, vec![key("a")]);
    assert_eq!(a.held(&key("a")), [(got[0], "new".to_string())]);
    assert_eq!(a.pool_counts("new").assigned_v4, 1);
    assert_eq!(a.pool_counts("old"), PoolCounts::default());
}

#[test]
fn narrowed_namespaces_invalidate() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/29"])]);
    ips(&mut a, &req("a"));
    ips(&mut a, &ServiceRequest::new("kept", "b"));
    let mut p = pool("p", &["192.0.2.0/29"]);
    p.allocation.namespaces = vec!["kept".into()];
    let report = a.set_pools(vec![p]);
    assert_eq!(report.invalidated, vec![key("a")]);
}

#[test]
fn counts_v4_and_v6_64() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8:ff::/64"])]);
    assert_eq!(
        a.pool_counts("p"),
        PoolCounts {
            assigned_v4: 0,
            assigned_v6: 0,
            available_v4: 256,
            available_v6: 1 << 64
        }
    );
    ips(&mut a, &dual("a", FamilyPolicy::RequireDualStack));
    assert_eq!(
        a.pool_counts("p"),
        PoolCounts {
            assigned_v4: 1,
            assigned_v6: 1,
            available_v4: 255,
            available_v6: (1 << 64) - 1
        }
    );
    assert_eq!(a.pool_counts("unknown"), PoolCounts::default());
}

#[test]
fn counts_with_overlapping_ranges_and_buggy_ips() {
    let mut p = pool(
        "p",
        &["192.0.2.0/24", "192.0.2.128/25", "192.0.3.0-192.0.3.9"],
    );
    p.avoid_buggy_ips = BuggyIps::Avoid;
    let a = alloc(vec![p]);
    // 256 + 10 addresses, minus 192.0.2.0, 192.0.2.255 and 192.0.3.0.
    assert_eq!(a.pool_counts("p").available_v4, 263);
}

#[test]
fn ipv6_64_allocates_in_memory_proportional_to_allocations() {
    let mut a = alloc(vec![pool("p", &["2001:db8:ff::/64"])]);
    let empty = a.footprint();
    let n = 10_000;
    for i in 0..n {
        let r = ServiceRequest {
            families: FamilyRequest::v6(),
            ..req(&format!("s{i}"))
        };
        a.assign(&r).unwrap();
    }
    // Per Service: its record, its address, the address's record, its holder, at most one run.
    assert!(
        a.footprint() <= empty + 5 * n,
        "footprint {}",
        a.footprint()
    );
    assert_eq!(a.held(&key("s9999"))[0].0, ip("2001:db8:ff::270f"));
    assert_eq!(a.pool_counts("p").available_v6, (1u128 << 64) - n as u128);
}

#[test]
fn huge_v6_pool_end_is_reachable() {
    let mut a = alloc(vec![pool("p", &["::/0"])]);
    let r = ServiceRequest {
        families: FamilyRequest::v6(),
        requested_ips: vec![ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")],
        ..req("a")
    };
    assert!(a.assign(&r).is_ok());
    assert_eq!(a.pool_counts("p").available_v6, u128::MAX - 1);
}

// ---- restarts -------------------------------------------------------------------------------

#[test]
fn restart_keeps_every_ip() {
    let pools = vec![pool("p", &["192.0.2.0/29", "2001:db8::/125"])];
    let mut a = alloc(pools.clone());
    let mut reqs = vec![
        req("a"),
        shared("b", "k", &[80]),
        shared("c", "k", &[443]),
        dual("d", FamilyPolicy::PreferDualStack),
    ];
    let mut status = Vec::new();
    for r in &reqs {
        status.push(ips(&mut a, r));
    }
    a.release(&key("a")); // a hole at the lowest address
    reqs.remove(0);
    status.remove(0);
    let mut b = alloc(pools);
    // A pending Service is seen first: it must not take anything before holders are back.
    let holders: Vec<ServiceRequest> = reqs
        .iter()
        .zip(&status)
        .map(|(r, s)| ServiceRequest {
            current_ips: s.clone(),
            ..r.clone()
        })
        .collect();
    for h in &holders {
        assert_eq!(b.restore(h).len(), h.current_ips.len());
    }
    ips(&mut b, &req("pending"));
    for h in &holders {
        let got = b.assign(h).unwrap();
        assert_eq!(
            (got.addresses(), got.changed),
            (h.current_ips.clone(), false),
            "{}",
            h.key
        );
    }
    assert_eq!(b.held(&key("pending"))[0].0, ip("192.0.2.0"));
}
