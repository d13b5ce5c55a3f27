//! Errors of the forwarder adapters.

use std::process::ExitStatus;

/// What went wrong programming the kernel.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// `nft` could not be started (not installed? install Debian's `nftables`).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused the transaction (nothing of it was applied), or `conntrack` failed.
    #[error("{program} failed ({status}): {stderr}")]
    Nft {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        stderr: String,
    },
    /// An element batch over netlink was refused (nothing of it was applied) or could not be
    /// sent or answered.
    #[error("netlink: {what}: {source}")]
    Netlink {
        /// What was being done (`add element svc4`, `sending the batch`, …).
        what: String,
        /// Why (the kernel's errno for a refusal).
        #[source]
        source: std::io::Error,
    },
    /// Reading a sysctl failed.
    #[error("cannot read {path}: {source}")]
    Sysctl {
        /// The /proc/sys path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ForwardError {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ForwardError::Spawn { .. } => "spawn",
            ForwardError::Nft { .. } => "nft",
            ForwardError::Netlink { .. } => "netlink",
            ForwardError::Sysctl { .. } => "sysctl",
        }
    }
}
