//! Who announces which IP, sans-IO. Layer 2 (below) elects one owner per IP; BGP mode
//! ([`routes`]) has every selected node announce. Layer 2: eligibility of nodes for an IP, the owner
//! election every speaker computes identically, and the announcement plan and its diff.
//!
//! Everything here is a pure function of Services, Nodes, L2Advertisements and the live
//! speaker membership, so every speaker computes the same answer and no per-Service Lease is
//! needed (see docs/decisions/0008-l2-announcing.md).

pub mod eligibility;
pub mod hash;
pub mod owner;
pub mod plan;
pub mod routes;

pub use crate::selector::{LabelSelector, Requirement};
pub use eligibility::{
    Eligibility, Ineligible, InterfaceView, L2AdvView, NodeView, ServiceView, TrafficPolicy,
    eligible_nodes,
};
pub use owner::{Mode, assign, owner};
pub use plan::{
    Action, Announcement, Election, GratuitousSchedule, Inputs, Plan, Poll, diff, elect, plan,
};
pub use routes::{BgpAdvView, BgpPeerView, BgpPlan, PrefixAttrs, bgp_plan};

use std::fmt;

/// A Kubernetes Node name, which is also the speaker's name in the membership.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeName(pub String);

impl NodeName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<&str> for NodeName {
    fn from(s: &str) -> Self {
        NodeName(s.to_owned())
    }
}

impl From<String> for NodeName {
    fn from(s: String) -> Self {
        NodeName(s)
    }
}

pub use crate::service::ServiceKey;
