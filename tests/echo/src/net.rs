//! Listening sockets: every port on every bind address, dual-stack by default.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct BindSpec {
    /// Addresses to bind. Empty: all addresses, IPv4 and IPv6 (`[::]` with `IPV6_V6ONLY` off,
    /// or `0.0.0.0` alone when the namespace has no IPv6). An explicit IPv6 address is bound
    /// IPv6-only, so `--bind 0.0.0.0 --bind ::` also works.
    pub addrs: Vec<IpAddr>,
    /// Ports; each is bound on each address. Port 0 picks an ephemeral port per socket.
    pub ports: Vec<u16>,
}

/// The address to print and to put in the JSON: IPv4-mapped IPv6 addresses (what a dual-stack
/// socket reports for IPv4 peers) become plain IPv4, so `remoteAddr` reads `192.0.2.10:40000`.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn socket_for(addr: SocketAddr, ty: Type, proto: Protocol, dual: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual)?;
    }
    if ty == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn wildcard_then_v4<T>(
    port: u16,
    bind: impl Fn(SocketAddr, bool) -> io::Result<T>,
) -> io::Result<T> {
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match bind(v6, true) {
        Ok(s) => Ok(s),
        Err(e) => {
            tracing::info!(port, error = %e, "no dual-stack IPv6 socket; listening on IPv4 only");
            bind(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                false,
            )
        }
    }
}

fn bind_all<T>(
    spec: &BindSpec,
    bind: impl Fn(SocketAddr, bool) -> io::Result<T>,
) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for &port in &spec.ports {
        if spec.addrs.is_empty() {
            out.push(wildcard_then_v4(port, &bind)?);
        }
        for &ip in &spec.addrs {
            let addr = SocketAddr::new(ip, port);
            out.push(
                bind(addr, false)
                    .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// Binds TCP listeners for `spec`. Must run inside a Tokio runtime.
pub fn bind_tcp(spec: &BindSpec) -> io::Result<Vec<TcpListener>> {
    bind_all(spec, |addr, dual| {
        let s = socket_for(addr, Type::STREAM, Protocol::TCP, dual)?;
        s.listen(1024)?;
        TcpListener::from_std(s.into())
    })
}

/// Binds UDP sockets for `spec`. Must run inside a Tokio runtime.
pub fn bind_udp(spec: &BindSpec) -> io::Result<Vec<UdpSocket>> {
    bind_all(spec, |addr, dual| {
        let s = socket_for(addr, Type::DGRAM, Protocol::UDP, dual)?;
        UdpSocket::from_std(s.into())
    })
}
