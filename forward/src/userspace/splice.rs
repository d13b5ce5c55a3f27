//! Carrying a connection's bytes without copying them through userspace: per direction,
//! `splice(2)` from the reading socket into a pipe and from the pipe into the writing socket,
//! driven by tokio's readiness. The behaviour is `tokio::io::copy_bidirectional`'s: an EOF on
//! one side becomes a FIN (`shutdown(SHUT_WR)`) on the other while the opposite direction keeps
//! flowing, the result counts the bytes delivered each way, and the first error (a reset, a
//! broken pipe) ends both directions so the caller can pass the abort on. Where the kernel
//! refuses to splice (`EINVAL` before any byte moved), that direction copies through a buffer.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::pipe2;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use tokio::io::{AsyncWriteExt, BufReader, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// How bytes move from one socket to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Through a pipe of this many bytes per direction with `splice(2)`, no copy into userspace.
    Splice {
        /// The pipe's capacity (`F_SETPIPE_SZ`; the kernel rounds up to pages and caps it at
        /// `fs.pipe-max-size`), which is also the most one splice call moves.
        pipe: usize,
    },
    /// Through a userspace buffer of this many bytes per direction (read and write).
    Copy {
        /// The buffer per direction.
        buffer: usize,
    },
}

/// Carries both directions until both ended; returns the bytes delivered client to server and
/// server to client, or the first error of either direction.
pub(super) async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    how: Relay,
) -> io::Result<(u64, u64)> {
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    tokio::try_join!(
        one_way(&mut client_r, &mut server_w, how),
        one_way(&mut server_r, &mut client_w, how)
    )
}

/// One direction until EOF, then the FIN onwards.
async fn one_way(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, how: Relay) -> io::Result<u64> {
    let spliced = match how {
        Relay::Splice { pipe } => match Pipe::new(pipe) {
            Ok(p) => p.pump(from.as_ref(), to.as_ref()).await?,
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; copying");
                None
            }
        },
        Relay::Copy { .. } => None,
    };
    let n = match spliced {
        Some(n) => n,
        None => {
            let buffer = match how {
                Relay::Copy { buffer } => buffer,
                Relay::Splice { pipe } => pipe,
            };
            tokio::io::copy_buf(&mut BufReader::with_capacity(buffer, from), to).await?
        }
    };
    to.shutdown().await?;
    Ok(n)
}

/// A non-blocking pipe, closed on drop (with whatever it still holds after an error).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    fn new(capacity: usize) -> io::Result<Pipe> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = i32::try_from(capacity).unwrap_or(i32::MAX);
        // A refused size (above fs.pipe-max-size for an unprivileged process) keeps the default.
        let capacity = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))
            .or_else(|_| fcntl(&write, FcntlArg::F_GETPIPE_SZ))
            .map_or(capacity, |n| n as usize);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Moves bytes until `from` reaches EOF and returns their number; `None` when the kernel
    /// cannot splice these sockets and nothing has moved yet (the caller copies instead).
    async fn pump(&self, from: &TcpStream, to: &TcpStream) -> io::Result<Option<u64>> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let mut total = 0u64;
        loop {
            from.readable().await?;
            let read = from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, &self.write, None, self.capacity, flags)?)
            });
            let n = match read {
                Ok(0) => return Ok(Some(total)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if total == 0 && e.raw_os_error() == Some(Errno::EINVAL as i32) => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            drain(&self.read, to, n, flags).await?;
            total += n as u64;
        }
    }
}

/// Moves exactly `n` bytes the pipe holds into `to`.
async fn drain(
    pipe: impl AsFd,
    to: &TcpStream,
    mut n: usize,
    flags: SpliceFFlags,
) -> io::Result<()> {
    while n > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || {
            Ok(splice(&pipe, None, to, None, n, flags)?)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => n -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
