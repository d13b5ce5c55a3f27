//! BFD over UDP (RFC 5881, single hop): runs `ferrolb_core::bfd::BfdSession` per peer.
//!
//! One receiving socket per family listens on port 3784 and hands packets, after the TTL 255
//! check, to the session of the source address. Each session task owns a sending socket bound
//! to a port in 49152-65535 with TTL 255, its timers and the core session. When a session that
//! was Up goes Down, the BGP session with that peer is reset at once (Cease/BFD Down).

use crate::peer::Event;
use ferrolb_core::bfd::{
    BfdAction, BfdConfig, BfdInput, BfdSession, BfdState, BfdTimer, CONTROL_PORT, ControlPacket,
    DiscardReason,
};
use ferrolb_core::bgp::CeaseSubcode;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The only TTL / hop limit a single-hop BFD packet may arrive with (RFC 5881 §5).
pub const REQUIRED_TTL: u8 = 255;
/// Source ports for control packets (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Per-peer BFD settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BfdSettings {
    /// Desired minimum transmit interval once Up.
    pub min_tx: Duration,
    /// Required minimum receive interval.
    pub min_rx: Duration,
    /// Missed packets before the session goes down.
    pub multiplier: u8,
}

impl Default for BfdSettings {
    /// 300 ms x 3: a dead peer is noticed within 900 ms.
    fn default() -> Self {
        Self {
            min_tx: Duration::from_millis(300),
            min_rx: Duration::from_millis(300),
            multiplier: 3,
        }
    }
}

/// Why a received datagram was not given to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// TTL / hop limit other than 255: not from a directly connected peer (RFC 5881 §5).
    Ttl(Option<u8>),
    /// The packet failed the session-independent checks.
    Invalid(DiscardReason),
    /// No BFD session with the source address.
    UnknownPeer(IpAddr),
}

/// What the receive loop decides for one datagram.
pub fn classify(bytes: &[u8], ttl: Option<u8>) -> Result<ControlPacket, DropReason> {
    if ttl != Some(REQUIRED_TTL) {
        return Err(DropReason::Ttl(ttl));
    }
    ControlPacket::decode(bytes).map_err(DropReason::Invalid)
}

type Routes = Arc<Mutex<HashMap<IpAddr, mpsc::UnboundedSender<ControlPacket>>>>;

/// The receiving sockets and the sessions they feed.
pub(crate) struct BfdMux {
    sessions: Routes,
    rx_tasks: Vec<JoinHandle<()>>,
    port: u16,
}

impl std::fmt::Debug for BfdMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfdMux")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A running BFD session task.
pub(crate) struct BfdHandle {
    /// Its state, for status.
    pub(crate) state: watch::Receiver<BfdState>,
    stop: mpsc::UnboundedSender<()>,
    task: JoinHandle<()>,
}

impl BfdHandle {
    /// Sends AdminDown (so the peer does not take it as a failure) and stops.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_millis(500), self.task).await;
    }
}

impl BfdMux {
    /// Binds `0.0.0.0:port` and `[::]:port` (IPv6-only) and starts receiving.
    pub(crate) fn bind(port: u16) -> io::Result<Self> {
        let sessions: Routes = Arc::default();
        let mut rx_tasks = Vec::new();
        for addr in [
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
        ] {
            let sock = rx_socket(addr)?;
            info!(%addr, "BFD listening");
            rx_tasks.push(tokio::spawn(receive_loop(sock, sessions.clone())));
        }
        Ok(Self {
            sessions,
            rx_tasks,
            port,
        })
    }

    /// Starts a session with `peer` whose Down (after Up) resets the BGP session behind `bgp`.
    pub(crate) fn add(
        &self,
        peer: IpAddr,
        source: Option<IpAddr>,
        settings: BfdSettings,
        bgp: mpsc::UnboundedSender<Event>,
    ) -> io::Result<BfdHandle> {
        let sock = tx_socket(peer, source, CONTROL_PORT)?;
        let (pkt_tx, pkt_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(BfdState::AdminDown);
        self.sessions
            .lock()
            .expect("bfd sessions lock")
            .insert(peer, pkt_tx);
        let session = BfdSession::new(BfdConfig {
            local_discr: next_discriminator(),
            desired_min_tx: settings.min_tx,
            required_min_rx: settings.min_rx,
            detect_mult: settings.multiplier,
        });
        info!(%peer, local = ?sock.local_addr().ok(), min_tx_ms = settings.min_tx.as_millis() as u64,
            min_rx_ms = settings.min_rx.as_millis() as u64, multiplier = settings.multiplier, "BFD session added");
        let task = SessionTask {
            peer,
            session,
            sock,
            timers: HashMap::new(),
            state: state_tx,
            bgp,
        };
        let task = tokio::spawn(task.run(pkt_rx, stop_rx));
        Ok(BfdHandle {
            state,
            stop: stop_tx,
            task,
        })
    }

    /// Forgets `peer` (its task is stopped through its handle).
    pub(crate) fn remove(&self, peer: IpAddr) {
        self.sessions
            .lock()
            .expect("bfd sessions lock")
            .remove(&peer);
    }
}

impl Drop for BfdMux {
    fn drop(&mut self) {
        for t in &self.rx_tasks {
            t.abort();
        }
    }
}

/// A non-zero discriminator, different for every session of this process.
fn next_discriminator() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Start from the clock so a restarted process does not reuse the old discriminators.
    (seed ^ n.wrapping_mul(0x9E37_79B9)).max(1)
}

fn jitter() -> u8 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    75 + (nanos % 26) as u8
}

fn rx_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    } else {
        setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
    }
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A socket for sending to `peer`: TTL 255, source port from 49152-65535, connected.
fn tx_socket(peer: IpAddr, source: Option<IpAddr>, port: u16) -> io::Result<UdpSocket> {
    let dst = SocketAddr::new(peer, port);
    let s = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    if peer.is_ipv6() {
        s.set_unicast_hops_v6(REQUIRED_TTL.into())?;
    } else {
        s.set_ttl_v4(REQUIRED_TTL.into())?;
    }
    let ip = source.unwrap_or(match peer {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    });
    // Start at a clock-derived port and walk the range until one is free.
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let start = u32::from(jitter()) * 7919 + next_discriminator() % span;
    let mut bound = Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free BFD source port",
    ));
    for i in 0..span {
        let p = SOURCE_PORTS.start() + ((start + i) % span) as u16;
        match s.bind(&SocketAddr::new(ip, p).into()) {
            Ok(()) => {
                bound = Ok(());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    bound?;
    s.connect(&dst.into())?;
    UdpSocket::from_std(s.into())
}

/// One datagram with the TTL the kernel reported.
fn recv_with_ttl(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, Option<IpAddr>, Option<u8>)> {
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut ttl = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok();
                }
                _ => {}
            }
        }
    }
    let from = msg.address.and_then(|a| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            a.as_sockaddr_in6().map(|v6| {
                let ip = v6.ip();
                ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)
            })
        }
    });
    Ok((msg.bytes, from, ttl))
}

async fn receive_loop(sock: UdpSocket, sessions: Routes) {
    let mut buf = [0u8; 512];
    loop {
        let r = sock
            .async_io(Interest::READABLE, || recv_with_ttl(&sock, &mut buf))
            .await;
        let (n, from, ttl) = match r {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(from) = from else { continue };
        let verdict = classify(&buf[..n], ttl).and_then(|p| {
            let s = sessions.lock().expect("bfd sessions lock");
            match s.get(&from) {
                Some(tx) => {
                    let _ = tx.send(p);
                    Ok(())
                }
                None => Err(DropReason::UnknownPeer(from)),
            }
        });
        if let Err(reason) = verdict {
            debug!(%from, ?reason, "BFD packet dropped");
        }
    }
}

struct SessionTask {
    peer: IpAddr,
    session: BfdSession,
    sock: UdpSocket,
    timers: HashMap<BfdTimer, Instant>,
    state: watch::Sender<BfdState>,
    bgp: mpsc::UnboundedSender<Event>,
}

impl SessionTask {
    async fn run(
        mut self,
        mut packets: mpsc::UnboundedReceiver<ControlPacket>,
        mut stop: mpsc::UnboundedReceiver<()>,
    ) {
        self.feed(BfdInput::Enable).await;
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let sleep = tokio::time::sleep_until(
                next.map_or_else(|| Instant::now() + Duration::from_secs(3600), |(_, at)| at)
                    .into(),
            );
            tokio::select! {
                p = packets.recv() => match p {
                    Some(p) => self.feed(BfdInput::Received(p)).await,
                    None => return,
                },
                _ = stop.recv() => {
                    self.feed(BfdInput::Disable).await;
                    return;
                }
                _ = sleep, if next.is_some() => {
                    if let Some((timer, _)) = next {
                        self.timers.remove(&timer);
                        self.feed(BfdInput::TimerExpired(timer)).await;
                    }
                }
            }
        }
    }

    async fn feed(&mut self, input: BfdInput) {
        self.session.set_jitter(jitter());
        let peer = self.peer;
        for a in self.session.handle(Instant::now(), input) {
            match a {
                BfdAction::Send(p) => {
                    // Sends fail while the peer has no listener (ICMP port unreachable): the
                    // detection timer is what decides, so only note it.
                    if let Err(e) = self.sock.send(&p.encode()).await {
                        debug!(%peer, error = %e, "BFD send failed");
                    }
                }
                BfdAction::SetTimer { timer, at } => {
                    self.timers.insert(timer, at);
                }
                BfdAction::CancelTimer(timer) => {
                    self.timers.remove(&timer);
                }
                BfdAction::StateChanged { from, to, diag } => {
                    self.state.send_replace(to);
                    if from == BfdState::Up && to == BfdState::Down {
                        warn!(%peer, ?diag, "BFD session down: resetting the BGP session (Cease/BFD down)");
                        let _ = self.bgp.send(Event::Reset(CeaseSubcode::BfdDown));
                    } else {
                        info!(%peer, ?from, ?to, ?diag, "BFD state changed");
                    }
                }
                BfdAction::Discarded(reason) => debug!(%peer, %reason, "BFD packet discarded"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_core::bfd::Diag;

    fn packet() -> ControlPacket {
        ControlPacket {
            diag: Diag::None,
            state: BfdState::Down,
            poll: false,
            fin: false,
            detect_mult: 3,
            my_discr: 7,
            your_discr: 0,
            desired_min_tx: Duration::from_secs(1),
            required_min_rx: Duration::from_millis(300),
            required_min_echo_rx: Duration::ZERO,
        }
    }

    #[test]
    fn only_ttl_255_is_accepted() {
        let b = packet().encode();
        assert_eq!(classify(&b, Some(255)), Ok(packet()));
        assert_eq!(classify(&b, Some(254)), Err(DropReason::Ttl(Some(254))));
        assert_eq!(classify(&b, Some(1)), Err(DropReason::Ttl(Some(1))));
        assert_eq!(classify(&b, None), Err(DropReason::Ttl(None)));
        assert_eq!(
            classify(&b[..10], Some(255)),
            Err(DropReason::Invalid(DiscardReason::Truncated))
        );
    }

    #[tokio::test]
    async fn tx_socket_uses_a_dynamic_source_port_and_ttl_255() {
        let s = tx_socket("127.0.0.1".parse().unwrap(), None, 3784).unwrap();
        let port = s.local_addr().unwrap().port();
        assert!(SOURCE_PORTS.contains(&port), "{port}");
        assert_eq!(s.ttl().unwrap(), 255);
    }

    /// Over loopback the receiving side sees the TTL 255 the sending side set.
    #[tokio::test]
    async fn receive_reports_ttl_over_loopback() {
        let rx = rx_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = tx_socket("127.0.0.1".parse().unwrap(), None, port).unwrap();
        tx.send(&packet().encode()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from, ttl) = rx
            .async_io(Interest::READABLE, || recv_with_ttl(&rx, &mut buf))
            .await
            .unwrap();
        assert_eq!(n, 24);
        assert_eq!(from, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(ttl, Some(255));
    }
}
