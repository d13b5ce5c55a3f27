//! The speaker's forwarding loop: announced IPs and the Service/EndpointSlice caches in, the
//! nftables table kept equal to the plan for them, removed on a clean stop.

use crate::k8s::{ForwardingPath, forward_inputs};
use crate::{
    ApplyKind, CounterReading, Flusher, ForwardError, ForwardMetrics, NftForwarder, ip_forwarding,
};
use ferrolb_core::forward::{Backends, StaleFlow, plan};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{error, info, warn};

/// A counter reading that took `t` is followed by at least this many times `t` without one, so
/// reading stays a small share of a CPU however many Services there are.
pub const COUNTER_READ_SPACING: u32 = 30;

/// How the forwarding loop behaves.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// This node's name (policy Local keeps only endpoints on it).
    pub node_name: String,
    /// The nftables table (family `inet`).
    pub table: String,
    /// How long to gather changes before applying them.
    pub debounce: Duration,
    /// Without a change notification, how often to recompute (a diff that finds nothing runs no `nft`).
    pub poll: Duration,
    /// After a failed apply, how long to wait before retrying.
    pub retry: Duration,
    /// How often to read the per-Service connection and byte counters back for the metrics, at
    /// the most: a reading that took `t` waits at least [`COUNTER_READ_SPACING`] × `t` before the
    /// next (reading 10,000 Services' counters costs `nft` ~0.7 s of CPU).
    pub counters: Duration,
}

impl RunSettings {
    /// Defaults for `node_name`: table `ferrolb`, 5 ms debounce, 1 s poll, 1 s retry, counters
    /// read every 10 s.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            table: "ferrolb".into(),
            debounce: Duration::from_millis(5),
            poll: Duration::from_secs(1),
            retry: Duration::from_secs(1),
            counters: Duration::from_secs(10),
        }
    }
}

/// What [`run`] reads.
#[derive(Debug)]
pub struct RunInputs<K> {
    /// The IPs this node announces (IP → the announcing Service).
    pub announced: watch::Receiver<BTreeMap<IpAddr, K>>,
    /// The Service cache.
    pub services: Store<Service>,
    /// The EndpointSlice cache.
    pub slices: Store<EndpointSlice>,
    /// Woken after cache changes, if the caller has one to spare (else [`RunSettings::poll`]).
    pub changed: Option<Arc<Notify>>,
}

/// One look at the inputs: the announced IPs and the two caches as they are now.
pub(crate) struct Snapshot {
    pub announced: BTreeSet<IpAddr>,
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
}

impl<K> RunInputs<K> {
    /// Waits until both caches have their first full list; false if `stop` came first.
    pub(crate) async fn ready(&self, stop: &mut (impl Future<Output = ()> + Unpin)) -> bool {
        tokio::select! {
            _ = stop => false,
            _ = async {
                let _ = self.services.wait_until_ready().await;
                let _ = self.slices.wait_until_ready().await;
            } => true,
        }
    }

    /// The announced IPs (marking them seen) and the caches' contents.
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            announced: self.announced.borrow_and_update().keys().copied().collect(),
            services: self.services.state(),
            slices: self.slices.state(),
        }
    }
}

/// Keeps the node's nftables table equal to the plan for the announced IPs until `stop`
/// resolves, then removes the table. Apply failures are logged, counted and retried.
pub async fn run<K: Send + Sync + 'static>(
    mut inputs: RunInputs<K>,
    settings: RunSettings,
    metrics: ForwardMetrics,
    stop: impl Future<Output = ()> + Send,
) {
    check_forwarding();
    tokio::pin!(stop);
    // Planning from half-filled caches would drop rules a previous run left for live traffic.
    if !inputs.ready(&mut stop).await {
        return;
    }
    let mut fwd = Some(NftForwarder::new(settings.table.clone()));
    // Stale UDP flows are flushed beside the loop: a flush walks the whole conntrack table.
    let (stale_tx, stale_rx) = mpsc::unbounded_channel();
    let flushing = tokio::spawn(flush_stale(
        fwd.as_ref().expect("just made").flusher(),
        stale_rx,
    ));
    let mut announced_open = true;
    let mut failing = false;
    let mut counters_read: Option<Instant> = None;
    let mut counters_every = settings.counters;
    let mut reading: Option<
        tokio::task::JoinHandle<(Result<CounterReading, ForwardError>, Duration)>,
    > = None;
    loop {
        let Snapshot {
            announced,
            services,
            slices,
        } = inputs.snapshot();
        let converted = forward_inputs(
            &announced,
            ForwardingPath::Kernel,
            services.iter().map(|s| &**s),
            slices.iter().map(|s| &**s),
        );
        for c in &converted {
            for s in &c.skipped {
                warn!(service = %c.service.key, skipped = ?s, "part of the Service cannot be forwarded");
            }
        }
        let inputs_now: Vec<_> = converted.into_iter().map(|c| c.service).collect();
        let planned = plan(&inputs_now, &settings.node_name);
        for c in &planned.conflicts {
            warn!(frontend = ?c.frontend, kept = %c.kept, dropped = %c.dropped, "two Services claim one VIP port");
        }
        metrics.set_endpoints(planned.plan.services.iter().map(|(k, s)| {
            let n: BTreeSet<_> = s
                .frontends
                .values()
                .flat_map(|b| match b {
                    Backends::Forward { backends, .. } => backends.as_slice(),
                    Backends::Reject(_) => &[],
                })
                .map(|a| a.ip())
                .collect();
            (k.namespace.clone(), k.name.clone(), n.len())
        }));
        let mut f = fwd.take().expect("forwarder is put back after each apply");
        let start = Instant::now();
        let (f, mut result) = tokio::task::spawn_blocking(move || {
            let r = f.apply(&planned.plan);
            (f, r)
        })
        .await
        .expect("apply task does not panic");
        if let Ok(r) = &mut result
            && !r.stale.is_empty()
        {
            let _ = stale_tx.send(std::mem::take(&mut r.stale));
        }
        // Counters are read beside the loop, so a reading never delays the next apply.
        if let Some(done) = reading.take_if(|r| r.is_finished()) {
            match done.await {
                Ok((Ok(c), took)) => {
                    metrics.observe_counters(&c);
                    counters_every = settings.counters.max(took * COUNTER_READ_SPACING);
                }
                Ok((Err(e), _)) => warn!(error = %e, "reading the forwarding counters failed"),
                Err(e) => warn!(error = %e, "reading the forwarding counters panicked"),
            }
            counters_read = Some(Instant::now());
        }
        let due = counters_read.is_none_or(|t| t.elapsed() >= counters_every);
        if reading.is_none() && due && result.is_ok() {
            let reader = f.counter_reader();
            reading = Some(tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                (reader.read(), t.elapsed())
            }));
        }
        fwd = Some(f);
        match result {
            Ok(r) if r.kind == ApplyKind::Unchanged => {}
            Ok(r) => {
                let kind = if r.kind == ApplyKind::Full {
                    "full"
                } else {
                    "incremental"
                };
                metrics.update(kind, true, r.elapsed);
                failing = false;
            }
            Err(e) => {
                metrics.update("unknown", false, start.elapsed());
                error!(error = %e, "applying forwarding rules failed; retrying");
                failing = true;
            }
        }
        let wait = if failing {
            settings.retry
        } else {
            settings.poll
        };
        tokio::select! {
            _ = &mut stop => break,
            r = inputs.announced.changed(), if announced_open => {
                if r.is_err() {
                    // The announcer is gone: keep forwarding what was last announced until stop.
                    announced_open = false;
                }
            }
            _ = notified(inputs.changed.as_deref()) => {}
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(settings.debounce).await;
    }
    // Flows of a table about to go need no flush.
    flushing.abort();
    let mut f = fwd.take().expect("forwarder present at stop");
    match tokio::task::spawn_blocking(move || f.remove()).await {
        Ok(Ok(())) => info!(table = %settings.table, "forwarding stopped; table removed"),
        Ok(Err(e)) => error!(error = %e, "removing the forwarding table failed"),
        Err(e) => error!(error = %e, "removing the forwarding table panicked"),
    }
}

/// Flushes the stale UDP flows of each apply, in order, one apply's at a time.
async fn flush_stale(flusher: Flusher, mut stale: mpsc::UnboundedReceiver<Vec<StaleFlow>>) {
    while let Some(flows) = stale.recv().await {
        let f = flusher.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || f.flush(&flows)).await {
            warn!(error = %e, "flushing stale UDP flows panicked");
        }
    }
}

async fn notified(changed: Option<&Notify>) {
    match changed {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Logs a clear error when the node does not route, which DNAT of non-local VIPs needs.
fn check_forwarding() {
    match ip_forwarding() {
        Ok(f) if f.ipv4 && f.ipv6 => info!("IP forwarding is on"),
        Ok(f) => error!(
            ipv4 = f.ipv4,
            ipv6 = f.ipv6,
            "IP forwarding is off: VIP traffic will not reach endpoints; set net.ipv4.ip_forward=1 and net.ipv6.conf.all.forwarding=1 on the node"
        ),
        Err(e) => error!(error = %e, "cannot read the IP forwarding sysctls"),
    }
}
