//! Shared by the end-to-end tests that send traffic in the lab (`speaker_l2`, `forward_lab`,
//! `speaker_bgp`):
//! a test's namespace, pool and L2Advertisement, echo Deployments, LoadBalancer Services, who
//! announces an IP, and the speakers' processes. FerroLB itself is the lab's chart release
//! (`ferrolb_tests::ensure_ferrolb_installed`).
#![allow(dead_code)] // each test binary uses a different part

use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_tests::{ensure_ferrolb_installed, kubectl, kubectl_stdin, unique_name};
use serde_json::{Value, json};

/// The lab's client namespace on the LAN (192.0.2.100, 2001:db8:0:1::100).
pub const CLIENT_NS: &str = "ferrolb-client";
/// The client behind the lab's router (198.51.100.10).
pub const REMOTE_CLIENT_NS: &str = "ferrolb-remote-client";
/// How long convergence is polled for.
pub const WAIT: Duration = Duration::from_secs(30);

/// What one HTTP request through the VIP gave.
#[derive(Debug)]
pub enum Answer {
    /// 200 and the echo's JSON.
    Echo(Value),
    /// curl failed with this exit code (7: refused / unreachable, 28: timed out) or another
    /// HTTP status; the elapsed time.
    Failed(i32, Duration),
}

/// `curl` from namespace `ns` to `url` with a `max` total time.
pub fn curl(ns: &str, url: &str, max: Duration) -> Answer {
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "-g", "--max-time"])
        .arg(format!("{:.1}", max.as_secs_f64()))
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("running curl");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    match (out.status.code(), code) {
        (Some(0), "200") => serde_json::from_str(body)
            .map(Answer::Echo)
            .unwrap_or(Answer::Failed(-1, took)),
        (Some(0), other) => Answer::Failed(other.parse().unwrap_or(-1), took),
        (c, _) => Answer::Failed(c.unwrap_or(-1), took),
    }
}

/// Sets `extra`'s top-level fields on `into` (both JSON objects).
pub fn merge(into: &mut Value, extra: Value) {
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            into[k] = v;
        }
    }
}

pub fn apply(obj: &Value) {
    kubectl_stdin(&["apply", "-f", "-"], Some(&obj.to_string())).expect("apply");
}

/// One test's world: a namespace, a pool (autoAssign off: IPs are pinned by annotation) and
/// an L2Advertisement of it, all named after the test and deleted when dropped.
pub struct Env {
    pub ns: String,
    pub pool: String,
    pub adv: String,
}

impl Env {
    /// Makes the namespace, the pool of `addresses` and an advertisement from every node.
    pub fn new(prefix: &str, addresses: &[&str]) -> Env {
        ensure_ferrolb_installed();
        let run = unique_name(prefix);
        kubectl(&["create", "namespace", &run]).unwrap();
        let env = Env {
            pool: run.clone(),
            adv: run.clone(),
            ns: run,
        };
        apply(&json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": env.pool},
            "spec": {"addresses": addresses, "autoAssign": false}
        }));
        env.advertise_spec(json!({"nodeSelectors": []}));
        env
    }

    /// Applies the advertisement with `extra` merged into its spec (the pool is always ours).
    pub fn advertise_spec(&self, extra: Value) {
        let mut spec = json!({"ipAddressPools": [self.pool]});
        merge(&mut spec, extra);
        apply(&json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": self.adv},
            "spec": spec
        }));
    }

    /// A Deployment `name` of the lab echo `image` (`ferrolb.io/lab/echo`, `.../udp-echo`,
    /// ...), pods labelled `app: <name>`; `container` (ports, args, ...) is merged into its
    /// one container, `pod` into the pod spec.
    pub fn deploy(&self, name: &str, image: &str, replicas: u32, container: Value, pod: Value) {
        let mut c = json!({"name": "echo", "image": image});
        merge(&mut c, container);
        let mut spec = json!({"containers": [c]});
        merge(&mut spec, pod);
        apply(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": spec}
            }
        }));
    }

    /// Merges `pod` into the pod template of Deployment `name` (e.g. a nodeSelector to move
    /// its pods).
    pub fn patch_pod_spec(&self, name: &str, pod: Value) {
        let patch = json!({"spec": {"template": {"spec": pod}}});
        kubectl(&[
            "-n",
            &self.ns,
            "patch",
            "deployment",
            name,
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ])
        .unwrap_or_else(|e| panic!("patching deployment {name}'s pods: {e}"));
    }

    /// A LoadBalancer Service pinned to `ips` from this test's pool, `spec` merged in.
    pub fn lb_service(&self, name: &str, ips: &[&str], spec: Value) {
        let dual = ips.len() > 1;
        let mut full = json!({
            "type": "LoadBalancer",
            // No kube-proxy in the lab, and a busy lab may have no NodePorts left.
            "allocateLoadBalancerNodePorts": false,
            "ipFamilyPolicy": if dual { "RequireDualStack" } else { "SingleStack" },
            "ipFamilies": if dual { json!(["IPv4", "IPv6"]) } else { json!(["IPv4"]) },
        });
        merge(&mut full, spec);
        apply(&json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": self.ns, "annotations": {
                "ferrolb.io/loadBalancerIPs": ips.join(","),
                "ferrolb.io/address-pool": self.pool,
            }},
            "spec": full
        }));
    }

    /// The nodes whose ServiceAnnouncements for `svc` cover `ip` (`None` if the list failed).
    pub fn reporters(&self, svc: &str, ip: &str) -> Option<Vec<String>> {
        let text = kubectl(&["-n", &self.ns, "get", "serviceannouncements", "-o", "json"]).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(
            v["items"]
                .as_array()?
                .iter()
                .filter(|i| i["spec"]["serviceName"] == svc)
                .filter(|i| {
                    i["spec"]["ips"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == ip))
                })
                .filter_map(|i| i["spec"]["node"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// The node named by the Service's ServiceAnnouncement covering `ip`, once there is one.
    pub fn announcer(&self, svc: &str, ip: &str, not: Option<&str>) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(mut nodes) = self.reporters(svc, ip) {
                nodes.retain(|n| Some(n.as_str()) != not);
                if nodes.len() == 1 {
                    return nodes[0].clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single ServiceAnnouncement for {svc} {ip}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
        let _ = kubectl(&["delete", "l2advertisement", &self.adv, "--wait=false"]);
        let _ = kubectl(&["delete", "ipaddresspool", &self.pool, "--wait=false"]);
    }
}

/// The ready, not terminating, pods labelled `app=<app>` in `ns` (empty if the list failed).
pub fn ready_pods(ns: &str, app: &str) -> Vec<Value> {
    kubectl(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "json",
    ])
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    .and_then(|v| v["items"].as_array().cloned())
    .unwrap_or_default()
    .into_iter()
    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    .filter(|p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
    .collect()
}

/// The lab's LAN MAC of `node-N`.
pub fn node_mac(node: &str) -> String {
    let n: u8 = node.trim_start_matches("node-").parse().unwrap();
    format!("02:fe:c0:00:02:{:02x}", 10 + n)
}

/// The pid of the lab release's speaker on `node` (its node namespace, the chart's default
/// memberlist port), not another install's.
pub fn speaker_pid(node: &str) -> Option<u32> {
    let ns = format!("ferrolb-{node}");
    let out = Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "ferrolb-speaker")
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("--memberlist-port=7946"))
        })
}
