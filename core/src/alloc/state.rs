//! The allocator's tables and how changes are recorded in them; the rules that decide what
//! a Service gets are in `rules.rs`. See the module docs of [`super`] for the contract.
//!
//! Hot-path shape (see ADR 0006, Cost): Services are interned to a [`SvcId`] on their first
//! assignment and pools to a [`PoolId`] in rank order on `set_pools`, so an `assign` hashes the
//! `ServiceKey` once, walks the pools without building lists or strings, and the address
//! tables hold small integers. A record keeps its key's hash, so the index never rehashes a
//! key (or even reads one) when it grows; a record's addresses are a fixed-size
//! [`PerFamily`] of pool ids. Strings are only built for what the API returns and for errors.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::pool::{BuggyIps, Pool};
use super::range::{Family, buggy_count, from_u128, to_u128};
use super::request::{Protocol, ServiceKey, ServiceRequest};
use super::rules::Who;
use super::table::{Holders, PerFamily, PoolId, Runs, StoredKey, SvcId};
use super::{AllocError, Assignment, Overlap, PoolCounts, PoolsReport};

/// A pool as the hot path sees it, with the bookkeeping that changes as addresses come and go.
#[derive(Debug, Clone)]
pub(super) struct PoolRt {
    pub(super) pool: Pool,
    /// The pool's name as [`Assignment`]s carry it.
    name: Arc<str>,
    /// Range bounds per family (index: [`fam_idx`]).
    pub(super) bounds: [Vec<(u128, u128)>; 2],
    /// Addresses the pool hands out, per family.
    size: [u128; 2],
    /// Of those, how many are held by anyone (through any pool).
    taken: [u128; 2],
    /// Addresses held whose holders got them from this pool.
    assigned: [u128; 2],
}

impl PoolRt {
    fn new(pool: Pool) -> PoolRt {
        let bounds = [Family::V4, Family::V6].map(|f| {
            pool.ranges
                .iter()
                .filter(|r| r.family() == f)
                .map(|r| r.bounds())
                .collect()
        });
        PoolRt {
            size: pool_size(&pool),
            name: Arc::from(pool.name.as_str()),
            pool,
            bounds,
            taken: [0; 2],
            assigned: [0; 2],
        }
    }

    pub(super) fn has_family(&self, family: Family) -> bool {
        !self.bounds[fam_idx(family)].is_empty()
    }
}

/// Who holds one address.
#[derive(Debug, Clone)]
pub(super) struct IpRecord {
    /// The pool the first holder got it from (for `assigned` counts).
    pub(super) pool: PoolId,
    pub(super) holders: Holders,
}

/// The parts of a Service's last request that later rules read (sharing, pool re-checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Terms {
    pub(super) namespace_labels: BTreeMap<String, String>,
    pub(super) service_labels: BTreeMap<String, String>,
    pub(super) requested_pool: Option<String>,
    pub(super) sharing_key: Option<String>,
    pub(super) ports: Vec<(Protocol, u16)>,
    pub(super) local_traffic_selector: Option<BTreeMap<String, String>>,
}

/// The terms of a Service that asked for nothing in particular (no labels, pool or key).
static NO_TERMS: Terms = Terms {
    namespace_labels: BTreeMap::new(),
    service_labels: BTreeMap::new(),
    requested_pool: None,
    sharing_key: None,
    ports: Vec::new(),
    local_traffic_selector: None,
};

impl Terms {
    /// Ports and the Local selector only matter between Services with one sharing key, so
    /// they are kept only when there is a key (no clone per `assign` for the usual Service).
    /// `None` stands for [`NO_TERMS`], so such a record stays small.
    fn of(req: &ServiceRequest) -> Option<Box<Terms>> {
        if NO_TERMS.same_as(req) {
            return None;
        }
        let sharing = req.sharing_key.is_some();
        Some(Box::new(Terms {
            namespace_labels: req.namespace_labels.clone(),
            service_labels: req.service_labels.clone(),
            requested_pool: req.requested_pool.clone(),
            sharing_key: req.sharing_key.clone(),
            ports: if sharing {
                req.ports.clone()
            } else {
                Vec::new()
            },
            local_traffic_selector: req.local_traffic_selector.clone().filter(|_| sharing),
        }))
    }

    fn same_as(&self, req: &ServiceRequest) -> bool {
        let sharing = req.sharing_key.is_some();
        self.namespace_labels == req.namespace_labels
            && self.service_labels == req.service_labels
            && self.requested_pool == req.requested_pool
            && self.sharing_key == req.sharing_key
            && (!sharing
                || (self.ports == req.ports
                    && self.local_traffic_selector == req.local_traffic_selector))
    }
}

/// What one Service holds and the terms it last asked under.
#[derive(Debug, Clone)]
pub(super) struct ServiceRecord {
    pub(super) key: StoredKey,
    /// Its key's [`Tag`], so the index can grow or drop the record without the key.
    tag: Tag,
    /// `None`: [`NO_TERMS`] (read through [`ServiceRecord::terms`]).
    terms: Option<Box<Terms>>,
    /// At most one per family, in the Service's family order, with the pool each came from.
    pub(super) ips: PerFamily<(IpAddr, PoolId)>,
}

impl ServiceRecord {
    /// The terms it last asked under.
    pub(super) fn terms(&self) -> &Terms {
        self.terms.as_deref().unwrap_or(&NO_TERMS)
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pools: BTreeMap<String, Pool>,
    /// The pools by [`PoolId`], best-ranked first.
    pub(super) ranked: Vec<PoolRt>,
    pub(super) pool_ids: HashMap<String, PoolId>,
    pub(super) ips: HashMap<IpAddr, IpRecord>,
    /// The keys of `ips`, per family, as runs.
    pub(super) runs: [Runs; 2],
    /// Live Service ids with their key's [`Tag`], found by their record's key: each key is
    /// stored once, in `svcs`. Eight bytes an entry, so the index stays in cache.
    svc_index: HashTable<(Tag, SvcId)>,
    hasher: DefaultHashBuilder,
    /// Service records by [`SvcId`]; `None` slots are free and listed in `vacant`.
    svcs: Vec<Option<ServiceRecord>>,
    vacant: Vec<SvcId>,
    /// Sharing key -> addresses whose holders use that key.
    pub(super) shared: HashMap<String, BTreeSet<IpAddr>>,
}

/// 32 bits of a key's hash: enough to tell keys apart before comparing them, and, spread
/// by [`spread`], the hash the index files the key under.
type Tag = u32;

/// The index's 64-bit hash of a [`Tag`] (the index needs varied low and high bits).
fn spread(tag: Tag) -> u64 {
    u64::from(tag).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

pub(super) fn fam_idx(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn idx(id: u32) -> usize {
    id as usize
}

/// Addresses the pool hands out per family: the union of its ranges, minus `.0`/`.255` if avoided.
fn pool_size(pool: &Pool) -> [u128; 2] {
    let mut out = [0u128; 2];
    for fam in [Family::V4, Family::V6] {
        let mut bounds: Vec<(u128, u128)> = pool
            .ranges
            .iter()
            .filter(|r| r.family() == fam)
            .map(|r| r.bounds())
            .collect();
        bounds.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::new();
        for (a, b) in bounds {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let mut total = 0u128;
        for (a, b) in merged {
            let mut n = (b - a).saturating_add(1);
            if fam == Family::V4 && pool.avoid_buggy_ips == BuggyIps::Avoid {
                n -= buggy_count(a, b);
            }
            total = total.saturating_add(n);
        }
        out[fam_idx(fam)] = total;
    }
    out
}

/// The sharing key of `ip`'s holders (they all have the same one).
fn ip_key<'a>(
    ips: &HashMap<IpAddr, IpRecord>,
    svcs: &'a [Option<ServiceRecord>],
    ip: IpAddr,
) -> Option<&'a str> {
    let h = ips.get(&ip)?.holders.first();
    svcs[idx(h)].as_ref()?.terms().sharing_key.as_deref()
}

impl State {
    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        &self.pools
    }

    pub(super) fn rec(&self, id: SvcId) -> &ServiceRecord {
        self.svcs[idx(id)]
            .as_ref()
            .expect("ids in the tables name live records")
    }

    fn rec_mut(&mut self, id: SvcId) -> &mut ServiceRecord {
        self.svcs[idx(id)]
            .as_mut()
            .expect("ids in the tables name live records")
    }

    /// The key's tag and, if the Service has a record, its id.
    fn lookup(&self, key: &ServiceKey) -> (Tag, Option<SvcId>) {
        // Truncation intended: the tag is 32 bits of the hash.
        let tag = self.hasher.hash_one(key) as Tag;
        let id = self
            .svc_index
            .find(spread(tag), |(t, id)| {
                *t == tag && self.rec(*id).key.is(key)
            })
            .map(|(_, id)| *id);
        (tag, id)
    }

    pub(super) fn pool(&self, id: PoolId) -> &PoolRt {
        &self.ranked[idx(id)]
    }

    /// `ips` with pool names, as the API returns them.
    fn named(&self, ips: PerFamily<(IpAddr, PoolId)>) -> Vec<(IpAddr, Arc<str>)> {
        ips.iter()
            .map(|(ip, pool)| (ip, self.pool(pool).name.clone()))
            .collect()
    }

    pub fn held(&self, key: &ServiceKey) -> Vec<(IpAddr, String)> {
        match self.lookup(key).1 {
            Some(id) => self
                .rec(id)
                .ips
                .iter()
                .map(|(ip, pool)| (ip, self.pool(pool).pool.name.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.ips.get(&ip).map_or_else(Vec::new, |r| {
            r.holders.iter().map(|h| self.rec(h).key.to_key()).collect()
        })
    }

    pub fn pool_counts(&self, name: &str) -> PoolCounts {
        let Some(rt) = self.pool_ids.get(name).map(|id| self.pool(*id)) else {
            return PoolCounts::default();
        };
        PoolCounts {
            assigned_v4: rt.assigned[0],
            assigned_v6: rt.assigned[1],
            available_v4: rt.size[0] - rt.taken[0],
            available_v6: rt.size[1] - rt.taken[1],
        }
    }

    pub fn footprint(&self) -> usize {
        let runs: usize = self.runs.iter().map(Runs::len).sum();
        let holders: usize = self.ips.values().map(|r| r.holders.len()).sum();
        let records = self.svcs.len();
        let service_ips: usize = self.svcs.iter().flatten().map(|r| r.ips.len()).sum();
        let shared: usize = self.shared.values().map(BTreeSet::len).sum();
        self.ips.len() + holders + records + service_ips + shared + runs
    }

    // ---- pools -------------------------------------------------------------------------------

    pub fn set_pools(&mut self, pools: Vec<Pool>) -> PoolsReport {
        let old_ranked: Vec<String> = self.ranked.iter().map(|rt| rt.pool.name.clone()).collect();
        self.pools = pools.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut ranked: Vec<&Pool> = self.pools.values().collect();
        ranked.sort_by(|a, b| a.rank_cmp(b));
        self.ranked = ranked.into_iter().cloned().map(PoolRt::new).collect();
        self.pool_ids = (0..)
            .zip(&self.ranked)
            .map(|(id, rt)| (rt.pool.name.clone(), id))
            .collect();
        let mut report = PoolsReport {
            overlaps: self.overlaps(),
            ..PoolsReport::default()
        };

        // Records hold the old pool ids; every record is moved to the new ones.
        for id in self.ids_by_key() {
            let rec = self.rec(id);
            let who = Who::of_rec(rec, id);
            let mut repooled = false;
            let mut new_ips: PerFamily<(IpAddr, PoolId)> = PerFamily::default();
            let mut lost = false;
            for (ip, old_pool) in rec.ips.iter() {
                let old_name = old_ranked[idx(old_pool)].as_str();
                let prefer = self.pool_ids.get(old_name).copied();
                let Some(pool) = self.pool_for(who, ip, prefer) else {
                    lost = true;
                    break;
                };
                repooled |= self.pool(pool).pool.name != old_name;
                new_ips.push((ip, pool));
            }
            if lost {
                report.invalidated.push(rec.key.to_key());
                self.drop_record(id);
            } else {
                if repooled {
                    report.repooled.push(rec.key.to_key());
                }
                self.rec_mut(id).ips = new_ips;
            }
        }
        self.rebuild_tables();
        report
    }

    /// Live Service ids, sorted by key (for deterministic rebuilds and reports).
    fn ids_by_key(&self) -> Vec<SvcId> {
        let mut ids: Vec<SvcId> = self.svc_index.iter().map(|(_, id)| *id).collect();
        ids.sort_by(|a, b| self.rec(*a).key.key_cmp(&self.rec(*b).key));
        ids
    }

    fn overlaps(&self) -> Vec<Overlap> {
        let pools: Vec<&Pool> = self.pools.values().collect();
        let mut out = Vec::new();
        for (i, a) in pools.iter().enumerate() {
            for b in &pools[i + 1..] {
                let hit = a.ranges.iter().find_map(|ra| {
                    b.ranges.iter().find(|rb| ra.overlaps(rb)).map(|rb| {
                        let first = ra.bounds().0.max(rb.bounds().0);
                        from_u128(ra.family(), first)
                    })
                });
                if let Some(example) = hit {
                    out.push(Overlap {
                        a: a.name.clone(),
                        b: b.name.clone(),
                        example,
                    });
                }
            }
        }
        out.sort();
        out
    }

    /// Recomputes the address tables and counters from the service records.
    fn rebuild_tables(&mut self) {
        self.ips.clear();
        self.shared.clear();
        self.runs = Default::default();
        for rt in &mut self.ranked {
            rt.taken = [0; 2];
            rt.assigned = [0; 2];
        }
        for id in self.ids_by_key() {
            let held = self.rec(id).ips;
            for (ip, pool) in held.iter() {
                self.hold(ip, pool, id);
            }
            if self.rec(id).terms().sharing_key.is_some() {
                for (ip, _) in held.iter() {
                    self.index(ip);
                }
            }
        }
    }

    // ---- changes -----------------------------------------------------------------------------

    pub fn restore(&mut self, req: &ServiceRequest) -> Vec<(IpAddr, Arc<str>)> {
        let (tag, me) = self.lookup(&req.key);
        let kept = self.keep_all(req, Who::of_req(req, me));
        if kept.is_empty() {
            self.release(&req.key);
            Vec::new()
        } else {
            self.commit(req, tag, me, kept);
            self.named(kept)
        }
    }

    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        let (tag, me) = self.lookup(&req.key);
        match self.plan(req, Who::of_req(req, me)) {
            Ok(plan) => {
                self.commit(req, tag, me, plan);
                let changed = plan
                    .iter()
                    .map(|(ip, _)| ip)
                    .ne(req.current_ips.iter().copied());
                Ok(Assignment {
                    ips: self.named(plan),
                    changed,
                })
            }
            Err(e) => {
                self.release(&req.key);
                Err(e)
            }
        }
    }

    /// Makes the Service (whose key has `tag`) hold exactly `plan`.
    fn commit(
        &mut self,
        req: &ServiceRequest,
        tag: Tag,
        me: Option<SvcId>,
        plan: PerFamily<(IpAddr, PoolId)>,
    ) {
        let id = me.unwrap_or_else(|| self.new_record(req, tag));
        let rec = self.rec_mut(id);
        let old = std::mem::take(&mut rec.ips);
        // Only addresses whose holders have a sharing key are in the sharing index, and a
        // Service without one never shares an address: most Services skip the index.
        let sharing = rec.terms().sharing_key.is_some() || req.sharing_key.is_some();
        // Both are idempotent, so an address in `old` and `plan` may be visited twice.
        let touched = || old.iter().chain(plan.iter()).map(|(ip, _)| ip);
        if sharing {
            touched().for_each(|ip| self.deindex(ip));
        }
        for (ip, _) in old
            .iter()
            .filter(|(ip, _)| !plan.iter().any(|p| p.0 == *ip))
        {
            self.unhold(ip, id);
        }
        for (ip, pool) in plan
            .iter()
            .filter(|(ip, _)| !old.iter().any(|o| o.0 == *ip))
        {
            self.hold(ip, pool, id);
        }
        let rec = self.rec_mut(id);
        if !rec.terms().same_as(req) {
            rec.terms = Terms::of(req);
        }
        rec.ips = plan;
        if sharing {
            touched().for_each(|ip| self.index(ip));
        }
    }

    /// Interns a Service (whose key has `tag`) that holds nothing yet.
    fn new_record(&mut self, req: &ServiceRequest, tag: Tag) -> SvcId {
        let rec = ServiceRecord {
            key: StoredKey::new(&req.key),
            tag,
            terms: Terms::of(req),
            ips: PerFamily::default(),
        };
        let id = match self.vacant.pop() {
            Some(id) => {
                self.svcs[idx(id)] = Some(rec);
                id
            }
            None => {
                let id = SvcId::try_from(self.svcs.len()).expect("fewer than 2^32 Services");
                self.svcs.push(Some(rec));
                id
            }
        };
        self.svc_index
            .insert_unique(spread(tag), (tag, id), |(t, _)| spread(*t));
        id
    }

    /// Forgets a record whose addresses are already out of the tables (or about to be rebuilt).
    fn drop_record(&mut self, id: SvcId) {
        if let Some(rec) = self.svcs[idx(id)].take() {
            if let Ok(entry) = self
                .svc_index
                .find_entry(spread(rec.tag), |(_, x)| *x == id)
            {
                entry.remove();
            }
            self.vacant.push(id);
        }
    }

    pub fn release(&mut self, key: &ServiceKey) {
        let Some(id) = self.lookup(key).1 else {
            return;
        };
        let rec = self.rec_mut(id);
        let ips = std::mem::take(&mut rec.ips);
        let sharing = rec.terms().sharing_key.is_some();
        if sharing {
            ips.iter().for_each(|(ip, _)| self.deindex(ip));
        }
        for (ip, _) in ips.iter() {
            self.unhold(ip, id);
        }
        self.drop_record(id);
        if sharing {
            ips.iter().for_each(|(ip, _)| self.index(ip));
        }
    }

    fn hold(&mut self, ip: IpAddr, pool: PoolId, id: SvcId) {
        use hashbrown::hash_map::Entry;
        match self.ips.entry(ip) {
            Entry::Occupied(mut e) => {
                let key = &self.svcs[idx(id)].as_ref().expect("live record").key;
                let at = e
                    .get()
                    .holders
                    .iter()
                    .filter(|h| {
                        self.svcs[idx(*h)]
                            .as_ref()
                            .is_some_and(|r| r.key.key_cmp(key).is_lt())
                    })
                    .count();
                e.get_mut().holders.insert(id, at);
            }
            Entry::Vacant(e) => {
                e.insert(IpRecord {
                    pool,
                    holders: Holders::one(id),
                });
                self.runs[fam_idx(Family::of(ip))].insert(to_u128(ip));
                self.count(ip, pool, 1);
            }
        }
    }

    fn unhold(&mut self, ip: IpAddr, id: SvcId) {
        let Some(rec) = self.ips.get_mut(&ip) else {
            return;
        };
        if !rec.holders.remove(id) {
            return;
        }
        let pool = rec.pool;
        self.ips.remove(&ip);
        self.count(ip, pool, -1);
        self.runs[fam_idx(Family::of(ip))].remove(to_u128(ip));
    }

    /// Adds `delta` (+1/-1) to the counters `ip` affects.
    fn count(&mut self, ip: IpAddr, holder_pool: PoolId, delta: i8) {
        let f = fam_idx(Family::of(ip));
        let apply = |v: &mut u128| {
            *v = if delta > 0 {
                *v + 1
            } else {
                v.saturating_sub(1)
            };
        };
        for (id, rt) in (0..).zip(self.ranked.iter_mut()) {
            if rt.pool.contains(ip) {
                apply(&mut rt.taken[f]);
            }
            if id == holder_pool {
                apply(&mut rt.assigned[f]);
            }
        }
    }

    fn deindex(&mut self, ip: IpAddr) {
        if let Some(k) = ip_key(&self.ips, &self.svcs, ip)
            && let Some(set) = self.shared.get_mut(k)
        {
            set.remove(&ip);
            if set.is_empty() {
                self.shared.remove(k);
            }
        }
    }

    fn index(&mut self, ip: IpAddr) {
        let Some(k) = ip_key(&self.ips, &self.svcs, ip) else {
            return;
        };
        match self.shared.get_mut(k) {
            Some(set) => {
                set.insert(ip);
            }
            None => {
                self.shared.insert(k.to_owned(), BTreeSet::from([ip]));
            }
        }
    }
}
