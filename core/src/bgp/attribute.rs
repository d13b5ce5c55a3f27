//! Path attributes (RFC 4271 §4.3, §5) and their RFC 7606 error handling.

use super::notification::{Notification, UpdateMessageError};
use super::{AS_TRANS, AsWidth, DecodeContext, EncodeContext, PeerKind, Reader, wire_enum};
use std::fmt;
use std::net::Ipv4Addr;

pub use super::community::{Community, LargeCommunity};
pub use super::mp::{MpReach, MpUnreach};
use super::mp::{decode_mp_reach, decode_mp_unreach, encode_mp_reach, encode_mp_unreach};

/// Attribute type codes (IANA).
pub mod code {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR.
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// The attribute flags octet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrFlags(pub u8);

impl AttrFlags {
    /// Optional (set) or well-known (clear).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: some speaker on the path did not recognise this optional transitive attribute.
    pub const PARTIAL: u8 = 0x20;
    /// The length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
    /// Well-known attributes: transitive, not optional.
    pub const WELL_KNOWN: Self = Self(Self::TRANSITIVE);
    /// Optional non-transitive.
    pub const OPTIONAL_NON_TRANSITIVE: Self = Self(Self::OPTIONAL);
    /// Optional transitive.
    pub const OPTIONAL_TRANSITIVE: Self = Self(Self::OPTIONAL | Self::TRANSITIVE);

    /// Optional bit set.
    pub fn is_optional(self) -> bool {
        self.0 & Self::OPTIONAL != 0
    }
    /// Transitive bit set.
    pub fn is_transitive(self) -> bool {
        self.0 & Self::TRANSITIVE != 0
    }
    /// Extended length bit set.
    pub fn is_extended_length(self) -> bool {
        self.0 & Self::EXTENDED_LENGTH != 0
    }
    /// Only the optional and transitive bits, which RFC 7606 §3c compares.
    fn category(self) -> u8 {
        self.0 & (Self::OPTIONAL | Self::TRANSITIVE)
    }
}

wire_enum! {
    /// ORIGIN values.
    pub enum Origin: u8 {
        /// Learned from an interior protocol.
        Igp = 0 => "IGP",
        /// Learned by EGP.
        Egp = 1 => "EGP",
        /// Learned some other way.
        Incomplete = 2 => "INCOMPLETE",
    }
}

wire_enum! {
    /// AS_PATH segment types.
    pub enum SegmentType: u8 {
        /// Unordered set of ASes (from aggregation).
        AsSet = 1 => "AS_SET",
        /// Ordered ASes the route traversed.
        AsSequence = 2 => "AS_SEQUENCE",
        /// Confederation member ASes, ordered (RFC 5065).
        ConfedSequence = 3 => "AS_CONFED_SEQUENCE",
        /// Confederation member ASes, unordered (RFC 5065).
        ConfedSet = 4 => "AS_CONFED_SET",
    }
}

/// One AS_PATH segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsSegment {
    /// Segment type.
    pub kind: SegmentType,
    /// ASNs in the segment; never empty on the wire.
    pub asns: Vec<u32>,
}

/// AS_PATH or AS4_PATH contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AsPath {
    /// Segments in wire order.
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A path made of one AS_SEQUENCE (empty for routes originated inside the AS).
    pub fn sequence(asns: impl Into<Vec<u32>>) -> Self {
        let asns = asns.into();
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment {
                kind: SegmentType::AsSequence,
                asns,
            }],
        }
    }

    /// Path length for route selection (RFC 4271 §9.1.2.2: a set counts as one, confederation
    /// segments not at all).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::AsSequence => s.asns.len(),
                SegmentType::AsSet => 1,
                _ => 0,
            })
            .sum()
    }

    /// The neighbouring AS: the first ASN of a leading AS_SEQUENCE.
    pub fn first_as(&self) -> Option<u32> {
        let first = self.segments.first()?;
        (first.kind == SegmentType::AsSequence)
            .then(|| first.asns.first().copied())
            .flatten()
    }

    /// Whether any ASN needs 4 octets, so a 2-octet peer also needs AS4_PATH.
    pub fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .flat_map(|s| &s.asns)
            .any(|&a| a > u32::from(u16::MAX))
    }

    fn encode(&self, width: AsWidth, out: &mut Vec<u8>) {
        for seg in &self.segments {
            // A segment holds at most 255 ASNs; longer ones are split into runs of one type.
            for chunk in seg.asns.chunks(255) {
                out.push(seg.kind.into());
                out.push(chunk.len() as u8); // chunks(255) bounds this
                for &asn in chunk {
                    match width {
                        AsWidth::Four => out.extend_from_slice(&asn.to_be_bytes()),
                        AsWidth::Two => {
                            let short = u16::try_from(asn).unwrap_or(AS_TRANS);
                            out.extend_from_slice(&short.to_be_bytes());
                        }
                    }
                }
            }
        }
    }

    fn decode(buf: &[u8], width: AsWidth) -> Option<Self> {
        let mut r = Reader::new(buf);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = SegmentType::from(r.u8()?);
            let count = r.u8()?;
            // RFC 7606 §7.2: unknown segment types and empty segments make the path malformed.
            if matches!(kind, SegmentType::Other(_)) || count == 0 {
                return None;
            }
            let mut asns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                asns.push(match width {
                    AsWidth::Two => u32::from(r.u16()?),
                    AsWidth::Four => r.u32()?,
                });
            }
            segments.push(AsSegment { kind, asns });
        }
        Some(Self { segments })
    }
}

/// AGGREGATOR or AS4_AGGREGATOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aggregator {
    /// AS of the aggregating speaker.
    pub asn: u32,
    /// BGP identifier of the aggregating speaker.
    pub address: Ipv4Addr,
}

/// An attribute we do not interpret, kept with its flags.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnknownAttribute {
    /// Flags as received (the extended-length bit is recomputed on encode).
    pub flags: AttrFlags,
    /// Type code.
    pub type_code: u8,
    /// Value bytes.
    pub value: Vec<u8>,
}

impl UnknownAttribute {
    /// What to pass on when re-advertising (RFC 4271 §5): optional transitive attributes go on
    /// with the partial bit set; non-transitive ones stop here.
    pub fn for_propagation(&self) -> Option<Self> {
        (self.flags.is_optional() && self.flags.is_transitive()).then(|| Self {
            flags: AttrFlags(self.flags.0 | AttrFlags::PARTIAL),
            ..self.clone()
        })
    }
}

/// One path attribute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH, in the session's ASN width.
    AsPath(AsPath),
    /// NEXT_HOP for the IPv4 NLRI field.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    MultiExitDisc(u32),
    /// LOCAL_PREF (iBGP only).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR, in the session's ASN width.
    Aggregator(Aggregator),
    /// COMMUNITIES.
    Communities(Vec<Community>),
    /// MP_REACH_NLRI.
    MpReach(MpReach),
    /// MP_UNREACH_NLRI.
    MpUnreach(MpUnreach),
    /// AS4_PATH: the real path alongside a 2-octet AS_PATH.
    As4Path(AsPath),
    /// AS4_AGGREGATOR.
    As4Aggregator(Aggregator),
    /// LARGE_COMMUNITY.
    LargeCommunities(Vec<LargeCommunity>),
    /// Anything else.
    Unknown(UnknownAttribute),
}

/// What RFC 7606 says to do about a malformed attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// Drop the attribute, keep the route (RFC 7606 §2 "attribute discard").
    AttributeDiscard,
    /// Keep the session, withdraw the UPDATE's routes (RFC 7606 §2 "treat-as-withdraw").
    TreatAsWithdraw,
    /// Send the NOTIFICATION and close the session.
    SessionReset,
}

/// A problem found in one attribute (or in the attribute list), with its RFC 7606 handling and
/// the RFC 4271 error it would have been.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttributeProblem {
    /// Type code of the attribute, 0 when the list itself is broken.
    pub type_code: u8,
    /// What to do.
    pub action: ErrorAction,
    /// The RFC 4271 UPDATE error subcode.
    pub subcode: UpdateMessageError,
    /// NOTIFICATION data: usually the whole attribute.
    pub data: Vec<u8>,
}

impl AttributeProblem {
    pub(crate) fn new(
        type_code: u8,
        action: ErrorAction,
        subcode: UpdateMessageError,
        data: &[u8],
    ) -> Self {
        Self {
            type_code,
            action,
            subcode,
            data: data.to_vec(),
        }
    }

    /// The NOTIFICATION RFC 4271 would send for this problem.
    pub fn notification(&self) -> Notification {
        Notification::update(self.subcode, self.data.clone())
    }
}

impl fmt::Display for AttributeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attribute {}: {} ({:?})",
            self.type_code,
            self.subcode.name(),
            self.action
        )
    }
}

/// The flags a known attribute must have, and what to do when it is malformed.
fn rules(type_code: u8) -> Option<(AttrFlags, ErrorAction)> {
    use ErrorAction::*;
    Some(match type_code {
        code::ORIGIN | code::AS_PATH | code::NEXT_HOP | code::LOCAL_PREF => {
            (AttrFlags::WELL_KNOWN, TreatAsWithdraw)
        }
        code::ATOMIC_AGGREGATE => (AttrFlags::WELL_KNOWN, AttributeDiscard),
        code::MULTI_EXIT_DISC => (AttrFlags::OPTIONAL_NON_TRANSITIVE, TreatAsWithdraw),
        code::COMMUNITIES | code::LARGE_COMMUNITIES => {
            (AttrFlags::OPTIONAL_TRANSITIVE, TreatAsWithdraw)
        }
        code::AGGREGATOR | code::AS4_PATH | code::AS4_AGGREGATOR => {
            (AttrFlags::OPTIONAL_TRANSITIVE, AttributeDiscard)
        }
        // The NLRI inside cannot be located reliably once these are broken (RFC 7606 §7.11).
        code::MP_REACH_NLRI | code::MP_UNREACH_NLRI => {
            (AttrFlags::OPTIONAL_NON_TRANSITIVE, SessionReset)
        }
        _ => return None,
    })
}

impl PathAttribute {
    /// The type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Origin(_) => code::ORIGIN,
            Self::AsPath(_) => code::AS_PATH,
            Self::NextHop(_) => code::NEXT_HOP,
            Self::MultiExitDisc(_) => code::MULTI_EXIT_DISC,
            Self::LocalPref(_) => code::LOCAL_PREF,
            Self::AtomicAggregate => code::ATOMIC_AGGREGATE,
            Self::Aggregator(_) => code::AGGREGATOR,
            Self::Communities(_) => code::COMMUNITIES,
            Self::MpReach(_) => code::MP_REACH_NLRI,
            Self::MpUnreach(_) => code::MP_UNREACH_NLRI,
            Self::As4Path(_) => code::AS4_PATH,
            Self::As4Aggregator(_) => code::AS4_AGGREGATOR,
            Self::LargeCommunities(_) => code::LARGE_COMMUNITIES,
            Self::Unknown(u) => u.type_code,
        }
    }

    /// Appends flags, type, length and value.
    pub fn encode(&self, ctx: &EncodeContext, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        let flags = match self {
            Self::Unknown(u) => {
                value.extend_from_slice(&u.value);
                u.flags.0 & !AttrFlags::EXTENDED_LENGTH
            }
            known => {
                known.encode_value(ctx, &mut value);
                rules(known.type_code()).map_or(0, |(f, _)| f.0)
            }
        };
        // Extended length only when needed: some old speakers mishandle it on short values.
        match u8::try_from(value.len()) {
            Ok(len) => out.extend_from_slice(&[flags, self.type_code(), len]),
            Err(_) => {
                let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&[flags | AttrFlags::EXTENDED_LENGTH, self.type_code()]);
                out.extend_from_slice(&len.to_be_bytes());
                value.truncate(usize::from(len));
            }
        }
        out.extend_from_slice(&value);
    }

    fn encode_value(&self, ctx: &EncodeContext, out: &mut Vec<u8>) {
        match self {
            Self::Origin(o) => out.push((*o).into()),
            Self::AsPath(p) => p.encode(ctx.as_width, out),
            Self::NextHop(a) => out.extend_from_slice(&a.octets()),
            Self::MultiExitDisc(v) | Self::LocalPref(v) => out.extend_from_slice(&v.to_be_bytes()),
            Self::AtomicAggregate => {}
            Self::Aggregator(a) => {
                match ctx.as_width {
                    AsWidth::Four => out.extend_from_slice(&a.asn.to_be_bytes()),
                    AsWidth::Two => out
                        .extend_from_slice(&u16::try_from(a.asn).unwrap_or(AS_TRANS).to_be_bytes()),
                }
                out.extend_from_slice(&a.address.octets());
            }
            Self::As4Aggregator(a) => {
                out.extend_from_slice(&a.asn.to_be_bytes());
                out.extend_from_slice(&a.address.octets());
            }
            Self::Communities(cs) => cs
                .iter()
                .for_each(|c| out.extend_from_slice(&c.0.to_be_bytes())),
            Self::LargeCommunities(cs) => {
                for c in cs {
                    out.extend_from_slice(&c.global_admin.to_be_bytes());
                    out.extend_from_slice(&c.local1.to_be_bytes());
                    out.extend_from_slice(&c.local2.to_be_bytes());
                }
            }
            Self::As4Path(p) => p.encode(AsWidth::Four, out),
            Self::MpReach(mp) => encode_mp_reach(mp, out),
            Self::MpUnreach(mp) => encode_mp_unreach(mp, out),
            Self::Unknown(u) => out.extend_from_slice(&u.value),
        }
    }

    /// Decodes one attribute value. `raw` is the whole attribute (flags to end of value), used as
    /// NOTIFICATION data. `Err` says what RFC 7606 wants done.
    pub fn decode(
        flags: AttrFlags,
        type_code: u8,
        value: &[u8],
        raw: &[u8],
        ctx: &DecodeContext,
    ) -> Result<Self, AttributeProblem> {
        use UpdateMessageError as E;
        let Some((expected, action)) = rules(type_code) else {
            if !flags.is_optional() {
                return Err(AttributeProblem::new(
                    type_code,
                    ErrorAction::SessionReset,
                    E::UnrecognizedWellKnownAttribute,
                    raw,
                ));
            }
            return Ok(Self::Unknown(UnknownAttribute {
                flags,
                type_code,
                value: value.to_vec(),
            }));
        };
        let problem = |subcode| AttributeProblem::new(type_code, action, subcode, raw);
        if flags.category() != expected.category() {
            return Err(problem(E::AttributeFlagsError));
        }
        let mut r = Reader::new(value);
        let exact = |len: usize| {
            if value.len() == len {
                Ok(())
            } else {
                Err(problem(E::AttributeLengthError))
            }
        };
        let attr = match type_code {
            code::ORIGIN => {
                exact(1)?;
                match Origin::from(value[0]) {
                    Origin::Other(_) => return Err(problem(E::InvalidOriginAttribute)),
                    o => Self::Origin(o),
                }
            }
            code::AS_PATH => Self::AsPath(
                AsPath::decode(value, ctx.as_width).ok_or_else(|| problem(E::MalformedAsPath))?,
            ),
            code::NEXT_HOP => {
                exact(4)?;
                let a = r.ipv4().ok_or_else(|| problem(E::AttributeLengthError))?;
                // RFC 4271 §6.3 / RFC 7606 §7.3: not a host address.
                if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                    return Err(problem(E::InvalidNextHopAttribute));
                }
                Self::NextHop(a)
            }
            code::MULTI_EXIT_DISC => {
                exact(4)?;
                Self::MultiExitDisc(r.u32().ok_or_else(|| problem(E::AttributeLengthError))?)
            }
            code::LOCAL_PREF => {
                if ctx.peer_kind == PeerKind::External {
                    // RFC 7606 §7.5: meaningless from an eBGP peer, so dropped, not an error.
                    return Err(AttributeProblem::new(
                        type_code,
                        ErrorAction::AttributeDiscard,
                        E::Unspecific,
                        raw,
                    ));
                }
                exact(4)?;
                Self::LocalPref(r.u32().ok_or_else(|| problem(E::AttributeLengthError))?)
            }
            code::ATOMIC_AGGREGATE => {
                exact(0)?;
                Self::AtomicAggregate
            }
            code::AGGREGATOR => {
                let asn = match ctx.as_width {
                    AsWidth::Two => {
                        exact(6)?;
                        r.u16().map(u32::from)
                    }
                    AsWidth::Four => {
                        exact(8)?;
                        r.u32()
                    }
                };
                let agg = asn
                    .zip(r.ipv4())
                    .map(|(asn, address)| Aggregator { asn, address });
                Self::Aggregator(agg.ok_or_else(|| problem(E::AttributeLengthError))?)
            }
            code::AS4_AGGREGATOR => {
                exact(8)?;
                let agg = r
                    .u32()
                    .zip(r.ipv4())
                    .map(|(asn, address)| Aggregator { asn, address });
                Self::As4Aggregator(agg.ok_or_else(|| problem(E::AttributeLengthError))?)
            }
            code::COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return Err(problem(E::AttributeLengthError));
                }
                let mut cs = Vec::with_capacity(value.len() / 4);
                while let Some(v) = r.u32() {
                    cs.push(Community(v));
                }
                Self::Communities(cs)
            }
            code::LARGE_COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(12) {
                    return Err(problem(E::AttributeLengthError));
                }
                let mut cs = Vec::with_capacity(value.len() / 12);
                while let (Some(global_admin), Some(local1), Some(local2)) =
                    (r.u32(), r.u32(), r.u32())
                {
                    cs.push(LargeCommunity {
                        global_admin,
                        local1,
                        local2,
                    });
                }
                Self::LargeCommunities(cs)
            }
            code::AS4_PATH => Self::As4Path(
                AsPath::decode(value, AsWidth::Four).ok_or_else(|| problem(E::MalformedAsPath))?,
            ),
            code::MP_REACH_NLRI => Self::MpReach(decode_mp_reach(value).map_err(problem)?),
            code::MP_UNREACH_NLRI => Self::MpUnreach(decode_mp_unreach(value).map_err(problem)?),
            // `rules` knows no other codes; keeping the value is the harmless answer regardless.
            _ => Self::Unknown(UnknownAttribute {
                flags,
                type_code,
                value: value.to_vec(),
            }),
        };
        Ok(attr)
    }
}
