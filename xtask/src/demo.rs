//! `cargo xtask demo`: what the README promises a new user, end to end, in the
//! lab: FerroLB installed by its chart, a pool, an echo Deployment behind a
//! LoadBalancer Service, a request through its EXTERNAL-IP from the client
//! namespace, and the Service still answering after the announcing node's
//! speaker is killed. The lab is left running.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{chart, controlplane, lab, run};

/// The demo's pool: a free range of the lab's LAN, apart from the end-to-end tests' addresses
/// (192.0.2.128-223) so they run beside the demo's Service.
const POOL: &str = "192.0.2.240-192.0.2.250";

fn step(n: u8, what: &str) {
    eprintln!("\n==> [{n}/7] {what}");
}

/// One request from the client namespace; the name of the pod that answered.
fn curl(ip: &str) -> Option<String> {
    let out = run::output(Command::new("ip").args([
        "netns",
        "exec",
        lab::CLIENT_NS,
        "curl",
        "-s",
        "--max-time",
        "1",
        &format!("http://{ip}/"),
    ]))
    .ok()?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    json["pod"].as_str().map(str::to_string)
}

fn external_ip(root: &Path) -> Option<String> {
    run::output(controlplane::kubectl_cmd(root).args([
        "get",
        "svc",
        "echo",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]))
    .ok()
    .filter(|ip| !ip.is_empty())
}

fn announcing_node(root: &Path) -> Option<String> {
    let out = run::output(controlplane::kubectl_cmd(root).args([
        "get",
        "serviceannouncements",
        "-o",
        "json",
    ]))
    .ok()?;
    let list: serde_json::Value = serde_json::from_str(&out).ok()?;
    list["items"]
        .as_array()?
        .iter()
        .find(|a| a["spec"]["serviceName"] == "echo")
        .and_then(|a| a["spec"]["node"].as_str().map(str::to_string))
}

fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The speaker's process in a node's namespace (the lab runs pods as processes).
fn speaker_pid(node: &str) -> Option<u32> {
    let index = node.strip_prefix("node-")?;
    let pids =
        run::output(Command::new("ip").args(["netns", "pids", &format!("ferrolb-node-{index}")]))
            .ok()?;
    pids.lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "ferrolb-speaker")
        })
}

/// Runs the demo.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    step(
        1,
        "bringing the lab up: a control plane and 3 nodes (network namespaces)",
    );
    lab::up(root, 3, lab::Build::Binaries)?;

    step(2, "installing FerroLB with helm from charts/ferrolb");
    chart::install(root, &[])?;

    step(
        3,
        &format!("creating an IPAddressPool ({POOL}) and an L2Advertisement"),
    );
    controlplane::kubectl_apply(
        root,
        &format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: demo\nspec:\n  addresses:\n    - {POOL}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: demo\nspec:\n  ipAddressPools:\n    - demo\n"
        ),
    )?;

    step(
        4,
        "exposing an echo Deployment (3 replicas) as a LoadBalancer Service",
    );
    if !run::succeeds(controlplane::kubectl_cmd(root).args(["get", "deployment", "echo"])) {
        run::status(controlplane::kubectl_cmd(root).args([
            "create",
            "deployment",
            "echo",
            "--image=ferrolb.io/lab/echo",
            "--replicas=3",
            "--port=3000",
        ]))?;
    }
    if !run::succeeds(controlplane::kubectl_cmd(root).args(["get", "service", "echo"])) {
        run::status(controlplane::kubectl_cmd(root).args([
            "expose",
            "deployment",
            "echo",
            "--type=LoadBalancer",
            "--port=80",
            "--target-port=3000",
        ]))?;
    }
    run::status(controlplane::kubectl_cmd(root).args([
        "rollout",
        "status",
        "deployment/echo",
        "--timeout=60s",
    ]))?;
    let ip = wait_for(
        "an EXTERNAL-IP for Service echo",
        Duration::from_secs(30),
        || external_ip(root),
    )
    .context("see `kubectl describe svc echo` (the ferrolb.io/Allocated condition and Events)")?;
    eprintln!();
    run::status(controlplane::kubectl_cmd(root).args(["get", "svc", "echo"]))?;

    step(
        5,
        &format!(
            "curl http://{ip}/ from the client namespace ({})",
            lab::CLIENT_NS
        ),
    );
    let pod = wait_for(
        &format!("an answer from http://{ip}/"),
        Duration::from_secs(20),
        || curl(&ip),
    )
    .context("see `kubectl get serviceannouncements -A` and the speakers' logs")?;
    eprintln!("answered by pod {pod}");

    step(6, "killing the speaker of the node that announces the IP");
    let node = wait_for(
        "a ServiceAnnouncement for echo",
        Duration::from_secs(20),
        || announcing_node(root),
    )?;
    let pid =
        speaker_pid(&node).with_context(|| format!("no ferrolb-speaker process on {node}"))?;
    eprintln!("{node} announces {ip}; SIGKILL its speaker (pid {pid})");
    run::signal(pid, "KILL");
    let killed = Instant::now();
    let mut answered = 0;
    let mut failed = 0;
    let mut owners: Vec<String> = vec![node.clone()];
    let mut round = 0;
    while killed.elapsed() < Duration::from_secs(5) {
        if curl(&ip).is_some() {
            answered += 1;
        } else {
            failed += 1;
        }
        round += 1;
        if round % 5 == 0
            && let Some(owner) = announcing_node(root)
            && owners.last() != Some(&owner)
        {
            eprintln!(
                "  {:>5.0?} after the kill: {owner} announces {ip}",
                killed.elapsed()
            );
            owners.push(owner);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "over 5 s after the kill: {answered} requests answered, {failed} not (the kubelet restarts the killed speaker, and the IP may move back to its node)"
    );
    if answered == 0 {
        bail!("the Service did not answer after the speaker was killed");
    }

    step(7, "done: the lab is still running");
    eprintln!(
        "demo finished in {:.0?}. Try it yourself:\n\
         \n  export KUBECONFIG={} PATH={}:$PATH\
         \n  kubectl get svc echo\
         \n  kubectl get serviceannouncements -A\
         \n  sudo ip netns exec {} curl http://{ip}/\
         \n\nStop it with: sudo -E cargo xtask lab down",
        started.elapsed(),
        controlplane::kubeconfig(root).display(),
        controlplane::kubectl(root)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        lab::CLIENT_NS,
    );
    Ok(())
}
