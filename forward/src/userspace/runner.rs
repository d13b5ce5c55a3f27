//! The userspace path's loop: Services annotated `ferrolb.io/forwarding: userspace` on the IPs
//! this node announces, planned like the kernel path, served by [`TcpProxy`] behind
//! [`Interceptor`]; on a clean stop the listeners close, connections get a grace period, and the
//! table, rules and routes are removed.

use super::annotations::{Selection, selection};
use super::intercept::{InterceptConfig, Intercepted, Interceptor};
use super::metrics::UserspaceMetrics;
use super::proxy::{ProxyFrontend, ProxySettings, TcpProxy};
use crate::RunInputs;
use crate::k8s::{ForwardingPath, forward_inputs, service_key};
use crate::runner::Snapshot;
use ferrolb_core::forward::{Protocol, ServiceKey, plan};
use ferrolb_core::proxy_protocol::Version;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;
use tracing::{error, info, warn};

/// How the userspace loop behaves.
#[derive(Debug, Clone)]
pub struct UserspaceSettings {
    /// This node's name (policy Local keeps only endpoints on it).
    pub node_name: String,
    /// Where the interception lives.
    pub intercept: InterceptConfig,
    /// The proxy's buffers, timeouts and source ports.
    pub proxy: ProxySettings,
    /// Without a change notification, how often to recompute.
    pub poll: Duration,
    /// On stop, how long open connections may run on before they are cut.
    pub stop_grace: Duration,
}

impl UserspaceSettings {
    /// Defaults for `node_name`: table `ferrolb-proxy`, 1 s poll, 5 s stop grace.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            intercept: InterceptConfig::default(),
            proxy: ProxySettings::default(),
            poll: Duration::from_secs(1),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// The proxy's frontends for the userspace Services in `services` on the `announced` IPs, and
/// the log lines for annotations that were not used (Service, message).
pub fn userspace_frontends<'a>(
    announced: &BTreeSet<IpAddr>,
    services: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Service>,
    slices: impl IntoIterator<Item = &'a k8s_openapi::api::discovery::v1::EndpointSlice>,
    node_name: &str,
) -> (
    BTreeMap<ferrolb_core::forward::Frontend, ProxyFrontend>,
    Vec<(ServiceKey, String)>,
) {
    let mut chosen: BTreeMap<ServiceKey, Option<Version>> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut userspace = Vec::new();
    for svc in services {
        let Some(key) = service_key(svc) else {
            continue;
        };
        let (sel, bad) = selection(svc);
        if let Some(bad) = bad {
            notes.push((key.clone(), bad.to_string()));
        }
        if let Selection::Userspace { proxy_protocol } = sel {
            chosen.insert(key, proxy_protocol);
            userspace.push(svc);
        }
    }
    let converted = forward_inputs(announced, ForwardingPath::Userspace, userspace, slices);
    let mut inputs = Vec::new();
    for c in converted {
        if c.service.ports.iter().any(|p| p.protocol == Protocol::Sctp) {
            notes.push((
                c.service.key.clone(),
                "the userspace path forwards TCP and UDP; the Service's SCTP ports are not forwarded".into(),
            ));
        }
        inputs.push(c.service);
    }
    let planned = plan(&inputs, node_name);
    for c in &planned.conflicts {
        notes.push((
            c.dropped.clone(),
            format!("VIP port {:?} is claimed by {}", c.frontend, c.kept),
        ));
    }
    let mut out = BTreeMap::new();
    for (key, sp) in planned.plan.services {
        let pp = chosen.get(&key).copied().flatten();
        for (f, backends) in sp.frontends {
            if f.protocol != Protocol::Sctp {
                out.insert(
                    f,
                    ProxyFrontend {
                        key: key.clone(),
                        backends,
                        allowed: sp.allowed_sources.clone(),
                        proxy_protocol: pp,
                    },
                );
            }
        }
    }
    (out, notes)
}

/// Serves the userspace Services on the announced IPs until `stop` resolves, then closes the
/// listeners, lets connections run for [`UserspaceSettings::stop_grace`], and removes the table,
/// rules and routes. Leftovers of an earlier run are removed at start.
pub async fn run_userspace<K: Send + Sync + 'static>(
    mut inputs: RunInputs<K>,
    settings: UserspaceSettings,
    metrics: UserspaceMetrics,
    stop: impl Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    if !inputs.ready(&mut stop).await {
        return;
    }
    // A crashed earlier run may have left its table, rules and routes: start from none, also
    // when no Service asks for the userspace path.
    let mut i = Interceptor::new(settings.intercept.clone());
    let (i, r) = tokio::task::spawn_blocking(move || {
        let r = i.remove();
        (i, r)
    })
    .await
    .expect("intercept task does not panic");
    if let Err(e) = r {
        warn!(error = %e, "removing an earlier run's userspace interception failed");
    }
    let mut interceptor = Some(i);
    let mut proxy = TcpProxy::new(settings.proxy.clone(), metrics);
    let mut logged: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
    let mut announced_open = true;
    let mut installed = false;
    loop {
        let Snapshot {
            announced,
            services,
            slices,
        } = inputs.snapshot();
        let (wanted, notes) = userspace_frontends(
            &announced,
            services.iter().map(|s| &**s),
            slices.iter().map(|s| &**s),
            &settings.node_name,
        );
        let mut now: BTreeMap<ServiceKey, BTreeSet<String>> = BTreeMap::new();
        for (key, msg) in notes {
            if !logged.get(&key).is_some_and(|m| m.contains(&msg)) {
                warn!(service = %key, "{msg}");
            }
            now.entry(key).or_default().insert(msg);
        }
        logged = now;
        let listening = proxy.apply(&wanted);
        let set: BTreeSet<Intercepted> = listening
            .iter()
            .map(|f| (f.vip, f.protocol, f.port))
            .collect();
        // Nothing to intercept and nothing installed: touch no kernel state at all.
        if !set.is_empty() || installed {
            let mut i = interceptor.take().expect("put back after each apply");
            let (i, r) = tokio::task::spawn_blocking(move || {
                let r = i.apply(&set);
                (i, r)
            })
            .await
            .expect("intercept task does not panic");
            interceptor = Some(i);
            match r {
                Ok(true) => {
                    installed = true;
                    info!(
                        frontends = listening.len(),
                        "userspace interception updated"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    error!(error = %e, "installing the userspace interception failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            r = inputs.announced.changed(), if announced_open => {
                if r.is_err() {
                    announced_open = false;
                }
            }
            _ = notified(inputs.changed.as_deref()) => {}
            _ = tokio::time::sleep(settings.poll) => {}
        }
    }
    proxy.shutdown(settings.stop_grace).await;
    let mut i = interceptor.take().expect("present at stop");
    match tokio::task::spawn_blocking(move || i.remove()).await {
        Ok(Ok(())) => info!("userspace forwarding stopped; table, rules and routes removed"),
        Ok(Err(e)) => error!(error = %e, "removing the userspace interception failed"),
        Err(e) => error!(error = %e, "removing the userspace interception panicked"),
    }
}

async fn notified(changed: Option<&tokio::sync::Notify>) {
    match changed {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}
