//! UDP frontends: one transparent socket per VIP:port; each client address is a flow with its
//! own connected socket towards one backend (picked like a TCP connection), answered from the
//! VIP:port socket, ended after [`ProxySettings::udp_idle`](super::ProxySettings) of silence. A
//! backend answering with ICMP port unreachable is ejected like a refusing TCP endpoint. With
//! `ferrolb.io/proxy-protocol: v2` every datagram to the backend starts with a v2 header (the
//! spec's rule for datagrams); v1 has no UDP form, so v1 Services get none.

use super::proxy::{Common, FrontendShared, admits, ejects, transparent};
use ferrolb_core::forward::Backends;
use ferrolb_core::proxy_protocol::{self, Header, Transport, Version};
use socket2::Type;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Largest datagram carried (IPv4/IPv6 payload limit).
const MAX_DATAGRAM: usize = 65_535;

/// A UDP socket bound to a VIP that is no local address (IP_TRANSPARENT, as the TCP listener).
pub(super) fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = transparent(addr, Type::DGRAM, socket2::Protocol::UDP)?;
    UdpSocket::from_std(s.into())
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>;

/// Receives the frontend's datagrams until aborted, creating flows for new client addresses.
pub(super) async fn serve(sock: UdpSocket, fe: Arc<FrontendShared>, common: Arc<Common>) {
    let sock = Arc::new(sock);
    let flows: Flows = Arc::default();
    let local = sock.local_addr().ok();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(service = %fe.labels.service, error = %e, "UDP receive failed");
                continue;
            }
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let view = fe.view();
        let header = match (view.fe.proxy_protocol, local) {
            (Some(Version::V2), Some(destination)) => Some(proxy_protocol::encode(
                Version::V2,
                &Header::Proxy {
                    transport: Transport::Datagram,
                    source: client,
                    destination,
                },
            )),
            _ => None,
        };
        let datagram = match &header {
            Some(h) => [h.as_slice(), &buf[..n]].concat(),
            None => buf[..n].to_vec(),
        };
        if let Some(backend) = existing {
            if backend.send(&datagram).await.is_ok() {
                fe.counters.to_backend.inc_by(n as u64);
            }
            continue;
        }
        if !admits(&view.fe.allowed, client.ip()) {
            common.metrics.connection(&fe.labels, "refused_source");
            continue;
        }
        let backends = match &view.fe.backends {
            Backends::Forward { backends, .. } => backends.clone(),
            Backends::Reject(_) => {
                common.metrics.connection(&fe.labels, "no_endpoint");
                continue;
            }
        };
        let start = fe.next.fetch_add(1, Ordering::Relaxed);
        let Some(b) = common
            .health
            .order(&backends, start, Instant::now())
            .first()
            .copied()
        else {
            continue;
        };
        let backend = match open(b).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(service = %view.fe.key, endpoint = %b, error = %e, "cannot open a UDP flow");
                common.metrics.connection(&fe.labels, "backend_failed");
                continue;
            }
        };
        if backend.send(&datagram).await.is_err() {
            continue;
        }
        fe.counters.forwarded.inc();
        fe.counters.to_backend.inc_by(n as u64);
        flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client, backend.clone());
        tokio::spawn(replies(
            backend,
            b,
            client,
            sock.clone(),
            flows.clone(),
            fe.clone(),
            common.clone(),
        ));
    }
}

async fn open(b: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = if b.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    s.connect(b).await?;
    Ok(s)
}

/// Carries one flow's replies back to the client until it is idle, refused, or the proxy stops.
async fn replies(
    backend: Arc<UdpSocket>,
    b: SocketAddr,
    client: SocketAddr,
    front: Arc<UdpSocket>,
    flows: Flows,
    fe: Arc<FrontendShared>,
    common: Arc<Common>,
) {
    common.live.fetch_add(1, Ordering::Relaxed);
    let active = &fe.counters.active;
    active.inc();
    let idle = common.settings.udp_idle;
    let mut stop = common.stop.clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            r = tokio::time::timeout(idle, backend.recv(&mut buf)) => match r {
                Ok(Ok(n)) => {
                    if front.send_to(&buf[..n], client).await.is_ok() {
                        fe.counters.to_client.inc_by(n as u64);
                    }
                }
                Ok(Err(e)) => {
                    if ejects(&e) && common.health.fail(b, Instant::now()) {
                        common.metrics.ejection(&fe.labels, b);
                        warn!(service = %fe.labels.service, endpoint = %b, error = %e, "endpoint ejected");
                    }
                    break;
                }
                Err(_) => break,
            },
            // The watch::Ref must not live in the select's output (it is not Send).
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    flows
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&client);
    active.dec();
    common.live.fetch_sub(1, Ordering::Relaxed);
}
