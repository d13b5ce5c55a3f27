//! The allocator's rules, one test per rule, and each error reason: picking addresses, which
//! pools serve a Service, requested IPs, keeping current IPs (sharing, families, pool changes,
//! counts and restarts are in `alloc_lifecycle.rs`).

use ferrolb_core::alloc::{
    AllocError, Allocator, AutoAssign, BuggyIps, Family, FamilyPolicy, FamilyRequest,
    LabelSelector, PoolCounts, RequestError, ServiceRequest,
};

mod alloc_support;
use alloc_support::*;

// ---- picking addresses ----------------------------------------------------------------------

#[test]
fn lowest_free_address_in_order() {
    let mut a = alloc(vec![pool("p", &["192.0.2.10-192.0.2.12"])]);
    assert_eq!(ips(&mut a, &req("a")), [ip("192.0.2.10")]);
    assert_eq!(ips(&mut a, &req("b")), [ip("192.0.2.11")]);
    let got = a.assign(&req("c")).unwrap();
    assert_eq!(got.ips, vec![(ip("192.0.2.12"), "p".into())]);
    assert!(got.changed);
}

#[test]
fn released_address_is_reused_first() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/28"])]);
    for n in ["a", "b", "c"] {
        ips(&mut a, &req(n));
    }
    a.release(&key("a"));
    assert!(a.held(&key("a")).is_empty());
    assert_eq!(ips(&mut a, &req("d")), [ip("192.0.2.0")]);
    assert_eq!(ips(&mut a, &req("e")), [ip("192.0.2.3")]);
    a.release(&key("nobody")); // no-op
}

#[test]
fn avoid_buggy_ips_skips_dot0_and_dot255() {
    let mut p = pool("p", &["192.0.2.254-192.0.3.1"]);
    p.avoid_buggy_ips = BuggyIps::Avoid;
    let mut a = alloc(vec![p]);
    assert_eq!(ips(&mut a, &req("a")), [ip("192.0.2.254")]);
    assert_eq!(ips(&mut a, &req("b")), [ip("192.0.3.1")]);
    let e = a.assign(&req("c")).unwrap_err();
    assert_eq!(e.reason(), "PoolExhausted");
    assert_eq!(
        a.pool_counts("p"),
        PoolCounts {
            assigned_v4: 2,
            ..PoolCounts::default()
        }
    );
}

#[test]
fn buggy_ips_are_used_unless_avoided() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/31"])]);
    assert_eq!(ips(&mut a, &req("a")), [ip("192.0.2.0")]);
}

#[test]
fn requested_buggy_ip_in_avoiding_pool_is_not_in_pool() {
    let mut p = pool("p", &["192.0.2.0/24"]);
    p.avoid_buggy_ips = BuggyIps::Avoid;
    let mut a = alloc(vec![p]);
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.255")],
        ..req("a")
    };
    assert_eq!(a.assign(&r).unwrap_err().reason(), "RequestedIPNotInPool");
}

#[test]
fn exhaustion_and_recovery() {
    let mut a = alloc(vec![pool("p", &["192.0.2.8/31"])]);
    ips(&mut a, &req("a"));
    ips(&mut a, &req("b"));
    let e = a.assign(&req("c")).unwrap_err();
    assert_eq!(
        e,
        AllocError::PoolExhausted {
            pool: "p".into(),
            family: Family::V4
        }
    );
    assert_eq!(e.reason(), "PoolExhausted");
    assert!(
        e.to_string().contains("no free IPv4 address in pool p"),
        "{e}"
    );
    a.release(&key("a"));
    assert_eq!(ips(&mut a, &req("c")), [ip("192.0.2.8")]);
}

#[test]
fn exhaustion_names_every_pool_tried() {
    let mut a = alloc(vec![
        pool("x", &["192.0.2.1/32"]),
        pool("y", &["192.0.2.2/32"]),
    ]);
    ips(&mut a, &req("a"));
    ips(&mut a, &req("b"));
    let e = a.assign(&req("c")).unwrap_err();
    assert_eq!(
        e,
        AllocError::PoolExhausted {
            pool: "x, y".into(),
            family: Family::V4
        }
    );
}

#[test]
fn spills_to_next_pool_when_first_is_full() {
    let mut a = alloc(vec![
        pool("x", &["192.0.2.1/32"]),
        pool("y", &["198.51.100.0/30"]),
    ]);
    assert_eq!(&*a.assign(&req("a")).unwrap().ips[0].1, "x");
    assert_eq!(
        a.assign(&req("b")).unwrap().ips,
        vec![(ip("198.51.100.0"), "y".into())]
    );
}

#[test]
fn several_ranges_in_one_pool() {
    let mut a = alloc(vec![pool("p", &["192.0.2.20/32", "192.0.2.10/32"])]);
    // Lowest address across ranges first.
    assert_eq!(ips(&mut a, &req("a")), [ip("192.0.2.10")]);
    assert_eq!(ips(&mut a, &req("b")), [ip("192.0.2.20")]);
}

// ---- which pools ----------------------------------------------------------------------------

#[test]
fn no_pools_at_all() {
    let mut a = Allocator::new();
    let e = a.assign(&req("a")).unwrap_err();
    assert_eq!(e.reason(), "NoMatchingPool");
    assert!(e.to_string().contains("no IPAddressPool"), "{e}");
}

#[test]
fn priority_lowest_first_then_none_then_name() {
    let mut p1 = pool("zeta", &["192.0.2.1/32"]);
    p1.allocation.priority = Some(1);
    let mut p5 = pool("alpha", &["192.0.2.5/32"]);
    p5.allocation.priority = Some(5);
    let none_b = pool("b", &["192.0.2.20/32"]);
    let none_a = pool("a", &["192.0.2.30/32"]);
    let mut a = alloc(vec![none_b, p5, none_a, p1]);
    let order: Vec<String> = ["s1", "s2", "s3", "s4"]
        .iter()
        .map(|n| a.assign(&req(n)).unwrap().ips[0].1.to_string())
        .collect();
    assert_eq!(order, ["zeta", "alpha", "a", "b"]);
}

#[test]
fn auto_assign_off_serves_only_explicit_requests() {
    let mut manual = pool("manual", &["192.0.2.0/30"]);
    manual.auto_assign = AutoAssign::No;
    let mut a = alloc(vec![manual]);
    let e = a.assign(&req("a")).unwrap_err();
    assert_eq!(e.reason(), "NoMatchingPool");
    assert!(e.to_string().contains("autoAssign"), "{e}");
    let by_name = ServiceRequest {
        requested_pool: Some("manual".into()),
        ..req("a")
    };
    assert_eq!(ips(&mut a, &by_name), [ip("192.0.2.0")]);
    let by_ip = ServiceRequest {
        requested_ips: vec![ip("192.0.2.3")],
        ..req("b")
    };
    assert_eq!(ips(&mut a, &by_ip), [ip("192.0.2.3")]);
}

#[test]
fn requested_pool_wins_over_priority() {
    let mut first = pool("first", &["192.0.2.1/32"]);
    first.allocation.priority = Some(0);
    let mut a = alloc(vec![first, pool("other", &["198.51.100.1/32"])]);
    let r = ServiceRequest {
        requested_pool: Some("other".into()),
        ..req("a")
    };
    assert_eq!(
        a.assign(&r).unwrap().ips,
        vec![(ip("198.51.100.1"), "other".into())]
    );
}

#[test]
fn unknown_pool_name() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/30"])]);
    let r = ServiceRequest {
        requested_pool: Some("nope".into()),
        ..req("a")
    };
    let e = a.assign(&r).unwrap_err();
    assert_eq!(e.reason(), "NoMatchingPool");
    assert!(e.to_string().contains("no pool named \"nope\""), "{e}");
}

#[test]
fn namespaces_by_name() {
    let mut p = pool("p", &["192.0.2.0/30"]);
    p.allocation.namespaces = vec!["team-a".into()];
    let mut a = alloc(vec![p]);
    assert!(a.assign(&ServiceRequest::new("team-a", "s")).is_ok());
    let e = a.assign(&ServiceRequest::new("team-b", "s")).unwrap_err();
    assert_eq!(e.reason(), "NoMatchingPool");
    assert!(e.to_string().contains("team-b"), "{e}");
}

#[test]
fn namespaces_by_name_or_selector() {
    let mut p = pool("p", &["192.0.2.0/30"]);
    p.allocation.namespaces = vec!["team-a".into()];
    p.allocation.namespace_selectors = vec![LabelSelector {
        match_labels: labels(&[("lb", "yes")]),
        ..Default::default()
    }];
    let mut a = alloc(vec![p]);
    let labelled = ServiceRequest {
        namespace_labels: labels(&[("lb", "yes")]),
        ..ServiceRequest::new("team-c", "s")
    };
    assert!(a.assign(&labelled).is_ok());
    assert!(a.assign(&ServiceRequest::new("team-a", "s")).is_ok());
    assert!(a.assign(&ServiceRequest::new("team-d", "s")).is_err());
}

#[test]
fn service_selectors() {
    let mut p = pool("web", &["192.0.2.0/30"]);
    p.allocation.service_selectors = vec![LabelSelector {
        match_labels: labels(&[("tier", "web")]),
        ..Default::default()
    }];
    let mut a = alloc(vec![p, pool("rest", &["198.51.100.0/30"])]);
    let web = ServiceRequest {
        service_labels: labels(&[("tier", "web")]),
        ..req("w")
    };
    assert_eq!(&*a.assign(&web).unwrap().ips[0].1, "rest"); // "rest" < "web" by name
    let pinned = ServiceRequest {
        requested_pool: Some("web".into()),
        ..web.clone()
    };
    assert_eq!(&*a.assign(&pinned).unwrap().ips[0].1, "web");
    let other = ServiceRequest {
        requested_pool: Some("web".into()),
        ..req("o")
    };
    let e = a.assign(&other).unwrap_err();
    assert_eq!(e.reason(), "NoMatchingPool");
    assert!(e.to_string().contains("serviceSelectors"), "{e}");
}

#[test]
fn selector_that_matches_nothing() {
    let mut p = pool("p", &["192.0.2.0/30"]);
    p.allocation.namespace_selectors = vec![LabelSelector {
        match_labels: labels(&[("no", "such")]),
        ..Default::default()
    }];
    let mut a = alloc(vec![p]);
    assert_eq!(a.assign(&req("a")).unwrap_err().reason(), "NoMatchingPool");
}

// ---- requested IPs --------------------------------------------------------------------------

#[test]
fn requested_ip_is_honoured() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.77")],
        ..req("a")
    };
    assert_eq!(ips(&mut a, &r), [ip("192.0.2.77")]);
    // A later automatic allocation skips it.
    ips(&mut a, &req("z"));
    let r2 = ServiceRequest {
        requested_ips: vec![ip("192.0.2.1")],
        ..req("b")
    };
    assert_eq!(ips(&mut a, &r2), [ip("192.0.2.1")]);
}

#[test]
fn requested_ip_outside_every_pool() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let r = ServiceRequest {
        requested_ips: vec![ip("203.0.113.5")],
        ..req("a")
    };
    let e = a.assign(&r).unwrap_err();
    assert_eq!(
        e,
        AllocError::RequestedIPNotInPool {
            ip: ip("203.0.113.5")
        }
    );
    assert!(e.to_string().contains("203.0.113.5"));
}

#[test]
fn requested_ip_in_pool_that_does_not_serve_the_namespace() {
    let mut p = pool("p", &["192.0.2.0/24"]);
    p.allocation.namespaces = vec!["other".into()];
    let mut a = alloc(vec![p]);
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.5")],
        ..req("a")
    };
    assert_eq!(a.assign(&r).unwrap_err().reason(), "RequestedIPNotInPool");
}

#[test]
fn requested_ip_outside_requested_pool() {
    let mut a = alloc(vec![
        pool("x", &["192.0.2.0/24"]),
        pool("y", &["198.51.100.0/24"]),
    ]);
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.5")],
        requested_pool: Some("y".into()),
        ..req("a")
    };
    assert_eq!(a.assign(&r).unwrap_err().reason(), "RequestedIPNotInPool");
}

#[test]
fn requested_ip_in_use() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    ips(&mut a, &req("a"));
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.0")],
        ..req("b")
    };
    let e = a.assign(&r).unwrap_err();
    assert_eq!(
        e,
        AllocError::RequestedIPInUse {
            ip: ip("192.0.2.0"),
            by: key("a")
        }
    );
    assert!(e.to_string().contains("default/a"), "{e}");
    assert!(a.held(&key("b")).is_empty());
    assert_eq!(a.holders(ip("192.0.2.0")), [key("a")]);
}

#[test]
fn requested_ip_in_use_under_another_sharing_key() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    ips(&mut a, &shared("a", "k1", &[80]));
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.0")],
        ..shared("b", "k2", &[443])
    };
    assert_eq!(a.assign(&r).unwrap_err().reason(), "RequestedIPInUse");
}

#[test]
fn changing_the_requested_ip_moves_the_service() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let first = ips(&mut a, &req("a"));
    let r = ServiceRequest {
        requested_ips: vec![ip("192.0.2.50")],
        current_ips: first,
        ..req("a")
    };
    let got = a.assign(&r).unwrap();
    assert_eq!(
        (got.addresses(), got.changed),
        (vec![ip("192.0.2.50")], true)
    );
    assert!(a.holders(ip("192.0.2.0")).is_empty());
}

#[test]
fn bad_requests_are_invalid() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24", "2001:db8::/64"])]);
    let two_v4 = ServiceRequest {
        requested_ips: vec![ip("192.0.2.1"), ip("192.0.2.2")],
        ..req("a")
    };
    let v6_on_v4 = ServiceRequest {
        requested_ips: vec![ip("2001:db8::1")],
        ..req("a")
    };
    let require_single = ServiceRequest {
        families: FamilyRequest::new(FamilyPolicy::RequireDualStack, &[Family::V4]),
        ..req("a")
    };
    let require_one_ip = ServiceRequest {
        requested_ips: vec![ip("192.0.2.1")],
        ..dual("a", FamilyPolicy::RequireDualStack)
    };
    for (r, needle) in [
        (two_v4, "both IPv4"),
        (v6_on_v4, "is IPv6 but the Service's IP families are [IPv4]"),
        (require_single, "RequireDualStack"),
        (require_one_ip, "one IPv4 and one IPv6"),
    ] {
        let e = a.assign(&r).unwrap_err();
        assert_eq!(e.reason(), "InvalidRequest");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn annotation_errors_convert_to_invalid_request() {
    let e: AllocError = RequestError::NotAnIp { entry: "x".into() }.into();
    assert_eq!(e.reason(), "InvalidRequest");
    assert!(e.to_string().contains("ferrolb.io/loadBalancerIPs"), "{e}");
}

// ---- keeping what a Service has -------------------------------------------------------------

#[test]
fn idempotent_and_current_ips_are_kept() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let first = a.assign(&req("a")).unwrap();
    let again = ServiceRequest {
        current_ips: first.addresses(),
        ..req("a")
    };
    let second = a.assign(&again).unwrap();
    assert_eq!((second.ips, second.changed), (first.ips, false));
}

#[test]
fn assign_is_stable_even_if_status_lags() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    ips(&mut a, &req("x"));
    let first = ips(&mut a, &req("a"));
    a.release(&key("x"));
    // The status write has not been seen yet: current_ips empty; the held address is kept.
    let got = a.assign(&req("a")).unwrap();
    assert_eq!(got.addresses(), first);
    assert!(got.changed);
}

#[test]
fn never_moves_to_a_lower_free_address() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let r = ServiceRequest {
        current_ips: vec![ip("192.0.2.200")],
        ..req("a")
    };
    let got = a.assign(&r).unwrap();
    assert_eq!(
        (got.addresses(), got.changed),
        (vec![ip("192.0.2.200")], false)
    );
}

#[test]
fn current_ip_outside_pools_is_replaced() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let r = ServiceRequest {
        current_ips: vec![ip("203.0.113.9")],
        ..req("a")
    };
    let got = a.assign(&r).unwrap();
    assert_eq!(
        (got.addresses(), got.changed),
        (vec![ip("192.0.2.0")], true)
    );
}

#[test]
fn current_ip_held_by_another_is_replaced() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    ips(&mut a, &req("a"));
    let r = ServiceRequest {
        current_ips: vec![ip("192.0.2.0")],
        ..req("b")
    };
    assert_eq!(ips(&mut a, &r), [ip("192.0.2.1")]);
}

#[test]
fn current_ip_in_auto_assign_off_pool_is_kept() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let got = ips(&mut a, &req("a"));
    let mut p = pool("p", &["192.0.2.0/24"]);
    p.auto_assign = AutoAssign::No;
    a.set_pools(vec![p]);
    let r = ServiceRequest {
        current_ips: got.clone(),
        ..req("a")
    };
    assert_eq!(ips(&mut a, &r), got);
}

#[test]
fn error_releases_what_the_service_held() {
    let mut a = alloc(vec![pool("p", &["192.0.2.0/24"])]);
    let got = ips(&mut a, &req("a"));
    let bad = ServiceRequest {
        requested_pool: Some("nope".into()),
        current_ips: got,
        ..req("a")
    };
    assert!(a.assign(&bad).is_err());
    assert!(a.held(&key("a")).is_empty());
    assert_eq!(a.pool_counts("p").assigned_v4, 0);
}
