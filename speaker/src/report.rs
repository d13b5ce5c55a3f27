//! Reporting: one `ServiceAnnouncement` per Service and node (server-side apply, field manager
//! `ferrolb-speaker`, owned by the Service) and an Event on the Service when this node takes
//! over. Runs as its own task fed the latest desired state, so a slow or unreachable API
//! server never holds up answering ARP.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use ferrolb_api::{AnnouncementProtocol, ServiceAnnouncement, ServiceAnnouncementSpec};
use ferrolb_core::announce::{NodeName, ServiceKey};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// The field manager of everything the speaker writes.
pub const FIELD_MANAGER: &str = "ferrolb-speaker";
/// Label naming the node on our ServiceAnnouncements.
pub const NODE_LABEL: &str = "ferrolb.io/node";
/// Label naming the Service on our ServiceAnnouncements.
pub const SERVICE_LABEL: &str = "ferrolb.io/service-name";
/// Label naming the protocol on our ServiceAnnouncements.
pub const PROTOCOL_LABEL: &str = "ferrolb.io/protocol";

/// What this node announces for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The Service's uid, for the ownerReference.
    pub uid: String,
    /// Interface answered on (the first, when IPs are on several).
    pub interface: String,
    /// IPs announced from here.
    pub ips: BTreeSet<String>,
    /// Every node that owns one of the Service's IPs (so other nodes' stale reports can go).
    pub owners: BTreeSet<NodeName>,
    /// When the last gratuitous packet for any of these IPs went out.
    pub last_gratuitous: Option<SystemTime>,
}

/// An Event to publish: this node took over `ips` of `service` from `previous`.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// The Service.
    pub service: ServiceKey,
    /// Its uid.
    pub uid: String,
    /// IP taken over.
    pub ip: String,
    /// Interface.
    pub interface: String,
    /// The owner before, if known.
    pub previous: Option<NodeName>,
}

/// The object name for `service` announced by `node` (DNS subdomain, at most 253 bytes).
pub fn object_name(service: &str, node: &str) -> String {
    let mut name = format!("{service}-{node}");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// The ServiceAnnouncement for `key` announced by `node`.
pub fn object(key: &ServiceKey, node: &NodeName, r: &Report) -> ServiceAnnouncement {
    let mut obj = ServiceAnnouncement::new(
        &object_name(&key.name, node.as_str()),
        ServiceAnnouncementSpec {
            service_name: key.name.clone(),
            node: node.to_string(),
            protocol: AnnouncementProtocol::Layer2,
            interface: Some(r.interface.clone()),
            ips: r.ips.iter().cloned().collect(),
            peers: vec![],
            last_gratuitous_time: r
                .last_gratuitous
                .map(|t| Time(k8s_openapi::jiff::Timestamp::try_from(t).unwrap_or_default())),
        },
    );
    obj.metadata.namespace = Some(key.namespace.clone());
    obj.metadata.labels = Some(BTreeMap::from([
        (NODE_LABEL.to_owned(), node.to_string()),
        (SERVICE_LABEL.to_owned(), key.name.clone()),
        (PROTOCOL_LABEL.to_owned(), "layer2".to_owned()),
    ]));
    obj.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: key.name.clone(),
        uid: r.uid.clone(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }]);
    obj
}

/// Keeps the API in line with the latest desired reports until `desired` closes, then
/// deletes this node's reports.
pub async fn run(
    client: Client,
    node: NodeName,
    mut desired: watch::Receiver<BTreeMap<ServiceKey, Report>>,
    mut takeovers: mpsc::UnboundedReceiver<Takeover>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(node.to_string()),
        },
    );
    let mut written: BTreeMap<ServiceKey, Report> = BTreeMap::new();
    let mut retry = tokio::time::interval(std::time::Duration::from_secs(5));
    let mut deleted = std::pin::pin!(deletions(client.clone(), &node));
    loop {
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { break },
            Some(t) = takeovers.recv() => { event(&recorder, &node, &t).await; continue; }
            Some(key) = deleted.next() => {
                // Deleted by someone else (a user, or a speaker that believed it owned the IP
                // while cut off): written again if still wanted.
                if written.remove(&key).is_some() {
                    info!(service = %key, "our ServiceAnnouncement was deleted; rewriting it");
                }
            }
            _ = retry.tick() => {}
        }
        let want = desired.borrow_and_update().clone();
        sync(&client, &node, &want, &mut written).await;
    }
    // Graceful stop: our reports go; the heirs write theirs.
    sync(&client, &node, &BTreeMap::new(), &mut written).await;
}

/// The Services whose ServiceAnnouncement from `node` was deleted, as the API reports it
/// (watching only this node's layer-2 reports). Never ends: the watch retries with backoff.
fn deletions(client: Client, node: &NodeName) -> impl Stream<Item = ServiceKey> + use<> {
    let api: Api<ServiceAnnouncement> = Api::all(client);
    let config =
        watcher::Config::default().labels(&format!("{NODE_LABEL}={node},{PROTOCOL_LABEL}=layer2"));
    watcher(api, config)
        .default_backoff()
        .filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Delete(obj)) => Some(ServiceKey::new(
                    obj.metadata.namespace.unwrap_or_default(),
                    obj.spec.service_name,
                )),
                Ok(_) => None,
                Err(err) => {
                    debug!(error = %err, "watching our ServiceAnnouncements");
                    None
                }
            }
        })
}

async fn sync(
    client: &Client,
    node: &NodeName,
    want: &BTreeMap<ServiceKey, Report>,
    written: &mut BTreeMap<ServiceKey, Report>,
) {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (key, r) in want {
        if written.get(key) == Some(r) {
            continue;
        }
        let api: Api<ServiceAnnouncement> = Api::namespaced(client.clone(), &key.namespace);
        let obj = object(key, node, r);
        let name = object_name(&key.name, node.as_str());
        match api.patch(&name, &params, &Patch::Apply(&obj)).await {
            Ok(_) => {
                debug!(service = %key, "ServiceAnnouncement applied");
                let owners_changed = written.get(key).is_none_or(|w| w.owners != r.owners);
                written.insert(key.clone(), r.clone());
                if owners_changed {
                    remove_stale(&api, key, node, &r.owners).await;
                }
            }
            Err(err) => {
                warn!(service = %key, error = %err, "ServiceAnnouncement not applied; retrying")
            }
        }
    }
    let gone: Vec<ServiceKey> = written
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        let api: Api<ServiceAnnouncement> = Api::namespaced(client.clone(), &key.namespace);
        let name = object_name(&key.name, node.as_str());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                written.remove(&key);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                written.remove(&key);
            }
            Err(err) => {
                warn!(service = %key, error = %err, "ServiceAnnouncement not deleted; retrying")
            }
        }
    }
}

/// Deletes other nodes' layer-2 reports for `key` when those nodes own none of its IPs any
/// more (a speaker killed with SIGKILL cannot delete its own).
async fn remove_stale(
    api: &Api<ServiceAnnouncement>,
    key: &ServiceKey,
    me: &NodeName,
    owners: &BTreeSet<NodeName>,
) {
    let lp = ListParams::default().labels(&format!(
        "{SERVICE_LABEL}={},{PROTOCOL_LABEL}=layer2",
        key.name
    ));
    let Ok(list) = api.list(&lp).await else {
        return;
    };
    for obj in list.items {
        let n = NodeName::from(obj.spec.node.as_str());
        if n == *me || owners.contains(&n) {
            continue;
        }
        if let Some(name) = obj.metadata.name.as_deref() {
            info!(service = %key, node = %n, "removing a stale ServiceAnnouncement");
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
    }
}

async fn event(recorder: &Recorder, node: &NodeName, t: &Takeover) {
    let note = match &t.previous {
        Some(p) => format!(
            "{} announced from {node} on {} (was {p})",
            t.ip, t.interface
        ),
        None => format!("{} announced from {node} on {}", t.ip, t.interface),
    };
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(t.service.name.clone()),
        namespace: Some(t.service.namespace.clone()),
        uid: Some(t.uid.clone()),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "AnnouncingNodeChanged".into(),
        note: Some(note),
        action: "Announce".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&ev, &reference).await {
        warn!(service = %t.service, error = %err, "event not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_owned_labelled_and_named() {
        let key = ServiceKey::new("ns", "web");
        let r = Report {
            uid: "u-1".into(),
            interface: "eth0".into(),
            ips: BTreeSet::from(["192.0.2.193".to_string()]),
            owners: BTreeSet::from([NodeName::from("node-1")]),
            last_gratuitous: Some(SystemTime::UNIX_EPOCH),
        };
        let o = object(&key, &NodeName::from("node-1"), &r);
        assert_eq!(o.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(o.metadata.namespace.as_deref(), Some("ns"));
        let owner = &o.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "u-1")
        );
        assert_eq!(o.spec.protocol, AnnouncementProtocol::Layer2);
        assert_eq!(o.spec.ips, vec!["192.0.2.193".to_string()]);
        assert!(o.spec.last_gratuitous_time.is_some());
        assert_eq!(object_name(&"s".repeat(63), &"n".repeat(253)).len(), 253);
    }
}
