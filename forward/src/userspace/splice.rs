//! Carrying a connection's bytes without copying them through userspace: per direction,
//! `splice(2)` from the reading socket into a pipe and from the pipe into the writing socket,
//! driven by tokio's readiness. The behaviour is `tokio::io::copy_bidirectional`'s: an EOF on
//! one side becomes a FIN (`shutdown(SHUT_WR)`) on the other while the opposite direction keeps
//! flowing, the result counts the bytes delivered each way, and the first error (a reset, a
//! broken pipe) ends both directions so the caller can pass the abort on. Small messages are
//! copied (fewer syscalls); a direction splices while its reads are large. Where the kernel
//! refuses to splice (`EINVAL`, nothing moved) or no pipe can be had, that direction copies.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::unistd::pipe2;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// How bytes move from one socket to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Small messages are copied through a buffer of `buffer` bytes per direction; once a read
    /// fills the buffer (bulk), that direction splices through a pipe of `pipe` bytes without
    /// copying into userspace, and goes back to copying when a splice moves less than a page.
    /// A splice costs one syscall more per message than a copy (the pipe's second hop), which
    /// only pays off for large reads.
    Splice {
        /// The pipe's capacity (`F_SETPIPE_SZ`; the kernel rounds up to pages and caps it at
        /// `fs.pipe-max-size`), which is also the most one splice call moves.
        pipe: usize,
        /// The copy buffer, whose filling switches to splicing.
        buffer: usize,
    },
    /// Always through a userspace buffer of this many bytes per direction (read and write).
    Copy {
        /// The buffer per direction.
        buffer: usize,
    },
}

/// A splice moving less than this sends the direction back to copying.
const SMALL: usize = 4096;

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

/// Where one direction stands with its pipe.
enum PipeState {
    /// Not needed yet (no read has filled the buffer).
    NotYet,
    /// Made: splicing while reads are large.
    Made(Pipe),
    /// The kernel cannot splice here (no pipe, or `EINVAL`): copying only.
    Unavailable,
}

/// One direction until EOF, then the FIN onwards.
async fn one_way(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, how: Relay) -> io::Result<u64> {
    let (buffer, pipe_size, mut pipe) = match how {
        Relay::Splice { pipe, buffer } => (buffer, pipe, PipeState::NotYet),
        Relay::Copy { buffer } => (buffer, 0, PipeState::Unavailable),
    };
    let mut buf = vec![0u8; buffer.max(1)];
    let mut total = 0u64;
    let mut splicing = false;
    loop {
        if splicing && let PipeState::Made(p) = &pipe {
            match p.splice_once(from.as_ref(), to.as_ref()).await? {
                Spliced::Moved(0) => break,
                Spliced::Moved(n) => {
                    total += n as u64;
                    splicing = n >= SMALL;
                }
                Spliced::Unsupported => {
                    tracing::debug!("splice refused (EINVAL); copying");
                    pipe = PipeState::Unavailable;
                }
            }
            continue;
        }
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        if n == buf.len() {
            if let PipeState::NotYet = pipe {
                pipe = Pipe::new(pipe_size, buf.len()).map_or_else(
                    |e| {
                        tracing::debug!(error = %e, "no pipe for splice; copying");
                        PipeState::Unavailable
                    },
                    PipeState::Made,
                );
            }
            splicing = matches!(pipe, PipeState::Made(_));
        }
    }
    to.shutdown().await?;
    Ok(total)
}

/// What one splice round did.
enum Spliced {
    /// This many bytes went from one socket to the other; 0 is EOF.
    Moved(usize),
    /// The kernel cannot splice this socket (`EINVAL`); nothing moved.
    Unsupported,
}

/// A non-blocking pipe, closed on drop (with whatever it still holds after an error).
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe of `capacity` bytes, or an error when the kernel gives less than `at_least`:
    /// once the user's pipes pass `fs.pipe-user-pages-soft` (per uid, shared with every other
    /// process of that uid on the node), an unprivileged process gets two-page pipes and cannot
    /// grow them, and copying through the buffer is then as good.
    fn new(capacity: usize, at_least: usize) -> io::Result<Pipe> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let size = i32::try_from(capacity).unwrap_or(i32::MAX);
        // A refused size (above fs.pipe-max-size, or over the budget) leaves the pipe as made.
        let capacity = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(size)) {
            Ok(n) => n,
            Err(_) => fcntl(&write, FcntlArg::F_GETPIPE_SZ)?,
        };
        let capacity = usize::try_from(capacity).unwrap_or(0);
        if capacity < at_least {
            return Err(io::Error::other(format!(
                "the kernel gave a pipe of {capacity} bytes only"
            )));
        }
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Waits for `from` to be readable, splices what it has into the pipe and all of that on
    /// into `to`.
    async fn splice_once(&self, from: &TcpStream, to: &TcpStream) -> io::Result<Spliced> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            from.readable().await?;
            let read = from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, &self.write, None, self.capacity, flags)?)
            });
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => {
                    return Ok(Spliced::Unsupported);
                }
                Err(e) => return Err(e),
            };
            drain(&self.read, to, n, flags).await?;
            return Ok(Spliced::Moved(n));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_get_the_asked_size_and_too_small_ones_mean_copying() {
        let p = Pipe::new(256 * 1024, 16 * 1024).expect("a 256 KiB pipe");
        assert_eq!(p.capacity, 256 * 1024);
        // What the kernel gives when the user's pipe budget is spent: a pipe below the copy
        // buffer is refused, so the direction copies.
        assert!(Pipe::new(4096, 16 * 1024).is_err());
    }
}
