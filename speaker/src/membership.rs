//! Speaker-to-speaker liveness: SWIM (`foca`) over UDP on the node network, seeded from the
//! API (the other Nodes' InternalIPs). Publishes the set of live speakers by node name.
//!
//! foca is sans-IO: this task feeds it datagrams and timer events and carries out what it asks
//! (sends, timers, notifications).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use ferrolb_core::announce::NodeName;
use foca::{
    AccumulatingRuntime, Codec, Config, Foca, OwnedNotification, PeriodicParams, PostcardCodec,
    Timer,
};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How often a random member is probed. With `PROBE_RTT` and `SUSPECT_TO_DOWN` this bounds
/// detection to about two periods plus the suspicion: ~0.3 s median, ~0.5 s worst on 3 nodes.
pub const PROBE_PERIOD: Duration = Duration::from_millis(120);
/// Wait for a direct ack before asking others to probe indirectly (LAN RTT is sub-ms).
pub const PROBE_RTT: Duration = Duration::from_millis(40);
/// How long a suspect has to refute before it is declared down.
pub const SUSPECT_TO_DOWN: Duration = Duration::from_millis(150);
/// Re-announce to seeds that are not members this often (a speaker that starts later joins).
const SEED_RETRY: Duration = Duration::from_secs(1);

/// A speaker in the membership: its node, its UDP address, and a bump that changes each time
/// it (re)joins, so a restarted speaker is a new identity.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SpeakerId {
    /// Node name.
    pub node: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Join generation.
    pub bump: u64,
}

impl foca::Identity for SpeakerId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// foca's settings for a LAN where a dead peer must be noticed within a few hundred ms.
pub fn config() -> Config {
    let mut c = Config::new_lan(NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN));
    c.probe_period = PROBE_PERIOD;
    c.probe_rtt = PROBE_RTT;
    c.suspect_to_down_after = SUSPECT_TO_DOWN;
    c.remove_down_after = Some(Duration::from_secs(30));
    c.periodic_gossip = Some(PeriodicParams {
        frequency: Duration::from_millis(50),
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    c.periodic_announce = Some(PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::MIN,
    });
    c.periodic_announce_to_down_members = Some(PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
    });
    c
}

enum Command {
    Seeds(Vec<SocketAddr>),
    Leave(oneshot::Sender<()>),
}

/// A handle on the running membership.
#[derive(Debug, Clone)]
pub struct Membership {
    commands: mpsc::Sender<Command>,
    live: watch::Receiver<BTreeSet<NodeName>>,
    converged: watch::Receiver<bool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Seeds(s) => f.debug_tuple("Seeds").field(s).finish(),
            Command::Leave(_) => f.write_str("Leave"),
        }
    }
}

impl Membership {
    /// Binds `bind` and starts the membership as `node` reachable at `advertise`.
    pub async fn start(
        node: &NodeName,
        bind: SocketAddr,
        advertise: SocketAddr,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(bind).await?;
        let bump = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let id = SpeakerId {
            node: node.to_string(),
            addr: advertise,
            bump,
        };
        let (commands, rx) = mpsc::channel(16);
        let (live_tx, live) = watch::channel(BTreeSet::from([node.clone()]));
        let (converged_tx, converged) = watch::channel(false);
        info!(%bind, %advertise, "membership listening");
        tokio::spawn(run(socket, id, rx, live_tx, converged_tx));
        Ok(Self {
            commands,
            live,
            converged,
        })
    }

    /// Becomes true (and stays true) once this speaker has members and has received a
    /// datagram from every one of them since it started. A peer only sends to a node it
    /// counts as live, so by then every peer has stopped claiming this node's IPs (or is
    /// about to: its announcer recomputes on the same notification). Until then a starting
    /// speaker must not announce: the peers may still be answering for its IPs.
    pub fn converged(&self) -> watch::Receiver<bool> {
        self.converged.clone()
    }

    /// The live speakers (always including this one), updated on every change.
    pub fn live(&self) -> watch::Receiver<BTreeSet<NodeName>> {
        self.live.clone()
    }

    /// The other speakers' addresses to join through (repeated until they are members).
    pub async fn seed(&self, addrs: Vec<SocketAddr>) {
        let _ = self.commands.send(Command::Seeds(addrs)).await;
    }

    /// Declares this speaker down to the others (graceful stop); returns once sent.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Driver {
    foca: Foca<SpeakerId, PostcardCodec, StdRng, foca::NoCustomBroadcast>,
    runtime: AccumulatingRuntime<SpeakerId>,
    socket: UdpSocket,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerSlot)>>,
    seq: u64,
    live_tx: watch::Sender<BTreeSet<NodeName>>,
    me: NodeName,
    /// Nodes a datagram addressed to this speaker came from since it started.
    heard: Heard,
    converged_tx: watch::Sender<bool>,
}

/// Which peers have talked to this speaker directly (not merely been reported by others).
#[derive(Debug, Default)]
struct Heard(BTreeSet<String>);

impl Heard {
    /// Records the sender of `datagram` if it is a foca message addressed to `me`'s address.
    fn record(&mut self, datagram: &[u8], me: &SpeakerId) {
        if let Ok(header) = Codec::<SpeakerId>::decode_header(&mut PostcardCodec, datagram)
            && header.dst.addr == me.addr
            && header.src.node != me.node
        {
            self.0.insert(header.src.node);
        }
    }

    /// Every one of `members` (there is at least one) has been heard from.
    fn covers<'a>(&self, mut members: impl Iterator<Item = &'a str>) -> bool {
        let mut any = false;
        let all = members.all(|m| {
            any = true;
            self.0.contains(m)
        });
        any && all
    }
}

/// A foca timer in the heap; ordered by insertion only (the heap key is (deadline, seq)).
struct TimerSlot(Timer<SpeakerId>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

async fn run(
    socket: UdpSocket,
    id: SpeakerId,
    mut commands: mpsc::Receiver<Command>,
    live_tx: watch::Sender<BTreeSet<NodeName>>,
    converged_tx: watch::Sender<bool>,
) {
    let me = NodeName::from(id.node.as_str());
    let rng: StdRng = rand::make_rng();
    let mut d = Driver {
        foca: Foca::new(id, config(), rng, PostcardCodec),
        runtime: AccumulatingRuntime::new(),
        socket,
        timers: BinaryHeap::new(),
        seq: 0,
        live_tx,
        me,
        heard: Heard::default(),
        converged_tx,
    };
    let mut seeds: Vec<SocketAddr> = Vec::new();
    let mut retry = tokio::time::interval(SEED_RETRY);
    let mut buf = vec![0u8; 65_536];
    loop {
        let next_timer = d.timers.peek().map(|Reverse((t, _, _))| *t);
        tokio::select! {
            received = d.socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    d.heard.record(&buf[..n], d.foca.identity());
                    if let Err(err) = d.foca.handle_data(&buf[..n], &mut d.runtime) {
                        debug!(%from, error = %err, "membership datagram refused");
                    }
                }
                Err(err) => warn!(error = %err, "membership receive failed"),
            },
            _ = sleep_until_opt(next_timer) => {
                let now = Instant::now();
                while d.timers.peek().is_some_and(|Reverse((t, _, _))| *t <= now) {
                    if let Some(Reverse((_, _, TimerSlot(timer)))) = d.timers.pop()
                        && let Err(err) = d.foca.handle_timer(timer, &mut d.runtime)
                    {
                        debug!(error = %err, "membership timer failed");
                    }
                }
            }
            _ = retry.tick() => announce_to_seeds(&mut d, &seeds),
            command = commands.recv() => match command {
                Some(Command::Seeds(addrs)) => {
                    seeds = addrs;
                    announce_to_seeds(&mut d, &seeds);
                }
                Some(Command::Leave(done)) => {
                    if let Err(err) = d.foca.leave_cluster(&mut d.runtime) {
                        warn!(error = %err, "leaving the membership failed");
                    }
                    d.flush().await;
                    info!("left the membership");
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
        }
        d.flush().await;
    }
}

fn announce_to_seeds(d: &mut Driver, seeds: &[SocketAddr]) {
    let members: BTreeSet<SocketAddr> = d.foca.iter_members().map(|m| m.id().addr).collect();
    let own = d.foca.identity().addr;
    for addr in seeds.iter().filter(|a| **a != own && !members.contains(a)) {
        let dst = SpeakerId {
            node: String::new(),
            addr: *addr,
            bump: 0,
        };
        if let Err(err) = d.foca.announce(dst, &mut d.runtime) {
            debug!(%addr, error = %err, "announce failed");
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Carries out what foca asked for: datagrams, timers, and membership changes.
    async fn flush(&mut self) {
        while let Some((dst, data)) = self.runtime.to_send() {
            if let Err(err) = self.socket.send_to(&data, dst.addr).await {
                debug!(dst = %dst.addr, error = %err, "membership send failed");
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.seq += 1;
            self.timers
                .push(Reverse((now + after, self.seq, TimerSlot(timer))));
        }
        let mut changed = false;
        while let Some(n) = self.runtime.to_notify() {
            match n {
                OwnedNotification::MemberUp(id) => {
                    info!(node = %id.node, addr = %id.addr, "speaker up");
                    changed = true;
                }
                OwnedNotification::MemberDown(id) => {
                    info!(node = %id.node, addr = %id.addr, "speaker down");
                    changed = true;
                }
                OwnedNotification::Rename(a, b) => {
                    debug!(from = ?a, to = ?b, "speaker renamed");
                    changed = true;
                }
                OwnedNotification::Defunct => {
                    // Declared down by the others while alive: rejoin under a new identity.
                    warn!("declared down by peers; rejoining");
                    if let Err(err) = self.foca.reuse_down_identity() {
                        debug!(error = %err, "rejoin failed");
                    }
                }
                other => debug!(notification = ?other, "membership"),
            }
        }
        if !*self.converged_tx.borrow()
            && self
                .heard
                .covers(self.foca.iter_members().map(|m| m.id().node.as_str()))
        {
            info!(
                members = self.foca.num_members(),
                "membership converged: every peer has heard of this speaker"
            );
            self.converged_tx.send_replace(true);
        }
        if changed {
            let mut live: BTreeSet<NodeName> = self
                .foca
                .iter_members()
                .map(|m| NodeName::from(m.id().node.as_str()))
                .collect();
            live.insert(self.me.clone());
            self.live_tx.send_if_modified(|cur| {
                let differs = *cur != live;
                *cur = live;
                differs
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn three_speakers_see_each_other_and_a_leave() {
        let (_, ms) = three(41_000).await;
        for m in &ms {
            wait_until(m.live(), "three members", |l| l.len() == 3).await;
        }
        ms[2].leave().await;
        let t = std::time::Instant::now();
        for m in &ms[..2] {
            wait_until(m.live(), "the leave seen", |l| l.len() == 2).await;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    fn id(node: &str, port: u16, bump: u64) -> SpeakerId {
        SpeakerId {
            node: node.into(),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            bump,
        }
    }

    fn datagram(src: &SpeakerId, dst: &SpeakerId) -> Vec<u8> {
        let header = foca::Header {
            src: src.clone(),
            src_incarnation: 0,
            dst: dst.clone(),
            message: foca::Message::Ping(1),
        };
        let mut buf = Vec::new();
        PostcardCodec.encode_header(&header, &mut buf).unwrap();
        buf
    }

    #[test]
    fn heard_counts_only_peers_talking_to_this_address() {
        let me = id("n0", 1, 5);
        let mut heard = Heard::default();
        // A peer writing to our address (even to our previous identity) counts.
        heard.record(&datagram(&id("n1", 2, 1), &id("n0", 1, 4)), &me);
        // Addressed to another speaker, garbage, truncated, or from ourselves: ignored.
        heard.record(&datagram(&id("n2", 3, 1), &id("n9", 9, 1)), &me);
        heard.record(b"\xff\xff\xff not foca", &me);
        heard.record(&datagram(&id("n2", 3, 1), &me)[..3], &me);
        heard.record(&datagram(&id("n0", 7, 1), &me), &me);
        assert_eq!(heard.0, BTreeSet::from(["n1".to_string()]));
        assert!(heard.covers(["n1"].into_iter()));
        assert!(!heard.covers(["n1", "n2"].into_iter()));
        // No members at all is not convergence: a speaker alone has heard from nobody.
        assert!(!heard.covers(std::iter::empty()));
    }

    /// Starts `node` on 127.0.0.1:`port`, retrying while the port is still held (a restart
    /// right after a crash), and seeds it.
    async fn start(node: &str, port: u16, seeds: &[u16]) -> Membership {
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
        let m = loop {
            match Membership::start(&NodeName::from(node), addr(port), addr(port)).await {
                Ok(m) => break m,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        m.seed(seeds.iter().map(|p| addr(*p)).collect()).await;
        m
    }

    /// Three speakers n0..n2 on ports from around `base` (ephemeral-ish, away from the lab's
    /// 7946), each seeded with all three.
    async fn three(base: u16) -> ([u16; 3], Vec<Membership>) {
        let base = base + (std::process::id() % 1000) as u16 * 3;
        let ports = [base, base + 1, base + 2];
        let mut ms = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            ms.push(start(&format!("n{i}"), *p, &ports).await);
        }
        (ports, ms)
    }

    /// Waits (at most 5 s) until `rx` holds a value for which `done` is true.
    async fn wait_until<T>(mut rx: watch::Receiver<T>, what: &str, done: impl FnMut(&T) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(done))
            .await
            .unwrap_or_else(|_| panic!("{what} within 5 s"))
            .expect("membership running");
    }

    #[tokio::test]
    async fn a_restarted_speaker_converges_only_once_every_peer_talked_to_it() {
        let (ports, mut ms) = three(44_000).await;
        for m in &ms {
            wait_until(m.converged(), "convergence", |c| *c).await;
            assert_eq!(m.live().borrow().len(), 3);
        }
        // Crash n2 (no leave) and start it again at once, as a kubelet restarts a container.
        drop(ms.pop());
        let restarted = start("n2", ports[2], &ports).await;
        assert!(!*restarted.converged().borrow(), "not before any reply");
        wait_until(restarted.converged(), "convergence after restart", |c| *c).await;
        // Converged means both peers know n2 again: neither lists fewer than three.
        assert_eq!(restarted.live().borrow().len(), 3);
        for m in &ms {
            wait_until(m.live(), "peers list the restarted speaker", |l| {
                l.len() == 3
            })
            .await;
        }
    }

    #[tokio::test]
    async fn a_speaker_whose_peers_are_gone_never_converges() {
        let base = 45_000 + (std::process::id() % 1000) as u16 * 3;
        // Seeds where nobody listens.
        let m = start("n0", base, &[base + 1, base + 2]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!*m.converged().borrow());
        assert_eq!(m.live().borrow().len(), 1);
    }
}
