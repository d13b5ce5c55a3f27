//! What we announce: prefixes with their attributes, turned into UPDATEs for one peer.

use ferrolb_core::bgp::{
    AsPath, Community, Family, LargeCommunity, MpReach, MpUnreach, Origin, PathAttribute, PeerKind,
    Update,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Attributes a prefix is announced with; the AS path, origin and next hop come from the session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAttrs {
    /// COMMUNITIES (RFC 1997).
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITIES (RFC 8092).
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF, sent to iBGP peers only.
    pub local_pref: Option<u32>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
}

/// The table of announced prefixes shared by every peer.
pub type RouteTable = BTreeMap<IpNet, RouteAttrs>;

/// What a peer needs to turn routes into UPDATEs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateContext {
    /// Our ASN, prepended for eBGP.
    pub local_as: u32,
    /// eBGP or iBGP.
    pub peer_kind: PeerKind,
    /// IPv4 next hop (the session's local address, or configured).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// IPv6 next hop (the session's local address, or configured).
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// Why a route could not be sent to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// No next hop of the prefix's family is known for this session.
    #[error("no {0:?} next hop for this session")]
    NoNextHop(Family),
}

/// How many prefixes go in one UPDATE: keeps messages well under 4096 bytes (an IPv6 /128 takes
/// 17 bytes of NLRI, attributes take at most a few hundred with sane community lists).
const V4_PER_UPDATE: usize = 400;
const V6_PER_UPDATE: usize = 150;

impl UpdateContext {
    fn common(&self, attrs: &RouteAttrs) -> Vec<PathAttribute> {
        let path = match self.peer_kind {
            PeerKind::External => AsPath::sequence(vec![self.local_as]),
            PeerKind::Internal => AsPath::default(),
        };
        let mut out = vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(path),
        ];
        if let Some(med) = attrs.med {
            out.push(PathAttribute::MultiExitDisc(med));
        }
        // RFC 4271 §5.1.5: LOCAL_PREF goes to iBGP peers only, and always there.
        if self.peer_kind == PeerKind::Internal {
            out.push(PathAttribute::LocalPref(attrs.local_pref.unwrap_or(100)));
        }
        if !attrs.communities.is_empty() {
            out.push(PathAttribute::Communities(attrs.communities.clone()));
        }
        if !attrs.large_communities.is_empty() {
            out.push(PathAttribute::LargeCommunities(
                attrs.large_communities.clone(),
            ));
        }
        out
    }

    /// UPDATEs announcing `prefixes` (all with `attrs`), split to fit.
    pub fn announce(
        &self,
        prefixes: &[IpNet],
        attrs: &RouteAttrs,
    ) -> Result<Vec<Update>, SkipReason> {
        let (v4, v6) = split(prefixes);
        let mut out = Vec::new();
        if !v4.is_empty() {
            let nh = self
                .next_hop_v4
                .ok_or(SkipReason::NoNextHop(Family::Ipv4Unicast))?;
            for chunk in v4.chunks(V4_PER_UPDATE) {
                let mut attributes = self.common(attrs);
                attributes.insert(2, PathAttribute::NextHop(nh));
                out.push(Update {
                    withdrawn: Vec::new(),
                    attributes,
                    nlri: chunk.to_vec(),
                });
            }
        }
        if !v6.is_empty() {
            let nh = self
                .next_hop_v6
                .ok_or(SkipReason::NoNextHop(Family::Ipv6Unicast))?;
            for chunk in v6.chunks(V6_PER_UPDATE) {
                let mut attributes = self.common(attrs);
                attributes.push(PathAttribute::MpReach(MpReach::Ipv6Unicast {
                    next_hop: nh,
                    link_local: None,
                    nlri: chunk.to_vec(),
                }));
                out.push(Update {
                    withdrawn: Vec::new(),
                    attributes,
                    nlri: Vec::new(),
                });
            }
        }
        Ok(out)
    }

    /// UPDATEs withdrawing `prefixes`, split to fit.
    pub fn withdraw(&self, prefixes: &[IpNet]) -> Vec<Update> {
        let (v4, v6) = split(prefixes);
        let mut out: Vec<Update> = v4
            .chunks(V4_PER_UPDATE * 2)
            .map(|c| Update {
                withdrawn: c.to_vec(),
                ..Update::default()
            })
            .collect();
        out.extend(v6.chunks(V6_PER_UPDATE * 2).map(|c| Update {
            attributes: vec![PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(c.to_vec()))],
            ..Update::default()
        }));
        out
    }

    /// Every route of `table`, grouped by attributes, as UPDATEs; routes that cannot be sent are
    /// returned with the reason.
    pub fn full_table(&self, table: &RouteTable) -> (Vec<Update>, Vec<(IpNet, SkipReason)>) {
        let mut groups: BTreeMap<&RouteAttrs, Vec<IpNet>> = BTreeMap::new();
        for (p, a) in table {
            groups.entry(a).or_default().push(*p);
        }
        let mut updates = Vec::new();
        let mut skipped = Vec::new();
        for (attrs, prefixes) in groups {
            let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
                prefixes.iter().partition(|p| matches!(p, IpNet::V4(_)));
            for list in [v4, v6].into_iter().filter(|l| !l.is_empty()) {
                match self.announce(&list, attrs) {
                    Ok(u) => updates.extend(u),
                    Err(e) => skipped.extend(list.into_iter().map(|p| (p, e))),
                }
            }
        }
        (updates, skipped)
    }
}

fn split(prefixes: &[IpNet]) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for p in prefixes {
        match p {
            IpNet::V4(n) => v4.push(*n),
            IpNet::V6(n) => v6.push(*n),
        }
    }
    (v4, v6)
}

/// The next hop for a family given the session's local address and configured overrides.
pub fn next_hops(
    local: IpAddr,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    match local {
        IpAddr::V4(a) => (v4.or(Some(a)), v6),
        IpAddr::V6(a) => (v4, v6.or(Some(a))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(kind: PeerKind) -> UpdateContext {
        UpdateContext {
            local_as: 64512,
            peer_kind: kind,
            next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 11)),
            next_hop_v6: None,
        }
    }

    #[test]
    fn ebgp_prepends_our_as_and_drops_local_pref() {
        let attrs = RouteAttrs {
            local_pref: Some(200),
            ..Default::default()
        };
        let u = ctx(PeerKind::External)
            .announce(&["203.0.113.10/32".parse().unwrap()], &attrs)
            .unwrap();
        assert_eq!(u.len(), 1);
        assert!(
            u[0].attributes
                .contains(&PathAttribute::AsPath(AsPath::sequence(vec![64512])))
        );
        assert!(
            !u[0]
                .attributes
                .iter()
                .any(|a| matches!(a, PathAttribute::LocalPref(_)))
        );
    }

    #[test]
    fn ibgp_sends_local_pref_and_an_empty_path() {
        let attrs = RouteAttrs {
            local_pref: Some(200),
            ..Default::default()
        };
        let u = ctx(PeerKind::Internal)
            .announce(&["203.0.113.10/32".parse().unwrap()], &attrs)
            .unwrap();
        assert!(u[0].attributes.contains(&PathAttribute::LocalPref(200)));
        assert!(
            u[0].attributes
                .contains(&PathAttribute::AsPath(AsPath::default()))
        );
    }

    #[test]
    fn ipv6_without_a_next_hop_is_skipped() {
        let mut t = RouteTable::new();
        t.insert("2001:db8:ff::1/128".parse().unwrap(), RouteAttrs::default());
        t.insert("203.0.113.1/32".parse().unwrap(), RouteAttrs::default());
        let (u, skipped) = ctx(PeerKind::External).full_table(&t);
        assert_eq!(u.len(), 1);
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn large_tables_split() {
        let prefixes: Vec<IpNet> = (0..1000u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xCB00_7100 + i), 32).unwrap()))
            .collect();
        let u = ctx(PeerKind::External)
            .announce(&prefixes, &RouteAttrs::default())
            .unwrap();
        assert_eq!(u.len(), 3);
        assert_eq!(ctx(PeerKind::External).withdraw(&prefixes).len(), 2);
    }
}
