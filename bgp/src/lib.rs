//! FerroLB's BGP I/O driver: runs `ferrolb_core::bgp::Session` per peer on tokio.
//!
//! A [`Speaker`] owns the passive listeners and one task per peer. Each peer task turns socket
//! events and timer expiries into session inputs and carries out the session's actions (dial,
//! write, close, arm timers). Routes are one table shared by all peers: [`Speaker::advertise`]
//! and [`Speaker::withdraw`] change it and tell every established session.

pub mod bfd;
pub mod gr;
pub mod md5;
mod peer;
pub mod routes;
pub mod socket;

pub use bfd::BfdSettings;
use ferrolb_core::bfd::BfdState;
use ferrolb_core::bgp::{CeaseSubcode, PeerKind, State};
use ipnet::IpNet;
use peer::{Event, PeerTask};
pub use routes::{RouteAttrs, RouteTable};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// Errors from the speaker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP-MD5 key could not be installed.
    #[error(transparent)]
    Md5(#[from] md5::Md5Error),
    /// A peer with this address exists already.
    #[error("peer {0} is already configured")]
    DuplicatePeer(IpAddr),
    /// No peer has this address.
    #[error("no peer {0}")]
    UnknownPeer(IpAddr),
    /// A BFD socket could not be set up.
    #[error("BFD sockets: {0}")]
    Bfd(#[source] std::io::Error),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Listen { .. } => "listen",
            Self::Md5(_) => "md5",
            Self::DuplicatePeer(_) => "duplicate_peer",
            Self::UnknownPeer(_) => "unknown_peer",
            Self::Bfd(_) => "bfd",
        }
    }
}

/// One peer: where it is, how to reach it, and the session settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address; inbound connections are matched on it.
    pub address: IpAddr,
    /// The port to dial.
    pub port: u16,
    /// Session settings for the core FSM (ASNs, router id, hold time, mode...).
    pub session: ferrolb_core::bgp::PeerConfig,
    /// Source address for dialling.
    pub source: Option<IpAddr>,
    /// TTL for multi-hop sessions; `None` is single-hop (TTL 1 for eBGP, 255 for iBGP).
    pub multihop: Option<u8>,
    /// TCP-MD5 password (RFC 2385).
    pub password: Option<String>,
    /// IPv4 next hop to announce instead of the session's local address.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop to announce instead of the session's local address.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Run a BFD session with the peer; its Down resets the BGP session at once.
    pub bfd: Option<BfdSettings>,
}

impl PeerConfig {
    /// A peer on port 179 with no options.
    pub fn new(address: IpAddr, session: ferrolb_core::bgp::PeerConfig) -> Self {
        Self {
            address,
            port: BGP_PORT,
            session,
            source: None,
            multihop: None,
            password: None,
            next_hop_v4: None,
            next_hop_v6: None,
            bfd: None,
        }
    }

    /// The TTL our segments carry.
    pub fn ttl(&self) -> u8 {
        match (self.multihop, self.peer_kind()) {
            (Some(n), _) => n,
            (None, PeerKind::External) => 1,
            (None, PeerKind::Internal) => 255,
        }
    }

    fn peer_kind(&self) -> PeerKind {
        if self.session.local_as == self.session.peer_as {
            PeerKind::Internal
        } else {
            PeerKind::External
        }
    }
}

/// What a peer is doing, for status and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// RFC 4271 state.
    pub state: State,
    /// IPv4 prefixes the peer announces to us (counted, not installed).
    pub received_v4: usize,
    /// IPv6 prefixes the peer announces to us.
    pub received_v6: usize,
    /// How many times the session reached Established.
    pub established: u64,
    /// The last failure (connect error, NOTIFICATION sent or received).
    pub last_error: Option<String>,
    /// IPv4 prefixes kept as stale while the peer restarts gracefully (RFC 4724).
    pub stale_v4: usize,
    /// IPv6 prefixes kept as stale while the peer restarts gracefully.
    pub stale_v6: usize,
}

/// Speaker-wide settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// Addresses to accept connections on (e.g. `0.0.0.0:179` and `[::]:179`); empty: dial only.
    pub listen: Vec<SocketAddr>,
}

struct PeerHandle {
    tx: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<PeerStatus>,
    task: JoinHandle<()>,
    bfd: Option<bfd::BfdHandle>,
}

struct Inner {
    routes: Arc<Mutex<RouteTable>>,
    peers: Mutex<HashMap<IpAddr, PeerHandle>>,
    listeners: Vec<Arc<TcpListener>>,
    /// Bound when the first peer with BFD is added.
    bfd: Mutex<Option<bfd::BfdMux>>,
}

/// A BGP speaker: listeners, peers and the routes they announce.
#[derive(Clone)]
pub struct Speaker {
    inner: Arc<Inner>,
    accept_tasks: Arc<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("listeners", &self.inner.listeners.len())
            .finish_non_exhaustive()
    }
}

impl Speaker {
    /// Binds the listeners and starts accepting; no peers yet.
    pub async fn new(config: SpeakerConfig) -> Result<Self, Error> {
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = socket::listen(*addr).map_err(|source| Error::Listen {
                addr: *addr,
                source,
            })?;
            info!(%addr, "BGP listening");
            listeners.push(Arc::new(l));
        }
        let inner = Arc::new(Inner {
            routes: Arc::new(Mutex::new(RouteTable::new())),
            peers: Mutex::new(HashMap::new()),
            listeners,
            bfd: Mutex::new(None),
        });
        let accept_tasks = inner
            .listeners
            .iter()
            .map(|l| tokio::spawn(accept_loop(l.clone(), Arc::downgrade(&inner))))
            .collect();
        Ok(Self {
            inner,
            accept_tasks: Arc::new(accept_tasks),
        })
    }

    /// Adds a peer and starts its session.
    pub fn add_peer(&self, config: PeerConfig) -> Result<(), Error> {
        let mut peers = self.inner.peers.lock().expect("peers lock");
        if peers.contains_key(&config.address) {
            return Err(Error::DuplicatePeer(config.address));
        }
        if let Some(pw) = &config.password {
            for l in &self.inner.listeners {
                let v6 = l.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
                if v6 == config.address.is_ipv6() {
                    md5::set_key(l.as_ref(), config.address, pw.as_bytes())?;
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(peer::initial_status());
        let address = config.address;
        info!(peer = %address, peer_as = config.session.peer_as, ttl = config.ttl(), md5 = config.password.is_some(), "adding BGP peer");
        let task = PeerTask::new(
            Arc::new(config.clone()),
            tx.clone(),
            self.inner.routes.clone(),
            status_tx,
        );
        let bfd = match config.bfd {
            Some(settings) => Some(self.start_bfd(address, config.source, settings, tx.clone())?),
            None => None,
        };
        let task = tokio::spawn(task.run(rx));
        peers.insert(
            address,
            PeerHandle {
                tx,
                status,
                task,
                bfd,
            },
        );
        Ok(())
    }

    fn start_bfd(
        &self,
        peer: IpAddr,
        source: Option<IpAddr>,
        settings: BfdSettings,
        bgp: mpsc::UnboundedSender<Event>,
    ) -> Result<bfd::BfdHandle, Error> {
        let mut mux = self.inner.bfd.lock().expect("bfd lock");
        if mux.is_none() {
            *mux = Some(bfd::BfdMux::bind(ferrolb_core::bfd::CONTROL_PORT).map_err(Error::Bfd)?);
        }
        let mux = mux.as_ref().expect("bound above");
        mux.add(peer, source, settings, bgp).map_err(Error::Bfd)
    }

    /// The BFD state with a peer (`None` without BFD).
    pub fn bfd_state(&self, address: IpAddr) -> Option<BfdState> {
        let peers = self.inner.peers.lock().expect("peers lock");
        peers
            .get(&address)
            .and_then(|p| p.bfd.as_ref())
            .map(|b| *b.state.borrow())
    }

    /// Stops a peer's session (Cease/Administrative Shutdown) and forgets it.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), Error> {
        let handle = self
            .inner
            .peers
            .lock()
            .expect("peers lock")
            .remove(&address)
            .ok_or(Error::UnknownPeer(address))?;
        for l in &self.inner.listeners {
            let _ = md5::set_key(l.as_ref(), address, b"");
        }
        if let Some(mux) = self.inner.bfd.lock().expect("bfd lock").as_ref() {
            mux.remove(address);
        }
        stop(handle).await;
        Ok(())
    }

    /// Announces `prefix` with `attrs` to every peer (replacing earlier attributes).
    pub fn advertise(&self, prefix: IpNet, attrs: RouteAttrs) {
        self.inner
            .routes
            .lock()
            .expect("routes lock")
            .insert(prefix, attrs.clone());
        self.broadcast(|| Event::Announce(prefix, attrs.clone()));
    }

    /// Withdraws `prefix` from every peer.
    pub fn withdraw(&self, prefix: IpNet) {
        let had = self
            .inner
            .routes
            .lock()
            .expect("routes lock")
            .remove(&prefix)
            .is_some();
        if had {
            self.broadcast(|| Event::Withdraw(prefix));
        }
    }

    /// The prefixes currently announced.
    pub fn advertised(&self) -> RouteTable {
        self.inner.routes.lock().expect("routes lock").clone()
    }

    /// Drops a peer's session with Cease/`subcode` and lets it restart (e.g. when BFD goes down).
    pub fn reset_peer(&self, address: IpAddr, subcode: CeaseSubcode) -> Result<(), Error> {
        let peers = self.inner.peers.lock().expect("peers lock");
        let p = peers.get(&address).ok_or(Error::UnknownPeer(address))?;
        let _ = p.tx.send(Event::Reset(subcode));
        Ok(())
    }

    /// A peer's current status.
    pub fn peer_status(&self, address: IpAddr) -> Option<PeerStatus> {
        let peers = self.inner.peers.lock().expect("peers lock");
        peers.get(&address).map(|p| p.status.borrow().clone())
    }

    /// A receiver that sees every change of a peer's status.
    pub fn watch_peer(&self, address: IpAddr) -> Option<watch::Receiver<PeerStatus>> {
        let peers = self.inner.peers.lock().expect("peers lock");
        peers.get(&address).map(|p| p.status.clone())
    }

    /// Withdraws every route from every peer, then closes every session with
    /// Cease/Administrative Shutdown and waits (briefly) for the NOTIFICATIONs to go out.
    pub async fn shutdown(&self) {
        self.broadcast(|| Event::WithdrawAll);
        let handles: Vec<PeerHandle> = self
            .inner
            .peers
            .lock()
            .expect("peers lock")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in handles {
            stop(h).await;
        }
        for t in self.accept_tasks.iter() {
            t.abort();
        }
    }

    fn broadcast(&self, mut ev: impl FnMut() -> Event) {
        let peers = self.inner.peers.lock().expect("peers lock");
        for p in peers.values() {
            let _ = p.tx.send(ev());
        }
    }
}

async fn stop(handle: PeerHandle) {
    // BFD AdminDown first: the peer then knows the BGP Cease that follows is not a failure.
    if let Some(b) = handle.bfd {
        b.stop().await;
    }
    let (ack_tx, ack_rx) = oneshot::channel();
    if handle.tx.send(Event::Stop(ack_tx)).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(5), ack_rx).await;
    }
    handle.task.abort();
}

async fn accept_loop(listener: Arc<TcpListener>, inner: std::sync::Weak<Inner>) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        // A dual-stack socket would show IPv4 peers as ::ffff:a.b.c.d; ours are single-family,
        // but normalise anyway so matching never depends on it.
        let ip = match from.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let peers = inner.peers.lock().expect("peers lock");
        match peers.get(&ip) {
            Some(p) => {
                let _ = p.tx.send(Event::Inbound(stream));
            }
            None => warn!(%from, "connection from an unconfigured peer refused"),
        }
    }
}
