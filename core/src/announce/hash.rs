//! The stable hash behind the owner election.
//!
//! Every speaker must compute the same weight for a (node, IP) pair, across processes, builds,
//! architectures and versions, so this cannot be std's `RandomState` (seeded per process) nor
//! `DefaultHasher` (unspecified across releases). It is FNV-1a 64 over an unambiguous encoding,
//! finished with MurmurHash3's 64-bit mixer so that names differing in one trailing byte still
//! get unrelated weights. Changing this function changes who owns what: treat it as a wire format.

use super::NodeName;
use std::net::IpAddr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64-bit, over `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET, bytes)
}

fn fnv1a64_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's `fmix64` finaliser: a bijection that spreads every input bit over the output.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The rendezvous weight of `node` for `ip`: the node with the highest weight owns the IP.
///
/// Encoding: node name bytes, a 0 byte (node names cannot contain one), the family (4 or 6),
/// then the address octets.
pub fn weight(node: &NodeName, ip: IpAddr) -> u64 {
    let mut h = fnv1a64_extend(FNV_OFFSET, node.as_str().as_bytes());
    h = fnv1a64_extend(h, &[0]);
    h = match ip {
        IpAddr::V4(v4) => fnv1a64_extend(fnv1a64_extend(h, &[4]), &v4.octets()),
        IpAddr::V6(v6) => fnv1a64_extend(fnv1a64_extend(h, &[6]), &v6.octets()),
    };
    fmix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn fmix64_reference() {
        assert_eq!(fmix64(0), 0);
        // fmix64 is a bijection; a one-bit change flips about half of the output.
        let d = (fmix64(1) ^ fmix64(3)).count_ones();
        assert!((16..=48).contains(&d), "{d}");
    }

    #[test]
    fn weights_are_pinned() {
        // These values are a compatibility contract between speaker versions in one cluster.
        let w = |n: &str, ip: &str| weight(&NodeName::from(n), ip.parse().unwrap());
        assert_eq!(w("node-a", "192.0.2.10"), PINNED[0]);
        assert_eq!(w("node-b", "192.0.2.10"), PINNED[1]);
        assert_eq!(w("node-a", "2001:db8:0:1::10"), PINNED[2]);
    }

    // Computed by an independent Python implementation of the same encoding.
    const PINNED: [u64; 3] = [
        0x9cd2_0cf0_ff9d_8540,
        0x6b57_44c9_c67a_f38e,
        0xac7c_001e_e388_8016,
    ];
}
