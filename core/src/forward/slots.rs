//! Slot ranges in the shared backend maps: each Service port and family owns `cap` consecutive
//! integer keys starting at `base`, which `numgen random mod N offset base` indexes.
//!
//! Capacities are powers of two, so a Service whose endpoint count changes within its capacity
//! keeps its base (only the changed elements and its one chain are rewritten); freed ranges are
//! reused by size class. The allocator is plain data, kept by whoever applies transactions.

use super::ServiceKey;
use std::collections::BTreeMap;

/// A run of consecutive keys in the backend maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotRange {
    /// The first key (the `numgen … offset`).
    pub base: u32,
    /// How many keys the range holds (a power of two).
    pub cap: u32,
}

/// Which slot ranges each Service's groups (`<proto>/<port>/<family>`) hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slots {
    held: BTreeMap<ServiceKey, BTreeMap<String, SlotRange>>,
    free: BTreeMap<u32, Vec<u32>>,
    next: u32,
}

impl Slots {
    /// The range `key`'s group `group` holds, if any.
    pub fn get(&self, key: &ServiceKey, group: &str) -> Option<SlotRange> {
        self.held.get(key)?.get(group).copied()
    }

    /// Makes `key` hold exactly `groups` (group → backends needed): keeps ranges still big
    /// enough, frees the others, allocates what is missing.
    pub fn assign(&mut self, key: &ServiceKey, groups: &BTreeMap<String, u32>) {
        let mut held = self.held.remove(key).unwrap_or_default();
        let mut kept = BTreeMap::new();
        for (group, range) in std::mem::take(&mut held) {
            match groups.get(&group) {
                Some(&n) if n <= range.cap => {
                    kept.insert(group, range);
                }
                _ => self.release(range),
            }
        }
        for (group, &n) in groups {
            if !kept.contains_key(group) {
                let range = self.allocate(n);
                kept.insert(group.clone(), range);
            }
        }
        if !kept.is_empty() {
            self.held.insert(key.clone(), kept);
        }
    }

    /// Frees everything `key` holds.
    pub fn remove(&mut self, key: &ServiceKey) {
        for (_, range) in self.held.remove(key).unwrap_or_default() {
            self.release(range);
        }
    }

    /// How many ranges are held, over all Services.
    pub fn held_ranges(&self) -> usize {
        self.held.values().map(BTreeMap::len).sum()
    }

    fn allocate(&mut self, n: u32) -> SlotRange {
        let cap = n.max(1).next_power_of_two();
        if let Some(base) = self.free.get_mut(&cap).and_then(Vec::pop) {
            return SlotRange { base, cap };
        }
        let base = self.next;
        // 2^32 keys: exhausting them would need billions of distinct live endpoints.
        self.next = self
            .next
            .checked_add(cap)
            .expect("backend map key space exhausted");
        SlotRange { base, cap }
    }

    fn release(&mut self, range: SlotRange) {
        self.free.entry(range.cap).or_default().push(range.base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(v: &[(&str, u32)]) -> BTreeMap<String, u32> {
        v.iter().map(|(g, n)| (g.to_string(), *n)).collect()
    }

    #[test]
    fn ranges_are_disjoint_kept_while_they_fit_and_reused() {
        let (a, b) = (ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b"));
        let mut s = Slots::default();
        s.assign(&a, &groups(&[("tcp/80/v4", 3)]));
        s.assign(&b, &groups(&[("tcp/80/v4", 1)]));
        let ra = s.get(&a, "tcp/80/v4").unwrap();
        assert_eq!(ra, SlotRange { base: 0, cap: 4 });
        assert_eq!(
            s.get(&b, "tcp/80/v4").unwrap(),
            SlotRange { base: 4, cap: 1 }
        );
        s.assign(&a, &groups(&[("tcp/80/v4", 4)]));
        assert_eq!(s.get(&a, "tcp/80/v4"), Some(ra), "still fits");
        s.assign(&a, &groups(&[("tcp/80/v4", 5)]));
        assert_eq!(
            s.get(&a, "tcp/80/v4").unwrap(),
            SlotRange { base: 5, cap: 8 }
        );
        let c = ServiceKey::new("ns", "c");
        s.assign(&c, &groups(&[("udp/53/v4", 2), ("udp/53/v6", 3)]));
        assert_eq!(s.get(&c, "udp/53/v6"), Some(ra), "freed range reused");
        s.remove(&a);
        s.remove(&b);
        s.remove(&c);
        assert_eq!(s.held_ranges(), 0);
    }
}
