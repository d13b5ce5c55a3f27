//! The lab's process kubelet runs what a user creates, as a user sees it: a Deployment of
//! echo pods becomes Ready spread over the nodes, its Service's EndpointSlice lists the pod
//! IPs, every pod answers HTTP from another node, scaling down removes the pods' network
//! namespaces and processes, and an image the lab does not have is refused with a clear
//! reason without disturbing anything else.
//!
//! Needs the whole lab (`cargo xtask lab up`, as root); `cargo xtask test` brings it up.
//! HTTP requests are made with `curl` inside the node namespaces (tests/install-deps.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_tests::{client, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const ECHO_PORT: u16 = 3000;

/// Runs a command and returns its stdout, or why it failed.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn netns_list() -> Vec<String> {
    sh("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// Polls `f` every 250 ms until it returns `Some`, or fails with `what` after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("{what}: not true after {timeout:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The lab's Ready nodes by index (from the kubelet's `ferrolb.io/lab-node` label).
async fn lab_nodes(client: &kube::Client) -> BTreeMap<String, u32> {
    let namespaces = netns_list();
    assert!(
        namespaces.iter().any(|n| n == "ferrolb-node-1"),
        "the lab is not up (no network namespace ferrolb-node-1): run `cargo xtask lab up` as root first"
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels("ferrolb.io/lab-node"))
        .await
        .expect("listing nodes");
    let ready: BTreeMap<String, u32> = list
        .items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            let labels = n.metadata.labels.as_ref()?;
            Some((
                n.metadata.name.clone()?,
                labels.get("ferrolb.io/lab-node")?.parse().ok()?,
            ))
        })
        .collect();
    assert!(
        ready.len() >= 2,
        "the lab needs at least 2 Ready nodes (run `cargo xtask lab up`), found {ready:?}"
    );
    ready
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ips(p: &Pod) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

/// The pod's network namespace: the kubelet names it `ferrolb-pod-<node index>-<uid prefix>`.
fn pod_netns(p: &Pod) -> Option<String> {
    let uid: String = p
        .metadata
        .uid
        .as_deref()?
        .chars()
        .filter(|c| *c != '-')
        .take(12)
        .collect();
    netns_list()
        .into_iter()
        .find(|n| n.starts_with("ferrolb-pod-") && n.ends_with(&uid))
}

/// GET / from inside `from_netns`; returns the echo's JSON answer.
fn get_from(from_netns: &str, ip: &str) -> Result<Value, String> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let url = format!("http://{host}:{ECHO_PORT}/lab-kubelet");
    let body = sh(
        "ip",
        &[
            "netns",
            "exec",
            from_netns,
            "curl",
            "-sS",
            "--max-time",
            "5",
            &url,
        ],
    )?;
    serde_json::from_str(&body).map_err(|e| format!("{url}: not JSON ({e}): {body}"))
}

fn echo_deployment(name: &str, replicas: i32) -> Deployment {
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
    let env = |name: &str, path: &str| {
        let mut v = field(path);
        v["name"] = name.into();
        v
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    // One per node, as a user spreading replicas would ask.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": name}}
                    }],
                    "containers": [{
                        "name": "echo",
                        "image": "ferrolb.io/lab/echo:latest",
                        "ports": [{"containerPort": ECHO_PORT, "name": "http"}],
                        "env": [
                            env("POD_NAME", "metadata.name"),
                            env("NAMESPACE", "metadata.namespace"),
                            env("NODE_NAME", "spec.nodeName"),
                            env("POD_IP", "status.podIP"),
                        ],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
                    }]
                }
            }
        }
    }))
    .expect("a valid Deployment")
}

#[tokio::test]
#[ignore = "needs the lab: run cargo xtask test as root"]
async fn echo_deployment_runs_spread_answers_scales_down_and_bad_image_is_refused() {
    let client = client().await.expect("lab kubeconfig");
    let nodes = lab_nodes(&client).await;
    let ns = unique_name("lab-kubelet");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .expect("creating the test namespace");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let name = "echo";
    let app = ListParams::default().labels(&format!("app={name}"));

    deployments
        .create(&PostParams::default(), &echo_deployment(name, 3))
        .await
        .expect("creating the Deployment");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": ECHO_PORT}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("creating the Service");

    // 1. Three Ready replicas, spread over the nodes, with addresses from their node's pod CIDR.
    let running: Vec<Pod> = eventually(Duration::from_secs(60), "3 Ready echo pods", || async {
        let list = pods.list(&app).await.map_err(|e| e.to_string())?;
        let ready: Vec<Pod> = list.items.into_iter().filter(pod_ready).collect();
        if ready.len() == 3 {
            Ok(ready)
        } else {
            Err(format!("{} Ready", ready.len()))
        }
    })
    .await;
    let used_nodes: BTreeSet<String> = running
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(
        used_nodes.len(),
        nodes.len().min(3),
        "replicas not spread over the nodes: {used_nodes:?}"
    );
    let mut all_ips = BTreeSet::new();
    for p in &running {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let index = nodes[&node];
        let ips = pod_ips(p);
        assert_eq!(ips.len(), 2, "dual-stack pod IPs: {ips:?}");
        assert!(
            ips[0].starts_with(&format!("198.18.{index}.")),
            "{node}: IPv4 {}",
            ips[0]
        );
        assert!(
            ips[1].starts_with(&format!("2001:db8:1:{index}::")),
            "{node}: IPv6 {}",
            ips[1]
        );
        all_ips.insert(ips[0].clone());
    }

    // 2. The real kube-controller-manager lists the three pod IPs, ready, in the EndpointSlice.
    let slice_params = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    eventually(
        Duration::from_secs(30),
        "EndpointSlice lists the 3 pod IPs",
        || async {
            let list = slices
                .list(&slice_params)
                .await
                .map_err(|e| e.to_string())?;
            let listed: BTreeSet<String> = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            if listed == all_ips {
                Ok(())
            } else {
                Err(format!("{listed:?} != {all_ips:?}"))
            }
        },
    )
    .await;

    // 3. Every pod answers over IPv4 and IPv6 from another node's namespace, as itself.
    for p in &running {
        let pod_name = p.metadata.name.clone().unwrap();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap();
        let other = nodes
            .iter()
            .find(|(n, _)| **n != node)
            .map(|(_, i)| *i)
            .unwrap();
        let from = format!("ferrolb-node-{other}");
        for ip in pod_ips(p) {
            let answer = eventually(
                Duration::from_secs(10),
                &format!("{pod_name} answers on {ip}"),
                || {
                    let ip = ip.clone();
                    let from = from.clone();
                    async move { get_from(&from, &ip) }
                },
            )
            .await;
            assert_eq!(answer["pod"], pod_name.as_str(), "{answer}");
            assert_eq!(answer["namespace"], ns.as_str(), "{answer}");
            assert_eq!(answer["node"], node.as_str(), "{answer}");
        }
    }

    // Each pod has its own network namespace with its process in it.
    let mut sandboxes = BTreeMap::new();
    for p in &running {
        let netns =
            pod_netns(p).unwrap_or_else(|| panic!("no namespace for pod {:?}", p.metadata.name));
        let pids: Vec<u32> = sh("ip", &["netns", "pids", &netns])
            .unwrap()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        assert!(!pids.is_empty(), "no process in {netns}");
        sandboxes.insert(p.metadata.name.clone().unwrap(), (netns, pids));
    }

    // 4. Scaling to 1 removes the other pods, their namespaces and their processes.
    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scaling down");
    let kept: Pod = eventually(Duration::from_secs(40), "only 1 echo pod left", || async {
        let list = pods.list(&app).await.map_err(|e| e.to_string())?;
        match list.items.as_slice() {
            [one] => Ok(one.clone()),
            items => Err(format!("{} pods", items.len())),
        }
    })
    .await;
    let kept_name = kept.metadata.name.clone().unwrap();
    for (pod_name, (netns, pids)) in &sandboxes {
        if *pod_name == kept_name {
            continue;
        }
        eventually(
            Duration::from_secs(10),
            &format!("{pod_name}'s sandbox removed"),
            || async {
                let left_ns = netns_list().contains(netns);
                let left_pids: Vec<&u32> = pids
                    .iter()
                    .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
                    .collect();
                if !left_ns && left_pids.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "namespace left: {left_ns}, processes left: {left_pids:?}"
                    ))
                }
            },
        )
        .await;
    }

    // 5. An image the lab does not have: a clear reason, nothing else disturbed.
    let bad: Pod = serde_json::from_value(json!({
        "metadata": {"name": "unknown-image"},
        "spec": {"containers": [{"name": "web", "image": "docker.io/library/nginx:1.27"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &bad)
        .await
        .expect("creating the bad pod");
    let waiting = eventually(
        Duration::from_secs(30),
        "unknown image reported",
        || async {
            let p = pods.get("unknown-image").await.map_err(|e| e.to_string())?;
            let status = p.status.clone().unwrap_or_default();
            let waiting = status
                .container_statuses
                .as_ref()
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.clone())
                .ok_or("no waiting state yet")?;
            Ok((status.phase, waiting))
        },
    )
    .await;
    assert_eq!(waiting.0.as_deref(), Some("Pending"));
    assert_eq!(waiting.1.reason.as_deref(), Some("ImageNotInLab"));
    let message = waiting.1.message.unwrap_or_default();
    assert!(
        message.contains("docker.io/library/nginx:1.27"),
        "{message}"
    );
    assert!(
        message.contains("ferrolb.io/lab/echo"),
        "message lists the known images: {message}"
    );

    let still = pods.get(&kept_name).await.expect("the kept pod");
    assert!(pod_ready(&still), "the remaining echo pod stayed Ready");
    let node = still
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap();
    let other = nodes
        .iter()
        .find(|(n, _)| **n != node)
        .map(|(_, i)| *i)
        .unwrap();
    let answer =
        get_from(&format!("ferrolb-node-{other}"), &pod_ips(&still)[0]).expect("still answers");
    assert_eq!(answer["pod"], kept_name.as_str());
    assert_eq!(
        lab_nodes(&client).await.len(),
        nodes.len(),
        "every node still Ready"
    );

    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("deleting the test namespace");
}
