//! The two daemons start, connect, report ready, serve health and metrics, and stop
//! cleanly on SIGTERM, against the lab's real kube-apiserver.
//!
//! The binaries are not built by this test: run `cargo build --workspace --bins` first
//! (`cargo xtask test` does). They are found next to this test executable's `deps/`
//! folder, i.e. in the same `target/<profile>/`.
//!
//! With the lab's FerroLB installed by the chart, each daemon runs with a token of the
//! chart's ServiceAccount for it, so this test also fails on a permission the chart lacks
//! (the daemons' flags are the chart test's and the pods' job); with only the control plane
//! up (no root, no chart) it runs with the admin kubeconfig.
//!
//! Only std is used for HTTP and signals, so this file adds no dev-dependency.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
fn controller_starts_gets_ready_and_stops_on_sigterm() {
    starts_gets_ready_and_stops("ferrolb-controller", &[], Format::Json);
}

#[test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
fn speaker_starts_gets_ready_and_stops_on_sigterm() {
    // The speaker needs its own Node: a fixture that nothing is scheduled to.
    let _node = NodeFixture::create("ferrolb-e2e-node");
    let memberlist = free_addr().port().to_string();
    starts_gets_ready_and_stops(
        "ferrolb-speaker",
        &[
            "--node-name",
            "ferrolb-e2e-node",
            "--memberlist-port",
            &memberlist,
            // It runs in the host's network namespace and reaches no peer, so it would take
            // every Service of its class as its own: a class no Service has keeps it from
            // answering ARP on the host's interfaces or touching the lab's reports.
            "--load-balancer-class",
            "e2e.ferrolb.io/daemons-test",
            "--ignore-classless",
        ],
        Format::Text,
    );
}

/// A Node object for a daemon under test, deleted again on drop. Unschedulable and
/// tainted, so no workload lands on a node that has no kubelet; excluded from load balancers,
/// so no speaker elects it to announce.
struct NodeFixture(String);

impl NodeFixture {
    fn create(name: &str) -> Self {
        let manifest = format!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}","node.kubernetes.io/exclude-from-external-load-balancers":"true"}}}},"spec":{{"unschedulable":true,"taints":[{{"key":"ferrolb.io/e2e","effect":"NoExecute"}}]}}}}"#
        );
        let mut child = kubectl(&["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("write manifest");
        assert!(
            child.wait().expect("kubectl").success(),
            "creating Node {name}"
        );
        // The speaker runs its membership on the Node's InternalIP: loopback, here.
        let status = r#"{"status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"}]}}"#;
        assert!(
            kubectl(&[
                "patch",
                "node",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                status
            ])
            .status()
            .expect("kubectl")
            .success(),
            "setting Node {name}'s address"
        );
        Self(name.to_string())
    }
}

impl Drop for NodeFixture {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "node", &self.0, "--wait=false"]).status();
    }
}

/// The lab's kubectl (target/lab/bin/kubectl) with the lab's kubeconfig.
fn kubectl(args: &[&str]) -> Command {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lab/bin/kubectl");
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig").arg(lab_kubeconfig()).args(args);
    cmd.stdout(Stdio::null());
    cmd
}

#[test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
fn unreachable_api_server_is_alive_but_not_ready() {
    // Needs no control plane, only the built binaries, which plain `cargo test` lacks.
    let dead = dead_kubeconfig();
    for (binary, extra) in [
        ("ferrolb-controller", &[][..]),
        ("ferrolb-speaker", &["--node-name", "ferrolb-e2e-node"][..]),
    ] {
        let mut daemon = Daemon::start(binary, &dead, extra, Format::Text);
        wait_for(Duration::from_secs(10), || daemon.get("/healthz").0 == 200)
            .unwrap_or_else(|| panic!("{binary}: /healthz never answered 200\n{}", daemon.log()));

        // Long enough for several watch retries: the process must neither crash nor claim
        // readiness in between.
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let (status, body) = daemon.get("/readyz");
            assert_eq!(
                status,
                503,
                "{binary}: /readyz said {body}\n{}",
                daemon.log()
            );
            assert!(
                body.contains("not ready"),
                "{binary}: /readyz body {body:?}"
            );
            assert!(daemon.running(), "{binary} exited\n{}", daemon.log());
            sleep(Duration::from_millis(500));
        }
        assert_eq!(daemon.get("/healthz").0, 200, "{binary}: /healthz");
        let log = daemon.log();
        assert!(
            log.contains("watch error"),
            "{binary}: no watch error logged\n{log}"
        );

        let status = daemon.terminate();
        assert!(
            status.success(),
            "{binary} exited with {status}\n{}",
            daemon.log()
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Text,
    Json,
}

/// The daemons watch FerroLB's CRDs: they must exist (other tests may not have run first).
fn ensure_crds() {
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrolb/crds");
    let crds = crds.to_str().expect("utf-8 path");
    assert!(
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crds])
            .status()
            .expect("kubectl")
            .success(),
        "applying the CRDs"
    );
    assert!(
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "-f",
            crds
        ])
        .status()
        .expect("kubectl")
        .success(),
        "waiting for the CRDs"
    );
}

fn starts_gets_ready_and_stops(binary: &str, extra: &[&str], format: Format) {
    ensure_crds();
    let kubeconfig = daemon_kubeconfig(binary);
    let mut daemon = Daemon::start(binary, &kubeconfig, extra, format);

    wait_for(READY_TIMEOUT, || daemon.get("/readyz").0 == 200).unwrap_or_else(|| {
        let (status, body) = daemon.get("/readyz");
        panic!(
            "{binary}: /readyz still {status} {body:?} after {READY_TIMEOUT:?}\n{}",
            daemon.log()
        )
    });
    assert_eq!(daemon.get("/healthz"), (200, "ok\n".to_owned()));
    let (status, metrics) = daemon.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("ferrolb_build_info{"), "{metrics}");
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrolb_watch_events_total{resource=\"services\",event=\"init_done\"}"),
        "{metrics}"
    );

    let log = daemon.log();
    let start = log
        .lines()
        .find(|l| l.contains("starting"))
        .unwrap_or_else(|| panic!("{binary}: no start line\n{log}"));
    let source = format!("--kubeconfig {}", kubeconfig.display());
    match format {
        Format::Json => {
            let line: serde_json::Value = serde_json::from_str(start).expect("a JSON log line");
            assert_eq!(line["message"], "starting", "{start}");
            assert_eq!(line["config_source"], source.as_str(), "{start}");
            assert_eq!(line["version"], env!("CARGO_PKG_VERSION"), "{start}");
            assert!(
                line["api_server"].as_str().is_some_and(|s| !s.is_empty()),
                "{start}"
            );
        }
        Format::Text => {
            assert!(start.contains(&source), "{start}");
            assert!(start.contains("api_server="), "{start}");
        }
    }

    let begun = Instant::now();
    let status = daemon.terminate();
    assert!(
        status.success(),
        "{binary} exited with {status}\n{}",
        daemon.log()
    );
    assert!(begun.elapsed() < EXIT_TIMEOUT);
    let log = daemon.log();
    assert!(
        log.contains("shutdown complete"),
        "{binary}: no shutdown line\n{log}"
    );
}

/// A running daemon with its log in a file; killed on drop so a failed test leaks nothing.
struct Daemon {
    binary: String,
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl Daemon {
    fn start(binary: &str, kubeconfig: &Path, extra: &[&str], format: Format) -> Daemon {
        let path = ferrolb_tests::workspace_binary(binary);
        let addr = free_addr();
        let log_path = scratch_dir().join(format!("{binary}-{}.log", addr.port()));
        let log = fs::File::create(&log_path).expect("creating the log file");
        let child = Command::new(&path)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-addr", &addr.to_string()])
            .args([
                "--log-format",
                if format == Format::Json {
                    "json"
                } else {
                    "text"
                },
            ])
            .args(extra)
            // The flag must be all that picks the cluster.
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        Daemon {
            binary: binary.to_owned(),
            child,
            addr,
            log_path,
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or((0, String::new()))
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; panics if it takes longer than `EXIT_TIMEOUT`.
    fn terminate(&mut self) -> ExitStatus {
        // `kill(1)` rather than a signal crate: unsafe code is forbidden and this test
        // stays dependency-free.
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the daemon") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n{}",
                self.binary,
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return Some(());
        }
        sleep(Duration::from_millis(250));
    }
    None
}

/// A minimal HTTP/1.1 GET: enough for our own small, non-chunked answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn free_addr() -> SocketAddr {
    // The port is free again once the listener drops; the daemon binds it a moment later.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

fn lab_kubeconfig() -> PathBuf {
    let path = ferrolb_tests::kubeconfig_path();
    assert!(
        path.is_file(),
        "{} is missing: start the lab with `cargo xtask controlplane up` or set FERROLB_KUBECONFIG",
        path.display()
    );
    path.canonicalize().expect("canonical kubeconfig path")
}

/// The kubeconfig a daemon runs with. With the lab's FerroLB installed by the chart (the lab
/// is up as root), a token of the chart's ServiceAccount for that daemon, so it talks to the
/// API with the chart's RBAC and nothing more (the controller then follows the release's
/// leader on its Lease and writes nothing). With only the control plane up there is no chart
/// release: the admin kubeconfig, and a note that RBAC is not checked here.
fn daemon_kubeconfig(binary: &str) -> PathBuf {
    let admin = lab_kubeconfig();
    let (release, ns) = (
        ferrolb_tests::LAB_RELEASE.name,
        ferrolb_tests::LAB_RELEASE.namespace,
    );
    let account = format!("{release}-{}", binary.trim_start_matches("ferrolb-"));
    let Ok(token) =
        ferrolb_tests::kubectl(&["-n", ns, "create", "token", &account, "--duration=10m"])
    else {
        eprintln!(
            "{binary}: no ServiceAccount {ns}/{account} (FerroLB not installed: \
             `cargo xtask lab deploy`): running with the admin kubeconfig, RBAC unchecked"
        );
        return admin;
    };
    let text = fs::read_to_string(&admin).expect("reading the lab kubeconfig");
    let mut config: serde_json::Value =
        serde_yaml_ng::from_str(&text).expect("the lab kubeconfig is YAML");
    config["users"][0]["user"] = serde_json::json!({"token": token.trim()});
    let path = scratch_dir().join(format!("{account}-kubeconfig-{}", std::process::id()));
    fs::write(&path, serde_yaml_ng::to_string(&config).expect("YAML"))
        .expect("writing the ServiceAccount kubeconfig");
    path
}

fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-daemons");
    fs::create_dir_all(&dir).expect("creating target/e2e-daemons");
    dir.canonicalize().expect("canonical target/e2e-daemons")
}

/// A kubeconfig whose API server is a loopback port nobody listens on.
fn dead_kubeconfig() -> PathBuf {
    let addr = free_addr();
    let path = scratch_dir().join(format!("dead-kubeconfig-{}", addr.port()));
    fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: dead
  cluster:
    server: http://{addr}
contexts:
- name: dead
  context:
    cluster: dead
    user: nobody
current-context: dead
users:
- name: nobody
  user: {{}}
"
        ),
    )
    .expect("writing the dead kubeconfig");
    path
}
