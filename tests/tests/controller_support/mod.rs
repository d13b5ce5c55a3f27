//! Shared by the `controller_*` end-to-end tests: FerroLB's controller installed by the chart
//! as a second, controller-only release ([`E2E`]) with only the chart's RBAC, and per test a
//! namespace, pools and Services with test-unique names, and waits on what users see.
//!
//! The release serves only Services of class [`CLASS`] (`ignoreClassless`) and only pools
//! labelled [`POOL_LABEL`]`=ferrolb-e2e` (`controller.poolSelector`), so the lab's own FerroLB
//! (release `ferrolb`, e.g. the demo's all-namespace pool) never gives these Services an IP,
//! and each test's pools serve only its namespace, so tests sharing the release stay apart.
#![allow(dead_code)] // each test binary uses a different part

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_api::IPAddressPool;
use ferrolb_tests::{Release, kubectl, workspace_root};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How long a Service may take to show its outcome.
pub const WAIT: Duration = Duration::from_secs(20);
/// The load-balancer class of the tests' release.
pub const CLASS: &str = "e2e.ferrolb.io/e2e";
/// The label the tests' release selects pools by (`controller.poolSelector`).
pub const POOL_LABEL: &str = "e2e.ferrolb.io/release";
/// The label naming the test that made a pool (for its cleanup).
pub const RUN_LABEL: &str = "e2e.ferrolb.io/run";
/// The controller's metrics port (the chart's `controller.metricsPort`).
const METRICS_PORT: u16 = 7472;

/// The controller tests' release of charts/ferrolb: controller only (the lab's release has the
/// speakers), its own class and pool selector, the chart's 2 replicas and leader election.
pub const E2E: Release = Release {
    name: "ferrolb-e2e",
    namespace: "ferrolb-e2e",
    set: &[
        "loadBalancerClass=e2e.ferrolb.io/e2e",
        "ignoreClassless=true",
        "controller.poolSelector=e2e.ferrolb.io/release=ferrolb-e2e",
    ],
    speaker: false,
};

/// One test's world: a namespace, its pools and Services, served by the [`E2E`] release.
pub struct Env {
    pub client: kube::Client,
    /// Unique per test: namespace and pool-name prefix.
    pub run: String,
    pub ns: String,
    pub class: String,
}

impl Env {
    /// Makes sure the [`E2E`] release runs (installing it once per test binary) and makes the
    /// test's namespace.
    pub async fn start(test: &str) -> Env {
        E2E.ensure_installed();
        let client = ferrolb_tests::client().await.expect("lab client");
        let run = ferrolb_tests::unique_name(&format!("e2e-{test}"));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": run}})).unwrap(),
            )
            .await
            .expect("creating the test namespace");
        Env {
            client,
            ns: run.clone(),
            class: CLASS.to_owned(),
            run,
        }
    }

    /// The cluster-wide name of this test's pool `short`.
    pub fn pool_name(&self, short: &str) -> String {
        format!("{}-{short}", self.run)
    }

    /// Creates a pool serving only this test's namespace.
    pub async fn pool(&self, short: &str, addresses: &[&str], service_allocation: Value) {
        let mut allocation = json!({"namespaces": [self.ns]});
        if let Value::Object(extra) = service_allocation {
            for (k, v) in extra {
                allocation[k] = v;
            }
        }
        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": self.pool_name(short),
                         "labels": {POOL_LABEL: E2E.name, RUN_LABEL: self.run}},
            "spec": {"addresses": addresses, "serviceAllocation": allocation},
        }))
        .unwrap();
        Api::<IPAddressPool>::all(self.client.clone())
            .create(&PostParams::default(), &pool)
            .await
            .expect("creating a pool");
    }

    /// Creates a LoadBalancer Service of this test's class.
    pub async fn service(&self, name: &str, annotations: Value, mut spec: Value) {
        spec["loadBalancerClass"] = json!(self.class);
        self.service_raw(name, annotations, spec).await;
    }

    /// Creates a Service with `spec` as given.
    pub async fn service_raw(&self, name: &str, annotations: Value, spec: Value) {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns, "annotations": annotations},
            "spec": spec,
        }))
        .unwrap();
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .unwrap_or_else(|e| panic!("creating Service {name}: {e}"));
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn get(&self, name: &str) -> Service {
        self.services().get(name).await.expect("getting a Service")
    }

    pub async fn delete_service(&self, name: &str) {
        self.services()
            .delete(name, &DeleteParams::default())
            .await
            .expect("deleting a Service");
    }

    pub async fn patch_spec(&self, name: &str, spec: Value) {
        self.services()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .expect("patching a Service");
    }

    /// The `ferrolb.io/Allocated` condition.
    pub fn condition(svc: &Service) -> Option<Condition> {
        svc.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ferrolb.io/Allocated")
            .cloned()
    }

    /// Waits until `done(service)`; panics with the Service and the controller log if not.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Service) -> bool,
    ) -> Service {
        let deadline = Instant::now() + WAIT;
        loop {
            let svc = self.services().get_opt(name).await.ok().flatten();
            if let Some(svc) = &svc
                && done(svc)
            {
                return svc.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "Service {name}: {what} not seen within {WAIT:?}\nservice: {}\ncontroller log:\n{}",
                    serde_json::to_string_pretty(&svc).unwrap_or_default(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an IP, the annotation and a True condition.
    pub async fn wait_ip(&self, name: &str) -> Service {
        self.wait_for(name, "an IP", |svc| {
            !ingress(svc).is_empty()
                && Env::condition(svc).is_some_and(|c| c.status == "True")
                && svc
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("ferrolb.io/ip-allocated-from-pool"))
        })
        .await
    }

    /// Waits for condition False with `reason`.
    pub async fn wait_failed(&self, name: &str, reason: &str) -> Service {
        self.wait_for(name, &format!("condition False/{reason}"), |svc| {
            Env::condition(svc).is_some_and(|c| c.status == "False" && c.reason == reason)
        })
        .await
    }

    /// Events about Service `name`.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// Waits for an Event with `reason` whose note contains `text`, from ferrolb-controller.
    pub async fn wait_event(&self, name: &str, reason: &str, text: &str) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            let events = self.events(name).await;
            if let Some(e) = events.iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.note.as_deref().unwrap_or("").contains(text)
                    && e.reporting_controller.as_deref() == Some("ferrolb-controller")
            }) {
                return e.clone();
            }
            if Instant::now() > deadline {
                let seen: Vec<_> = events
                    .iter()
                    .map(|e| format!("{:?}: {:?}", e.reason, e.note))
                    .collect();
                panic!(
                    "no {reason} event containing {text:?} for {name}; saw {seen:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until pool `short`'s status satisfies `done`; returns the status.
    pub async fn wait_pool(&self, short: &str, done: impl Fn(&Value) -> bool) -> Value {
        let api: Api<IPAddressPool> = Api::all(self.client.clone());
        let deadline = Instant::now() + WAIT;
        loop {
            let pool = api
                .get(&self.pool_name(short))
                .await
                .expect("getting a pool");
            let status = serde_json::to_value(&pool.status).unwrap();
            if done(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!("pool {short}: status {status:#}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The Lease's holder: a controller pod's name.
    pub async fn lease_holder(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), E2E.namespace);
        api.get_opt(&E2E.controller())
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    }

    /// Waits until the leading controller's `/metrics` satisfy `done`; returns them.
    pub async fn wait_leader_metrics(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self.lease_holder().await;
            let text = leader
                .as_deref()
                .and_then(controller_pod)
                .map(|pod| metrics(&pod))
                .unwrap_or_default();
            if done(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!("leader {leader:?}: {what} not in its metrics within {WAIT:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the leader counts `n` assigned IPv4 addresses in pool `short`, in its
    /// metrics and then in the pool's status. The metrics come first because the lab's own
    /// release also writes this pool's status (0 assigned; see ADR 0013), so a status of 0
    /// alone proves nothing.
    pub async fn wait_assigned_v4(&self, short: &str, n: u32) {
        let line = format!(
            "ferrolb_pool_assigned_addresses{{pool=\"{}\",family=\"ipv4\"}} {n}\n",
            self.pool_name(short)
        );
        self.wait_leader_metrics(&line, |m| m.contains(&line)).await;
        self.wait_pool(short, |s| s["assignedIPv4"] == n).await;
    }

    /// The last lines of each controller pod's log (the lab's kubelet writes them to files).
    pub fn logs(&self) -> String {
        E2E.pods("controller")
            .iter()
            .map(|pod| {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let log = pod_log(pod).unwrap_or_else(|| "(no log file)".to_owned());
                format!("--- {name} ---\n{}\n", tail(&log, 60))
            })
            .collect()
    }
}

/// Dropping a test's Env deletes its namespace (with its Services) and its pools, also when
/// the test fails: a failed test's Services and pools would otherwise hold addresses
/// the next run of it needs.
impl Drop for Env {
    fn drop(&mut self) {
        // The Services first (with their namespace), then the pools: the other way round the
        // leader would write NoMatchingPool on every Service still there, and the next test
        // would queue behind those writes.
        let ns = kubectl(&["delete", "namespace", &self.ns, "--timeout=60s"]);
        let selector = format!("{RUN_LABEL}={}", self.run);
        let pools = kubectl(&["delete", "ipaddresspools", "-l", &selector, "--wait=false"]);
        for result in [ns, pools] {
            if let Err(e) = result {
                eprintln!("cleaning up after {}: {e}", self.run);
            }
        }
    }
}

/// `status.loadBalancer.ingress` as (ip, ipMode).
pub fn ingress(svc: &Service) -> Vec<(String, Option<String>)> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| {
            i.iter()
                .map(|i| (i.ip.clone().unwrap_or_default(), i.ip_mode.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A LoadBalancer spec with these (protocol, port) pairs.
pub fn svc_spec(ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .enumerate()
        .map(|(i, (proto, port))| json!({"name": format!("p{i}"), "protocol": proto, "port": port}))
        .collect();
    json!({"type": "LoadBalancer", "ports": ports, "selector": {"app": "x"}})
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The release's controller pod named `name`, if it exists.
pub fn controller_pod(name: &str) -> Option<Pod> {
    E2E.pods("controller")
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
}

/// `/metrics` of a controller pod (from its pod IP), or "" if it does not answer.
pub fn metrics(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .and_then(|ip| http_get(SocketAddr::new(ip, METRICS_PORT), "/metrics"))
        .unwrap_or_default()
}

/// The container log of a controller pod: the lab's kubelet writes
/// target/lab/nodes/<node>/pods/<uid>/<container>.log.
fn pod_log(pod: &Pod) -> Option<String> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    let uid = pod.metadata.uid.as_deref()?;
    let container = &pod.spec.as_ref()?.containers.first()?.name;
    fs::read_to_string(
        workspace_root()
            .join("target/lab/nodes")
            .join(node)
            .join("pods")
            .join(uid)
            .join(format!("{container}.log")),
    )
    .ok()
}

/// Sends `signal` (KILL, STOP, CONT) to the controller process of pod `name`: the lab's
/// kubelet runs a container as a process with the pod's env (the chart sets `POD_NAME`).
/// Returns its pid.
pub fn signal_controller_pod(name: &str, signal: &str) -> u32 {
    let needle = format!("POD_NAME={name}");
    let pid = fs::read_dir("/proc")
        .expect("reading /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| "ferrolb-controller".starts_with(c.trim()))
                && fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .unwrap_or_else(|| panic!("no ferrolb-controller process with {needle}"));
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
    pid
}

/// `kubectl rollout restart` of the release's controller Deployment, as an operator restarts
/// it, and waits until the rollout is done.
pub fn rollout_restart_controller() {
    let deployment = format!("deployment/{}", E2E.controller());
    kubectl(&["-n", E2E.namespace, "rollout", "restart", &deployment]).expect("rollout restart");
    kubectl(&[
        "-n",
        E2E.namespace,
        "rollout",
        "status",
        &deployment,
        "--timeout=120s",
    ])
    .expect("the restarted controller rolls out");
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}
