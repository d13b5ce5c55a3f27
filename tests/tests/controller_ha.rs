//! Restarts and failover of the controller against the lab's real kube-apiserver: the
//! Services' status is the only record, so a restart must not move any IP, and a second
//! replica must take over within the Lease's 15 s when the leader dies.
//!
//! Addresses: 2001:db8:0:1::1:0/120 (restart, 256 IPv6) and 192.0.2.148-192.0.2.151 (failover).

mod controller_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use controller_support::{Env, ingress, svc_spec};
use serde_json::json;

const SERVICES: usize = 200;

#[tokio::test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
async fn restart_with_200_services_changes_no_ip() {
    let mut env = Env::start("restart").await;
    env.pool("v6", &["2001:db8:0:1::1:0/120"], json!(null))
        .await;
    let mut spec = svc_spec(&[("TCP", 80)]);
    spec["ipFamilyPolicy"] = json!("SingleStack");
    spec["ipFamilies"] = json!(["IPv6"]);
    let names: Vec<String> = (0..SERVICES).map(|i| format!("s{i:03}")).collect();
    for name in &names {
        env.service(name, json!({}), spec.clone()).await;
    }
    let before = all_ips(&env, &names).await;
    let distinct: std::collections::BTreeSet<_> = before.values().collect();
    assert_eq!(
        distinct.len(),
        SERVICES,
        "an IP was given twice: {before:?}"
    );

    // A clean restart (SIGTERM releases the Lease) and a crash (SIGKILL, the Lease
    // expires): either way the new process rebuilds from the Services' status.
    env.replica(0).terminate();
    let restarted = env.start_controller();
    env.service("after-restart", json!({}), spec.clone()).await;
    env.wait_ip("after-restart").await;
    assert_eq!(all_ips(&env, &names).await, before, "a restart moved an IP");

    env.replica(restarted).kill();
    env.start_controller();
    env.service("after-crash", json!({}), spec.clone()).await;
    let deadline = Duration::from_secs(25);
    let started = Instant::now();
    while ingress(&env.get("after-crash").await).is_empty() {
        assert!(
            started.elapsed() < deadline,
            "no IP after the crash\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(all_ips(&env, &names).await, before, "a crash moved an IP");
    let new_ips = [
        ingress(&env.get("after-restart").await)[0].0.clone(),
        ingress(&env.get("after-crash").await)[0].0.clone(),
    ];
    for ip in &new_ips {
        assert!(!distinct.contains(ip), "{ip} given twice");
    }
    assert_ne!(new_ips[0], new_ips[1]);
    env.cleanup().await;
}

#[tokio::test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
async fn second_replica_takes_over_within_15s_of_a_leader_kill() {
    let mut env = Env::start("failover").await;
    env.pool("p", &["192.0.2.148-192.0.2.151"], json!(null))
        .await;
    env.service("before", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    env.wait_ip("before").await;
    let first = env.lease_holder().await.expect("a leader");
    let second = env.start_controller();
    // Let the follower settle: it must not write while the first leads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.lease_holder().await.as_deref(), Some(first.as_str()));
    assert!(
        env.replica(second)
            .metrics()
            .contains("ferrolb_controller_is_leader 0\n"),
        "the follower claims to lead"
    );

    env.replica(0).kill();
    let killed = Instant::now();
    env.service("during", json!({}), svc_spec(&[("TCP", 80)]))
        .await;
    let mut took_over = None;
    loop {
        let holder = env.lease_holder().await;
        if took_over.is_none() && holder.as_deref().is_some_and(|h| h != first) {
            took_over = Some(killed.elapsed());
        }
        if !ingress(&env.get("during").await).is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "no IP 25 s after the leader was killed (holder {holder:?})\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = took_over.expect("the Lease changed holder");
    let got_ip = killed.elapsed();
    // 15 s Lease, renewed every 2 s, checked every 1 s: at most 15 s + one check.
    assert!(
        took_over <= Duration::from_secs(16),
        "took over after {took_over:?}"
    );
    assert!(got_ip <= Duration::from_secs(17), "IP after {got_ip:?}");
    eprintln!("failover: lease taken {took_over:?}, new Service's IP {got_ip:?} after SIGKILL");
    assert_eq!(ingress(&env.get("before").await)[0].0, "192.0.2.148");
    env.cleanup().await;
}

async fn all_ips(env: &Env, names: &[String]) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = env
            .services()
            .list(&Default::default())
            .await
            .expect("listing Services");
        let ips: BTreeMap<String, String> = list
            .items
            .iter()
            .filter_map(|s| {
                let name = s.metadata.name.clone()?;
                let ip = ingress(s).first()?.0.clone();
                names.contains(&name).then_some((name, ip))
            })
            .collect();
        if ips.len() == names.len() {
            return ips;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} Services have IPs\n{}",
            ips.len(),
            names.len(),
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
