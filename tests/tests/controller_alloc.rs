//! The controller against the lab's real kube-apiserver: what a user sees on Services,
//! pools and Events.
//!
//! The controller is FerroLB's, installed by the chart (`controller_support::E2E`: a second,
//! controller-only release with its own class and pool selector, 2 replicas, leader election,
//! only the chart's RBAC). Each test has its own namespace and pools serving only that
//! namespace, so the tests run in parallel on the one release and never see each other's
//! Services or pools (nor does the lab's own FerroLB give their Services an IP: they carry the
//! release's class).
//! Addresses: distinct ranges per test inside 192.0.2.128/25 and 2001:db8:0:1::/64.
//!
//! Bad input tried (`bad_input_is_a_condition_and_an_event`), each giving condition
//! `ferrolb.io/Allocated` False + a Warning Event, and no change to the healthy Service:
//! - `ferrolb.io/loadBalancerIPs: not-an-ip` (malformed annotation) → InvalidRequest
//! - `ferrolb.io/loadBalancerIPs: 192.0.2.141,192.0.2.142` (two IPs of one family) → InvalidRequest
//! - `ferrolb.io/address-pool: no-such-pool` (unknown pool name) → NoMatchingPool
//! - `ferrolb.io/address-pool` naming a pool whose serviceSelectors match nothing → NoMatchingPool
//! - `ferrolb.io/allow-shared-ip: ""` (empty sharing key) → InvalidRequest

mod controller_support;

use std::collections::BTreeMap;
use std::time::Duration;

use controller_support::{Env, ingress, svc_spec};
use serde_json::json;

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn ip_status_annotation_condition_event_and_pool_status() {
    let env = Env::start("basic").await;
    env.pool("p", &["192.0.2.130-192.0.2.131"], json!(null))
        .await;
    env.service("web", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    let svc = env.wait_ip("web").await;
    let ips = ingress(&svc);
    assert_eq!(
        ips,
        vec![("192.0.2.130".to_owned(), Some("Proxy".to_owned()))]
    );
    assert_eq!(
        svc.metadata.annotations.as_ref().unwrap()["ferrolb.io/ip-allocated-from-pool"],
        env.pool_name("p")
    );
    let cond = Env::condition(&svc).expect("condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "IPAllocated")
    );
    env.wait_event("web", "IPAllocated", "192.0.2.130").await;

    let pool = env
        .wait_pool("p", |s| s["assignedIPv4"] == 1 && s["availableIPv4"] == 1)
        .await;
    let conditions = pool["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "{pool}"
    );
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Overlapping" && c["status"] == "False"),
        "{pool}"
    );

    // Overlap is reported on both pools, naming the other.
    env.pool("q", &["192.0.2.131/32"], json!(null)).await;
    let p = env
        .wait_pool("p", |s| {
            s["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Overlapping" && c["status"] == "True")
            })
        })
        .await;
    assert!(p.to_string().contains(&env.pool_name("q")), "{p}");

    // What a Prometheus scraping the leader sees for this pool.
    let assigned = format!(
        "ferrolb_pool_assigned_addresses{{pool=\"{}\",family=\"ipv4\"}} 1\n",
        env.pool_name("p")
    );
    let metrics = env
        .wait_leader_metrics(&assigned, |m| m.contains(&assigned))
        .await;
    assert!(
        metrics.contains("ferrolb_controller_is_leader 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("ferrolb_allocations_total "), "{metrics}");
}

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn exhaustion_then_recovery_when_an_ip_is_freed() {
    let env = Env::start("exhaust").await;
    env.pool("p", &["192.0.2.132/32"], json!(null)).await;
    env.service("first", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    assert_eq!(ingress(&env.wait_ip("first").await)[0].0, "192.0.2.132");
    env.service("second", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    env.wait_failed("second", "PoolExhausted").await;
    env.wait_event("second", "AllocationFailed", "no free IPv4 address")
        .await;

    env.delete_service("first").await;
    let second = env.wait_ip("second").await;
    assert_eq!(ingress(&second)[0].0, "192.0.2.132");
}

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn requested_ip_outside_every_pool_and_in_use() {
    let env = Env::start("request").await;
    env.pool("p", &["192.0.2.134-192.0.2.135"], json!(null))
        .await;
    env.service(
        "outside",
        json!({"ferrolb.io/loadBalancerIPs": "192.0.2.200"}),
        svc_spec(&[("TCP", 80)]),
    )
    .await;
    env.wait_failed("outside", "RequestedIPNotInPool").await;
    env.wait_event("outside", "AllocationFailed", "192.0.2.200")
        .await;

    env.service(
        "holder",
        json!({"ferrolb.io/loadBalancerIPs": "192.0.2.135"}),
        svc_spec(&[("TCP", 80)]),
    )
    .await;
    assert_eq!(ingress(&env.wait_ip("holder").await)[0].0, "192.0.2.135");
    env.service(
        "taker",
        json!({"ferrolb.io/loadBalancerIPs": "192.0.2.135"}),
        svc_spec(&[("TCP", 81)]),
    )
    .await;
    env.wait_failed("taker", "RequestedIPInUse").await;
    env.wait_event("taker", "AllocationFailed", "in use").await;
    assert_eq!(ingress(&env.get("holder").await)[0].0, "192.0.2.135");
}

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn sharing_compatible_ports_and_conflict() {
    let env = Env::start("share").await;
    env.pool("p", &["192.0.2.136/32"], json!(null)).await;
    let shared = json!({"ferrolb.io/allow-shared-ip": "k"});
    env.service("dns-tcp", shared.clone(), svc_spec(&[("TCP", 53)]))
        .await;
    env.service("dns-udp", shared.clone(), svc_spec(&[("UDP", 53)]))
        .await;
    assert_eq!(ingress(&env.wait_ip("dns-tcp").await)[0].0, "192.0.2.136");
    assert_eq!(ingress(&env.wait_ip("dns-udp").await)[0].0, "192.0.2.136");
    // Asking for the shared IP with a port already used there is a sharing conflict.
    let mut clash = shared.clone();
    clash["ferrolb.io/loadBalancerIPs"] = json!("192.0.2.136");
    env.service("clash", clash, svc_spec(&[("TCP", 53)])).await;
    // Without asking, the only address is taken for it: the pool is exhausted.
    env.service("crowd", shared, svc_spec(&[("TCP", 53)])).await;
    env.wait_failed("crowd", "PoolExhausted").await;
    let clash = env.wait_failed("clash", "SharingConflict").await;
    assert!(ingress(&clash).is_empty());
    env.wait_event("clash", "AllocationFailed", "53").await;
}

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn foreign_class_is_left_untouched() {
    let env = Env::start("foreign").await;
    env.pool("p", &["192.0.2.137/32"], json!(null)).await;
    let mut spec = svc_spec(&[("TCP", 80)]);
    spec["loadBalancerClass"] = json!("example.com/other-lb");
    env.service_raw("other", json!({}), spec).await;
    // A Service of ours afterwards proves the controller has run passes since.
    env.service("ours", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    env.wait_ip("ours").await;
    // A Service whose pool annotation someone else also owns (as FerroLB before the
    // single-request write did, by merge patch): server-side apply of our write alone
    // cannot remove it when the Service is released.
    env.pool("q", &["192.0.2.138/32"], json!(null)).await;
    let q = env.pool_name("q");
    env.service(
        "legacy",
        json!({"ferrolb.io/ip-allocated-from-pool": q}),
        svc_spec(&[("TCP", 80)]),
    )
    .await;
    assert_eq!(ingress(&env.wait_ip("legacy").await)[0].0, "192.0.2.138");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = env.get("other").await;
    assert!(ingress(&other).is_empty(), "{other:?}");
    assert!(Env::condition(&other).is_none(), "{other:?}");
    assert!(
        !other
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("ferrolb.io/ip-allocated-from-pool")
    );
    assert!(env.events("other").await.is_empty());

    // Ours turning foreign: what we wrote is removed (status, condition and annotation,
    // also the one written the old way), the IP is freed.
    for name in ["ours", "legacy"] {
        env.patch_spec(
            name,
            json!({"loadBalancerClass": null, "type": "ClusterIP"}),
        )
        .await;
        env.wait_for(name, "no FerroLB marks", |svc| {
            ingress(svc).is_empty()
                && Env::condition(svc).is_none()
                && !svc
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("ferrolb.io/ip-allocated-from-pool"))
        })
        .await;
    }
    env.wait_assigned_v4("p", 0).await;
    env.wait_assigned_v4("q", 0).await;
}

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn require_dual_stack_with_only_ipv4_is_refused() {
    let env = Env::start("dual").await;
    env.pool("p", &["192.0.2.138/32"], json!(null)).await;
    let mut spec = svc_spec(&[("TCP", 80)]);
    spec["ipFamilyPolicy"] = json!("RequireDualStack");
    spec["ipFamilies"] = json!(["IPv4", "IPv6"]);
    env.service("both", json!({}), spec).await;
    let svc = env.wait_failed("both", "NoMatchingPool").await;
    assert!(ingress(&svc).is_empty());
    env.wait_event("both", "AllocationFailed", "IPv6").await;
    env.wait_assigned_v4("p", 0).await;
}

#[tokio::test]
#[ignore = "needs the lab with FerroLB: run cargo xtask test as root"]
async fn bad_input_is_a_condition_and_an_event() {
    let env = Env::start("bad").await;
    env.pool("p", &["192.0.2.140-192.0.2.143"], json!(null))
        .await;
    env.pool(
        "picky",
        &["192.0.2.144/32"],
        json!({"serviceSelectors": [{"matchLabels": {"nobody": "has-this"}}]}),
    )
    .await;
    env.service("healthy", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    let before = ingress(&env.wait_ip("healthy").await);

    let picky = env.pool_name("picky");
    let cases: Vec<(&str, BTreeMap<&str, String>, &str)> = vec![
        (
            "malformed",
            BTreeMap::from([("ferrolb.io/loadBalancerIPs", "not-an-ip".to_owned())]),
            "InvalidRequest",
        ),
        (
            "two-v4",
            BTreeMap::from([(
                "ferrolb.io/loadBalancerIPs",
                "192.0.2.141,192.0.2.142".to_owned(),
            )]),
            "InvalidRequest",
        ),
        (
            "unknown-pool",
            BTreeMap::from([("ferrolb.io/address-pool", "no-such-pool".to_owned())]),
            "NoMatchingPool",
        ),
        (
            "selector-nothing",
            BTreeMap::from([("ferrolb.io/address-pool", picky)]),
            "NoMatchingPool",
        ),
        (
            "empty-sharing-key",
            BTreeMap::from([("ferrolb.io/allow-shared-ip", String::new())]),
            "InvalidRequest",
        ),
    ];
    for (name, annotations, _) in &cases {
        env.service(name, json!(annotations), svc_spec(&[("TCP", 80)]))
            .await;
    }
    for (name, _, reason) in &cases {
        let svc = env.wait_failed(name, reason).await;
        assert!(ingress(&svc).is_empty(), "{name}");
        env.wait_event(name, "AllocationFailed", "").await;
    }
    assert_eq!(ingress(&env.get("healthy").await), before);
}
