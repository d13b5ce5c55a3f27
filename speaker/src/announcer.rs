//! The layer-2 announcing loop: whole stores and the live membership in, core's `elect` /
//! `plan` / `diff` in the middle, wire actions, gratuitous rounds and reports out.
//!
//! Recomputing from whole stores on every change makes a resync, a restart and a normal
//! update the same code path. A speaker cut off from the API keeps its stores' last contents
//! and so keeps announcing what it announced.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferrolb_api::L2Advertisement;
use ferrolb_core::announce::{
    Action, Election, Eligibility, GratuitousSchedule, Ineligible, Inputs, InterfaceView, Mode,
    NodeName, NodeView, Plan, Poll, diff, elect, plan::plan_from,
};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Announced;
use crate::linger::{FORWARD_LINGER, Linger};
use crate::membership::Membership;
use crate::metrics::SpeakerMetrics;
use crate::report::{Report, Takeover};
use crate::views::{self, Selection};
use crate::wire::{self, Interface, Wire};

/// How often the node's interfaces are re-read (addresses rarely change).
const INTERFACE_POLL: Duration = Duration::from_secs(2);
/// At start, how long to wait for the membership to converge before announcing anything, so a
/// starting speaker does not claim IPs its peers are still answering for. Joining a live
/// peer takes about a millisecond; only a speaker that is really alone (its peers dead, or
/// the Nodes without speakers) waits this long.
const JOIN_WAIT: Duration = Duration::from_secs(3);
/// How long a node that gave an IP to another live node keeps answering for it when it does
/// not see the new owner's gratuitous packet (normally it stops at that packet).
const HANDOVER_HOLD: Duration = Duration::from_secs(1);
/// After every peer has talked to us: time for their announcers to act on the news (and
/// start handing this node's IPs back) before it announces them.
const HANDBACK_SETTLE: Duration = Duration::from_millis(100);
/// On a graceful stop, how long to keep answering after leaving so the heirs take over first.
pub const HANDOVER_GRACE: Duration = Duration::from_millis(1500);

/// The reflector stores the announcer reads.
#[derive(Clone)]
pub struct Stores {
    /// Services, EndpointSlices, Nodes and pools.
    pub cluster: views::Cluster,
    /// L2Advertisements.
    pub advertisements: Store<L2Advertisement>,
    /// Woken after any event reaches any store.
    pub changed: Arc<Notify>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// Fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub node: NodeName,
    /// Which Services are ours.
    pub selection: Selection,
    /// Hash or balanced.
    pub mode: Mode,
    /// UDP port of the membership.
    pub memberlist_port: u16,
}

/// Channels out of the announcer.
#[derive(Debug)]
pub struct Outputs {
    /// What this node announces, for the forwarder.
    pub announced: watch::Sender<Announced>,
    /// Desired ServiceAnnouncements.
    pub reports: watch::Sender<BTreeMap<ferrolb_core::announce::ServiceKey, Report>>,
    /// Takeover Events.
    pub takeovers: mpsc::UnboundedSender<Takeover>,
}

struct State {
    settings: Settings,
    wire: Wire,
    plan: Plan,
    schedules: BTreeMap<IpAddr, (String, GratuitousSchedule)>,
    last_sent: BTreeMap<IpAddr, SystemTime>,
    owners: BTreeMap<IpAddr, Option<NodeName>>,
    elections: BTreeMap<IpAddr, Election>,
    interfaces: Vec<Interface>,
    /// IPs this node may not announce for want of a suitable interface, as last logged.
    no_interface: BTreeMap<IpAddr, Ineligible>,
    metrics: SpeakerMetrics,
    out: Outputs,
    /// What the forwarder carries: the announced IPs and those given up a moment ago.
    linger: Linger,
}

/// Runs until `stop` fires, then leaves the membership, keeps answering for
/// [`HANDOVER_GRACE`], stops answering and returns.
pub async fn run(
    stores: Stores,
    settings: Settings,
    metrics: SpeakerMetrics,
    ready: ferrolb_runtime::Readiness,
    out: Outputs,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    while !ready.is_ready() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut stop => return Ok(()),
        }
    }
    let me = settings.node.clone();
    let own = stores
        .cluster
        .node(&me)
        .ok_or_else(|| anyhow::anyhow!("Node {me} not found: is --node-name right?"))?;
    let own_ip = *views::internal_ips(&own)
        .first()
        .ok_or_else(|| anyhow::anyhow!("Node {me} has no InternalIP to run the membership on"))?;
    let port = settings.memberlist_port;
    let bind: SocketAddr = if own_ip.is_ipv4() {
        ([0, 0, 0, 0], port).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, port).into()
    };
    let membership = Membership::start(&me, bind, SocketAddr::new(own_ip, port)).await?;
    let seeds = seeds(&stores.cluster.nodes, &me, port);
    membership.seed(seeds.clone()).await;
    let mut live = membership.live();
    // A stop during the wait ends it: nothing was announced yet, so there is nothing to hand over.
    let joined = tokio::select! {
        j = join(&membership, seeds.is_empty()) => j,
        _ = &mut stop => {
            membership.leave().await;
            info!("stopped before announcing anything");
            return Ok(());
        }
    };
    info!(
        members = live.borrow().len(),
        joined = ?joined,
        "membership ready; announcing"
    );

    let mut st = State {
        settings,
        wire: Wire::new(metrics.clone()),
        plan: Plan::default(),
        schedules: BTreeMap::new(),
        last_sent: BTreeMap::new(),
        owners: BTreeMap::new(),
        elections: BTreeMap::new(),
        interfaces: Vec::new(),
        no_interface: BTreeMap::new(),
        metrics,
        out,
        linger: Linger::new(FORWARD_LINGER),
    };
    let mut known_seeds = seeds;
    let mut iface_tick = tokio::time::interval(INTERFACE_POLL);
    let mut dirty = true;
    loop {
        if dirty {
            let lv = live.borrow_and_update().clone();
            st.recompute(&stores, &lv);
            let s = self::seeds(&stores.cluster.nodes, &me, port);
            if s != known_seeds {
                membership.seed(s.clone()).await;
                known_seeds = s;
            }
            dirty = false;
        }
        let next = st.poll_gratuitous();
        let linger_ends = st.linger.next_expiry();
        let handover_ends = st.wire.next_handover_deadline();
        tokio::select! {
            _ = stores.changed.notified() => dirty = true,
            r = live.changed() => { if r.is_err() { break } dirty = true; }
            _ = iface_tick.tick() => {
                let now = wire::interfaces();
                if now != st.interfaces { dirty = true; }
            }
            _ = sleep_until_opt(next) => {}
            _ = sleep_until_opt(linger_ends) => dirty = true,
            _ = sleep_until_opt(handover_ends) => dirty = true,
            _ = &mut stop => break,
        }
    }
    // Graceful stop: the others elect heirs as soon as they hear we left; we keep answering
    // (the receive threads run on) until the heirs' gratuitous packets are out.
    membership.leave().await;
    tokio::time::sleep(HANDOVER_GRACE).await;
    let now = std::time::Instant::now();
    for action in diff(&st.plan, &Plan::default(), now) {
        st.execute(action);
    }
    st.wire.close();
    st.out.announced.send_replace(Announced::new());
    info!("stopped announcing");
    Ok(())
}

/// How a starting speaker's wait for its peers ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Joined {
    /// No other Node to join: nothing to wait for.
    NoPeers,
    /// Every member has talked to this speaker: each knows it is back, and one that answers
    /// for an IP coming home keeps doing so until this speaker's gratuitous packet (sent
    /// after [`HANDBACK_SETTLE`]).
    Converged,
    /// [`JOIN_WAIT`] passed without convergence: announcing with what is known.
    TimedOut,
}

/// Waits until it is safe to announce: the membership has converged, or there is nobody to
/// wait for, or [`JOIN_WAIT`] has passed.
async fn join(membership: &Membership, no_seeds: bool) -> Joined {
    if no_seeds {
        return Joined::NoPeers;
    }
    let mut converged = membership.converged();
    let waited = tokio::time::timeout(JOIN_WAIT, converged.wait_for(|c| *c))
        .await
        .is_ok_and(|r| r.is_ok());
    match waited {
        true => {
            tokio::time::sleep(HANDBACK_SETTLE).await;
            Joined::Converged
        }
        false => {
            warn!(
                wait = ?JOIN_WAIT,
                "no reply from every peer speaker: announcing with the members known so far"
            );
            Joined::TimedOut
        }
    }
}

fn seeds(nodes: &Store<Node>, me: &NodeName, port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = nodes
        .state()
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me.as_str()))
        .filter_map(|n| views::internal_ips(n).first().copied())
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort();
    out
}

async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

impl State {
    fn recompute(&mut self, stores: &Stores, live: &BTreeSet<NodeName>) {
        let me = self.settings.node.clone();
        self.interfaces = wire::interfaces();
        let views::Services {
            objects: services_raw,
            pools,
            views: services,
        } = stores.cluster.services(&self.settings.selection);
        let advertisements: Vec<_> = stores
            .advertisements
            .state()
            .iter()
            .map(|a| views::adv_view(a, &pools))
            .collect();
        let mine: Vec<InterfaceView> = self.interfaces.iter().map(|i| i.view.clone()).collect();
        let others = remote_interfaces(&advertisements);
        let nodes: Vec<NodeView> = stores
            .cluster
            .nodes
            .state()
            .iter()
            .map(|n| {
                let is_me = n.metadata.name.as_deref() == Some(me.as_str());
                views::node_view(n, if is_me { mine.clone() } else { others.clone() })
            })
            .collect();
        let inputs = Inputs {
            services: &services,
            nodes: &nodes,
            advertisements: &advertisements,
            live,
            mode: self.settings.mode,
        };
        let elections = elect(&inputs);
        self.log_missing_interfaces(&me, &elections);
        let now = std::time::Instant::now();
        let desired = plan_from(&me, &elections, &self.plan, now);
        let actions = diff(&self.plan, &desired, now);
        let uids: BTreeMap<_, _> = services_raw
            .iter()
            .map(|s| {
                (
                    views::service_key(s),
                    s.metadata.uid.clone().unwrap_or_default(),
                )
            })
            .collect();
        for action in actions {
            if let Action::StartAnnouncing { ip, interface, .. } = &action {
                let previous = self.owners.get(ip).cloned().flatten();
                for key in elections
                    .get(ip)
                    .map(|e| e.services.clone())
                    .unwrap_or_default()
                {
                    let _ = self.out.takeovers.send(Takeover {
                        uid: uids.get(&key).cloned().unwrap_or_default(),
                        service: key,
                        ip: ip.to_string(),
                        interface: interface.clone(),
                        previous: previous.clone(),
                    });
                }
            }
            // Given to another node that is alive: keep answering until it announces itself.
            if let Action::StopAnnouncing { ip, interface } = &action
                && elections
                    .get(ip)
                    .and_then(|e| e.owner.as_ref())
                    .is_some_and(|owner| *owner != me)
            {
                self.wire.hand_over(*ip, now + HANDOVER_HOLD);
                self.schedules.remove(ip);
                self.last_sent.remove(ip);
                info!(%ip, interface, "handing over: answering until the new owner announces it");
                continue;
            }
            self.execute(action);
        }
        // The new IPs' first gratuitous packets go out before this node answers requests for
        // them: a node handing one over stops when it sees that packet, so no request is
        // answered twice and none goes unanswered.
        self.poll_gratuitous();
        self.wire.set_statuses(desired.statuses(&me, &elections));
        self.plan = desired;
        self.owners = elections
            .iter()
            .map(|(ip, e)| (*ip, e.owner.clone()))
            .collect();
        self.elections = elections;
        self.metrics.set_announced(self.plan.announcements.len());
        self.metrics.set_live(live.len());
        let announced: Announced = self
            .plan
            .announcements
            .iter()
            .filter_map(|(ip, a)| a.services.iter().next().map(|k| (*ip, k.clone())))
            .collect();
        let forward = self.linger.update(announced, now);
        self.out.announced.send_if_modified(|cur| {
            let differs = *cur != forward;
            *cur = forward;
            differs
        });
        self.publish_reports(&uids);
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::StopAnnouncing { ip, interface } => {
                self.wire.stop_answering(ip);
                self.schedules.remove(&ip);
                self.last_sent.remove(&ip);
                info!(%ip, interface, "stopped announcing");
            }
            Action::LeaveSolicitedNode { interface, group } => {
                self.wire.membership(&interface, group, false)
            }
            Action::JoinSolicitedNode { interface, group } => {
                self.open(&interface);
                self.wire.membership(&interface, group, true)
            }
            Action::StartAnnouncing {
                ip,
                interface,
                gratuitous,
            } => {
                self.open(&interface);
                self.metrics.takeover();
                info!(%ip, interface, "announcing");
                self.schedules.insert(ip, (interface, gratuitous));
            }
        }
    }

    /// Says once per IP and reason why this node cannot answer for an IP for want of an
    /// interface: other nodes assume it has one (ADR 0012), so this may be the only trace of
    /// an IP nobody answers for (an advertisement naming an interface no node has).
    fn log_missing_interfaces(&mut self, me: &NodeName, elections: &BTreeMap<IpAddr, Election>) {
        let now: BTreeMap<IpAddr, Ineligible> = elections
            .iter()
            .filter_map(|(ip, e)| match e.eligibility(me) {
                Some(Eligibility::Ineligible(
                    r @ (Ineligible::NoListedInterface | Ineligible::NoInterfaceInSubnet),
                )) => Some((*ip, *r)),
                _ => None,
            })
            .collect();
        for (ip, reason) in &now {
            if self.no_interface.get(ip) != Some(reason) {
                let have: Vec<&str> = self
                    .interfaces
                    .iter()
                    .map(|i| i.view.name.as_str())
                    .collect();
                let assumed_owner = elections.get(ip).and_then(|e| e.owner.as_ref());
                warn!(
                    %ip,
                    reason = ?reason,
                    interfaces = ?have,
                    assumed_owner = ?assumed_owner.map(NodeName::as_str),
                    "cannot announce on this node: no suitable interface"
                );
            }
        }
        self.no_interface = now;
    }

    fn open(&mut self, interface: &str) {
        match self.interfaces.iter().find(|i| i.view.name == interface) {
            Some(i) => {
                if let Err(err) = self.wire.ensure(i) {
                    warn!(interface, error = %err, "cannot answer on this interface");
                }
            }
            None => warn!(interface, "interface to announce on is gone"),
        }
    }

    /// Sends the gratuitous rounds that are due; returns when the next one is.
    fn poll_gratuitous(&mut self) -> Option<std::time::Instant> {
        let now = std::time::Instant::now();
        let mut next: Option<std::time::Instant> = None;
        let mut sent = false;
        for (ip, (interface, schedule)) in self.schedules.iter_mut() {
            match schedule.poll(now) {
                Poll::Send => {
                    if self.wire.gratuitous(interface, *ip) {
                        self.last_sent.insert(*ip, SystemTime::now());
                        sent = true;
                    }
                    if let Some(t) = schedule.next_deadline() {
                        next = Some(next.map_or(t, |n| n.min(t)));
                    }
                }
                Poll::Wait(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Poll::Done => {}
            }
        }
        if sent {
            self.publish_reports_cached();
        }
        next
    }

    fn publish_reports_cached(&mut self) {
        let uids: BTreeMap<_, _> = self
            .out
            .reports
            .borrow()
            .iter()
            .map(|(k, r)| (k.clone(), r.uid.clone()))
            .collect();
        self.publish_reports(&uids);
    }

    fn publish_reports(&mut self, uids: &BTreeMap<ferrolb_core::announce::ServiceKey, String>) {
        let mut reports: BTreeMap<ferrolb_core::announce::ServiceKey, Report> = BTreeMap::new();
        for (ip, a) in &self.plan.announcements {
            for key in &a.services {
                let r = reports.entry(key.clone()).or_insert_with(|| Report {
                    uid: uids.get(key).cloned().unwrap_or_default(),
                    interface: a.interface.clone(),
                    ips: BTreeSet::new(),
                    owners: BTreeSet::new(),
                    last_gratuitous: None,
                });
                r.ips.insert(ip.to_string());
                if let Some(t) = self.last_sent.get(ip) {
                    r.last_gratuitous = Some(r.last_gratuitous.map_or(*t, |p| p.max(*t)));
                }
            }
        }
        for (key, r) in reports.iter_mut() {
            r.owners = self
                .elections
                .values()
                .filter(|e| e.services.contains(key))
                .filter_map(|e| e.owner.clone())
                .collect();
        }
        reports.retain(|_, r| !r.uid.is_empty());
        self.out.reports.send_if_modified(|cur| {
            let differs = *cur != reports;
            *cur = reports;
            differs
        });
    }
}

/// What we assume of other nodes' interfaces: we cannot see them, so every node is taken to
/// have every interface an advertisement names and one in every subnet (MetalLB makes the same
/// assumption). Only this node's real interfaces decide where it answers.
fn remote_interfaces(advertisements: &[ferrolb_core::announce::L2AdvView]) -> Vec<InterfaceView> {
    let any = vec![
        "0.0.0.0/0".parse().expect("valid"),
        "::/0".parse().expect("valid"),
    ];
    let mut names: BTreeSet<String> = advertisements
        .iter()
        .flat_map(|a| a.interfaces.iter().cloned())
        .collect();
    names.insert("(remote)".to_owned());
    names
        .into_iter()
        .map(|name| InterfaceView {
            name,
            addrs: any.clone(),
        })
        .collect()
}
