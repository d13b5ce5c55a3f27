//! UPDATE messages (RFC 4271 §4.3) and revised error handling (RFC 7606).

use super::attribute::{
    AsPath, AttrFlags, AttributeProblem, ErrorAction, MpReach, MpUnreach, PathAttribute,
    SegmentType, code,
};
use super::nlri::{self, Family};
use super::notification::{Notification, UpdateMessageError};
use super::{AsWidth, DecodeContext, EncodeContext, Reader};
use ipnet::{Ipv4Net, Ipv6Net};

/// An UPDATE message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Update {
    /// IPv4 prefixes withdrawn in the classic field.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes in wire order.
    pub attributes: Vec<PathAttribute>,
    /// IPv4 prefixes announced in the classic field.
    pub nlri: Vec<Ipv4Net>,
}

/// The result of decoding an UPDATE under RFC 7606.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Well-formed.
    Ok(Update),
    /// Usable once the listed attributes were dropped (RFC 7606 "attribute discard").
    AttributesDiscarded {
        /// The UPDATE without the discarded attributes.
        update: Update,
        /// What was dropped and why.
        discarded: Vec<AttributeProblem>,
    },
    /// Keep the session; the UPDATE's prefixes are withdrawn (RFC 7606 "treat-as-withdraw").
    TreatAsWithdraw(TreatAsWithdraw),
    /// Send this NOTIFICATION and close.
    SessionReset(Notification),
}

/// The prefixes to withdraw when an UPDATE is treated as a withdrawal, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreatAsWithdraw {
    /// Every IPv4 prefix the UPDATE named, announced or withdrawn.
    pub withdrawn_v4: Vec<Ipv4Net>,
    /// Every IPv6 prefix the UPDATE named, announced or withdrawn.
    pub withdrawn_v6: Vec<Ipv6Net>,
    /// The first problem that called for it.
    pub reason: AttributeProblem,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Self {
        match family {
            // An UPDATE with nothing in it.
            Family::Ipv4Unicast => Self::default(),
            // Only an empty MP_UNREACH_NLRI.
            Family::Ipv6Unicast => Self {
                attributes: vec![PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(Vec::new()))],
                ..Self::default()
            },
        }
    }

    /// Which family this UPDATE ends the initial table for, if it is an End-of-RIB marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::Ipv4Unicast),
            [PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(w))] if w.is_empty() => {
                Some(Family::Ipv6Unicast)
            }
            [PathAttribute::MpUnreach(MpUnreach::Ipv4Unicast(w))] if w.is_empty() => {
                Some(Family::Ipv4Unicast)
            }
            _ => None,
        }
    }

    /// The first attribute with this type code.
    pub fn attribute(&self, type_code: u8) -> Option<&PathAttribute> {
        self.attributes.iter().find(|a| a.type_code() == type_code)
    }

    /// IPv4 prefixes announced, from the NLRI field and MP_REACH_NLRI.
    pub fn announced_v4(&self) -> Vec<Ipv4Net> {
        let mut out = self.nlri.clone();
        for a in &self.attributes {
            if let PathAttribute::MpReach(MpReach::Ipv4Unicast { nlri, .. }) = a {
                out.extend_from_slice(nlri);
            }
        }
        out
    }

    /// IPv6 prefixes announced in MP_REACH_NLRI.
    pub fn announced_v6(&self) -> Vec<Ipv6Net> {
        let mut out = Vec::new();
        for a in &self.attributes {
            if let PathAttribute::MpReach(MpReach::Ipv6Unicast { nlri, .. }) = a {
                out.extend_from_slice(nlri);
            }
        }
        out
    }

    /// IPv4 prefixes withdrawn, from the withdrawn field and MP_UNREACH_NLRI.
    pub fn withdrawn_v4(&self) -> Vec<Ipv4Net> {
        let mut out = self.withdrawn.clone();
        for a in &self.attributes {
            if let PathAttribute::MpUnreach(MpUnreach::Ipv4Unicast(w)) = a {
                out.extend_from_slice(w);
            }
        }
        out
    }

    /// IPv6 prefixes withdrawn in MP_UNREACH_NLRI.
    pub fn withdrawn_v6(&self) -> Vec<Ipv6Net> {
        let mut out = Vec::new();
        for a in &self.attributes {
            if let PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(w)) = a {
                out.extend_from_slice(w);
            }
        }
        out
    }

    /// The AS path with AS4_PATH merged in (RFC 6793 §4.2.3), for a 2-octet session; on a 4-octet
    /// session this is just AS_PATH.
    pub fn effective_as_path(&self) -> Option<AsPath> {
        let PathAttribute::AsPath(path) = self.attribute(code::AS_PATH)? else {
            return None;
        };
        let Some(PathAttribute::As4Path(as4)) = self.attribute(code::AS4_PATH) else {
            return Some(path.clone());
        };
        let (len, len4) = (path.path_len(), as4.path_len());
        if len < len4 {
            // The AS4_PATH is inconsistent with the path; RFC 6793 says to ignore it.
            return Some(path.clone());
        }
        // Keep the leading ASNs that only the 2-octet path has, then the real 4-octet tail.
        let mut keep = len - len4;
        let mut merged = AsPath::default();
        for seg in &path.segments {
            if keep == 0 {
                break;
            }
            match seg.kind {
                SegmentType::AsSequence => {
                    let n = keep.min(seg.asns.len());
                    merged.segments.push(super::AsSegment {
                        kind: seg.kind,
                        asns: seg.asns[..n].to_vec(),
                    });
                    keep -= n;
                }
                SegmentType::AsSet => {
                    merged.segments.push(seg.clone());
                    keep -= 1;
                }
                _ => merged.segments.push(seg.clone()),
            }
        }
        merged.segments.extend(as4.segments.iter().cloned());
        Some(merged)
    }

    /// Appends the message body (after the header). On a 2-octet session, AS4_PATH and
    /// AS4_AGGREGATOR are added when the path or aggregator holds an ASN that does not fit.
    pub(crate) fn encode_body(&self, ctx: &EncodeContext, out: &mut Vec<u8>) {
        let mut withdrawn = Vec::new();
        nlri::encode_ipv4_prefixes(&self.withdrawn, &mut withdrawn);
        let mut attrs = Vec::new();
        let has = |c| self.attribute(c).is_some();
        for a in &self.attributes {
            a.encode(ctx, &mut attrs);
            if ctx.as_width == AsWidth::Two {
                match a {
                    PathAttribute::AsPath(p) if p.needs_four_octets() && !has(code::AS4_PATH) => {
                        PathAttribute::As4Path(p.clone()).encode(ctx, &mut attrs);
                    }
                    PathAttribute::Aggregator(g)
                        if g.asn > u32::from(u16::MAX) && !has(code::AS4_AGGREGATOR) =>
                    {
                        PathAttribute::As4Aggregator(*g).encode(ctx, &mut attrs);
                    }
                    _ => {}
                }
            }
        }
        out.extend_from_slice(
            &u16::try_from(withdrawn.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&withdrawn);
        out.extend_from_slice(&u16::try_from(attrs.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&attrs);
        nlri::encode_ipv4_prefixes(&self.nlri, out);
    }

    /// Decodes a message body (after the header) with RFC 7606 error handling.
    pub fn decode(body: &[u8], ctx: &DecodeContext) -> UpdateOutcome {
        use UpdateMessageError as E;
        let reset = |sub, data: &[u8]| {
            UpdateOutcome::SessionReset(Notification::update(sub, data.to_vec()))
        };
        let mut r = Reader::new(body);
        // RFC 7606 §4: if the two length fields do not fit the message, nothing can be trusted.
        let Some(withdrawn_buf) = r.u16().and_then(|n| r.take(usize::from(n))) else {
            return reset(E::MalformedAttributeList, &[]);
        };
        let Some(attrs_buf) = r.u16().and_then(|n| r.take(usize::from(n))) else {
            return reset(E::MalformedAttributeList, &[]);
        };
        let nlri_buf = r.rest();
        // RFC 7606 §5.3: a malformed prefix cannot be skipped reliably.
        let Ok(withdrawn) = nlri::decode_ipv4_prefixes(withdrawn_buf) else {
            return reset(E::InvalidNetworkField, &[]);
        };
        let Ok(nlri) = nlri::decode_ipv4_prefixes(nlri_buf) else {
            return reset(E::InvalidNetworkField, &[]);
        };

        let mut update = Update {
            withdrawn,
            attributes: Vec::new(),
            nlri,
        };
        let mut problems: Vec<AttributeProblem> = Vec::new();
        let mut seen = [false; 256];
        let mut a = Reader::new(attrs_buf);
        while !a.is_empty() {
            let start = a.rest();
            let header = a.u8().zip(a.u8()).and_then(|(flags, type_code)| {
                let flags = AttrFlags(flags);
                let len = if flags.is_extended_length() {
                    a.u16()
                } else {
                    a.u8().map(u16::from)
                }?;
                Some((flags, type_code, len))
            });
            let Some((flags, type_code, len)) = header else {
                // RFC 7606 §4: too few octets left for an attribute header.
                problems.push(AttributeProblem::new(
                    0,
                    ErrorAction::TreatAsWithdraw,
                    E::MalformedAttributeList,
                    start,
                ));
                break;
            };
            let Some(value) = a.take(usize::from(len)) else {
                // RFC 7606 §4: the last attribute overruns the attribute list.
                problems.push(AttributeProblem::new(
                    type_code,
                    ErrorAction::TreatAsWithdraw,
                    E::AttributeLengthError,
                    start,
                ));
                break;
            };
            let raw = &start[..start.len() - a.remaining()];
            let is_mp = type_code == code::MP_REACH_NLRI || type_code == code::MP_UNREACH_NLRI;
            if std::mem::replace(&mut seen[usize::from(type_code)], true) {
                // RFC 7606 §3g: repeated MP attributes reset, others keep the first occurrence.
                let action = if is_mp {
                    ErrorAction::SessionReset
                } else {
                    ErrorAction::AttributeDiscard
                };
                problems.push(AttributeProblem::new(
                    type_code,
                    action,
                    E::MalformedAttributeList,
                    raw,
                ));
                continue;
            }
            match PathAttribute::decode(flags, type_code, value, raw, ctx) {
                Ok(PathAttribute::As4Path(_) | PathAttribute::As4Aggregator(_))
                    if ctx.as_width == AsWidth::Four =>
                {
                    // RFC 6793 §4.1: a 4-octet speaker must ignore these from another one.
                    problems.push(AttributeProblem::new(
                        type_code,
                        ErrorAction::AttributeDiscard,
                        E::Unspecific,
                        raw,
                    ));
                }
                Ok(attr) => update.attributes.push(attr),
                Err(p) => problems.push(p),
            }
        }

        if let Some(p) = problems
            .iter()
            .find(|p| p.action == ErrorAction::SessionReset)
        {
            return UpdateOutcome::SessionReset(p.notification());
        }
        if update.has_reachable_nlri() {
            // RFC 7606 §3d: missing mandatory attributes make the routes unusable, not the session.
            let mut required = vec![code::ORIGIN, code::AS_PATH];
            if !update.nlri.is_empty() {
                required.push(code::NEXT_HOP);
            }
            for c in required {
                if update.attribute(c).is_none() && !problems.iter().any(|p| p.type_code == c) {
                    problems.push(AttributeProblem::new(
                        c,
                        ErrorAction::TreatAsWithdraw,
                        E::MissingWellKnownAttribute,
                        &[c],
                    ));
                }
            }
        }
        if let Some(p) = problems
            .iter()
            .find(|p| p.action == ErrorAction::TreatAsWithdraw)
        {
            let mut withdrawn_v4 = update.withdrawn_v4();
            withdrawn_v4.extend(update.announced_v4());
            let mut withdrawn_v6 = update.withdrawn_v6();
            withdrawn_v6.extend(update.announced_v6());
            return UpdateOutcome::TreatAsWithdraw(TreatAsWithdraw {
                withdrawn_v4,
                withdrawn_v6,
                reason: p.clone(),
            });
        }
        if problems.is_empty() {
            UpdateOutcome::Ok(update)
        } else {
            UpdateOutcome::AttributesDiscarded {
                update,
                discarded: problems,
            }
        }
    }

    fn has_reachable_nlri(&self) -> bool {
        !self.nlri.is_empty() || self.attribute(code::MP_REACH_NLRI).is_some()
    }
}
