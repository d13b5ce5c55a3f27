//! Shared by the `controller_*` end-to-end tests: a controller process per test, a
//! namespace, pools and Services with test-unique names, and waits on what users see.
#![allow(dead_code)] // each test binary uses a different part

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrolb_api::IPAddressPool;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How long a Service may take to show its outcome.
pub const WAIT: Duration = Duration::from_secs(20);
/// The label the tests' pools carry, matched by each controller's `--pool-selector`.
pub const RUN_LABEL: &str = "e2e.ferrolb.io/run";

/// One test's world: a namespace, a class, a pool label and a controller.
pub struct Env {
    pub client: kube::Client,
    /// Unique per test: namespace, class suffix, pool-name prefix, Lease name.
    pub run: String,
    pub ns: String,
    pub class: String,
    controllers: Vec<Controller>,
}

impl Env {
    /// Applies the CRDs, makes the namespace and starts one controller.
    pub async fn start(test: &str) -> Env {
        let client = ferrolb_tests::client().await.expect("lab client");
        ferrolb_tests::apply_crds(&client)
            .await
            .expect("applying CRDs");
        let run = ferrolb_tests::unique_name(&format!("e2e-{test}"));
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": run}})).unwrap(),
            )
            .await
            .expect("creating the test namespace");
        let mut env = Env {
            client,
            ns: run.clone(),
            class: format!("e2e.ferrolb.io/{run}"),
            run,
            controllers: Vec::new(),
        };
        env.start_controller();
        env
    }

    /// Starts another replica (same class, Lease and pool selector).
    pub fn start_controller(&mut self) -> usize {
        let c = Controller::start(&[
            "--load-balancer-class",
            &self.class,
            "--ignore-classless",
            "--pool-selector",
            &format!("{RUN_LABEL}={}", self.run),
            "--leader-elect=true",
            "--lease-namespace",
            &self.ns,
            "--lease-name",
            "ferrolb-controller",
        ]);
        self.controllers.push(c);
        self.controllers.len() - 1
    }

    /// The first (or only) controller.
    pub fn controller(&self) -> &Controller {
        &self.controllers[0]
    }

    /// Replica `i`.
    pub fn replica(&mut self, i: usize) -> &mut Controller {
        &mut self.controllers[i]
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
            "metadata": {"name": self.pool_name(short), "labels": {RUN_LABEL: self.run}},
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

    /// The Lease's holder.
    pub async fn lease_holder(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.ns);
        api.get_opt("ferrolb-controller")
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    }

    pub fn logs(&self) -> String {
        self.controllers
            .iter()
            .enumerate()
            .map(|(i, c)| format!("--- replica {i} ---\n{}", tail(&c.log(), 60)))
            .collect()
    }

    /// Stops the controllers and deletes the namespace and this test's pools.
    pub async fn cleanup(mut self) {
        for c in &mut self.controllers {
            c.terminate();
        }
        let pools: Api<IPAddressPool> = Api::all(self.client.clone());
        let _ = pools
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("{RUN_LABEL}={}", self.run)),
            )
            .await;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
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

/// A `ferrolb-controller` process with its log in a file; killed on drop.
pub struct Controller {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl Controller {
    pub fn start(extra: &[&str]) -> Controller {
        let path = ferrolb_tests::workspace_binary("ferrolb-controller");
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-controller");
        fs::create_dir_all(&dir).expect("scratch dir");
        let log_path = dir.join(format!("controller-{}.log", addr.port()));
        let log = fs::File::create(&log_path).expect("log file");
        let child = Command::new(&path)
            .arg("--kubeconfig")
            .arg(ferrolb_tests::kubeconfig_path())
            .args(["--metrics-addr", &addr.to_string()])
            .args(extra)
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        Controller {
            child,
            addr,
            log_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `/metrics`, or "" if it does not answer.
    pub fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").unwrap_or_default()
    }

    /// SIGTERM and wait (the Lease is released on the way out).
    pub fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// SIGKILL: dies without releasing anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
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
