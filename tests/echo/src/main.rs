//! `ferrolb-echo`: the lab's echo backends. See the crate docs and `ferrolb-echo --help`.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ferrolb_echo::net::{BindSpec, bind_tcp, bind_udp};
use ferrolb_echo::{Identity, http, tcp, udp};
use tracing_subscriber::EnvFilter;

/// Echo backends for the FerroLB lab. The pod identity comes from the environment:
/// POD_NAME, NAMESPACE (or POD_NAMESPACE), NODE_NAME, POD_IP, SERVICE_NAME, INGRESS_NAME.
/// Logs go to stderr; RUST_LOG sets the level (default info).
#[derive(Debug, Parser)]
#[command(name = "ferrolb-echo", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// HTTP/1.1 and h2c echo answering with echo-basic's JSON (plus node, podIP, remoteAddr,
    /// localAddr). /health and /healthz answer 200, /status/NNN answers NNN, ?delay=2s holds
    /// the answer, X-Echo-Set-Header sets response headers.
    Http {
        #[command(flatten)]
        common: Common,
        /// Delay every echo answer (not health checks) by this many milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// TCP echo: every byte is written back.
    Tcp {
        #[command(flatten)]
        common: Common,
    },
    /// UDP echo: every datagram goes back to its sender.
    Udp {
        #[command(flatten)]
        common: Common,
        /// Prefix each answer with "<POD_NAME>: " (HOSTNAME when POD_NAME is unset).
        #[arg(long)]
        prefix_pod: bool,
    },
}

#[derive(Debug, Args)]
struct Common {
    /// Port to listen on; repeat (or comma-separate) for several. Default: 3000 (tcp, udp);
    /// for http, as echo-basic, $HTTP_PORT (3000) and $H2C_PORT (3001), both serving
    /// HTTP/1.1 and h2c.
    #[arg(long = "port", short = 'p', value_delimiter = ',')]
    ports: Vec<u16>,
    /// Address to listen on; repeatable. Default: all addresses, IPv4 and IPv6 (dual-stack).
    #[arg(long = "bind", value_delimiter = ',')]
    binds: Vec<IpAddr>,
    /// On SIGTERM/SIGINT: stop accepting, then let open connections finish for this long.
    #[arg(long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
}

impl Common {
    fn spec(&self, defaults: Vec<u16>) -> BindSpec {
        BindSpec {
            addrs: self.binds.clone(),
            ports: if self.ports.is_empty() {
                defaults
            } else {
                self.ports.clone()
            },
        }
    }
    fn grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// echo-basic's ports when the container declares none: `$HTTP_PORT` (3000) for HTTP/1.1 and
/// `$H2C_PORT` (3001) for h2c. The Gateway API conformance backends declare no `containerPort`
/// and their Services target both. Here both ports serve both protocols.
fn http_default_ports() -> anyhow::Result<Vec<u16>> {
    let port = |name: &str, default: u16| -> anyhow::Result<u16> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .with_context(|| format!("{name}={v:?} is not a port")),
            _ => Ok(default),
        }
    };
    let (http, h2c) = (port("HTTP_PORT", 3000)?, port("H2C_PORT", 3001)?);
    // The same port twice is one listener; port 0 twice is two ephemeral ones.
    Ok(if http == h2c && http != 0 {
        vec![http]
    } else {
        vec![http, h2c]
    })
}

/// Completes on SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let identity = Identity::from_env();
    // Watch signals before binding, so a SIGTERM right after start is not lost.
    let shutdown = tokio::spawn(terminated());
    let shutdown = async move {
        let _ = shutdown.await;
    };
    match cli.mode {
        Mode::Http { common, delay_ms } => {
            let listeners =
                bind_tcp(&common.spec(http_default_ports()?)).context("binding HTTP listeners")?;
            tracing::info!(mode = "http", pod = %identity.pod, namespace = %identity.namespace, node = %identity.node, "starting");
            let opts = http::HttpOptions {
                identity,
                delay: Duration::from_millis(delay_ms),
                grace: common.grace(),
            };
            http::serve(listeners, opts, shutdown).await;
        }
        Mode::Tcp { common } => {
            let listeners = bind_tcp(&common.spec(vec![3000])).context("binding TCP listeners")?;
            tracing::info!(mode = "tcp", pod = %identity.pod, "starting");
            tcp::serve(listeners, common.grace(), shutdown).await;
        }
        Mode::Udp { common, prefix_pod } => {
            let sockets = bind_udp(&common.spec(vec![3000])).context("binding UDP sockets")?;
            tracing::info!(mode = "udp", pod = %identity.pod, "starting");
            let prefix = prefix_pod.then(|| identity.display_name());
            udp::serve(sockets, prefix, shutdown).await;
        }
    }
    Ok(())
}
