//! The reconciler: whole stores in, the allocator in the middle, the differences written out.
//!
//! Allocation is global (one Service's IP depends on every other's), so instead of one
//! reconcile per object this recomputes every Service on each change, which is cheap in
//! memory (no API calls) and writes only what differs from what the Service shows. A new
//! leader starts from an empty allocator, and the first pass rebuilds it from the Services'
//! status, holders first: restarts and failovers are the ordinary code path.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::IPAddressPool;
use ferrolb_core::LabelSelector;
use ferrolb_core::alloc::{Allocator, Pool, PoolsReport, ServiceKey};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::convert::{self, Selection};
use crate::error::Error;
use crate::metrics::ControllerMetrics;
use crate::status::{self, IpMode, PoolView, ServiceView};

/// Changes arriving within this window are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// A pass after a failed write.
const RETRY: Duration = Duration::from_secs(2);
/// A pass even when nothing changed, in case a write was lost.
const RESYNC: Duration = Duration::from_secs(60);
/// Writes in flight at once.
const CONCURRENCY: usize = 32;

/// Everything a pass reads and writes through.
pub struct Context {
    /// The client, for writes.
    pub client: kube::Client,
    /// Services, Namespaces and pools, as the watches see them.
    pub services: Store<Service>,
    /// Namespaces, for their labels.
    pub namespaces: Store<Namespace>,
    /// IPAddressPools.
    pub pools: Store<IPAddressPool>,
    /// Which Services are ours.
    pub selection: Selection,
    /// `ipMode` to write.
    pub ip_mode: IpMode,
    /// Only pools with this label are used (`--pool-selector`).
    pub pool_selector: Option<LabelSelector>,
    /// Publishes Events.
    pub recorder: crate::events::Publisher,
    /// The controller's metrics.
    pub metrics: ControllerMetrics,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("selection", &self.selection)
            .field("ip_mode", &self.ip_mode)
            .finish_non_exhaustive()
    }
}

/// Runs passes on every change while this replica leads, until `stop`.
///
/// A pass is in-memory work only: it queues the writes it finds, and this loop keeps up to
/// [`CONCURRENCY`] of them in flight while passes go on. A Service created while writes are
/// in flight is planned by the next pass (one debounce later), not after the slowest write.
pub async fn run(
    ctx: Context,
    changed: Arc<Notify>,
    mut leader: watch::Receiver<bool>,
    stop: ferrolb_runtime::Shutdown,
) {
    for (store_ready, what) in [
        (ctx.services.wait_until_ready().await, "services"),
        (ctx.namespaces.wait_until_ready().await, "namespaces"),
        (ctx.pools.wait_until_ready().await, "ipaddresspools"),
    ] {
        if store_ready.is_err() {
            warn!(resource = what, "watch stopped before its first sync");
            return;
        }
    }
    let mut leading: Option<Leading> = None;
    // Writes (a Service's status and annotation in one request, or a pool's status), at most
    // CONCURRENCY at once; then each Service's Event, queued behind them (see `Events`).
    let mut inflight = FuturesUnordered::new();
    let mut events = Events::default();
    // Without election the sender is gone and `changed()` fails at once: stop asking.
    let mut election_open = true;
    // When the next pass runs: soon after a change, else a resync (or retry) later.
    let mut pass_due: Option<Instant> = None;
    let mut idle_until = Instant::now() + RESYNC;
    // Passes are spaced by at least their own duration, so a stream of watch events
    // (our own writes echo back) cannot keep the loop computing instead of writing.
    let mut earliest = Instant::now();
    let mut last_write = Instant::now();
    ctx.metrics.set_leader(*leader.borrow());
    loop {
        if let Some(state) = leading.as_mut()
            && *leader.borrow()
        {
            while inflight.len() < CONCURRENCY {
                let Some(write) = state.start_next() else {
                    break;
                };
                inflight.push(execute(&ctx, write));
                last_write = Instant::now();
            }
            let quiet = inflight.is_empty()
                && state.queue.is_empty()
                && Instant::now() >= last_write + EVENT_HOLD;
            events.start(&ctx, quiet);
        }
        // When waiting Events may go: the writes pause, or the oldest has waited long enough.
        let events_due = events.due(last_write);
        let deadline = pass_due.unwrap_or(idle_until);
        tokio::select! {
            _ = changed.notified() => {
                pass_due.get_or_insert_with(|| (Instant::now() + DEBOUNCE).max(earliest));
            }
            result = leader.changed(), if election_open => {
                if result.is_err() {
                    election_open = false;
                    continue;
                }
                let is_leader = *leader.borrow_and_update();
                ctx.metrics.set_leader(is_leader);
                if !is_leader {
                    // Writes in flight are dropped (cancelled) with the state.
                    inflight = FuturesUnordered::new();
                    events = Events::default();
                    if leading.take().is_some() {
                        info!("not leading: stopped writing");
                    }
                }
                pass_due.get_or_insert_with(|| Instant::now() + DEBOUNCE);
            }
            Some(mut done) = inflight.next(), if !inflight.is_empty() => {
                if let Done::Service { event, .. } = &mut done {
                    events.queue(event.take());
                }
                if let Some(state) = leading.as_mut()
                    && state.finish(&ctx, done) > 0
                {
                    // The failed write is planned again by the next pass.
                    idle_until = idle_until.min(Instant::now() + RETRY);
                }
            }
            Some(()) = events.inflight.next(), if !events.inflight.is_empty() => {}
            _ = tokio::time::sleep_until(events_due.unwrap_or(deadline)), if events_due.is_some() => {}
            _ = tokio::time::sleep_until(deadline) => {
                pass_due = None;
                let is_leader = *leader.borrow();
                ctx.metrics.set_leader(is_leader);
                if !is_leader {
                    idle_until = Instant::now() + RESYNC;
                    continue;
                }
                let state = leading.get_or_insert_with(|| {
                    info!("leading: rebuilding the allocator from the Services' status");
                    Leading::default()
                });
                let started = Instant::now();
                state.pass(&ctx);
                let elapsed = started.elapsed();
                debug!(?elapsed, queued = state.queue.len(), in_flight = inflight.len(), "pass done");
                earliest = Instant::now() + elapsed;
                idle_until = Instant::now() + RESYNC;
            }
            _ = stop.wait() => return,
        }
    }
}

/// What only the leader keeps: the allocator and what it has written lately.
#[derive(Debug, Default)]
struct Leading {
    alloc: Allocator,
    pools: Option<Vec<Pool>>,
    report: PoolsReport,
    /// Services the allocator may hold IPs for.
    known: HashSet<ServiceKey>,
    /// Per Service: what was written, and the resourceVersions it was based on and produced
    /// (status, then annotation). A store showing one of them has not seen all our writes yet,
    /// so they are not made again: without the status write's own version, a pass seeing
    /// the status but not yet the annotation wrote the annotation a second time.
    written: HashMap<ServiceKey, Written>,
    /// The same for pools.
    written_pools: HashMap<String, (String, ferrolb_api::IPAddressPoolStatus)>,
    pool_names: HashSet<String>,
    /// UIDs of Services seen as ours during this leadership.
    seen_ours: HashSet<String>,
    /// Writes planned by the last pass and not started yet (each pass replaces them).
    queue: VecDeque<Write>,
    /// Services and pools with a write in flight: passes leave them alone until it ends.
    busy: HashSet<ServiceKey>,
    busy_pools: HashSet<String>,
    /// Services that hold what they should and show it, by fingerprint of their name, with a
    /// fingerprint of the version seen: while neither the Service, the pools nor the
    /// Namespaces' labels change, its outcome cannot change (a holder is never moved for
    /// another Service), so passes skip it. Without this every new Service cost a pass over
    /// all of them: O(n²) CPU in a burst, and the p99 of create-to-IP followed.
    settled: HashMap<u64, u64>,
    /// Fingerprint of every Namespace's labels at the last pass.
    ns_labels_seen: u64,
}

/// What the last write to a Service said, and the versions of the Service it knows, as
/// 64-bit fingerprints: this is kept for every Service (~50 bytes instead of ~500).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    /// The version the write was planned on, then the versions each request returned.
    versions: [Option<u64>; 3],
    want: u64,
}

impl Written {
    fn new(versions: &[String], want: &ServiceView) -> Written {
        let mut out = [None; 3];
        // Planned-on, status, annotation: never more than three.
        for (slot, v) in out.iter_mut().zip(versions) {
            *slot = Some(fingerprint(v.as_str()));
        }
        Written {
            versions: out,
            want: fingerprint(want),
        }
    }

    /// Whether the Service at `version` has not seen all of our write of `want`.
    fn covers(&self, version: &str, want: &ServiceView) -> bool {
        self.want == fingerprint(want) && self.versions.contains(&Some(fingerprint(version)))
    }
}

/// The Service's identity and version, as one fingerprint.
fn version_stamp(svc: &Service) -> u64 {
    fingerprint(&(
        svc.metadata.uid.as_deref(),
        svc.metadata.resource_version.as_deref(),
    ))
}

/// A 64-bit fingerprint (SipHash with fixed keys: the same in every pass).
fn fingerprint<T: std::hash::Hash + ?Sized>(x: &T) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// A write the loop runs concurrently with others and with later passes.
enum Write {
    Service(Box<ServiceWrite>),
    Pool(PoolWrite),
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Service(w) => write!(f, "Service({})", w.key),
            Write::Pool(w) => write!(f, "Pool({})", w.name),
        }
    }
}

/// How a write ended.
enum Done {
    Service {
        key: ServiceKey,
        /// The version planned on, then those our requests produced.
        versions: Vec<String>,
        want: ServiceView,
        errors: Vec<Error>,
        /// The Event to publish now that the write stands (taken by the loop).
        event: Option<Box<PendingEvent>>,
    },
    Pool {
        name: String,
        rv: String,
        want: ferrolb_api::IPAddressPoolStatus,
        result: Result<(), Error>,
    },
}

/// An Event about a written Service, waiting for its turn.
struct PendingEvent {
    event: Event,
    regarding: k8s_openapi::api::core::v1::ObjectReference,
    key: ServiceKey,
    queued_at: Instant,
}

/// Events about written Services. They are created once the writes that make IPs visible
/// pause: no write queued or in flight and none started for [`EVENT_HOLD`]; then up to
/// [`CONCURRENCY`] at once. During a long burst, one at a time once the oldest has waited
/// [`EVENT_MAX_WAIT`]. On a busy API server every Event is a write that a new Service's
/// status would otherwise get, so in a burst of new Services the API server's write rate goes
/// to what `kubectl get svc` shows first (client-go's recorders are asynchronous too). A lost
/// Event is logged and counted, never retried.
#[derive(Default)]
struct Events {
    waiting: VecDeque<Box<PendingEvent>>,
    inflight: FuturesUnordered<futures::future::BoxFuture<'static, ()>>,
}

/// How long the writes must pause before queued Events go out (see [`Events`]).
const EVENT_HOLD: Duration = Duration::from_millis(250);
/// The longest an Event waits for a pause in the writes (see [`Events`]).
const EVENT_MAX_WAIT: Duration = Duration::from_secs(10);

impl Events {
    /// When the loop must look again at Events that wait with none in flight: at the end of
    /// the hold after `last_write`, or when the oldest has waited long enough.
    fn due(&self, last_write: Instant) -> Option<Instant> {
        if !self.inflight.is_empty() {
            return None; // its completion wakes the loop
        }
        let oldest = self.waiting.front()?.queued_at;
        let starve_at = oldest + EVENT_MAX_WAIT;
        let hold_end = last_write + EVENT_HOLD;
        Some(if Instant::now() < hold_end {
            hold_end.min(starve_at)
        } else {
            starve_at
        })
    }

    /// Queues `pending`, if any.
    fn queue(&mut self, pending: Option<Box<PendingEvent>>) {
        self.waiting.extend(pending);
    }

    /// Starts queued Events: up to [`CONCURRENCY`] when the writes are `quiet`, else one
    /// that has waited [`EVENT_MAX_WAIT`].
    fn start(&mut self, ctx: &Context, quiet: bool) {
        let starved = self
            .waiting
            .front()
            .is_some_and(|p| p.queued_at.elapsed() >= EVENT_MAX_WAIT);
        let limit = match (quiet, starved) {
            (true, _) => CONCURRENCY,
            (false, true) => 1,
            (false, false) => 0,
        };
        while self.inflight.len() < limit {
            let Some(p) = self.waiting.pop_front() else {
                break;
            };
            let (recorder, metrics) = (ctx.recorder.clone(), ctx.metrics.clone());
            self.inflight.push(Box::pin(async move {
                if let Err(source) = recorder.publish(&p.event, &p.regarding).await {
                    // The allocation stands; a lost Event is not worth another write.
                    let err = Error::Event {
                        key: p.key.to_string(),
                        source,
                    };
                    metrics.error(err.metric_label());
                    warn!(error = %err, "event not published");
                }
            }));
        }
    }
}

/// A pool status write.
#[derive(Debug)]
struct PoolWrite {
    name: String,
    rv: String,
    want: ferrolb_api::IPAddressPoolStatus,
}

async fn execute(ctx: &Context, write: Write) -> Done {
    match write {
        Write::Service(w) => {
            let w = *w;
            let mut versions = w.versions;
            let (errors, event) = match write_service(ctx, &w.svc, &w.key, &w.want).await {
                Ok(written) => {
                    versions.extend(written);
                    let event = w.event.map(|event| {
                        // An Event marks a new outcome: count it as the metrics' allocation
                        // or refusal.
                        match &w.want.condition {
                            Some((s, _, _)) if s == "True" => ctx.metrics.allocated(),
                            Some((_, reason, _)) => ctx.metrics.failed(reason),
                            None => {}
                        }
                        Box::new(PendingEvent {
                            event,
                            regarding: w.svc.object_ref(&()),
                            key: w.key.clone(),
                            queued_at: Instant::now(),
                        })
                    });
                    (Vec::new(), event)
                }
                Err(err) => (vec![err], None),
            };
            if errors.is_empty() {
                info!(
                    service = %w.key,
                    ips = %ips_text(&w.want.ingress),
                    condition = ?w.want.condition.as_ref().map(|c| (&c.0, &c.1)),
                    "service updated"
                );
            }
            Done::Service {
                key: w.key,
                versions,
                want: w.want,
                errors,
                event,
            }
        }
        Write::Pool(w) => {
            let api: Api<IPAddressPool> = Api::all(ctx.client.clone());
            let result = status::write_pool_status(&api, &w.name, &w.want).await;
            Done::Pool {
                name: w.name,
                rv: w.rv,
                want: w.want,
                result,
            }
        }
    }
}

/// One write to a Service.
struct ServiceWrite {
    svc: Arc<Service>,
    key: ServiceKey,
    want: ServiceView,
    event: Option<Event>,
    /// The Service's version this write is planned on, then those its requests return.
    versions: Vec<String>,
}

impl ServiceWrite {
    fn new(svc: Arc<Service>, key: ServiceKey, want: ServiceView, event: Option<Event>) -> Self {
        let versions = svc.metadata.resource_version.iter().cloned().collect();
        Self {
            svc,
            key,
            want,
            event,
            versions,
        }
    }
}

impl Leading {
    /// Recomputes everything and replaces the queue with the writes that differ.
    fn pass(&mut self, ctx: &Context) {
        let pool_objects: Vec<_> = ctx
            .pools
            .state()
            .into_iter()
            .filter(|p| {
                ctx.pool_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(p.labels()))
            })
            .collect();
        let mut pools = Vec::new();
        let mut invalid_pools = HashMap::new();
        for p in &pool_objects {
            match convert::pool(p) {
                Ok(pool) => pools.push(pool),
                Err(why) => {
                    invalid_pools.insert(p.name_any(), why);
                }
            }
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        if self.pools.as_ref() != Some(&pools) {
            let report = self.alloc.set_pools(pools.clone());
            if !report.invalidated.is_empty() {
                info!(services = ?report.invalidated.iter().map(ToString::to_string).collect::<Vec<_>>(),
                      "pool change: these Services lost addresses and are reassigned");
            }
            self.report = report;
            self.pools = Some(pools);
            self.settled.clear();
        }

        let services = self.plan_services(ctx);
        let pools = self.plan_pools(ctx, &pool_objects, &invalid_pools);
        self.queue = services
            .into_iter()
            .map(|w| Write::Service(Box::new(w)))
            .chain(pools.into_iter().map(Write::Pool))
            .collect();
    }

    /// The next queued write, now marked as in flight.
    fn start_next(&mut self) -> Option<Write> {
        let write = self.queue.pop_front()?;
        match &write {
            Write::Service(w) => self.busy.insert(w.key.clone()),
            Write::Pool(w) => self.busy_pools.insert(w.name.clone()),
        };
        Some(write)
    }

    /// Records how a write ended; returns how many of its requests failed.
    fn finish(&mut self, ctx: &Context, done: Done) -> usize {
        match done {
            Done::Service {
                key,
                versions,
                want,
                errors,
                ..
            } => self.finish_service(&ctx.metrics, key, versions, want, errors),
            Done::Pool {
                name,
                rv,
                want,
                result,
            } => {
                self.busy_pools.remove(&name);
                match result {
                    Ok(()) => {
                        if self.pool_names.contains(&name) {
                            self.written_pools.insert(name, (rv, want));
                        }
                        0
                    }
                    Err(err) => {
                        ctx.metrics.error(err.metric_label());
                        if !err.is_benign() {
                            warn!(error = %err, "pool status write failed; retrying");
                        }
                        self.written_pools.remove(&name);
                        1
                    }
                }
            }
        }
    }

    /// Records how a write to a Service ended; returns how many of its requests failed.
    fn finish_service(
        &mut self,
        metrics: &ControllerMetrics,
        key: ServiceKey,
        versions: Vec<String>,
        want: ServiceView,
        errors: Vec<Error>,
    ) -> usize {
        self.busy.remove(&key);
        if errors.is_empty() {
            self.written.insert(key, Written::new(&versions, &want));
            return 0;
        }
        let failures = errors.len();
        for err in errors {
            metrics.error(err.metric_label());
            if err.is_benign() {
                debug!(error = %err, "write raced with a change; the next pass redoes it");
            } else {
                warn!(error = %err, "write failed; retrying");
            }
        }
        self.written.remove(&key);
        failures
    }

    /// Runs the allocator over every Service and returns the writes that differ.
    fn plan_services(&mut self, ctx: &Context) -> Vec<ServiceWrite> {
        let ns_labels: HashMap<String, BTreeMap<String, String>> = ctx
            .namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect();
        let empty = BTreeMap::new();
        let ns_seen = fingerprint(&ns_labels.iter().collect::<BTreeMap<_, _>>());
        if ns_seen != self.ns_labels_seen {
            self.settled.clear();
            self.ns_labels_seen = ns_seen;
        }

        let services = ctx.services.state();
        let mut ours = Vec::new();
        let mut writes = Vec::new();
        // Borrowed from `services` for the pass: this loop copies no key or UID per Service
        // (at 5,000 Services those copies were megabytes of peak memory on every pass).
        let mut live: HashSet<(&str, &str)> = HashSet::new();
        let mut uids: HashSet<&str> = HashSet::new();
        for svc in &services {
            let uid = svc.metadata.uid.as_deref();
            uids.extend(uid);
            let deleting = svc.metadata.deletion_timestamp.is_some();
            if ctx.selection.is_ours(svc) && !deleting {
                live.insert(name_of(svc));
                if let Some(uid) = uid
                    && !self.seen_ours.contains(uid)
                {
                    self.seen_ours.insert(uid.to_owned());
                }
                if self.settled.get(&fingerprint(&name_of(svc))) != Some(&version_stamp(svc)) {
                    ours.push(svc.clone());
                }
            } else if !deleting {
                let have = status::observed(svc);
                // Only what we wrote is removed: marks on a LoadBalancer of another class
                // are cleared only if we saw it as ours (another FerroLB instance with its
                // own class writes the same marks); a Service that is no longer a
                // LoadBalancer at all is nobody's any more.
                let was_ours = uid.is_some_and(|uid| self.seen_ours.contains(uid));
                let not_lb =
                    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer");
                if have.has_our_marks() && (was_ours || not_lb) {
                    let key = convert::service_key(svc);
                    let want = ServiceView::default();
                    if !self.busy.contains(&key) && !self.already_written(svc, &key, &want) {
                        let event = (!have.ingress.is_empty()).then(|| Event {
                            type_: EventType::Normal,
                            reason: "IPReleased".to_owned(),
                            note: Some(format!(
                                "released {}: the Service is no longer a LoadBalancer of class {}",
                                ips_text(&have.ingress),
                                ctx.selection.class
                            )),
                            action: "Release".to_owned(),
                            secondary: None,
                        });
                        writes.push(ServiceWrite::new(svc.clone(), key, want, event));
                    }
                }
            }
        }
        self.seen_ours.retain(|uid| uids.contains(uid.as_str()));
        // Freed first (deleted, no longer a LoadBalancer, other class), so pending Services
        // can have their addresses in this same pass.
        let gone: Vec<ServiceKey> = self
            .known
            .iter()
            .filter(|k| !live.contains(&(k.namespace.as_str(), k.name.as_str())))
            .cloned()
            .collect();
        for key in gone {
            self.settled
                .remove(&fingerprint(&(key.namespace.as_str(), key.name.as_str())));
            self.alloc.release(&key);
            self.known.remove(&key);
            self.written.remove(&key);
        }
        // Holders before the rest, so nobody takes an address whose holder is not back yet;
        // then oldest first, so the first come is the first served.
        ours.sort_by(|a, b| rank(a).cmp(&rank(b)));
        for svc in ours {
            let key = convert::service_key(&svc);
            let labels = ns_labels.get(&key.namespace).unwrap_or(&empty);
            let outcome =
                convert::service_request(&svc, labels).and_then(|req| self.alloc.assign(&req));
            let have = status::observed(&svc);
            let (want, event) = match outcome {
                Ok(assignment) => {
                    self.known.insert(key.clone());
                    let want = status::allocated(&assignment.ips, ctx.ip_mode);
                    let event = (ingress_addrs(&have) != assignment.addresses()).then(|| {
                        let assigned = want.condition.as_ref().map(|c| c.2.clone()).unwrap_or_default();
                        let note = if have.ingress.is_empty() {
                            assigned
                        } else {
                            format!(
                                "{} no longer usable by this Service (pool or request changed); {assigned}",
                                ips_text(&have.ingress)
                            )
                        };
                        Event {
                            type_: EventType::Normal,
                            reason: "IPAllocated".to_owned(),
                            note: Some(note),
                            action: "Allocate".to_owned(),
                            secondary: None,
                        }
                    });
                    (want, event)
                }
                Err(err) => {
                    // `assign` has already released anything the Service held.
                    self.alloc.release(&key);
                    self.known.remove(&key);
                    let message = err.to_string();
                    let want = status::failed(err.reason(), &message);
                    let event = (have.condition != want.condition || !have.ingress.is_empty())
                        .then(|| {
                            let note = if have.ingress.is_empty() {
                                message.clone()
                            } else {
                                format!("released {}: {message}", ips_text(&have.ingress))
                            };
                            Event {
                                type_: EventType::Warning,
                                reason: "AllocationFailed".to_owned(),
                                note: Some(note),
                                action: "Allocate".to_owned(),
                                secondary: None,
                            }
                        });
                    (want, event)
                }
            };
            let id = fingerprint(&name_of(&svc));
            if have == want && self.known.contains(&key) {
                self.settled.insert(id, version_stamp(&svc));
            } else {
                self.settled.remove(&id);
            }
            if have == want || self.busy.contains(&key) || self.already_written(&svc, &key, &want) {
                continue;
            }
            writes.push(ServiceWrite::new(svc, key, want, event));
        }
        writes
    }

    /// Whether we wrote `want` and the store still shows a version from before our last
    /// request landed (the one we planned on, or one of our own writes' but the last).
    fn already_written(&self, svc: &Service, key: &ServiceKey, want: &ServiceView) -> bool {
        match (self.written.get(key), &svc.metadata.resource_version) {
            (Some(w), Some(now)) => w.covers(now, want),
            _ => false,
        }
    }

    /// Updates the pool metrics and returns the pool status writes that differ.
    fn plan_pools(
        &mut self,
        ctx: &Context,
        pool_objects: &[Arc<IPAddressPool>],
        invalid: &HashMap<String, String>,
    ) -> Vec<PoolWrite> {
        let mut writes = Vec::new();
        let mut names = HashSet::new();
        for pool in pool_objects {
            let name = pool.name_any();
            names.insert(name.clone());
            let counts = self.alloc.pool_counts(&name);
            ctx.metrics
                .pool(&name, "ipv4", counts.assigned_v4, counts.available_v4);
            ctx.metrics
                .pool(&name, "ipv6", counts.assigned_v6, counts.available_v6);
            let view = PoolView {
                counts,
                invalid: invalid.get(&name).cloned(),
                overlapping: self
                    .report
                    .overlapping_with(&name)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            };
            let want = status::desired_pool_status(pool, &view);
            if !status::pool_status_differs(pool.status.as_ref(), &want) {
                continue;
            }
            let rv = pool.resource_version().unwrap_or_default();
            if let Some((written_rv, wrote)) = self.written_pools.get(&name)
                && *written_rv == rv
                && !status::pool_status_differs(Some(wrote), &want)
            {
                continue;
            }
            if self.busy_pools.contains(&name) {
                continue;
            }
            writes.push(PoolWrite { name, rv, want });
        }
        for gone in self.pool_names.difference(&names) {
            ctx.metrics.forget_pool(gone);
            self.written_pools.remove(gone);
        }
        self.pool_names = names;
        writes
    }
}

/// The status (what `kubectl get svc` shows) and the pool annotation, in one request (passes
/// plan a write only where the Service shows something else); a second request only when the
/// annotation did not take (see [`status::annotation_missed`]). Returns the versions the
/// requests made.
async fn write_service(
    ctx: &Context,
    svc: &Service,
    key: &ServiceKey,
    want: &ServiceView,
) -> Result<Vec<String>, Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    ctx.metrics.service_write("status");
    let written = status::write_service_status(&api, svc, want).await?;
    let mut versions: Vec<String> = written.metadata.resource_version.iter().cloned().collect();
    if status::annotation_missed(&written, want) {
        ctx.metrics.service_write("annotation");
        let version =
            status::write_pool_annotation(&api, &written, want.pool_annotation.as_deref()).await?;
        versions.extend(version);
    }
    Ok(versions)
}

/// The order of a pass: holders first, then oldest first, then by name.
fn rank(s: &Service) -> (bool, Option<k8s_openapi::jiff::Timestamp>, (&str, &str)) {
    (
        !holds_ip(s),
        s.metadata.creation_timestamp.as_ref().map(|t| t.0),
        name_of(s),
    )
}

/// A Service's (namespace, name), borrowed (as [`convert::service_key`] reads them).
fn name_of(svc: &Service) -> (&str, &str) {
    (
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Whether the Service shows an IP (what [`convert::ingress_ips`] would find), without a copy.
fn holds_ip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| {
            i.iter().any(|i| {
                i.ip.as_deref()
                    .is_some_and(|ip| ip.parse::<IpAddr>().is_ok())
            })
        })
}

fn ingress_addrs(view: &ServiceView) -> Vec<IpAddr> {
    view.ingress.iter().map(|(ip, _)| *ip).collect()
}

fn ips_text(ingress: &[(IpAddr, Option<String>)]) -> String {
    ingress
        .iter()
        .map(|(ip, _)| ip.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn service(rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".to_owned()),
                namespace: Some("shop".to_owned()),
                resource_version: Some(rv.to_owned()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    fn assigned() -> ServiceView {
        status::allocated(
            &[("192.0.2.10".parse().unwrap(), "lan".to_owned())],
            IpMode::Proxy,
        )
    }

    /// One allocation, one status write: after the status (version 11) and the annotation
    /// (12) are written on version 10, a pass whose store still shows 10 or 11 (status seen,
    /// annotation not yet) plans nothing; 12 has caught up; a version we did not make (13,
    /// someone else's change) is judged afresh, as is a different outcome.
    #[test]
    fn a_store_behind_our_own_writes_plans_no_second_write() {
        let key = ServiceKey::new("shop", "web");
        let mut leading = Leading::default();
        let write = ServiceWrite::new(Arc::new(service("10")), key.clone(), assigned(), None);
        assert_eq!(write.versions, ["10"]);
        leading.written.insert(
            key.clone(),
            Written::new(
                &["10".to_owned(), "11".to_owned(), "12".to_owned()],
                &assigned(),
            ),
        );
        for rv in ["10", "11", "12"] {
            assert!(
                leading.already_written(&service(rv), &key, &assigned()),
                "version {rv} is ours; writing again would be a second write"
            );
        }
        assert!(!leading.already_written(&service("13"), &key, &assigned()));
        let other = status::failed("PoolExhausted", "pool lan has no free IPv4 address");
        assert!(!leading.already_written(&service("11"), &key, &other));
        let stranger = ServiceKey::new("shop", "db");
        assert!(!leading.already_written(&service("11"), &stranger, &assigned()));
    }

    /// A failed follow-up forgets what was written, so the next pass redoes it.
    #[test]
    fn a_failed_write_is_planned_again() {
        let key = ServiceKey::new("shop", "web");
        let mut leading = Leading::default();
        let ctx_metrics = ControllerMetrics::default();
        leading
            .written
            .insert(key.clone(), Written::new(&["10".to_owned()], &assigned()));
        leading.busy.insert(key.clone());
        let failures = leading.finish_service(
            &ctx_metrics,
            key.clone(),
            vec!["10".into(), "11".into()],
            assigned(),
            vec![Error::Serialize(
                serde_json::from_str::<u8>("not json").unwrap_err(),
            )],
        );
        assert_eq!(failures, 1);
        assert!(!leading.busy.contains(&key));
        assert!(!leading.already_written(&service("11"), &key, &assigned()));
    }

    /// A pass over real stores, with a client that is never called (passes make no requests).
    struct Harness {
        ctx: Context,
        services: kube::runtime::reflector::store::Writer<Service>,
        namespaces: kube::runtime::reflector::store::Writer<Namespace>,
        pools: kube::runtime::reflector::store::Writer<IPAddressPool>,
    }

    impl Harness {
        fn new() -> Harness {
            use kube::runtime::reflector::store::Writer;
            let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
            let client = kube::Client::try_from(config).unwrap();
            let (services, namespaces, pools) =
                (Writer::default(), Writer::default(), Writer::default());
            let ctx = Context {
                recorder: crate::events::Publisher::new(client.clone(), "t".into(), "t".into()),
                client,
                services: services.as_reader(),
                namespaces: namespaces.as_reader(),
                pools: pools.as_reader(),
                selection: Selection {
                    class: "ferrolb.io/ferrolb".into(),
                    classless: true,
                },
                ip_mode: IpMode::Proxy,
                pool_selector: None,
                metrics: ControllerMetrics::default(),
            };
            Harness {
                ctx,
                services,
                namespaces,
                pools,
            }
        }

        /// Pool `lan` with `addresses`, for Namespaces labelled `team: a`.
        fn pool(&mut self, addresses: &str) {
            let pool: IPAddressPool = serde_json::from_value(serde_json::json!({
                "apiVersion": "ferrolb.io/v1alpha1", "kind": "IPAddressPool",
                "metadata": {"name": "lan", "resourceVersion": addresses},
                "spec": {"addresses": [addresses], "serviceAllocation": {
                    "namespaceSelectors": [{"matchLabels": {"team": "a"}}]}}
            }))
            .unwrap();
            self.pools
                .apply_watcher_event(&kube::runtime::watcher::Event::Apply(pool));
        }

        fn namespace(&mut self, team: &str) {
            let ns: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "shop", "labels": {"team": team}}
            }))
            .unwrap();
            self.namespaces
                .apply_watcher_event(&kube::runtime::watcher::Event::Apply(ns));
        }

        fn service(&mut self, name: &str, rv: u32, view: &ServiceView) {
            let mut svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop", "uid": name,
                             "resourceVersion": rv.to_string()},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
            }))
            .unwrap();
            svc.metadata.annotations = view
                .pool_annotation
                .as_ref()
                .map(|p| [(convert::ANN_ALLOCATED_FROM_POOL.to_owned(), p.clone())].into());
            let ingress: Vec<_> = view
                .ingress
                .iter()
                .map(|(ip, mode)| serde_json::json!({"ip": ip.to_string(), "ipMode": mode}))
                .collect();
            let conditions: Vec<_> = view
                .condition
                .iter()
                .map(|(status, reason, message)| {
                    serde_json::json!({"type": convert::CONDITION_ALLOCATED, "status": status,
                        "reason": reason, "message": message,
                        "lastTransitionTime": "2026-01-01T00:00:00Z"})
                })
                .collect();
            svc.status = Some(
                serde_json::from_value(serde_json::json!({
                    "loadBalancer": {"ingress": ingress}, "conditions": conditions
                }))
                .unwrap(),
            );
            self.services
                .apply_watcher_event(&kube::runtime::watcher::Event::Apply(svc));
        }

        /// Runs a pass; returns the Services' planned views by name.
        fn pass(&mut self, leading: &mut Leading) -> BTreeMap<String, ServiceView> {
            leading.pass(&self.ctx);
            leading
                .queue
                .drain(..)
                .filter_map(|w| match w {
                    Write::Service(w) => Some((w.key.name.clone(), w.want)),
                    Write::Pool(_) => None,
                })
                .collect()
        }
    }

    /// Settled Services are skipped by passes, but never when something that decides their
    /// outcome changed: a pool change that takes a holder's address away still moves it, a
    /// Service's own change is judged afresh, and so are Services whose Namespace's labels no
    /// longer let them use the pool.
    #[tokio::test]
    async fn settled_services_are_skipped_until_something_that_decides_them_changes() {
        let mut h = Harness::new();
        let mut leading = Leading::default();
        h.namespace("a");
        h.pool("192.0.2.10-192.0.2.11");
        h.service("a", 1, &ServiceView::default());
        h.service("b", 1, &ServiceView::default());
        let planned = h.pass(&mut leading);
        assert_eq!(planned.len(), 2, "{planned:?}");
        // Our writes land (versions 2); the next pass finds nothing to do and settles both.
        for (name, want) in &planned {
            h.service(name, 2, want);
        }
        assert!(h.pass(&mut leading).is_empty());
        assert_eq!(leading.settled.len(), 2);
        assert!(h.pass(&mut leading).is_empty(), "nothing changed");

        // The pool shrinks to one address: the holder outside it is refused, the other stays.
        h.pool("192.0.2.10/32");
        let planned = h.pass(&mut leading);
        assert_eq!(planned.len(), 1, "{planned:?}");
        let (moved, want) = planned.into_iter().next().unwrap();
        assert_eq!(want.condition.as_ref().unwrap().1, "PoolExhausted");
        h.service(&moved, 3, &want);
        assert!(h.pass(&mut leading).is_empty());
        assert_eq!(
            leading.settled.len(),
            1,
            "a refused Service is never settled"
        );

        // Someone rewrites the settled Service's status: a new version is judged afresh.
        let holder = if moved == "a" { "b" } else { "a" };
        h.service(holder, 4, &ServiceView::default());
        let planned = h.pass(&mut leading);
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert_eq!(planned[holder].ingress[0].0.to_string(), "192.0.2.10");
        h.service(holder, 5, &planned[holder]);
        assert!(h.pass(&mut leading).is_empty());

        // The Namespace leaves team a: the pool no longer serves its Services.
        h.namespace("b");
        let planned = h.pass(&mut leading);
        assert_eq!(planned.len(), 2, "{planned:?}");
        for want in planned.values() {
            assert_eq!(want.condition.as_ref().unwrap().1, "NoMatchingPool");
            assert!(want.ingress.is_empty());
        }
    }
}
