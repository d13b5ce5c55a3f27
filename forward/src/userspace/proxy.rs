//! The TCP proxy: one transparent listener per VIP:port, per-connection round robin over the
//! plan's backends with ejection of refusing ones, an optional PROXY protocol header, and
//! connections that outlive their backend's removal (draining).

use super::health::{Backoff, Health};
use super::metrics::{Handles, ServiceLabels, UserspaceMetrics};
use super::splice::{Relay, relay};
use ferrolb_core::forward::{AllowedSources, Backends, Frontend, Protocol, ServiceKey};
use ferrolb_core::proxy_protocol::{self, Header, Transport, Version};
use socket2::{Domain, Socket, Type};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// How each connection's bytes move once the backend is connected (and the PROXY header,
    /// if any, sent): spliced through a pipe per direction, or copied through a buffer.
    pub relay: Relay,
    /// How long a backend may take to accept a connection before the next one is tried.
    pub connect_timeout: Duration,
    /// Ejection backoff for endpoints that refuse or time out.
    pub backoff: Backoff,
    /// Source ports for backend connections, each bound with SO_REUSEADDR so a connection may
    /// reuse the TIME_WAIT of an earlier one to the same endpoint (see the ADR). Keep it outside
    /// `net.ipv4.ip_local_port_range` so the node's own connections never compete for it.
    pub source_ports: RangeInclusive<u16>,
    /// The accept backlog of each listener.
    pub backlog: i32,
    /// A UDP flow (client address) without a datagram from its backend this long ends.
    pub udp_idle: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            relay: Relay::Splice {
                pipe: 256 * 1024,
                buffer: 16 * 1024,
            },
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            source_ports: 61_000..=65_535,
            backlog: 4096,
            udp_idle: Duration::from_secs(30),
        }
    }
}

/// One frontend the proxy should serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyFrontend {
    /// The Service.
    pub key: ServiceKey,
    /// Its backends (or the refusal), from the plan.
    pub backends: Backends,
    /// Who may connect.
    pub allowed: AllowedSources,
    /// The PROXY protocol header to send, if any.
    pub proxy_protocol: Option<Version>,
}

/// What the connection tasks read, swapped whole on every change.
#[derive(Debug)]
pub(super) struct View {
    pub(super) fe: ProxyFrontend,
}

#[derive(Debug)]
pub(super) struct FrontendShared {
    pub(super) labels: ServiceLabels,
    pub(super) counters: Handles,
    pub(super) view: RwLock<Arc<View>>,
    pub(super) next: AtomicUsize,
}

impl FrontendShared {
    /// The frontend's configuration as of now.
    pub(super) fn view(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug)]
struct Running {
    shared: Arc<FrontendShared>,
    accept: JoinHandle<()>,
}

/// State every connection shares.
#[derive(Debug)]
pub(super) struct Common {
    pub(super) settings: ProxySettings,
    pub(super) health: Health,
    pub(super) metrics: UserspaceMetrics,
    ports: AtomicU32,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) live: AtomicUsize,
}

/// The running proxy: frontends by VIP:port. Must be used inside a tokio runtime.
#[derive(Debug)]
pub struct TcpProxy {
    common: Arc<Common>,
    stop: watch::Sender<bool>,
    frontends: BTreeMap<Frontend, Running>,
}

impl TcpProxy {
    /// A proxy with no frontends yet.
    pub fn new(settings: ProxySettings, metrics: UserspaceMetrics) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        Self {
            common: Arc::new(Common {
                health: Health::new(settings.backoff),
                settings,
                metrics,
                ports: AtomicU32::new(0),
                stop: stop_rx,
                live: AtomicUsize::new(0),
            }),
            stop,
            frontends: BTreeMap::new(),
        }
    }

    /// Serves exactly `wanted` (TCP and UDP frontends; SCTP ones are ignored): new listeners bound, changed
    /// backends swapped in for new connections, removed frontends' listeners closed while their
    /// connections run on. Returns the frontends that have a listener; a frontend whose bind
    /// fails is logged and left out (retried on the next call).
    pub fn apply(&mut self, wanted: &BTreeMap<Frontend, ProxyFrontend>) -> Vec<Frontend> {
        self.frontends.retain(|f, r| {
            let keep = wanted.contains_key(f);
            if !keep {
                r.accept.abort();
                info!(vip = %f.vip, port = f.port, "userspace frontend closed; its connections drain");
            }
            keep
        });
        for (f, pf) in wanted {
            if f.protocol == Protocol::Sctp {
                continue;
            }
            if let Some(r) = self.frontends.get(f) {
                let mut view = r.shared.view.write().unwrap_or_else(|e| e.into_inner());
                if view.fe != *pf {
                    *view = Arc::new(View { fe: pf.clone() });
                }
                continue;
            }
            let addr = SocketAddr::new(f.vip, f.port);
            let bound = match f.protocol {
                Protocol::Udp => super::udp::bind(addr).map(Bound::Udp),
                _ => listen(addr, self.common.settings.backlog).map(Bound::Tcp),
            };
            match bound {
                Ok(bound) => {
                    let labels = ServiceLabels {
                        namespace: pf.key.namespace.clone(),
                        service: pf.key.name.clone(),
                    };
                    let shared = Arc::new(FrontendShared {
                        counters: self.common.metrics.handles(&labels),
                        labels,
                        view: RwLock::new(Arc::new(View { fe: pf.clone() })),
                        next: AtomicUsize::new(0),
                    });
                    let (fe, common) = (shared.clone(), self.common.clone());
                    let accept = match bound {
                        Bound::Tcp(l) => tokio::spawn(accept_loop(l, fe, common)),
                        Bound::Udp(u) => tokio::spawn(super::udp::serve(u, fe, common)),
                    };
                    info!(service = %pf.key, vip = %f.vip, port = f.port, "userspace frontend listening");
                    self.frontends.insert(*f, Running { shared, accept });
                }
                Err(e) => {
                    warn!(service = %pf.key, vip = %f.vip, port = f.port, error = %e, "cannot listen on the VIP; retrying later");
                }
            }
        }
        let in_use: std::collections::HashSet<SocketAddr> = wanted
            .values()
            .flat_map(|pf| match &pf.backends {
                Backends::Forward { backends, .. } => backends.clone(),
                Backends::Reject(_) => Vec::new(),
            })
            .collect();
        self.common.health.retain(|b| in_use.contains(b));
        self.frontends.keys().copied().collect()
    }

    /// Connections being carried now.
    pub fn live_connections(&self) -> usize {
        self.common.live.load(Ordering::Relaxed)
    }

    /// Closes every listener, lets connections finish for up to `grace`, then cuts the rest.
    pub async fn shutdown(mut self, grace: Duration) {
        for (_, r) in std::mem::take(&mut self.frontends) {
            r.accept.abort();
        }
        let deadline = Instant::now() + grace;
        while self.live_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        while self.live_connections() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        for r in self.frontends.values() {
            r.accept.abort();
        }
        let _ = self.stop.send(true);
    }
}

/// A frontend's socket.
enum Bound {
    Tcp(TcpListener),
    Udp(tokio::net::UdpSocket),
}

/// A listener on a VIP that is no local address: IP_TRANSPARENT lets it bind, and TPROXY
/// delivers the VIP's packets to it.
fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let s = transparent(addr, Type::STREAM, socket2::Protocol::TCP)?;
    s.listen(backlog)?;
    TcpListener::from_std(s.into())
}

/// A non-blocking socket bound to `addr` with IP_TRANSPARENT, which lets it bind a VIP that is
/// no local address (IPv6 sockets are IPv6-only).
pub(super) fn transparent(
    addr: SocketAddr,
    ty: Type,
    proto: socket2::Protocol,
) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, ty, Some(proto))?;
    if addr.is_ipv4() {
        s.set_ip_transparent_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

async fn accept_loop(listener: TcpListener, fe: Arc<FrontendShared>, common: Arc<Common>) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(serve(client, peer, fe.clone(), common.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(service = %fe.labels.service, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts a connection as live while it exists.
struct LiveGuard<'a>(&'a AtomicUsize);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Refuses a client: an abortive close sends RST right away, like the kernel path's reject.
fn refuse(client: TcpStream) {
    let _ = client.set_zero_linger();
}

async fn serve(client: TcpStream, peer: SocketAddr, fe: Arc<FrontendShared>, common: Arc<Common>) {
    common.live.fetch_add(1, Ordering::Relaxed);
    let _live = LiveGuard(&common.live);
    let m = &common.metrics;
    let view = fe.view();
    if !admits(&view.fe.allowed, peer.ip()) {
        m.connection(&fe.labels, "refused_source");
        return refuse(client);
    }
    let backends = match &view.fe.backends {
        Backends::Forward { backends, .. } => backends,
        Backends::Reject(_) => {
            m.connection(&fe.labels, "no_endpoint");
            return refuse(client);
        }
    };
    let start = fe.next.fetch_add(1, Ordering::Relaxed);
    let order = common.health.order(backends, start, Instant::now());
    let mut server = None;
    for b in order {
        match connect(b, &common).await {
            Ok(s) => {
                common.health.ok(b);
                server = Some((b, s));
                break;
            }
            Err(e) if ejects(&e) => {
                if common.health.fail(b, Instant::now()) {
                    m.ejection(&fe.labels, b);
                    warn!(service = %view.fe.key, endpoint = %b, error = %e, "endpoint ejected");
                }
            }
            Err(e) => debug!(service = %view.fe.key, endpoint = %b, error = %e, "connect failed"),
        }
    }
    let Some((backend, mut server)) = server else {
        m.connection(&fe.labels, "backend_failed");
        return refuse(client);
    };
    fe.counters.forwarded.inc();
    let active = &fe.counters.active;
    active.inc();
    let mut client = client;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let local = client.local_addr().unwrap_or(peer);
    if let Some(v) = view.fe.proxy_protocol {
        let header = Header::Proxy {
            transport: Transport::Stream,
            source: peer,
            destination: local,
        };
        if let Err(e) = server.write_all(&proxy_protocol::encode(v, &header)).await {
            debug!(endpoint = %backend, error = %e, "writing the PROXY header failed");
            active.dec();
            let _ = server.set_zero_linger();
            return refuse(client);
        }
    }
    let mut stop = common.stop.clone();
    let copied = tokio::select! {
        r = relay(&mut client, &mut server, common.settings.relay) => r,
        _ = stop.wait_for(|s| *s) => Err(io::Error::other("proxy stopped")),
    };
    match copied {
        Ok((to_backend, to_client)) => {
            fe.counters.to_backend.inc_by(to_backend);
            fe.counters.to_client.inc_by(to_client);
        }
        Err(e) => {
            // One side reset or the proxy stops: pass the abort on, leaving no TIME_WAIT here.
            debug!(endpoint = %backend, error = %e, "connection aborted");
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
    active.dec();
}

/// Whether `loadBalancerSourceRanges` let `ip` in (an IPv4 client on a dual-stack socket
/// appears as `::ffff:a.b.c.d`; ranges are written as IPv4).
pub(super) fn admits(allowed: &AllowedSources, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    match allowed {
        AllowedSources::Any => true,
        AllowedSources::Only(nets) => nets.iter().any(|n| n.contains(&ip)),
    }
}

/// Failures that say the endpoint does not take connections (as opposed to a local problem).
pub(super) fn ejects(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::ConnectionReset
    )
}

/// Connects to `b` from a source port of our own range bound with SO_REUSEADDR: for a bound
/// socket the kernel lets `connect` take over a TIME_WAIT of the same four-tuple (timestamps
/// keep the new connection apart), so churn cannot exhaust ports. Ports in use by a live
/// connection to the same endpoint, or by another socket, are skipped; when the whole range is
/// busy the kernel picks an ephemeral port.
async fn connect(b: SocketAddr, common: &Common) -> io::Result<TcpStream> {
    let range = &common.settings.source_ports;
    let (lo, hi) = (u32::from(*range.start()), u32::from(*range.end()));
    let span = hi - lo + 1;
    let timeout = common.settings.connect_timeout;
    let any: IpAddr = if b.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    for _ in 0..span.min(64) {
        let port = lo + common.ports.fetch_add(1, Ordering::Relaxed) % span;
        let sock = socket(b)?;
        sock.set_reuseaddr(true)?;
        match sock.bind(SocketAddr::new(any, port as u16)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
        match tokio::time::timeout(timeout, sock.connect(b)).await {
            Ok(Err(e)) if e.kind() == io::ErrorKind::AddrNotAvailable => continue,
            Ok(r) => return r,
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
    }
    match tokio::time::timeout(timeout, socket(b)?.connect(b)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

fn socket(b: SocketAddr) -> io::Result<TcpSocket> {
    if b.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}
