//! The Node object: registration, status heartbeat and the node Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::ipam::NodePlan;

/// The field manager of everything the kubelet writes.
pub const FIELD_MANAGER: &str = "ferrolb-kubelet";
/// How often the Lease is renewed (the kubelet's default).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the Node status is written even without change (the kubelet's
/// `nodeStatusReportFrequency` is 5 min; 1 min keeps `lastHeartbeatTime` fresh for humans).
pub const STATUS_EVERY: Duration = Duration::from_secs(60);
/// The Lease duration written (the kubelet's default).
const LEASE_SECONDS: i32 = 40;
/// The Kubernetes version the lab's control plane runs; the kubelet reports the same.
const KUBELET_VERSION: &str = "v1.34.4";

/// What the node reports about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `node-N`
    pub name: String,
    /// The address plan.
    pub plan: NodePlan,
    /// Facts read from the machine once at start.
    pub info: NodeSystemInfo,
    /// CPU count.
    pub cpus: usize,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// When this kubelet started (the conditions' transition time).
    pub started: Timestamp,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Identity {
    /// Reads machine facts.
    pub fn detect(name: String, plan: NodePlan) -> Self {
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(1 << 20);
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let info = NodeSystemInfo {
            architecture: arch.into(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: concat!("ferrolb-process://", env!("CARGO_PKG_VERSION"))
                .into(),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            // Each lab node is the same machine: tell them apart by name.
            machine_id: format!("{}-{}", read("/etc/machine-id"), name),
            system_uuid: format!("ferrolb-lab-{name}"),
            operating_system: "linux".into(),
            os_image,
            ..Default::default()
        };
        Self {
            name,
            plan,
            info,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
            started: Timestamp::now(),
        }
    }

    /// The node's addresses, IPv4 first.
    pub fn host_ips(&self) -> Vec<String> {
        vec![self.plan.lan4().to_string(), self.plan.lan6().to_string()]
    }
}

/// The Node's metadata and spec, as applied at registration.
pub fn node_object(id: &Identity) -> Node {
    let labels = [
        ("kubernetes.io/hostname", id.name.clone()),
        ("kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", id.info.architecture.clone()),
        ("ferrolb.io/lab-node", id.plan.index.to_string()),
    ];
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels.into_iter().map(|(k, v)| (k.into(), v)).collect()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(id.plan.pod_cidr4()),
            pod_cidrs: Some(vec![id.plan.pod_cidr4(), id.plan.pod_cidr6()]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The Node status at `now`.
pub fn node_status(id: &Identity, now: Timestamp) -> NodeStatus {
    let cond = |kind: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(id.started)),
    };
    let resources = [
        ("cpu", id.cpus.to_string()),
        ("memory", format!("{}Ki", id.memory_kib)),
        ("pods", "110".to_string()),
        ("ephemeral-storage", "10Gi".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect::<std::collections::BTreeMap<_, _>>();
    let mut addresses: Vec<NodeAddress> = id
        .host_ips()
        .into_iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip,
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: id.name.clone(),
    });
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "ferrolb process kubelet is posting ready status",
            ),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
        }),
        node_info: Some(id.info.clone()),
        ..Default::default()
    }
}

/// The node's Lease at `now`, owned by the Node so it goes with it.
pub fn lease(id: &Identity, node_uid: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            namespace: Some("kube-node-lease".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: id.name.clone(),
                uid: node_uid.into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(id.name.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates or updates the Node and writes its status; returns its uid.
pub async fn register(client: &kube::Client, id: &Identity) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut obj = serde_json::to_value(node_object(id)).expect("a Node serializes");
    obj["apiVersion"] = "v1".into();
    obj["kind"] = "Node".into();
    let node = nodes
        .patch(&id.name, &apply_params(), &Patch::Apply(&obj))
        .await
        .map_err(Error::kube(format!("registering node {}", id.name)))?;
    post_status(client, id).await?;
    info!(node = %id.name, "node registered");
    Ok(node.metadata.uid.unwrap_or_default())
}

/// Writes the Node status (a JSON merge patch: lists such as the two InternalIP addresses
/// are replaced whole, which a strategic merge keyed by address type would mangle).
pub async fn post_status(client: &kube::Client, id: &Identity) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let body = serde_json::json!({ "status": node_status(id, Timestamp::now()) });
    nodes
        .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(Error::kube(format!("writing status of node {}", id.name)))?;
    Ok(())
}

/// Renews the Lease.
pub async fn renew_lease(client: &kube::Client, id: &Identity, node_uid: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut obj =
        serde_json::to_value(lease(id, node_uid, Timestamp::now())).expect("a Lease serializes");
    obj["apiVersion"] = "coordination.k8s.io/v1".into();
    obj["kind"] = "Lease".into();
    leases
        .patch(&id.name, &apply_params(), &Patch::Apply(&obj))
        .await
        .map_err(Error::kube(format!("renewing lease of {}", id.name)))?;
    Ok(())
}

/// Registers (retrying until the API server answers), then heartbeats forever.
pub async fn run(client: kube::Client, id: Identity) {
    let mut uid = loop {
        match register(&client, &id).await {
            Ok(uid) => break uid,
            Err(e) => {
                warn!(error = %e, "node registration failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let mut lease_tick = tokio::time::interval(LEASE_RENEW);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.tick().await; // registration just wrote it
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = renew_lease(&client, &id, &uid).await {
                    warn!(error = %e, "lease renewal failed");
                }
            }
            _ = status_tick.tick() => {
                let result = match post_status(&client, &id).await {
                    // The Node was deleted under us: register again, as the kubelet does.
                    Err(e) if e.is_not_found() => register(&client, &id).await.map(|u| uid = u),
                    other => other,
                };
                if let Err(e) = result {
                    warn!(error = %e, "node status update failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity::detect("node-2".into(), NodePlan::new(2).unwrap())
    }

    #[test]
    fn node_has_labels_cidrs_and_addresses() {
        let id = id();
        let node = node_object(&id);
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-2");
        assert_eq!(labels["ferrolb.io/lab-node"], "2");
        let spec = node.spec.unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("198.18.2.0/24"));
        assert_eq!(
            spec.pod_cidrs.unwrap(),
            vec!["198.18.2.0/24".to_string(), "2001:db8:1:2::/64".to_string()]
        );
        assert!(spec.taints.is_none(), "registers without taints");
        let status = node_status(&id, Timestamp::now());
        let addrs: Vec<_> = status
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addrs,
            vec![
                ("InternalIP".into(), "192.0.2.12".into()),
                ("InternalIP".into(), "2001:db8:0:1::12".into()),
                ("Hostname".into(), "node-2".into()),
            ]
        );
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(status.capacity.unwrap()["pods"].0, "110");
    }

    #[test]
    fn lease_is_owned_by_the_node() {
        let l = lease(&id(), "uid-1", Timestamp::now());
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(l.metadata.owner_references.unwrap()[0].uid, "uid-1");
        assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("node-2"));
    }
}
