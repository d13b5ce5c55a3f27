//! The bundled L4 forwarder in the lab, with real clients: `curl` and UDP from the client
//! namespace (and from the remote client behind the router) through a Service's EXTERNAL-IP to
//! echo pods that the lab's kubelets run, FerroLB installed by its chart.
//!
//! Each test has its own namespace, pool, advertisement and IPs (192.0.2.160/28,
//! 2001:db8:0:1::a0/124). Timing is only bounded functionally (a loaded CI machine must not
//! flake); the tests print what they measured (the failover gap, the scale-down losses).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ferrolb_tests::kubectl;
use serde_json::{Value, json};

mod lab_support;
use lab_support::{Answer, CLIENT_NS, Env, REMOTE_CLIENT_NS, WAIT, curl, ready_pods, speaker_pid};

/// Tests that kill speakers run alone; the others share.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// The echo's JSON, or a panic naming the URL and what came back.
fn echo(ns: &str, url: &str) -> Value {
    match curl(ns, url, Duration::from_secs(5)) {
        Answer::Echo(v) => v,
        other => panic!("{url} from {ns}: {other:?}"),
    }
}

/// Waits until `url` answers from the client namespace (the IP is announced and forwarded).
fn wait_answering(url: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        match curl(CLIENT_NS, url, Duration::from_secs(2)) {
            Answer::Echo(v) => return v,
            other => assert!(
                Instant::now() < deadline,
                "{url} did not answer within {WAIT:?}: last {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The names of the ready, not terminating, pods labelled `app=<app>`, once there are `n`.
fn wait_pods(env: &Env, app: &str, n: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let names: BTreeSet<String> = ready_pods(&env.ns, app)
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        if names.len() == n {
            return names;
        }
        assert!(
            Instant::now() < deadline,
            "{n} ready {app} pods in {}: have {names:?}",
            env.ns
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// An HTTP echo Deployment `app` with `replicas` and a Service `app` on port 80 at `ips`.
fn http_service(env: &Env, app: &str, replicas: u32, ips: &[&str], spec: Value) {
    env.deploy(
        app,
        "ferrolb.io/lab/echo",
        replicas,
        json!({"ports": [{"containerPort": 3000}]}),
        json!({}),
    );
    let mut full = json!({
        "externalTrafficPolicy": "Cluster",
        "selector": {"app": app},
        "ports": [{"name": "http", "port": 80, "targetPort": 3000}]
    });
    lab_support::merge(&mut full, spec);
    env.lb_service(app, ips, full);
}

/// A test's world with an HTTP echo Service `web` of `replicas` at `vip` (its pool is just
/// that IP), answering: the Env, the URL and the ready pods.
fn web(prefix: &str, vip: &str, replicas: u32, spec: Value) -> (Env, String, BTreeSet<String>) {
    let env = Env::new(prefix, &[&format!("{vip}/32")]);
    http_service(&env, "web", replicas, &[vip], spec);
    let pods = wait_pods(&env, "web", replicas as usize);
    let url = format!("http://{vip}/");
    wait_answering(&url);
    (env, url, pods)
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn curl_through_the_external_ip_reaches_every_replica_v4_and_v6() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let (v4, v6) = ("192.0.2.161", "2001:db8:0:1::a1");
    let env = Env::new("fwd-all", &["192.0.2.161/32", "2001:db8:0:1::a1/128"]);
    http_service(&env, "web", 3, &[v4, v6], json!({}));
    let pods = wait_pods(&env, "web", 3);
    wait_answering(&format!("http://{v4}/"));
    for url in [format!("http://{v4}/"), format!("http://[{v6}]/")] {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            let answer = echo(CLIENT_NS, &url);
            seen.insert(answer["pod"].as_str().unwrap_or_default().to_owned());
            if seen == pods {
                break;
            }
        }
        assert_eq!(seen, pods, "{url}: replicas reached in up to 60 requests");
    }
    // A routed client too: through the lab's router, from another network.
    let answer = echo(REMOTE_CLIENT_NS, &format!("http://{v4}/"));
    assert!(pods.contains(answer["pod"].as_str().unwrap_or_default()));
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn local_policy_shows_the_backend_the_clients_real_address() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let (env, url, _) = web(
        "fwd-local",
        "192.0.2.162",
        2,
        json!({"externalTrafficPolicy": "Local"}),
    );
    for (ns, client) in [
        (CLIENT_NS, "192.0.2.100"),
        (REMOTE_CLIENT_NS, "198.51.100.10"),
    ] {
        let answer = echo(ns, &url);
        let remote = answer["remoteAddr"].as_str().unwrap_or_default();
        assert_eq!(
            remote.rsplit_once(':').map(|(ip, _)| ip),
            Some(client),
            "with externalTrafficPolicy: Local the echo must see the client, saw {answer}"
        );
    }
    // Cluster, for contrast: the node's address, so replies come back through it.
    kubectl(&[
        "-n",
        &env.ns,
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
    ])
    .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = echo(CLIENT_NS, &url);
        let remote = answer["remoteAddr"].as_str().unwrap_or_default().to_owned();
        if !remote.starts_with("192.0.2.100:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Cluster policy still shows the client address: {answer}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn source_ranges_refuse_other_clients_at_once() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let (env, url, _) = web("fwd-ranges", "192.0.2.163", 1, json!({}));
    // Only the remote network may connect from now on.
    kubectl(&[
        "-n",
        &env.ns,
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":["198.51.100.0/24"]}}"#,
    ])
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        match curl(CLIENT_NS, &url, Duration::from_secs(5)) {
            Answer::Failed(code, took) => break (code, took),
            Answer::Echo(_) => assert!(
                Instant::now() < deadline,
                "192.0.2.100 is still let through {WAIT:?} after the source ranges were set"
            ),
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    // Refused (curl exit 7), not left to time out (28).
    assert_eq!(refused.0, 7, "LAN client: {refused:?}");
    assert!(refused.1 < Duration::from_secs(3), "{refused:?}");
    echo(REMOTE_CLIENT_NS, &url);
    // A bad range is refused by the API server and changes nothing.
    let bad = kubectl(&[
        "-n",
        &env.ns,
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":["198.51.100.0/33"]}}"#,
    ]);
    assert!(bad.is_err(), "a /33 source range was accepted");
    echo(REMOTE_CLIENT_NS, &url);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn udp_echo_through_the_external_ip() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let vip = "192.0.2.164";
    let env = Env::new("fwd-udp", &["192.0.2.164/32"]);
    env.deploy(
        "dns",
        "ferrolb.io/lab/udp-echo",
        2,
        json!({"args": ["--prefix-pod"], "ports": [{"containerPort": 3000, "protocol": "UDP"}]}),
        json!({}),
    );
    env.lb_service(
        "dns",
        &[vip],
        json!({
            "externalTrafficPolicy": "Cluster",
            "selector": {"app": "dns"},
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 3000}]
        }),
    );
    let pods = wait_pods(&env, "dns", 2);
    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let answer = udp_exchange(vip, 53, "ping-ferrolb");
        if let Some(a) = answer.filter(|a| a.ends_with("ping-ferrolb")) {
            break a;
        }
        assert!(Instant::now() < deadline, "no UDP answer from {vip}:53");
        std::thread::sleep(Duration::from_millis(300));
    };
    let pod = answer.split(": ").next().unwrap_or_default();
    assert!(
        pods.contains(pod),
        "answer {answer:?} from a pod of {pods:?}"
    );
}

/// Sends `payload` in one datagram from the client namespace to `ip:port` and returns the
/// answer (bash's /dev/udp: a connected socket, so only the VIP's answer is read).
fn udp_exchange(ip: &str, port: u16, payload: &str) -> Option<String> {
    let script = format!(
        "exec 3<>/dev/udp/{ip}/{port} && printf '%s' '{payload}' >&3 && \
         IFS= read -r -t 2 -N 256 answer <&3; printf '%s' \"$answer\""
    );
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, "bash", "-c", &script])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn no_endpoints_is_a_refusal_not_a_timeout() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let (env, url, _) = web("fwd-none", "192.0.2.165", 1, json!({}));
    kubectl(&["-n", &env.ns, "scale", "deployment", "web", "--replicas=0"]).unwrap();
    // While the last pod terminates a request may still go to it and wait; once the
    // forwarder knows there is no endpoint, every request is refused (curl exit 7) at once.
    let deadline = Instant::now() + WAIT;
    let mut prompt = 0;
    while prompt < 3 {
        match curl(CLIENT_NS, &url, Duration::from_secs(5)) {
            Answer::Failed(7, took) if took < Duration::from_secs(1) => prompt += 1,
            other => {
                prompt = 0;
                assert!(
                    Instant::now() < deadline,
                    "no prompt refusal {WAIT:?} after scaling to zero: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
    // Back to one replica: answered again.
    kubectl(&["-n", &env.ns, "scale", "deployment", "web", "--replicas=1"]).unwrap();
    wait_answering(&url);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn scaling_down_under_load_loses_no_request_already_started() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    let vip = "192.0.2.166";
    let env = Env::new("fwd-scale", &["192.0.2.166/32"]);
    env.deploy(
        "web",
        "ferrolb.io/lab/echo",
        3,
        json!({"args": ["--shutdown-grace-ms", "20000"], "ports": [{"containerPort": 3000}]}),
        json!({"terminationGracePeriodSeconds": 30}),
    );
    env.lb_service(
        "web",
        &[vip],
        json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 3000}]}),
    );
    let before = wait_pods(&env, "web", 3);
    wait_answering(&format!("http://{vip}/"));
    // Slow requests (the echo holds each answer 4 s), in flight when the scale-down starts.
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let url = format!("http://{vip}/?delay=4s");
            std::thread::spawn(move || curl(CLIENT_NS, &url, Duration::from_secs(20)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    kubectl(&["-n", &env.ns, "scale", "deployment", "web", "--replicas=1"]).unwrap();
    // Short requests all along, started after the scale-down: counted and reported.
    let mut short = (0u32, 0u32);
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        match curl(CLIENT_NS, &format!("http://{vip}/"), Duration::from_secs(2)) {
            Answer::Echo(_) => short.0 += 1,
            Answer::Failed(..) => short.1 += 1,
        }
    }
    let answers: Vec<Answer> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    let after = wait_pods(&env, "web", 1);
    let served_by_removed = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Echo(v) => v["pod"].as_str(),
            Answer::Failed(..) => None,
        })
        .filter(|p| before.contains(*p) && !after.contains(*p))
        .count();
    eprintln!(
        "scale-down 3 -> 1: {} of 12 in-flight requests answered ({served_by_removed} by removed \
         pods); requests started after it: {} answered, {} failed",
        answers
            .iter()
            .filter(|a| matches!(a, Answer::Echo(_)))
            .count(),
        short.0,
        short.1
    );
    let lost: Vec<&Answer> = answers
        .iter()
        .filter(|a| matches!(a, Answer::Failed(..)))
        .collect();
    assert!(
        lost.is_empty(),
        "in-flight requests lost by the scale-down: {lost:?}"
    );
    assert!(
        served_by_removed > 0,
        "no in-flight request was on a removed pod: the test proved nothing"
    );
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn requests_keep_flowing_when_the_owners_speaker_is_killed() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    let vip = "192.0.2.167";
    let (env, url, _) = web("fwd-failover", vip, 2, json!({}));
    let owner = env.announcer("web", vip, None);
    let pid = speaker_pid(&owner).expect("the owner's speaker process");
    // Requests back to back, each with a 1 s limit: (started, answered).
    let log: Arc<Mutex<Vec<(Instant, bool)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let requester = {
        let (log, stop, url) = (log.clone(), stop.clone(), url.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                let ok = matches!(
                    curl(CLIENT_NS, &url, Duration::from_secs(1)),
                    Answer::Echo(_)
                );
                log.lock().unwrap().push((at, ok));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    requester.join().unwrap();
    let log = log.lock().unwrap().clone();
    let after: Vec<&(Instant, bool)> = log.iter().filter(|(at, _)| *at >= killed).collect();
    let failed = after.iter().filter(|(_, ok)| !ok).count();
    // The gap: from the last answered request started before the first failure to the first
    // answered one after the last failure (zero when none failed).
    let gap = match (
        after.iter().position(|(_, ok)| !ok),
        after.iter().rposition(|(_, ok)| !ok),
    ) {
        (Some(first), Some(last)) => {
            let from = log
                .iter()
                .rev()
                .find(|(at, ok)| *ok && *at < after[first].0)
                .map_or(killed, |(at, _)| *at);
            let to = after[last + 1..]
                .iter()
                .find(|(_, ok)| *ok)
                .map(|(at, _)| *at);
            to.map(|t| t.duration_since(from))
        }
        _ => Some(Duration::ZERO),
    };
    let failed_at: Vec<Duration> = after
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(at, _)| at.duration_since(killed))
        .collect();
    eprintln!(
        "SIGKILL of {owner}'s speaker under load: {} requests after the kill, {failed} failed \
         (started at {failed_at:?} after the kill), gap {gap:?}",
        after.len()
    );
    let gap = gap.expect("requests through the VIP never recovered after the kill");
    assert!(
        gap < Duration::from_secs(5),
        "requests failed for {gap:?} after the kill"
    );
    let tail: Vec<_> = after.iter().rev().take(5).collect();
    assert!(
        tail.iter().all(|(_, ok)| *ok),
        "the last requests still fail: {tail:?}"
    );
}
