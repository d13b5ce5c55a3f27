//! TCP-MD5 signatures (RFC 2385) through Linux's `TCP_MD5SIG` socket option.
//!
//! Neither `socket2` nor `nix` exposes `TCP_MD5SIG`, and `libc` has the constant but not
//! `struct tcp_md5sig`, so this module declares the struct and makes the one `setsockopt` call
//! itself. That call is the only unsafe code in the crate: it passes a pointer to a fully
//! initialised, correctly sized `#[repr(C)]` value, which is all `setsockopt` reads.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

/// Longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>`: a `sockaddr_storage` (128 bytes), flags, prefix
/// length, key length, interface index, key.
#[repr(C, align(8))]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; MAX_KEY_LEN],
}

/// Errors setting a key.
#[derive(Debug, thiserror::Error)]
pub enum Md5Error {
    /// The key is longer than the kernel allows.
    #[error("TCP-MD5 key is {0} bytes, longer than {MAX_KEY_LEN}")]
    KeyTooLong(usize),
    /// The kernel refused the option.
    #[error("setsockopt(TCP_MD5SIG) for {peer}: {source}")]
    Setsockopt {
        /// The peer the key was for.
        peer: IpAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// Sets (or, with an empty key, removes) the TCP-MD5 key for segments to and from `peer` on
/// `socket`. On a listening socket it applies to connections accepted from `peer`.
pub fn set_key(socket: &impl AsFd, peer: IpAddr, key: &[u8]) -> Result<(), Md5Error> {
    if key.len() > MAX_KEY_LEN {
        return Err(Md5Error::KeyTooLong(key.len()));
    }
    let mut sig = TcpMd5Sig {
        addr: [0; 128],
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // sockaddr_in / sockaddr_in6 laid out by hand: family in host order, port 0 (ignored).
    match peer {
        IpAddr::V4(a) => {
            sig.addr[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            sig.addr[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            sig.addr[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            sig.addr[8..24].copy_from_slice(&a.octets());
        }
    }
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is a live socket borrowed for this call; the pointer and length describe
    // `sig`, an initialised value of the exact type and size the kernel expects.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Md5Error::Setsockopt {
            peer,
            source: io::Error::last_os_error(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn key_on_a_listener_is_accepted() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_key(&l, "127.0.0.2".parse().unwrap(), b"secret").unwrap();
        set_key(&l, "127.0.0.2".parse().unwrap(), b"").unwrap();
        assert!(matches!(
            set_key(&l, "127.0.0.2".parse().unwrap(), &[0; 81]),
            Err(Md5Error::KeyTooLong(81))
        ));
    }
}
