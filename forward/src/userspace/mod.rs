//! The userspace forwarding path (`ferrolb.io/forwarding: userspace`): a tokio TCP proxy per
//! VIP:port this node announces, for Services that want a PROXY protocol header
//! (`ferrolb.io/proxy-protocol: v1|v2`) or per-connection balancing with ejection of refusing
//! endpoints. Traffic reaches it by TPROXY ([`intercept`]) so the VIP never becomes a local
//! address and the kernel never answers ARP/NDP for it. See
//! docs/decisions/0014-userspace-forwarder.md.

mod annotations;
mod health;
pub mod intercept;
mod metrics;
mod proxy;
mod runner;
mod splice;
mod udp;

pub use annotations::{BadAnnotation, PROXY_PROTOCOL_ANNOTATION, Selection, selection};
pub use health::Backoff;
pub use intercept::{InterceptConfig, Interceptor};
pub use metrics::UserspaceMetrics;
pub use proxy::{ProxyFrontend, ProxySettings, TcpProxy};
pub use runner::{UserspaceSettings, run_userspace, userspace_frontends};
pub use splice::Relay;
