//! The allocator's tables and rules; see the module docs of [`super`] for the contract.
//!
//! Hot-path shape (see ADR 0006, Cost): Services are interned to a [`SvcId`] on their first
//! assignment and pools to a [`PoolId`] in rank order on `set_pools`, so an `assign` hashes the
//! `ServiceKey` once, walks the pools without building lists or strings, and the address
//! tables hold small integers. Strings are only built for what the API returns and for errors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashMap, HashTable};

use super::pool::{AutoAssign, BuggyIps, Pool};
use super::range::{Family, buggy_count, from_u128, to_u128};
use super::request::{FamilyPolicy, Protocol, ServiceKey, ServiceRequest};
use super::table::{Holders, PerFamily, PoolId, Runs, SvcId};
use super::{AllocError, Assignment, Overlap, PoolCounts, PoolsReport};

/// A pool as the hot path sees it, with the bookkeeping that changes as addresses come and go.
#[derive(Debug, Clone)]
struct PoolRt {
    pool: Pool,
    /// Range bounds per family (index: [`fam_idx`]).
    bounds: [Vec<(u128, u128)>; 2],
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
            pool,
            bounds,
            taken: [0; 2],
            assigned: [0; 2],
        }
    }

    fn has_family(&self, family: Family) -> bool {
        !self.bounds[fam_idx(family)].is_empty()
    }
}

/// Who holds one address.
#[derive(Debug, Clone)]
struct IpRecord {
    /// The pool the first holder got it from (for `assigned` counts).
    pool: PoolId,
    holders: Holders,
}

/// The parts of a Service's last request that later rules read (sharing, pool re-checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Terms {
    namespace_labels: BTreeMap<String, String>,
    service_labels: BTreeMap<String, String>,
    requested_pool: Option<String>,
    sharing_key: Option<String>,
    ports: Vec<(Protocol, u16)>,
    local_traffic_selector: Option<BTreeMap<String, String>>,
}

impl Terms {
    /// Ports and the Local selector only matter between Services with one sharing key, so
    /// they are kept only when there is a key (no clone per `assign` for the usual Service).
    fn of(req: &ServiceRequest) -> Terms {
        let sharing = req.sharing_key.is_some();
        Terms {
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
        }
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
struct ServiceRecord {
    key: ServiceKey,
    terms: Terms,
    /// At most one per family, in the Service's family order.
    ips: Vec<(IpAddr, String)>,
}

/// A Service as the rules see it: borrowed from a request or from a stored record.
#[derive(Clone, Copy)]
struct Who<'a> {
    key: &'a ServiceKey,
    /// Its slab id, if it holds (or held until this call) a record.
    id: Option<SvcId>,
    namespace_labels: &'a BTreeMap<String, String>,
    service_labels: &'a BTreeMap<String, String>,
    requested_pool: Option<&'a str>,
    sharing_key: Option<&'a str>,
    ports: &'a [(Protocol, u16)],
    local: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Who<'a> {
    fn of_req(req: &'a ServiceRequest, id: Option<SvcId>) -> Who<'a> {
        Who {
            key: &req.key,
            id,
            namespace_labels: &req.namespace_labels,
            service_labels: &req.service_labels,
            requested_pool: req.requested_pool.as_deref(),
            sharing_key: req.sharing_key.as_deref(),
            ports: &req.ports,
            local: req.local_traffic_selector.as_ref(),
        }
    }

    fn of_rec(rec: &'a ServiceRecord, id: SvcId) -> Who<'a> {
        let t = &rec.terms;
        Who {
            key: &rec.key,
            id: Some(id),
            namespace_labels: &t.namespace_labels,
            service_labels: &t.service_labels,
            requested_pool: t.requested_pool.as_deref(),
            sharing_key: t.sharing_key.as_deref(),
            ports: &t.ports,
            local: t.local_traffic_selector.as_ref(),
        }
    }

    fn served_by(&self, pool: &Pool) -> bool {
        pool.serves_namespace(&self.key.namespace, self.namespace_labels)
            && pool.serves_service(self.service_labels)
    }
}

/// The pools a Service may get a new address from: the one it names, or the auto-assign pools
/// serving it (in rank order).
#[derive(Debug, Clone, Copy)]
enum Candidates {
    Named(PoolId),
    Auto,
}

/// Why a Service may not take an address that others hold.
enum Clash {
    InUse(ServiceKey),
    Sharing(ServiceKey, String),
}

#[derive(Debug, Default)]
pub(super) struct State {
    pools: BTreeMap<String, Pool>,
    /// The pools by [`PoolId`], best-ranked first.
    ranked: Vec<PoolRt>,
    pool_ids: HashMap<String, PoolId>,
    ips: HashMap<IpAddr, IpRecord>,
    /// The keys of `ips`, per family, as runs.
    runs: [Runs; 2],
    /// Live Service ids, found by their record's key: each key is stored once, in `svcs`.
    svc_index: HashTable<SvcId>,
    hasher: DefaultHashBuilder,
    /// Service records by [`SvcId`]; `None` slots are free and listed in `vacant`.
    svcs: Vec<Option<ServiceRecord>>,
    vacant: Vec<SvcId>,
    /// Sharing key -> addresses whose holders use that key.
    shared: HashMap<String, BTreeSet<IpAddr>>,
}

fn fam_idx(f: Family) -> usize {
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

fn ports_clash(a: &[(Protocol, u16)], b: &[(Protocol, u16)]) -> Option<String> {
    a.iter().find(|p| b.contains(p)).map(|(proto, port)| {
        format!("both use port {port}/{proto}; shared IPs need distinct ports")
    })
}

fn local_clash(
    a: Option<&BTreeMap<String, String>>,
    b: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    match (a, b) {
        (None, None) => None,
        (Some(x), Some(y)) if x == y => None,
        (Some(_), Some(_)) => Some(
            "both have externalTrafficPolicy Local but select different pods; \
             Local Services may share an IP only if their selectors are equal"
                .to_owned(),
        ),
        _ => Some(
            "one has externalTrafficPolicy Local and the other Cluster; \
             an IP shared with a Local Service must be shared only with Local Services selecting the same pods"
                .to_owned(),
        ),
    }
}

/// The families the Service gets addresses for, in order, or why the request is invalid.
fn wanted_families(req: &ServiceRequest) -> Result<PerFamily<Family>, AllocError> {
    let invalid = |why: String| AllocError::InvalidRequest { why };
    for (i, a) in req.requested_ips.iter().enumerate() {
        if let Some(b) = req.requested_ips[i + 1..]
            .iter()
            .find(|b| Family::of(**b) == Family::of(*a))
        {
            return Err(invalid(format!(
                "requested IPs {a} and {b} are both {}: give at most one per family",
                Family::of(*a)
            )));
        }
    }
    let mut fams: PerFamily<Family> = PerFamily::default();
    let mut add = |f: Family| {
        if !fams.contains(&f) {
            fams.push(f);
        }
    };
    if !req.families.ip_families.is_empty() {
        req.families.ip_families.iter().for_each(|f| add(*f));
    } else if req.requested_ips.is_empty() {
        add(Family::V4);
    } else {
        req.requested_ips.iter().for_each(|ip| add(Family::of(*ip)));
    }
    match req.families.policy {
        FamilyPolicy::SingleStack => fams.truncate(1),
        FamilyPolicy::PreferDualStack => {}
        FamilyPolicy::RequireDualStack if fams.len() < 2 => {
            return Err(invalid(
                "ipFamilyPolicy RequireDualStack needs both IPv4 and IPv6 in spec.ipFamilies"
                    .to_owned(),
            ));
        }
        FamilyPolicy::RequireDualStack => {}
    }
    if req.requested_ips.is_empty() {
        return Ok(fams);
    }
    for ip in &req.requested_ips {
        if !fams.contains(&Family::of(*ip)) {
            let names: Vec<String> = fams.iter().map(|f| f.to_string()).collect();
            return Err(invalid(format!(
                "requested IP {ip} is {} but the Service's IP families are [{}]",
                Family::of(*ip),
                names.join(", ")
            )));
        }
    }
    if req.families.policy == FamilyPolicy::RequireDualStack && req.requested_ips.len() < 2 {
        return Err(invalid(
            "ipFamilyPolicy RequireDualStack with requested IPs needs one IPv4 and one IPv6 address"
                .to_owned(),
        ));
    }
    // Explicit addresses decide the families: exactly those requested, in the Service's order.
    fams.retain(|f| req.requested_ips.iter().any(|ip| Family::of(*ip) == *f));
    Ok(fams)
}

/// The sharing key of `ip`'s holders (they all have the same one).
fn ip_key<'a>(
    ips: &HashMap<IpAddr, IpRecord>,
    svcs: &'a [Option<ServiceRecord>],
    ip: IpAddr,
) -> Option<&'a str> {
    let h = ips.get(&ip)?.holders.first();
    svcs[idx(h)].as_ref()?.terms.sharing_key.as_deref()
}

impl State {
    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        &self.pools
    }

    fn rec(&self, id: SvcId) -> &ServiceRecord {
        self.svcs[idx(id)]
            .as_ref()
            .expect("ids in the tables name live records")
    }

    fn rec_mut(&mut self, id: SvcId) -> &mut ServiceRecord {
        self.svcs[idx(id)]
            .as_mut()
            .expect("ids in the tables name live records")
    }

    fn lookup(&self, key: &ServiceKey) -> Option<SvcId> {
        let hash = self.hasher.hash_one(key);
        self.svc_index
            .find(hash, |id| self.rec(*id).key == *key)
            .copied()
    }

    fn pool(&self, id: PoolId) -> &PoolRt {
        &self.ranked[idx(id)]
    }

    pub fn held(&self, key: &ServiceKey) -> &[(IpAddr, String)] {
        self.lookup(key)
            .map_or(&[], |id| self.rec(id).ips.as_slice())
    }

    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.ips.get(&ip).map_or_else(Vec::new, |r| {
            r.holders.iter().map(|h| self.rec(h).key.clone()).collect()
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

        for id in self.ids_by_key() {
            let rec = self.rec(id);
            let who = Who::of_rec(rec, id);
            let mut repooled = false;
            let mut new_ips = Vec::with_capacity(rec.ips.len());
            for (ip, old_pool) in &rec.ips {
                let prefer = self.pool_ids.get(old_pool).copied();
                let Some(pool) = self.pool_for(who, *ip, prefer) else {
                    new_ips.clear();
                    break;
                };
                let name = &self.pool(pool).pool.name;
                repooled |= name != old_pool;
                new_ips.push((*ip, name.clone()));
            }
            if new_ips.len() < rec.ips.len() {
                report.invalidated.push(rec.key.clone());
                self.drop_record(id);
            } else if repooled {
                report.repooled.push(rec.key.clone());
                self.rec_mut(id).ips = new_ips;
            }
        }
        self.rebuild_tables();
        report
    }

    /// Live Service ids, sorted by key (for deterministic rebuilds and reports).
    fn ids_by_key(&self) -> Vec<SvcId> {
        let mut ids: Vec<SvcId> = self.svc_index.iter().copied().collect();
        ids.sort_by(|a, b| self.rec(*a).key.cmp(&self.rec(*b).key));
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
            let held: PerFamily<(IpAddr, PoolId)> = self
                .rec(id)
                .ips
                .iter()
                .map(|(ip, p)| (*ip, self.pool_ids[p]))
                .collect();
            for (ip, pool) in held.iter() {
                self.hold(ip, pool, id);
            }
            for (ip, _) in held.iter() {
                self.index(ip);
            }
        }
    }

    // ---- rules -------------------------------------------------------------------------------

    /// Why the Service may not use `pool`, or `None` if it may.
    fn refusal(who: Who<'_>, pool: &Pool) -> Option<String> {
        let ns = &who.key.namespace;
        if !pool.serves_namespace(ns, who.namespace_labels) {
            return Some(format!(
                "pool {} does not serve namespace {ns} (serviceAllocation namespaces/namespaceSelectors)",
                pool.name
            ));
        }
        if !pool.serves_service(who.service_labels) {
            return Some(format!(
                "pool {} does not serve this Service's labels (serviceAllocation serviceSelectors)",
                pool.name
            ));
        }
        None
    }

    /// The pool the Service may hold `ip` from: `prefer` if allowed, else the best-ranked one.
    fn pool_for(&self, who: Who<'_>, ip: IpAddr, prefer: Option<PoolId>) -> Option<PoolId> {
        let allowed = |id: &PoolId| {
            let p = &self.pool(*id).pool;
            p.contains(ip) && who.served_by(p) && who.requested_pool.is_none_or(|n| n == p.name)
        };
        prefer
            .filter(allowed)
            .or_else(|| (0..).take(self.ranked.len()).find(allowed))
    }

    /// Whether the Service may hold `ip` alongside its current holders (itself excluded).
    fn clash(&self, who: Who<'_>, ip: IpAddr) -> Option<Clash> {
        let rec = self.ips.get(&ip)?;
        for h in rec.holders.iter().filter(|h| Some(*h) != who.id) {
            let other = self.rec(h);
            let t = &other.terms;
            if who.sharing_key.is_none() || who.sharing_key != t.sharing_key.as_deref() {
                return Some(Clash::InUse(other.key.clone()));
            }
            let why = ports_clash(who.ports, &t.ports)
                .or_else(|| local_clash(who.local, t.local_traffic_selector.as_ref()));
            if let Some(why) = why {
                return Some(Clash::Sharing(other.key.clone(), why));
            }
        }
        None
    }

    /// The pools to pick from, or why there are none.
    fn candidate_pools(&self, who: Who<'_>) -> Result<Candidates, AllocError> {
        let none = |why: String| AllocError::NoMatchingPool { why };
        if let Some(name) = who.requested_pool {
            let Some(&id) = self.pool_ids.get(name) else {
                return Err(none(format!(
                    "no pool named {name:?} (from ferrolb.io/address-pool); check the name with kubectl get ipaddresspools"
                )));
            };
            return match Self::refusal(who, &self.pool(id).pool) {
                Some(why) => Err(none(why)),
                None => Ok(Candidates::Named(id)),
            };
        }
        if self.ranked.is_empty() {
            return Err(none("there is no IPAddressPool; create one".to_owned()));
        }
        if self.candidates(who, Candidates::Auto).next().is_none() {
            return Err(none(format!(
                "no pool with autoAssign serves namespace {} and this Service's labels; \
                 name a pool with ferrolb.io/address-pool or adjust the pools' serviceAllocation",
                who.key.namespace
            )));
        }
        Ok(Candidates::Auto)
    }

    /// The candidate pools, best first (walked, not collected: this runs on every `assign`).
    fn candidates<'a>(&'a self, who: Who<'a>, c: Candidates) -> impl Iterator<Item = PoolId> + 'a {
        let (named, auto) = match c {
            Candidates::Named(id) => (Some(id), None),
            Candidates::Auto => (None, Some((0..).zip(&self.ranked))),
        };
        let auto = auto.into_iter().flatten().filter_map(move |(id, rt)| {
            (rt.pool.auto_assign == AutoAssign::Yes && who.served_by(&rt.pool)).then_some(id)
        });
        named.into_iter().chain(auto)
    }

    /// The lowest address of `pool` and `family` nobody holds.
    fn first_free(&self, pool: &PoolRt, family: Family) -> Option<IpAddr> {
        let avoid = pool.pool.avoid_buggy_ips == BuggyIps::Avoid;
        let runs = &self.runs[fam_idx(family)];
        pool.bounds[fam_idx(family)]
            .iter()
            .filter_map(|&(lo, hi)| runs.first_free(family, lo, hi, avoid))
            .min()
            .map(|n| from_u128(family, n))
    }

    /// An address of `family` already shared under the Service's key that it may join.
    fn joinable(&self, who: Who<'_>, pool: &Pool, family: Family) -> Option<IpAddr> {
        let key = who.sharing_key?;
        self.shared.get(key)?.iter().copied().find(|ip| {
            Family::of(*ip) == family && pool.contains(*ip) && self.clash(who, *ip).is_none()
        })
    }

    /// The Service's address for `family`, picked from the candidate pools.
    fn pick(
        &self,
        who: Who<'_>,
        family: Family,
        pools: Candidates,
        prefer: Option<PoolId>,
    ) -> Result<(IpAddr, PoolId), AllocError> {
        let has = |id: &PoolId| self.pool(*id).has_family(family);
        let names = |ids: &mut dyn Iterator<Item = PoolId>| {
            ids.map(|id| self.pool(id).pool.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.candidates(who, pools).any(|id| has(&id)) {
            return Err(AllocError::NoMatchingPool {
                why: format!(
                    "none of the pools this Service may use ({}) has {family} addresses",
                    names(&mut self.candidates(who, pools))
                ),
            });
        }
        let prefer = prefer.filter(|p| has(p) && self.candidates(who, pools).any(|id| id == *p));
        let order = || {
            prefer.into_iter().chain(
                self.candidates(who, pools)
                    .filter(|id| has(id) && Some(*id) != prefer),
            )
        };
        for id in order() {
            let rt = self.pool(id);
            if let Some(ip) = self.joinable(who, &rt.pool, family) {
                return Ok((ip, id));
            }
            if let Some(ip) = self.first_free(rt, family) {
                return Ok((ip, id));
            }
        }
        Err(AllocError::PoolExhausted {
            pool: names(&mut order()),
            family,
        })
    }

    /// The current address of `family` the Service may keep, if any.
    fn keepable(
        &self,
        who: Who<'_>,
        req: &ServiceRequest,
        family: Family,
    ) -> Option<(IpAddr, PoolId)> {
        let held = who.id.map_or(&[][..], |id| self.rec(id).ips.as_slice());
        let mine = held.iter().map(|(ip, p)| (*ip, Some(p.as_str())));
        let current = req.current_ips.iter().map(|ip| {
            (
                *ip,
                held.iter().find(|(h, _)| h == ip).map(|(_, p)| p.as_str()),
            )
        });
        current
            .chain(mine)
            .filter(|(ip, _)| Family::of(*ip) == family)
            .find_map(|(ip, prefer)| {
                if !req.requested_ips.is_empty() && !req.requested_ips.contains(&ip) {
                    return None;
                }
                let prefer = match prefer {
                    Some(name) => self.pool_ids.get(name).copied(),
                    None => self.ips.get(&ip).map(|r| r.pool),
                };
                let pool = self.pool_for(who, ip, prefer)?;
                self.clash(who, ip).is_none().then_some((ip, pool))
            })
    }

    /// The requested address of `family`, or why it cannot be had.
    fn requested(&self, who: Who<'_>, ip: IpAddr) -> Result<(IpAddr, PoolId), AllocError> {
        let prefer = self.ips.get(&ip).map(|r| r.pool);
        let pool = self
            .pool_for(who, ip, prefer)
            .ok_or(AllocError::RequestedIPNotInPool { ip })?;
        match self.clash(who, ip) {
            None => Ok((ip, pool)),
            Some(Clash::InUse(by)) => Err(AllocError::RequestedIPInUse { ip, by }),
            Some(Clash::Sharing(with, why)) => Err(AllocError::SharingConflict { ip, with, why }),
        }
    }

    fn plan(
        &self,
        req: &ServiceRequest,
        who: Who<'_>,
    ) -> Result<PerFamily<(IpAddr, PoolId)>, AllocError> {
        let fams = wanted_families(req)?;
        let mut plan: PerFamily<(IpAddr, PoolId)> = PerFamily::default();
        let mut candidates: Option<Result<Candidates, AllocError>> = None;
        let mut first_err: Option<AllocError> = None;
        for fam in fams.iter() {
            let got = if let Some(kept) = self.keepable(who, req, fam) {
                Ok(kept)
            } else if let Some(ip) = req.requested_ips.iter().find(|ip| Family::of(**ip) == fam) {
                self.requested(who, *ip)
            } else {
                let prefer = plan.first().map(|(_, p)| p);
                match candidates.get_or_insert_with(|| self.candidate_pools(who)) {
                    Ok(pools) => self.pick(who, fam, *pools, prefer),
                    Err(e) => Err(e.clone()),
                }
            };
            match got {
                Ok(x) => plan.push(x),
                Err(e) if req.families.policy == FamilyPolicy::PreferDualStack => {
                    first_err.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match (plan.is_empty(), first_err) {
            (true, Some(e)) => Err(e),
            _ => Ok(plan),
        }
    }

    // ---- changes -----------------------------------------------------------------------------

    pub fn restore(&mut self, req: &ServiceRequest) -> Vec<(IpAddr, String)> {
        let me = self.lookup(&req.key);
        let who = Who::of_req(req, me);
        let kept: PerFamily<(IpAddr, PoolId)> = match wanted_families(req) {
            Ok(fams) => fams
                .iter()
                .filter_map(|f| self.keepable(who, req, f))
                .collect(),
            Err(_) => PerFamily::default(),
        };
        if kept.is_empty() {
            self.release(&req.key);
            Vec::new()
        } else {
            self.commit(req, me, kept).to_vec()
        }
    }

    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        let me = self.lookup(&req.key);
        match self.plan(req, Who::of_req(req, me)) {
            Ok(plan) => {
                let ips = self.commit(req, me, plan).to_vec();
                let changed = ips
                    .iter()
                    .map(|(ip, _)| *ip)
                    .ne(req.current_ips.iter().copied());
                Ok(Assignment { ips, changed })
            }
            Err(e) => {
                self.release(&req.key);
                Err(e)
            }
        }
    }

    /// Makes the Service hold exactly `plan`; returns what it now holds.
    fn commit(
        &mut self,
        req: &ServiceRequest,
        me: Option<SvcId>,
        plan: PerFamily<(IpAddr, PoolId)>,
    ) -> &[(IpAddr, String)] {
        let id = me.unwrap_or_else(|| self.new_record(req));
        let old = std::mem::take(&mut self.rec_mut(id).ips);
        // Both are idempotent, so an address in `old` and `plan` may be visited twice.
        let touched = || {
            old.iter()
                .map(|(ip, _)| *ip)
                .chain(plan.iter().map(|p| p.0))
        };
        for ip in touched() {
            self.deindex(ip);
        }
        for (ip, _) in old
            .iter()
            .filter(|(ip, _)| !plan.iter().any(|p| p.0 == *ip))
        {
            self.unhold(*ip, id);
        }
        for (ip, pool) in plan
            .iter()
            .filter(|(ip, _)| !old.iter().any(|o| o.0 == *ip))
        {
            self.hold(ip, pool, id);
        }
        let ips = plan
            .iter()
            .map(|(ip, pool)| (ip, self.pool(pool).pool.name.clone()))
            .collect();
        let rec = self.rec_mut(id);
        if !rec.terms.same_as(req) {
            rec.terms = Terms::of(req);
        }
        rec.ips = ips;
        for ip in touched() {
            self.index(ip);
        }
        &self.rec(id).ips
    }

    /// Interns a Service that holds nothing yet.
    fn new_record(&mut self, req: &ServiceRequest) -> SvcId {
        let rec = ServiceRecord {
            key: req.key.clone(),
            terms: Terms::of(req),
            ips: Vec::new(),
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
        let hash = self.hasher.hash_one(&req.key);
        let (svcs, hasher) = (&self.svcs, &self.hasher);
        self.svc_index.insert_unique(hash, id, |id| {
            hasher.hash_one(&svcs[idx(*id)].as_ref().expect("live record").key)
        });
        id
    }

    /// Forgets a record whose addresses are already out of the tables (or about to be rebuilt).
    fn drop_record(&mut self, id: SvcId) {
        if let Some(rec) = self.svcs[idx(id)].take() {
            let hash = self.hasher.hash_one(&rec.key);
            if let Ok(entry) = self.svc_index.find_entry(hash, |x| *x == id) {
                entry.remove();
            }
            self.vacant.push(id);
        }
    }

    pub fn release(&mut self, key: &ServiceKey) {
        let Some(id) = self.lookup(key) else {
            return;
        };
        let ips = std::mem::take(&mut self.rec_mut(id).ips);
        for (ip, _) in &ips {
            self.deindex(*ip);
        }
        for (ip, _) in &ips {
            self.unhold(*ip, id);
        }
        self.drop_record(id);
        for (ip, _) in ips {
            self.index(ip);
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
                    .filter(|h| self.svcs[idx(*h)].as_ref().is_some_and(|r| r.key < *key))
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
