//! Socket setup for BGP: source address, TTL, TCP-MD5, listeners.

use crate::md5;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Per-connection socket options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// Source address to bind before dialling.
    pub source: Option<IpAddr>,
    /// IP TTL / IPv6 hop limit for our segments.
    pub ttl: u8,
    /// TCP-MD5 key, if any.
    pub password: Option<String>,
}

fn new_socket(addr: &SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    Ok(s)
}

/// Applies the TTL to a socket of either family.
pub fn set_ttl(sock: SockRef<'_>, family_v6: bool, ttl: u8) -> io::Result<()> {
    if family_v6 {
        sock.set_unicast_hops_v6(u32::from(ttl))
    } else {
        sock.set_ttl_v4(u32::from(ttl))
    }
}

/// Dials `peer` with the options, within `timeout`.
pub async fn dial(
    peer: SocketAddr,
    opts: &SocketOptions,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let s = new_socket(&peer)?;
    set_ttl(SockRef::from(&s), peer.is_ipv6(), opts.ttl)?;
    if let Some(pw) = &opts.password {
        md5::set_key(&s, peer.ip(), pw.as_bytes()).map_err(io::Error::other)?;
    }
    if let Some(src) = opts.source {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    let std: std::net::TcpStream = s.into();
    let sock = TcpSocket::from_std_stream(std);
    match tokio::time::timeout(timeout, sock.connect(peer)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// A listening socket on `addr` (IPv6 listeners are IPv6-only, so one of each family can share
/// a port).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = new_socket(&addr)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}
