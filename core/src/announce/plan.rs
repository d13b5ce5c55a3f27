//! The election over all Services, this node's announcement plan, and the diff between the
//! plan in force and the desired one as actions for the I/O half (sozu's desired − current).

use super::eligibility::{Eligibility, L2AdvView, NodeView, ServiceView, eligible_nodes};
use super::owner::{Mode, assign};
use super::{NodeName, ServiceKey};
use crate::l2::ipv6::solicited_node;
use crate::l2::responder::IpStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// When gratuitous ARP / unsolicited NA rounds go out after a takeover, from the takeover.
///
/// The first goes at once; quick repeats cover a lost first packet and switches still learning
/// the new port; the tail (6 s, past MetalLB's 5 s) covers hosts that were busy or asleep.
pub const GRATUITOUS_OFFSETS: [Duration; 6] = [
    Duration::ZERO,
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(6),
];

/// Everything the election reads.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// LoadBalancer Services with ingress IPs.
    pub services: &'a [ServiceView],
    /// Nodes.
    pub nodes: &'a [NodeView],
    /// L2Advertisements.
    pub advertisements: &'a [L2AdvView],
    /// Speakers alive in the membership.
    pub live: &'a BTreeSet<NodeName>,
    /// How owners are chosen.
    pub mode: Mode,
}

/// The election result for one IP, the same on every speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Election {
    /// Services using the IP (more than one when it is shared).
    pub services: BTreeSet<ServiceKey>,
    /// Every node with its eligibility, in name order.
    pub candidates: Vec<(NodeName, Eligibility)>,
    /// The node that announces it, if any node is eligible.
    pub owner: Option<NodeName>,
}

impl Election {
    /// The eligibility of `node`, if it is a known node.
    pub fn eligibility(&self, node: &NodeName) -> Option<&Eligibility> {
        self.candidates
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, e)| e)
    }

    /// The owner and the interface it announces on.
    pub fn owner_interface(&self) -> Option<(&NodeName, &str)> {
        let owner = self.owner.as_ref()?;
        Some((owner, self.eligibility(owner)?.interface()?))
    }
}

/// Elects an owner for every Service IP. A shared IP must be announceable for all its
/// Services, so a node is eligible only if it is for each of them (first reason otherwise).
pub fn elect(inputs: &Inputs<'_>) -> BTreeMap<IpAddr, Election> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&ServiceView>> = BTreeMap::new();
    for s in inputs.services {
        for ip in s.ips.keys() {
            by_ip.entry(*ip).or_default().push(s);
        }
    }
    let mut elections: BTreeMap<IpAddr, Election> = BTreeMap::new();
    for (ip, mut services) in by_ip {
        services.sort_by(|a, b| a.key.cmp(&b.key));
        services.dedup_by(|a, b| a.key == b.key);
        let mut combined: Vec<(NodeName, Eligibility)> = Vec::new();
        for s in &services {
            let each = eligible_nodes(ip, s, inputs.nodes, inputs.advertisements, inputs.live);
            if combined.is_empty() {
                combined = each;
                continue;
            }
            for ((_, acc), (_, e)) in combined.iter_mut().zip(each) {
                if matches!(acc, Eligibility::Eligible { .. })
                    && matches!(e, Eligibility::Ineligible(_))
                {
                    *acc = e;
                }
            }
        }
        let services = services.iter().map(|s| s.key.clone()).collect();
        elections.insert(
            ip,
            Election {
                services,
                candidates: combined,
                owner: None,
            },
        );
    }
    let candidates: BTreeMap<IpAddr, Vec<NodeName>> = elections
        .iter()
        .map(|(ip, e)| {
            let eligible = e
                .candidates
                .iter()
                .filter(|(_, el)| el.interface().is_some())
                .map(|(n, _)| n.clone());
            (*ip, eligible.collect())
        })
        .collect();
    for (ip, node) in assign(&candidates, inputs.mode) {
        if let Some(e) = elections.get_mut(&ip) {
            e.owner = Some(node);
        }
    }
    elections
}

/// One IP this node announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Services using the IP.
    pub services: BTreeSet<ServiceKey>,
    /// Interface answered on.
    pub interface: String,
    /// When this node started announcing it on this interface.
    pub since: Instant,
}

/// What one node announces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Announced IPs.
    pub announcements: BTreeMap<IpAddr, Announcement>,
}

impl Plan {
    /// The solicited-node groups the IPv6 announcements need, per interface.
    pub fn solicited_node_groups(&self) -> BTreeSet<(String, Ipv6Addr)> {
        self.announcements
            .iter()
            .filter_map(|(ip, a)| match ip {
                IpAddr::V6(v6) => Some((a.interface.clone(), solicited_node(*v6))),
                IpAddr::V4(_) => None,
            })
            .collect()
    }

    /// What the responder needs to know about every elected IP from `node`'s point of view.
    pub fn statuses(
        &self,
        node: &NodeName,
        elections: &BTreeMap<IpAddr, Election>,
    ) -> BTreeMap<IpAddr, IpStatus> {
        let mut out: BTreeMap<IpAddr, IpStatus> = elections
            .iter()
            .map(|(ip, e)| {
                let status = match (e.eligibility(node), &e.owner) {
                    (Some(Eligibility::Ineligible(r)), _) => IpStatus::Ineligible(*r),
                    (_, Some(o)) if o != node => IpStatus::OwnedBy(o.clone()),
                    // Elected here but not in the plan in force yet.
                    (_, Some(_)) => IpStatus::Pending,
                    (_, None) => IpStatus::NoOwner,
                };
                (*ip, status)
            })
            .collect();
        for (ip, a) in &self.announcements {
            out.insert(
                *ip,
                IpStatus::Announced {
                    interface: a.interface.clone(),
                },
            );
        }
        out
    }
}

/// The plan for `node`: the IPs it owns, keeping `since` from `previous` where the IP stays
/// on the same interface.
pub fn plan(node: &NodeName, inputs: &Inputs<'_>, previous: &Plan, now: Instant) -> Plan {
    plan_from(node, &elect(inputs), previous, now)
}

/// [`plan`] from an election already computed (the speaker also needs it for status reports).
pub fn plan_from(
    node: &NodeName,
    elections: &BTreeMap<IpAddr, Election>,
    previous: &Plan,
    now: Instant,
) -> Plan {
    let announcements = elections
        .iter()
        .filter_map(|(ip, e)| {
            let (owner, interface) = e.owner_interface()?;
            if owner != node {
                return None;
            }
            let since = match previous.announcements.get(ip) {
                Some(p) if p.interface == interface => p.since,
                _ => now,
            };
            Some((
                *ip,
                Announcement {
                    services: e.services.clone(),
                    interface: interface.to_owned(),
                    since,
                },
            ))
        })
        .collect();
    Plan { announcements }
}

/// What the I/O half must do to move from one plan to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop answering for `ip` on `interface` at once (and cancel its gratuitous rounds).
    StopAnnouncing {
        /// The IP given up.
        ip: IpAddr,
        /// The interface it was answered on.
        interface: String,
    },
    /// Leave a solicited-node multicast group no announced IPv6 address needs any more.
    LeaveSolicitedNode {
        /// Interface.
        interface: String,
        /// Group, ff02::1:ffxx:xxxx.
        group: Ipv6Addr,
    },
    /// Join a solicited-node multicast group so solicitations for an IPv6 address reach us.
    JoinSolicitedNode {
        /// Interface.
        interface: String,
        /// Group, ff02::1:ffxx:xxxx.
        group: Ipv6Addr,
    },
    /// Start answering for `ip` on `interface` and send gratuitous packets on this schedule.
    StartAnnouncing {
        /// The IP taken over.
        ip: IpAddr,
        /// The interface to answer and advertise on.
        interface: String,
        /// When to send gratuitous ARP (request and reply) or unsolicited NA.
        gratuitous: GratuitousSchedule,
    },
}

/// Actions taking `current` to `desired`, in the order to execute them: stops first (so a
/// given-up IP goes quiet at once), then group leaves, joins, and starts (joined before the
/// first solicitation can be expected).
pub fn diff(current: &Plan, desired: &Plan, now: Instant) -> Vec<Action> {
    let moved = |ip: &IpAddr, a: &Announcement| {
        desired
            .announcements
            .get(ip)
            .is_none_or(|d| d.interface != a.interface)
    };
    let started = |ip: &IpAddr, d: &Announcement| {
        current
            .announcements
            .get(ip)
            .is_none_or(|c| c.interface != d.interface)
    };
    let mut out = Vec::new();
    for (ip, a) in current.announcements.iter().filter(|(ip, a)| moved(ip, a)) {
        out.push(Action::StopAnnouncing {
            ip: *ip,
            interface: a.interface.clone(),
        });
    }
    let (have, want) = (
        current.solicited_node_groups(),
        desired.solicited_node_groups(),
    );
    for (interface, group) in have.difference(&want) {
        out.push(Action::LeaveSolicitedNode {
            interface: interface.clone(),
            group: *group,
        });
    }
    for (interface, group) in want.difference(&have) {
        out.push(Action::JoinSolicitedNode {
            interface: interface.clone(),
            group: *group,
        });
    }
    for (ip, d) in desired
        .announcements
        .iter()
        .filter(|(ip, d)| started(ip, d))
    {
        out.push(Action::StartAnnouncing {
            ip: *ip,
            interface: d.interface.clone(),
            gratuitous: GratuitousSchedule::starting(now),
        });
    }
    out
}

/// What a gratuitous schedule wants now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Send one round now.
    Send,
    /// Nothing due; poll again at this time.
    Wait(Instant),
    /// All rounds sent.
    Done,
}

/// The gratuitous rounds for one takeover, driven by the caller's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GratuitousSchedule {
    at: Vec<Instant>,
    next: usize,
    last_sent: Option<Instant>,
}

impl GratuitousSchedule {
    /// The standard schedule ([`GRATUITOUS_OFFSETS`]) for a takeover at `now`.
    pub fn starting(now: Instant) -> Self {
        Self {
            at: GRATUITOUS_OFFSETS.iter().map(|d| now + *d).collect(),
            next: 0,
            last_sent: None,
        }
    }

    /// Every planned send time.
    pub fn times(&self) -> &[Instant] {
        &self.at
    }

    /// When the last round went out (for the ServiceAnnouncement status).
    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// The next send time, if any round is left.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.at.get(self.next).copied()
    }

    /// Whether a round is due at `now`. Rounds missed while the caller was late collapse into
    /// one send: a burst would not help a cache more than one packet does.
    pub fn poll(&mut self, now: Instant) -> Poll {
        match self.next_deadline() {
            None => Poll::Done,
            Some(t) if t > now => Poll::Wait(t),
            Some(_) => {
                while self.at.get(self.next).is_some_and(|t| *t <= now) {
                    self.next += 1;
                }
                self.last_sent = Some(now);
                Poll::Send
            }
        }
    }
}
