//! The sysctls DNAT of non-local VIPs depends on.

use crate::ForwardError;

/// Whether this network namespace routes packets it does not own (needed for DNAT'd VIP traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpForwarding {
    /// `net.ipv4.ip_forward`.
    pub ipv4: bool,
    /// `net.ipv6.conf.all.forwarding`.
    pub ipv6: bool,
}

/// Reads the forwarding sysctls of the caller's network namespace. FerroLB does not set them:
/// that is the node's (or chart's) decision, and the speaker reports it.
pub fn ip_forwarding() -> Result<IpForwarding, ForwardError> {
    let read = |path: &str| -> Result<bool, ForwardError> {
        std::fs::read_to_string(path)
            .map(|s| s.trim() != "0")
            .map_err(|source| ForwardError::Sysctl {
                path: path.into(),
                source,
            })
    };
    Ok(IpForwarding {
        ipv4: read("/proc/sys/net/ipv4/ip_forward")?,
        ipv6: read("/proc/sys/net/ipv6/conf/all/forwarding")?,
    })
}
