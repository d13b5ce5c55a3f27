//! Graceful restart, receiving-speaker role (RFC 4724 §4.2), as plain state: which families
//! of a restarting peer's routes are stale and until when.
//!
//! Received routes are only counted, never installed, so "keeping them" is keeping their
//! counts marked stale: what an operator needs to see that the peer is restarting, and what
//! the speaker will need once it acts on received routes.

use ferrolb_core::bgp::fsm::CloseReason;
use ferrolb_core::bgp::{Capability, Family, ForwardingState, GracefulRestart, Open};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What happened to the stale routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaleChange {
    /// The peer went away gracefully: these counts are kept until `until`.
    Kept {
        /// Stale prefixes per family.
        families: Vec<(Family, usize)>,
        /// The peer's restart time from now.
        until: Instant,
    },
    /// Stale routes of a family were dropped.
    Dropped(Family, DropCause),
}

/// Why stale routes were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// The peer sent End-of-RIB: its new routes replace them.
    EndOfRib,
    /// The restart time passed without the peer coming back (or finishing).
    RestartTimeExpired,
    /// The restarted peer did not keep forwarding state (F bit clear) or dropped the family.
    NotPreserved,
    /// The session ended in a way that is not graceful (e.g. a NOTIFICATION).
    NotGraceful,
}

/// The receiving-speaker state for one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Helper {
    /// The peer's graceful restart capability on the current (or last) session.
    peer: Option<GracefulRestart>,
    /// Stale prefix counts per family.
    stale: BTreeMap<Family, usize>,
    /// When the stale routes go if nothing else removed them.
    deadline: Option<Instant>,
}

fn capability(open: &Open) -> Option<&GracefulRestart> {
    open.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(gr),
        _ => None,
    })
}

impl Helper {
    /// When the stale routes expire, if any are held.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Stale prefixes of `family`.
    pub fn stale(&self, family: Family) -> usize {
        self.stale.get(&family).copied().unwrap_or(0)
    }

    /// The session came up with `open` from the peer: families it no longer preserves lose
    /// their stale routes now; the rest wait for End-of-RIB (RFC 4724 §4.2).
    pub fn session_up(&mut self, now: Instant, open: &Open) -> Vec<StaleChange> {
        self.peer = capability(open).cloned();
        let preserved = |f: Family| {
            capability(open).is_some_and(|gr| {
                gr.families.iter().any(|x| {
                    Family::from_afi_safi(x.afi, x.safi) == Some(f)
                        && x.forwarding == ForwardingState::Preserved
                })
            })
        };
        let mut out = Vec::new();
        self.stale.retain(|f, _| {
            let keep = preserved(*f);
            if !keep {
                out.push(StaleChange::Dropped(*f, DropCause::NotPreserved));
            }
            keep
        });
        if self.stale.is_empty() {
            self.deadline = None;
        } else if let Some(gr) = &self.peer {
            // The restarted peer's new restart time bounds the wait for its End-of-RIB.
            self.deadline = Some(now + Duration::from_secs(gr.restart_time.into()));
        }
        out
    }

    /// The session went down holding `received` prefixes per family.
    pub fn session_down(
        &mut self,
        now: Instant,
        reason: &CloseReason,
        received: &[(Family, usize)],
    ) -> Vec<StaleChange> {
        let graceful = matches!(
            reason,
            CloseReason::TcpClosed | CloseReason::HoldTimerExpired
        );
        let gr = match (&self.peer, graceful) {
            (Some(gr), true) => gr.clone(),
            _ => return self.drop_all(DropCause::NotGraceful),
        };
        for (f, n) in received {
            let covered = gr
                .families
                .iter()
                .any(|x| Family::from_afi_safi(x.afi, x.safi) == Some(*f));
            if covered && *n > 0 {
                self.stale.insert(*f, *n);
            }
        }
        if self.stale.is_empty() {
            return Vec::new();
        }
        let until = now + Duration::from_secs(gr.restart_time.into());
        self.deadline = Some(until);
        vec![StaleChange::Kept {
            families: self.stale.iter().map(|(f, n)| (*f, *n)).collect(),
            until,
        }]
    }

    /// The peer sent End-of-RIB for `family`.
    pub fn end_of_rib(&mut self, family: Family) -> Vec<StaleChange> {
        let mut out = Vec::new();
        if self.stale.remove(&family).is_some() {
            out.push(StaleChange::Dropped(family, DropCause::EndOfRib));
        }
        if self.stale.is_empty() {
            self.deadline = None;
        }
        out
    }

    /// Called when [`Helper::deadline`] passes.
    pub fn expired(&mut self, now: Instant) -> Vec<StaleChange> {
        match self.deadline {
            Some(d) if d <= now => self.drop_all(DropCause::RestartTimeExpired),
            _ => Vec::new(),
        }
    }

    fn drop_all(&mut self, cause: DropCause) -> Vec<StaleChange> {
        self.deadline = None;
        std::mem::take(&mut self.stale)
            .into_keys()
            .map(|f| StaleChange::Dropped(f, cause))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_core::bgp::GracefulRestartFamily;
    use ferrolb_core::bgp::capability::RestartState;

    fn open(restart_time: u16, fams: &[(Family, ForwardingState)]) -> Open {
        let gr = GracefulRestart {
            restart_state: RestartState::Restarting,
            notification: Default::default(),
            restart_time,
            families: fams
                .iter()
                .map(|(f, fw)| GracefulRestartFamily {
                    afi: f.afi(),
                    safi: f.safi(),
                    forwarding: *fw,
                })
                .collect(),
        };
        Open::new(
            64500,
            90,
            "192.0.2.1".parse().unwrap(),
            vec![Capability::GracefulRestart(gr)],
        )
    }

    const V4: Family = Family::Ipv4Unicast;
    const V6: Family = Family::Ipv6Unicast;
    const KEPT: ForwardingState = ForwardingState::Preserved;
    const LOST: ForwardingState = ForwardingState::NotPreserved;

    #[test]
    fn tcp_loss_keeps_counts_until_end_of_rib() {
        let t = Instant::now();
        let mut h = Helper::default();
        h.session_up(t, &open(120, &[(V4, KEPT), (V6, KEPT)]));
        let c = h.session_down(t, &CloseReason::TcpClosed, &[(V4, 3), (V6, 0)]);
        assert_eq!(
            c,
            [StaleChange::Kept {
                families: vec![(V4, 3)],
                until: t + Duration::from_secs(120)
            }]
        );
        assert!(h.session_up(t, &open(90, &[(V4, KEPT)])).is_empty());
        assert_eq!(h.stale(V4), 3);
        assert_eq!(h.deadline(), Some(t + Duration::from_secs(90)));
        assert_eq!(
            h.end_of_rib(V4),
            [StaleChange::Dropped(V4, DropCause::EndOfRib)]
        );
        assert_eq!((h.stale(V4), h.deadline()), (0, None));
    }

    #[test]
    fn forwarding_not_preserved_drops_at_once() {
        let t = Instant::now();
        let mut h = Helper::default();
        h.session_up(t, &open(120, &[(V4, KEPT), (V6, KEPT)]));
        h.session_down(t, &CloseReason::TcpClosed, &[(V4, 1), (V6, 2)]);
        let c = h.session_up(t, &open(120, &[(V4, LOST), (V6, KEPT)]));
        assert_eq!(c, [StaleChange::Dropped(V4, DropCause::NotPreserved)]);
        assert_eq!((h.stale(V4), h.stale(V6)), (0, 2));
    }

    #[test]
    fn notification_or_no_capability_is_not_graceful() {
        let t = Instant::now();
        let mut h = Helper::default();
        h.session_up(
            t,
            &Open::new(64500, 90, "192.0.2.1".parse().unwrap(), vec![]),
        );
        assert!(
            h.session_down(t, &CloseReason::TcpClosed, &[(V4, 1)])
                .is_empty()
        );
        assert_eq!(h.stale(V4), 0);
        h.session_up(t, &open(120, &[(V4, KEPT)]));
        let n = ferrolb_core::bgp::Notification::cease(
            ferrolb_core::bgp::CeaseSubcode::AdministrativeShutdown,
        );
        assert!(
            h.session_down(t, &CloseReason::NotificationReceived(n), &[(V4, 1)])
                .is_empty()
        );
    }

    #[test]
    fn restart_time_expiry_drops_everything() {
        let t = Instant::now();
        let mut h = Helper::default();
        h.session_up(t, &open(5, &[(V4, KEPT)]));
        h.session_down(t, &CloseReason::TcpClosed, &[(V4, 4)]);
        assert!(h.expired(t + Duration::from_secs(4)).is_empty());
        assert_eq!(
            h.expired(t + Duration::from_secs(5)),
            [StaleChange::Dropped(V4, DropCause::RestartTimeExpired)]
        );
        assert_eq!(h.deadline(), None);
    }
}
