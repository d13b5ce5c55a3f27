//! TCP echo: every byte read is written back.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::net::canonical_addr;

/// Serves TCP echo on `listeners` until `shutdown` completes, then stops accepting and lets
/// open connections finish for up to `grace` before dropping them.
pub async fn serve(
    listeners: Vec<TcpListener>,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut conns = JoinSet::new();
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let mut accepters = JoinSet::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<TcpStream>(64);
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(proto = "tcp", addr = %addr, "listening");
        }
        let mut stop = stop_tx.subscribe();
        let tx = conn_tx.clone();
        accepters.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            if tx.send(stream).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        });
    }
    drop(conn_tx);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(stream) = conn_rx.recv() => { conns.spawn(echo(stream)); }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Stop accepting: close the listeners now.
    let _ = stop_tx.send(true);
    while accepters.join_next().await.is_some() {}
    drop(conn_rx);
    info!(
        open = conns.len(),
        grace_ms = grace.as_millis() as u64,
        "shutting down"
    );
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        info!(
            open = conns.len(),
            "grace period over; closing remaining connections"
        );
        conns.shutdown().await;
    }
    info!("stopped");
}

async fn echo(mut stream: TcpStream) {
    let peer = stream.peer_addr().map(canonical_addr).ok();
    let local = stream.local_addr().map(canonical_addr).ok();
    debug!(remote = ?peer, local = ?local, "tcp connection");
    let (mut r, mut w) = stream.split();
    let copied = tokio::io::copy(&mut r, &mut w).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    debug!(remote = ?peer, bytes = ?copied.as_ref().ok(), error = ?copied.as_ref().err(), "tcp connection closed");
}
