//! UDP echo: every datagram goes back to its sender, optionally prefixed with `"<pod>: "`.

use std::future::Future;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::net::canonical_addr;

/// Serves UDP echo on `sockets` until `shutdown` completes.
pub async fn serve(
    sockets: Vec<UdpSocket>,
    prefix: Option<String>,
    shutdown: impl Future<Output = ()>,
) {
    let prefix: Arc<[u8]> = prefix
        .map(|p| format!("{p}: ").into_bytes())
        .unwrap_or_default()
        .into();
    let mut tasks = JoinSet::new();
    for socket in sockets {
        if let Ok(addr) = socket.local_addr() {
            info!(proto = "udp", addr = %addr, "listening");
        }
        let prefix = prefix.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, peer) = match socket.recv_from(&mut buf[prefix.len()..]).await {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "recv failed");
                        continue;
                    }
                };
                debug!(remote = %canonical_addr(peer), bytes = n, "udp datagram");
                buf[..prefix.len()].copy_from_slice(&prefix);
                if let Err(e) = socket.send_to(&buf[..prefix.len() + n], peer).await {
                    warn!(remote = %canonical_addr(peer), error = %e, "send failed");
                }
            }
        });
    }
    shutdown.await;
    tasks.shutdown().await;
    info!("stopped");
}
