//! The kubelet loop: clean up after a previous run, keep the Node alive, and run one
//! worker per Pod bound to this node.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::net;
use crate::node;
use crate::pod::{self, Msg, Shared};
use crate::runtime::{self, Record};

/// Removes what a previous kubelet of this node left: processes and namespaces recorded
/// under the state dir, and any of this node's pod namespaces. Pods still in the API are
/// started again from scratch, like after a node reboot.
pub async fn clean_leftovers(sh: &Shared) {
    if let Ok(entries) = std::fs::read_dir(&sh.pods_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let record: Record = std::fs::read(runtime::record_path(&path))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            info!(pod = %record.pod, dir = %path.display(), "cleaning up after the previous kubelet");
            runtime::clean_record(&record, &sh.bin_dir).await;
            if let Err(e) = std::fs::remove_dir_all(&path) {
                warn!(dir = %path.display(), error = %e, "could not remove leftover pod state");
            }
        }
    }
    for ns in net::list(sh.node.plan).await {
        info!(netns = %ns, "removing leftover pod namespace");
        net::delete(&ns).await;
    }
}

struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
}

/// Runs until `shutdown` resolves, then stops every pod and returns.
pub async fn run(sh: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    clean_leftovers(&sh).await;
    let heartbeat = tokio::spawn(node::run(sh.client.clone(), sh.node.clone()));

    let pods: Api<Pod> = Api::all(sh.client.clone());
    let selector = format!("spec.nodeName={}", sh.node.name);
    // Back off on errors (API server not up yet, restarts) instead of retrying in a loop.
    let mut stream = watcher(pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    // Pods whose worker already finished (deleted them or saw them go): late events for
    // them must not start them again.
    let mut done: HashSet<String> = HashSet::new();
    let mut seen_in_relist: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(joined) = tasks.join_next() => {
                if let Ok(uid) = joined {
                    workers.remove(&uid);
                    done.insert(uid);
                }
            }
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(watcher::Event::Init) => seen_in_relist.clear(),
                    Ok(watcher::Event::InitApply(p)) => {
                        if let Some(uid) = &p.metadata.uid {
                            seen_in_relist.insert(uid.clone());
                        }
                        dispatch(&sh, p, &mut workers, &done, &mut tasks);
                    }
                    Ok(watcher::Event::InitDone) => {
                        // Pods deleted while the watch was down.
                        for (uid, h) in &workers {
                            if !seen_in_relist.contains(uid) {
                                let _ = h.tx.send(Msg::Gone);
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(p)) => dispatch(&sh, p, &mut workers, &done, &mut tasks),
                    Ok(watcher::Event::Delete(p)) => {
                        if let Some(h) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = h.tx.send(Msg::Gone);
                        }
                    }
                    Err(e) => warn!(error = %e, "pod watch error"),
                }
            }
        }
    }

    info!(pods = workers.len(), "stopping all pods");
    for h in workers.values() {
        let _ = h.tx.send(Msg::Shutdown);
    }
    while tasks.join_next().await.is_some() {}
    heartbeat.abort();
}

fn dispatch(
    sh: &Arc<Shared>,
    pod: Pod,
    workers: &mut HashMap<String, Handle>,
    done: &HashSet<String>,
    tasks: &mut JoinSet<String>,
) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    if let Some(h) = workers.get(&uid) {
        let _ = h.tx.send(Msg::Update(Box::new(pod)));
        return;
    }
    if done.contains(&uid) {
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    workers.insert(uid.clone(), Handle { tx });
    let sh = Arc::clone(sh);
    tasks.spawn(async move {
        pod::run(sh, pod, rx).await;
        uid
    });
}
