//! FerroLB's L4 forwarder adapters: program the kernel from ferrolb-core's forwarding plan.
//!
//! The kernel path renders plans with [`ferrolb_core::forward::nft`] and hands each transaction
//! to Debian's `nft -f -` (one netlink batch, applied atomically); updates that only change
//! elements go as the same batch over a netlink socket of its own ([`NfSocket`], ADR 0016).
//! See docs/decisions/0009-forwarder.md for why not a netlink crate. [`run`] is the speaker's
//! forwarding loop over its caches and announced IPs.

mod error;
pub mod k8s;
mod metrics;
mod nfnl;
mod nft;
mod runner;
mod sysctl;
pub mod userspace;

pub use error::ForwardError;
pub use metrics::ForwardMetrics;
pub use nfnl::NfSocket;
pub use nft::{
    ApplyKind, ApplyReport, ApplyRoute, CounterReader, CounterReading, Flusher, FrontendCounts,
    NftForwarder,
};
pub use runner::{RunInputs, RunSettings, run};
pub use sysctl::{IpForwarding, ip_forwarding};
