//! Address families and inclusive address ranges, as `u128` so IPv6 needs no enumeration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why a pool `addresses` entry could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolEntryError {
    /// Neither a CIDR nor `first-last`.
    #[error(
        "{entry:?} is not a CIDR (192.0.2.0/24, 2001:db8::/64) or a range first-last (192.0.2.10-192.0.2.20)"
    )]
    Malformed {
        /// The entry as written.
        entry: String,
    },
    /// `first-last` with addresses of two families.
    #[error("{entry:?} mixes an IPv4 and an IPv6 address")]
    MixedFamilies {
        /// The entry as written.
        entry: String,
    },
    /// `first-last` with `first` after `last`.
    #[error("{entry:?} starts after it ends")]
    Reversed {
        /// The entry as written.
        entry: String,
    },
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    family: Family,
    first: u128,
    last: u128,
}

impl AddressRange {
    /// The range `first..=last`; both must be of one family and `first <= last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<AddressRange, PoolEntryError> {
        let entry = || format!("{first}-{last}");
        if Family::of(first) != Family::of(last) {
            return Err(PoolEntryError::MixedFamilies { entry: entry() });
        }
        let (a, b) = (to_u128(first), to_u128(last));
        if a > b {
            return Err(PoolEntryError::Reversed { entry: entry() });
        }
        Ok(AddressRange {
            family: Family::of(first),
            first: a,
            last: b,
        })
    }

    /// All addresses of a network (host bits of `net` are ignored).
    pub fn from_net(net: IpNet) -> AddressRange {
        let net = net.trunc();
        let family = Family::of(net.addr());
        AddressRange {
            family,
            first: to_u128(net.network()),
            last: to_u128(net.broadcast()),
        }
    }

    /// The family of every address in the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.first)
    }

    /// The last address (included).
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.last)
    }

    /// How many addresses the range holds (an IPv6 `/0` saturates at `u128::MAX`).
    pub fn len(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_u128(ip))
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    pub(crate) fn bounds(&self) -> (u128, u128) {
        (self.first, self.last)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

/// Reads one pool `addresses` entry: a CIDR (`192.0.2.0/24`) or `first-last`, no spaces.
pub fn parse_pool_entry(entry: &str) -> Result<AddressRange, PoolEntryError> {
    let malformed = || PoolEntryError::Malformed {
        entry: entry.to_owned(),
    };
    if let Some((a, b)) = entry.split_once('-') {
        let a: IpAddr = a.parse().map_err(|_| malformed())?;
        let b: IpAddr = b.parse().map_err(|_| malformed())?;
        return AddressRange::new(a, b).map_err(|e| match e {
            PoolEntryError::MixedFamilies { .. } => PoolEntryError::MixedFamilies {
                entry: entry.to_owned(),
            },
            PoolEntryError::Reversed { .. } => PoolEntryError::Reversed {
                entry: entry.to_owned(),
            },
            other => other,
        });
    }
    if !entry.contains('/') {
        return Err(malformed());
    }
    let net: IpNet = entry.parse().map_err(|_| malformed())?;
    Ok(AddressRange::from_net(net))
}

/// Whether old routers and clients mishandle `ip` (an IPv4 address ending in `.0` or `.255`).
pub fn is_buggy_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub(crate) fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        // Truncation is intended: IPv4 values come from IPv4 ranges and fit in 32 bits.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// How many IPv4 addresses ending in `.0` or `.255` lie in `first..=last`.
pub(crate) fn buggy_count(first: u128, last: u128) -> u128 {
    // Addresses <= n whose low octet is 0 or 255.
    let upto = |n: u128| -> u128 {
        let blocks = n / 256;
        let rem = n % 256;
        blocks * 2 + 1 + u128::from(rem == 255)
    };
    let below = if first == 0 { 0 } else { upto(first - 1) };
    upto(last) - below
}
