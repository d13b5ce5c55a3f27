//! Standard (RFC 1997) and large (RFC 8092) communities.

use std::fmt;

/// A standard community (RFC 1997): `asn:value` packed into 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// Do not advertise outside the AS (or confederation).
    pub const NO_EXPORT: Self = Self(0xFFFF_FF01);
    /// Do not advertise to any peer.
    pub const NO_ADVERTISE: Self = Self(0xFFFF_FF02);
    /// Do not advertise to eBGP peers, including confederation peers.
    pub const NO_EXPORT_SUBCONFED: Self = Self(0xFFFF_FF03);
    /// Do not advertise to peers of the same kind (RFC 3765).
    pub const NO_PEER: Self = Self(0xFFFF_FF04);
    /// Drop traffic to this prefix (RFC 7999).
    pub const BLACKHOLE: Self = Self(0xFFFF_029A);
    /// Depreference before maintenance (RFC 8326).
    pub const GRACEFUL_SHUTDOWN: Self = Self(0xFFFF_0000);

    /// Builds `asn:value`.
    pub fn new(asn: u16, value: u16) -> Self {
        Self((u32::from(asn) << 16) | u32::from(value))
    }

    /// The well-known name, if this is a well-known community.
    pub fn well_known_name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_EXPORT => "NO_EXPORT",
            Self::NO_ADVERTISE => "NO_ADVERTISE",
            Self::NO_EXPORT_SUBCONFED => "NO_EXPORT_SUBCONFED",
            Self::NO_PEER => "NO_PEER",
            Self::BLACKHOLE => "BLACKHOLE",
            Self::GRACEFUL_SHUTDOWN => "GRACEFUL_SHUTDOWN",
            _ => return None,
        })
    }

    /// Parses a well-known name (case-insensitive, `-` or `_`: `NO_EXPORT`, `no-export`;
    /// `local-as` is FRR's name for NO_EXPORT_SUBCONFED) or `asn:value`.
    pub fn parse(s: &str) -> Option<Self> {
        let normal = s.replace('-', "_");
        if normal.eq_ignore_ascii_case("local_as") {
            return Some(Self::NO_EXPORT_SUBCONFED);
        }
        let s = normal.as_str();
        let known = [
            Self::NO_EXPORT,
            Self::NO_ADVERTISE,
            Self::NO_EXPORT_SUBCONFED,
            Self::NO_PEER,
            Self::BLACKHOLE,
            Self::GRACEFUL_SHUTDOWN,
        ];
        if let Some(c) = known.into_iter().find(|c| {
            c.well_known_name()
                .is_some_and(|n| n.eq_ignore_ascii_case(s))
        }) {
            return Some(c);
        }
        let (a, v) = s.split_once(':')?;
        Some(Self::new(a.parse().ok()?, v.parse().ok()?))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.well_known_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF),
        }
    }
}

/// A large community (RFC 8092): `global:local1:local2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator, normally the ASN that defined the community.
    pub global_admin: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

impl LargeCommunity {
    /// Parses `global:local1:local2` (three 32-bit numbers).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':').map(|p| p.parse::<u32>().ok());
        let (Some(Some(global_admin)), Some(Some(local1)), Some(Some(local2)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(Self {
            global_admin,
            local1,
            local2,
        })
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global_admin, self.local1, self.local2)
    }
}
