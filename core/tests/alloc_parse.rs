//! Parsing pool entries, requested-IP annotations and label selectors.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_core::alloc::{
    AddressRange, Family, LabelSelector, PoolEntryError, RequestError, Requirement, is_buggy_ip,
    parse_pool_entry, parse_requested_ips,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cidr_v4() {
    let r = parse_pool_entry("192.0.2.0/24").unwrap();
    assert_eq!(
        (r.first(), r.last(), r.len()),
        (ip("192.0.2.0"), ip("192.0.2.255"), 256)
    );
    assert_eq!(r.family(), Family::V4);
}

#[test]
fn cidr_host_bits_are_masked() {
    let r = parse_pool_entry("192.0.2.77/30").unwrap();
    assert_eq!((r.first(), r.last()), (ip("192.0.2.76"), ip("192.0.2.79")));
}

#[test]
fn cidr_v6_64_is_counted_not_enumerated() {
    let r = parse_pool_entry("2001:db8:ff::/64").unwrap();
    assert_eq!(r.len(), 1u128 << 64);
    assert_eq!(r.last(), ip("2001:db8:ff::ffff:ffff:ffff:ffff"));
    assert_eq!(parse_pool_entry("::/0").unwrap().len(), u128::MAX);
}

#[test]
fn single_address_cidrs() {
    assert_eq!(parse_pool_entry("192.0.2.9/32").unwrap().len(), 1);
    assert_eq!(parse_pool_entry("2001:db8::9/128").unwrap().len(), 1);
}

#[test]
fn ranges() {
    let r = parse_pool_entry("192.0.2.10-192.0.2.20").unwrap();
    assert_eq!(r.len(), 11);
    assert!(r.contains(ip("192.0.2.10")) && r.contains(ip("192.0.2.20")));
    assert!(!r.contains(ip("192.0.2.21")) && !r.contains(ip("2001:db8::10")));
    assert_eq!(r.to_string(), "192.0.2.10-192.0.2.20");
    let one = parse_pool_entry("2001:db8::1-2001:db8::1").unwrap();
    assert_eq!(one.len(), 1);
}

#[test]
fn bad_entries() {
    for bad in [
        "",
        "garbage",
        "192.0.2.1",
        "192.0.2.0/33",
        "192.0.2.1 - 192.0.2.3",
        "192.0.2.1-",
        "-",
        "1-2-3",
    ] {
        assert!(
            matches!(parse_pool_entry(bad), Err(PoolEntryError::Malformed { .. })),
            "{bad:?} should be malformed"
        );
    }
    assert!(matches!(
        parse_pool_entry("192.0.2.1-2001:db8::1"),
        Err(PoolEntryError::MixedFamilies { .. })
    ));
    let e = parse_pool_entry("192.0.2.9-192.0.2.1").unwrap_err();
    assert!(matches!(e, PoolEntryError::Reversed { .. }));
    assert!(e.to_string().contains("192.0.2.9-192.0.2.1"), "{e}");
}

#[test]
fn overlaps() {
    let a = parse_pool_entry("192.0.2.0/25").unwrap();
    let b = parse_pool_entry("192.0.2.100-192.0.2.200").unwrap();
    let c = parse_pool_entry("192.0.2.128/25").unwrap();
    assert!(a.overlaps(&b) && b.overlaps(&c) && !a.overlaps(&c));
    let v6 = parse_pool_entry("::/0").unwrap();
    assert!(!v6.overlaps(&a));
    assert!(AddressRange::new(ip("192.0.2.1"), ip("192.0.2.1")).is_ok());
}

#[test]
fn buggy_ips() {
    assert!(is_buggy_ip(ip("192.0.2.0")) && is_buggy_ip(ip("192.0.2.255")));
    assert!(!is_buggy_ip(ip("192.0.2.1")) && !is_buggy_ip(ip("2001:db8::")));
}

#[test]
fn requested_ips_ok() {
    assert_eq!(
        parse_requested_ips("192.0.2.7").unwrap(),
        vec![ip("192.0.2.7")]
    );
    assert_eq!(
        parse_requested_ips(" 192.0.2.7 , 2001:db8::7 ").unwrap(),
        vec![ip("192.0.2.7"), ip("2001:db8::7")]
    );
    assert_eq!(
        parse_requested_ips("2001:db8::7,192.0.2.7").unwrap()[0],
        ip("2001:db8::7")
    );
    assert!(parse_requested_ips("").unwrap().is_empty());
    assert!(parse_requested_ips("  ").unwrap().is_empty());
}

#[test]
fn requested_ips_garbage() {
    for bad in [
        "banana",
        "192.0.2.300",
        "192.0.2.0/24",
        "192.0.2.7,",
        ",192.0.2.7",
        "192.0.2.7;2001:db8::1",
    ] {
        assert!(
            matches!(parse_requested_ips(bad), Err(RequestError::NotAnIp { .. })),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn requested_ips_two_of_one_family() {
    let e = parse_requested_ips("192.0.2.7,192.0.2.8").unwrap_err();
    assert_eq!(
        e,
        RequestError::TwoOfOneFamily {
            family: Family::V4,
            first: ip("192.0.2.7"),
            second: ip("192.0.2.8")
        }
    );
    assert!(
        e.to_string().contains("at most one IPv4 and one IPv6"),
        "{e}"
    );
    assert!(parse_requested_ips("2001:db8::1,192.0.2.1,2001:db8::2").is_err());
}

#[test]
fn empty_selector_matches_everything() {
    let s = LabelSelector::default();
    assert!(s.matches(&labels(&[])) && s.matches(&labels(&[("a", "b")])));
}

#[test]
fn match_labels() {
    let s = LabelSelector {
        match_labels: labels(&[("team", "web")]),
        ..Default::default()
    };
    assert!(s.matches(&labels(&[("team", "web"), ("x", "y")])));
    assert!(!s.matches(&labels(&[("team", "db")])));
    assert!(!s.matches(&labels(&[])));
}

fn expr(requirement: Requirement) -> LabelSelector {
    LabelSelector {
        match_expressions: vec![requirement],
        ..Default::default()
    }
}

fn values(vs: &[&str]) -> std::collections::BTreeSet<String> {
    vs.iter().map(|v| v.to_string()).collect()
}

#[test]
fn match_expressions() {
    let web = labels(&[("tier", "web")]);
    let db = labels(&[("tier", "db")]);
    let none = labels(&[]);
    let in_ = expr(Requirement::In("tier".into(), values(&["web", "api"])));
    assert!(in_.matches(&web) && !in_.matches(&db) && !in_.matches(&none));
    let not_in = expr(Requirement::NotIn("tier".into(), values(&["web"])));
    assert!(!not_in.matches(&web) && not_in.matches(&db) && not_in.matches(&none));
    let exists = expr(Requirement::Exists("tier".into()));
    assert!(exists.matches(&web) && !exists.matches(&none));
    let absent = expr(Requirement::DoesNotExist("tier".into()));
    assert!(!absent.matches(&web) && absent.matches(&none));
}

#[test]
fn labels_and_expressions_all_must_hold() {
    let mut s = expr(Requirement::In("tier".into(), values(&["web"])));
    s.match_labels = labels(&[("env", "prod")]);
    assert!(s.matches(&labels(&[("tier", "web"), ("env", "prod")])));
    assert!(!s.matches(&labels(&[("tier", "web"), ("env", "dev")])));
    assert!(!s.matches(&labels(&[("env", "prod")])));
}
