//! MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760), with IPv6 next hops (RFC 2545).

use super::Reader;
use super::nlri::{self, Afi, PrefixError, Safi};
use super::notification::UpdateMessageError;
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// MP_REACH_NLRI contents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MpReach {
    /// IPv4 unicast carried in MP_REACH (some daemons do this instead of the NLRI field).
    Ipv4Unicast {
        /// Next hop.
        next_hop: Ipv4Addr,
        /// Announced prefixes.
        nlri: Vec<Ipv4Net>,
    },
    /// IPv6 unicast (RFC 2545).
    Ipv6Unicast {
        /// Global next hop.
        next_hop: Ipv6Addr,
        /// Link-local next hop, sent when the peer shares the link.
        link_local: Option<Ipv6Addr>,
        /// Announced prefixes.
        nlri: Vec<Ipv6Net>,
    },
    /// Another family, kept as raw bytes: we neither use nor reject it.
    Other {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
        /// Next hop bytes.
        next_hop: Vec<u8>,
        /// NLRI bytes.
        nlri: Vec<u8>,
    },
}

/// MP_UNREACH_NLRI contents.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MpUnreach {
    /// IPv4 unicast withdrawals.
    Ipv4Unicast(Vec<Ipv4Net>),
    /// IPv6 unicast withdrawals; empty is the IPv6 End-of-RIB marker.
    Ipv6Unicast(Vec<Ipv6Net>),
    /// Another family, kept as raw bytes.
    Other {
        /// Address family.
        afi: Afi,
        /// Subsequent address family.
        safi: Safi,
        /// Withdrawn routes bytes.
        withdrawn: Vec<u8>,
    },
}

fn prefix_problem(e: PrefixError) -> UpdateMessageError {
    match e {
        PrefixError::LengthTooLong(_) | PrefixError::Truncated => {
            UpdateMessageError::InvalidNetworkField
        }
    }
}

pub(crate) fn encode_mp_reach(mp: &MpReach, out: &mut Vec<u8>) {
    let (afi, safi) = match mp {
        MpReach::Ipv4Unicast { .. } => (Afi::Ipv4, Safi::Unicast),
        MpReach::Ipv6Unicast { .. } => (Afi::Ipv6, Safi::Unicast),
        MpReach::Other { afi, safi, .. } => (*afi, *safi),
    };
    out.extend_from_slice(&u16::from(afi).to_be_bytes());
    out.push(safi.into());
    match mp {
        MpReach::Ipv4Unicast { next_hop, nlri } => {
            out.push(4);
            out.extend_from_slice(&next_hop.octets());
            out.push(0); // reserved
            nlri::encode_ipv4_prefixes(nlri, out);
        }
        MpReach::Ipv6Unicast {
            next_hop,
            link_local,
            nlri,
        } => {
            out.push(if link_local.is_some() { 32 } else { 16 });
            out.extend_from_slice(&next_hop.octets());
            if let Some(ll) = link_local {
                out.extend_from_slice(&ll.octets());
            }
            out.push(0); // reserved
            nlri::encode_ipv6_prefixes(nlri, out);
        }
        MpReach::Other { next_hop, nlri, .. } => {
            out.push(u8::try_from(next_hop.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&next_hop[..next_hop.len().min(255)]);
            out.push(0); // reserved
            out.extend_from_slice(nlri);
        }
    }
}

pub(crate) fn decode_mp_reach(value: &[u8]) -> Result<MpReach, UpdateMessageError> {
    let bad = UpdateMessageError::OptionalAttributeError;
    let mut r = Reader::new(value);
    let afi = Afi::from(r.u16().ok_or(bad)?);
    let safi = Safi::from(r.u8().ok_or(bad)?);
    let nh_len = r.u8().ok_or(bad)?;
    let mut nh = Reader::new(r.take(usize::from(nh_len)).ok_or(bad)?);
    let _reserved = r.u8().ok_or(bad)?;
    let nlri = r.rest();
    Ok(match (afi, safi) {
        (Afi::Ipv4, Safi::Unicast) => {
            if nh_len != 4 {
                return Err(bad);
            }
            MpReach::Ipv4Unicast {
                next_hop: nh.ipv4().ok_or(bad)?,
                nlri: nlri::decode_ipv4_prefixes(nlri).map_err(prefix_problem)?,
            }
        }
        (Afi::Ipv6, Safi::Unicast) => {
            if nh_len != 16 && nh_len != 32 {
                return Err(bad);
            }
            let next_hop = nh.ipv6().ok_or(bad)?;
            let link_local = if nh_len == 32 {
                Some(nh.ipv6().ok_or(bad)?)
            } else {
                None
            };
            MpReach::Ipv6Unicast {
                next_hop,
                link_local,
                nlri: nlri::decode_ipv6_prefixes(nlri).map_err(prefix_problem)?,
            }
        }
        _ => MpReach::Other {
            afi,
            safi,
            next_hop: nh.rest().to_vec(),
            nlri: nlri.to_vec(),
        },
    })
}

pub(crate) fn encode_mp_unreach(mp: &MpUnreach, out: &mut Vec<u8>) {
    match mp {
        MpUnreach::Ipv4Unicast(w) => {
            out.extend_from_slice(&u16::from(Afi::Ipv4).to_be_bytes());
            out.push(Safi::Unicast.into());
            nlri::encode_ipv4_prefixes(w, out);
        }
        MpUnreach::Ipv6Unicast(w) => {
            out.extend_from_slice(&u16::from(Afi::Ipv6).to_be_bytes());
            out.push(Safi::Unicast.into());
            nlri::encode_ipv6_prefixes(w, out);
        }
        MpUnreach::Other {
            afi,
            safi,
            withdrawn,
        } => {
            out.extend_from_slice(&u16::from(*afi).to_be_bytes());
            out.push((*safi).into());
            out.extend_from_slice(withdrawn);
        }
    }
}

pub(crate) fn decode_mp_unreach(value: &[u8]) -> Result<MpUnreach, UpdateMessageError> {
    let bad = UpdateMessageError::OptionalAttributeError;
    let mut r = Reader::new(value);
    let afi = Afi::from(r.u16().ok_or(bad)?);
    let safi = Safi::from(r.u8().ok_or(bad)?);
    let rest = r.rest();
    Ok(match (afi, safi) {
        (Afi::Ipv4, Safi::Unicast) => {
            MpUnreach::Ipv4Unicast(nlri::decode_ipv4_prefixes(rest).map_err(prefix_problem)?)
        }
        (Afi::Ipv6, Safi::Unicast) => {
            MpUnreach::Ipv6Unicast(nlri::decode_ipv6_prefixes(rest).map_err(prefix_problem)?)
        }
        _ => MpUnreach::Other {
            afi,
            safi,
            withdrawn: rest.to_vec(),
        },
    })
}
