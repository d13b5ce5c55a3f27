//! The userspace path without Kubernetes, for `cargo xtask bench forward --userspace`
//! (xtask/src/bench/forward_userspace.rs), run inside the bench's node namespace:
//!
//! - `proxy <vip> <port,…> <backend,…> <threads>`: FerroLB's TPROXY interception and
//!   [`TcpProxy`] on a tokio runtime with `threads` workers, each port balanced over the backends
//!   at the same port; prints `ready` once listening and runs until stdin closes or SIGTERM, then
//!   removes the interception;
//! - `intercept <vip> <port,…>`: only the interception (for HAProxy binding `transparent`);
//! - `remove`: removes the interception.
//!
//! `USERSPACE_PROXY_RELAY=copy:<buffer>` or `splice:<pipe>:<buffer>` (bytes) replaces the
//! default [`Relay`] of `proxy`, for comparing relays on the bench's namespaces.

use ferrolb_core::forward::{
    AllowedSources, Backends, EndpointPool, Frontend, Protocol, ServiceKey,
};
use ferrolb_forward::userspace::{
    InterceptConfig, Interceptor, ProxyFrontend, ProxySettings, Relay, TcpProxy, UserspaceMetrics,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match a.as_slice() {
        ["proxy", vip, ports, backends, threads] => {
            proxy(parse(vip), &list(ports), &list(backends), parse(threads))
        }
        ["intercept", vip, ports] => intercepted(parse(vip), &list(ports)),
        ["remove"] => Interceptor::new(InterceptConfig::default())
            .remove()
            .map_err(|e| e.to_string()),
        _ => Err(format!(
            "usage: proxy <vip> <port,…> <backend,…> <threads> | intercept <vip> <port,…> | remove; got {args:?}"
        )),
    };
    if let Err(e) = r {
        eprintln!("userspace_proxy: {e}");
        std::process::exit(1);
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| {
        eprintln!("userspace_proxy: cannot parse {s:?}");
        std::process::exit(2)
    })
}

fn list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').map(parse).collect()
}

fn intercepted(vip: IpAddr, ports: &[u16]) -> Result<(), String> {
    let set = ports.iter().map(|p| (vip, Protocol::Tcp, *p)).collect();
    Interceptor::new(InterceptConfig::default())
        .apply(&set)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn proxy(vip: IpAddr, ports: &[u16], backends: &[IpAddr], threads: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut settings = ProxySettings::default();
        if let Ok(spec) = std::env::var("USERSPACE_PROXY_RELAY") {
            settings.relay = relay(&spec)?;
        }
        let mut proxy = TcpProxy::new(settings, UserspaceMetrics::default());
        let wanted: BTreeMap<Frontend, ProxyFrontend> = ports
            .iter()
            .map(|&port| {
                let f = Frontend {
                    vip,
                    protocol: Protocol::Tcp,
                    port,
                };
                let pf = ProxyFrontend {
                    key: ServiceKey::new("bench", "userspace"),
                    backends: Backends::Forward {
                        backends: backends.iter().map(|b| SocketAddr::new(*b, port)).collect(),
                        pool: EndpointPool::Ready,
                    },
                    allowed: AllowedSources::Any,
                    proxy_protocol: None,
                };
                (f, pf)
            })
            .collect();
        let listening = proxy.apply(&wanted);
        if listening.len() != ports.len() {
            return Err(format!("listening on {listening:?} only"));
        }
        let set: BTreeSet<_> = listening
            .iter()
            .map(|f| (f.vip, f.protocol, f.port))
            .collect();
        let mut interceptor = Interceptor::new(InterceptConfig::default());
        interceptor.apply(&set).map_err(|e| e.to_string())?;
        println!("ready");
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = stdin_closed => {}
            _ = term.recv() => {}
        }
        proxy.shutdown(Duration::ZERO).await;
        interceptor.remove().map_err(|e| e.to_string())
    })
}

/// `copy:<buffer>` or `splice:<pipe>:<buffer>`.
fn relay(spec: &str) -> Result<Relay, String> {
    let n = |s: &str| s.parse::<usize>().map_err(|e| format!("{spec:?}: {e}"));
    match spec.split(':').collect::<Vec<_>>().as_slice() {
        ["copy", buffer] => Ok(Relay::Copy { buffer: n(buffer)? }),
        ["splice", pipe, buffer] => Ok(Relay::Splice {
            pipe: n(pipe)?,
            buffer: n(buffer)?,
        }),
        _ => Err(format!(
            "USERSPACE_PROXY_RELAY={spec:?}: expected copy:<buffer> or splice:<pipe>:<buffer>"
        )),
    }
}
