//! The allocator's low-level tables: held addresses as runs, and who holds one address.

use std::collections::BTreeMap;

use super::range::{Family, from_u128, is_buggy_ip};
use super::request::ServiceKey;

/// A Service's index in the allocator's slab of records (keys are interned once, on first
/// assignment, so the per-address tables never clone or hash a `ServiceKey`).
pub(super) type SvcId = u32;

/// A pool's index in the allocator's pool table; ids follow the pools' rank (0 is tried first).
pub(super) type PoolId = u32;

/// A Service's key as a record stores it: namespace and name in one allocation (half the
/// size of a [`ServiceKey`], one heap block to read when a lookup compares keys).
#[derive(Debug, Clone)]
pub(super) struct StoredKey {
    text: Box<str>,
    ns_len: usize,
}

impl StoredKey {
    pub(super) fn new(key: &ServiceKey) -> StoredKey {
        let mut text = String::with_capacity(key.namespace.len() + key.name.len());
        text.push_str(&key.namespace);
        text.push_str(&key.name);
        StoredKey {
            text: text.into_boxed_str(),
            ns_len: key.namespace.len(),
        }
    }

    pub(super) fn namespace(&self) -> &str {
        &self.text[..self.ns_len]
    }

    fn parts(&self) -> (&str, &str) {
        self.text.split_at(self.ns_len)
    }

    /// Whether this is `key`.
    pub(super) fn is(&self, key: &ServiceKey) -> bool {
        self.parts() == (key.namespace.as_str(), key.name.as_str())
    }

    /// The key as the API speaks it.
    pub(super) fn to_key(&self) -> ServiceKey {
        let (namespace, name) = self.parts();
        ServiceKey::new(namespace, name)
    }

    /// The order of [`ServiceKey`]s (namespace, then name).
    pub(super) fn key_cmp(&self, other: &StoredKey) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// Held addresses of one family as maximal runs `start -> end` (inclusive): the first free
/// address at or after `x` is one lookup away, and the map never holds more entries than
/// there are held addresses, whatever the pool size.
#[derive(Debug, Clone, Default)]
pub(super) struct Runs(BTreeMap<u128, u128>);

impl Runs {
    /// How many runs (for the footprint).
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The end of the run holding `x`, if `x` is held.
    fn run_end(&self, x: u128) -> Option<u128> {
        self.0
            .range(..=x)
            .next_back()
            .filter(|(_, e)| **e >= x)
            .map(|(_, e)| *e)
    }

    /// Marks `x` held. Runs are extended in place where possible: a `BTreeMap` that drops to
    /// no entries frees its root node, so remove-then-insert would cost an allocation.
    pub(super) fn insert(&mut self, x: u128) {
        let right = x.checked_add(1).and_then(|n| self.0.get(&n).copied());
        if let Some((_, e)) = self.0.range_mut(..=x).next_back() {
            if *e >= x {
                return;
            }
            if *e + 1 == x {
                *e = right.unwrap_or(x);
                if right.is_some() {
                    self.0.remove(&(x + 1));
                }
                return;
            }
        }
        if right.is_some() {
            self.0.remove(&(x + 1));
        }
        self.0.insert(x, right.unwrap_or(x));
    }

    /// Marks `x` free (splitting its run in place where possible, as in [`Runs::insert`]).
    pub(super) fn remove(&mut self, x: u128) {
        let Some((&s, e)) = self.0.range_mut(..=x).next_back() else {
            return;
        };
        let end = *e;
        if end < x {
            return;
        }
        if s < x {
            *e = x - 1;
        } else {
            self.0.remove(&s);
        }
        if x < end {
            self.0.insert(x + 1, end);
        }
    }

    /// The lowest address in `lo..=hi` neither held nor (with `avoid`) a `.0`/`.255`.
    pub(super) fn first_free(
        &self,
        family: Family,
        lo: u128,
        hi: u128,
        avoid: bool,
    ) -> Option<u128> {
        let mut x = lo;
        while x <= hi {
            if let Some(end) = self.run_end(x) {
                x = end.checked_add(1)?;
            } else if avoid && is_buggy_ip(from_u128(family, x)) {
                x = x.checked_add(1)?;
            } else {
                return Some(x);
            }
        }
        None
    }
}

/// The Services holding one address, sorted by key; the first is inline because an address
/// almost always has exactly one holder (a `Vec` would cost an allocation per address).
#[derive(Debug, Clone)]
pub(super) struct Holders {
    first: SvcId,
    rest: Vec<SvcId>,
}

impl Holders {
    /// Just `id`.
    pub(super) fn one(id: SvcId) -> Holders {
        Holders {
            first: id,
            rest: Vec::new(),
        }
    }

    /// How many (at least one).
    pub(super) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// The holder whose key sorts first.
    pub(super) fn first(&self) -> SvcId {
        self.first
    }

    /// All holders, in key order.
    pub(super) fn iter(&self) -> impl Iterator<Item = SvcId> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().copied())
    }

    /// Adds `id` at position `at` (as counted by [`Holders::iter`]) unless already there.
    pub(super) fn insert(&mut self, id: SvcId, at: usize) {
        if self.iter().any(|h| h == id) {
            return;
        }
        if at == 0 {
            self.rest.insert(0, self.first);
            self.first = id;
        } else {
            self.rest.insert(at - 1, id);
        }
    }

    /// Removes `id`; returns true when nobody is left (the caller drops the record).
    pub(super) fn remove(&mut self, id: SvcId) -> bool {
        if self.first == id {
            if self.rest.is_empty() {
                return true;
            }
            self.first = self.rest.remove(0);
        } else {
            self.rest.retain(|h| *h != id);
        }
        false
    }
}

/// At most one item per address family, in order, without a heap allocation (the families a
/// Service wants, and the addresses planned for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PerFamily<T: Copy>([Option<T>; 2]);

impl<T: Copy> Default for PerFamily<T> {
    fn default() -> Self {
        PerFamily([None, None])
    }
}

impl<T: Copy> PerFamily<T> {
    /// Appends `x`; a third item is a bug (a Service has at most one address per family).
    pub(super) fn push(&mut self, x: T) {
        let slot = self.0.iter_mut().find(|s| s.is_none());
        *slot.expect("at most one item per address family") = Some(x);
    }

    pub(super) fn len(&self) -> usize {
        self.iter().count()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }

    pub(super) fn first(&self) -> Option<T> {
        self.0[0]
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.0.iter().flatten().copied()
    }

    /// Keeps the first `n` items.
    pub(super) fn truncate(&mut self, n: usize) {
        self.0.iter_mut().skip(n).for_each(|s| *s = None);
    }

    /// Keeps the items for which `keep` holds, in order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut out = PerFamily::default();
        self.iter().filter(|x| keep(x)).for_each(|x| out.push(x));
        *self = out;
    }
}

impl<T: Copy + PartialEq> PerFamily<T> {
    pub(super) fn contains(&self, x: &T) -> bool {
        self.iter().any(|y| y == *x)
    }
}

impl<T: Copy> FromIterator<T> for PerFamily<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut out = PerFamily::default();
        iter.into_iter().for_each(|x| out.push(x));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(r: &Runs) -> Vec<(u128, u128)> {
        r.0.iter().map(|(s, e)| (*s, *e)).collect()
    }

    #[test]
    fn runs_merge_and_split() {
        let mut r = Runs::default();
        for x in [1, 3, 2, 7] {
            r.insert(x);
        }
        assert_eq!(runs(&r), [(1, 3), (7, 7)]);
        r.remove(2);
        assert_eq!(runs(&r), [(1, 1), (3, 3), (7, 7)]);
        r.remove(9);
        r.insert(u128::MAX);
        r.insert(u128::MAX);
        assert_eq!(runs(&r), [(1, 1), (3, 3), (7, 7), (u128::MAX, u128::MAX)]);
        r.insert(2);
        r.remove(1);
        r.remove(7);
        r.insert(6);
        r.insert(5);
        assert_eq!(runs(&r), [(2, 3), (5, 6), (u128::MAX, u128::MAX)]);
        r.remove(u128::MAX);
        r.remove(3);
        r.remove(5);
        assert_eq!(runs(&r), [(2, 2), (6, 6)]);
    }

    #[test]
    fn first_free_jumps_runs_and_buggy_ips() {
        let mut r = Runs::default();
        for x in 0..=254 {
            r.insert(x);
        }
        assert_eq!(r.first_free(Family::V4, 0, 511, false), Some(255));
        assert_eq!(r.first_free(Family::V4, 0, 511, true), Some(257));
        assert_eq!(r.first_free(Family::V4, 0, 254, false), None);
        let mut r = Runs::default();
        r.insert(u128::MAX);
        assert_eq!(r.first_free(Family::V6, u128::MAX, u128::MAX, false), None);
    }

    #[test]
    fn stored_keys_read_and_sort_as_service_keys() {
        let keys =
            [("a", "bc"), ("ab", "c"), ("", "x"), ("ns", "")].map(|(n, m)| ServiceKey::new(n, m));
        for a in &keys {
            let s = StoredKey::new(a);
            assert!(s.is(a) && s.to_key() == *a && s.namespace() == a.namespace);
            for b in &keys {
                assert_eq!(s.is(b), a == b);
                assert_eq!(s.key_cmp(&StoredKey::new(b)), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn holders_stay_in_given_order() {
        let mut h = Holders::one(5);
        h.insert(3, 0);
        h.insert(9, 2);
        h.insert(9, 0);
        assert_eq!(h.iter().collect::<Vec<_>>(), [3, 5, 9]);
        assert!(!h.remove(3));
        assert_eq!((h.first(), h.len()), (5, 2));
        assert!(!h.remove(9));
        assert!(h.remove(5));
    }

    #[test]
    fn per_family_keeps_order() {
        let mut f: PerFamily<u8> = [6, 4].into_iter().collect();
        assert_eq!((f.len(), f.first(), f.contains(&4)), (2, Some(6), true));
        f.retain(|x| *x == 4);
        assert_eq!(f.iter().collect::<Vec<_>>(), [4]);
        f.truncate(0);
        assert!(f.is_empty());
    }
}
