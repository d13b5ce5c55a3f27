//! The allocator's tables and rules; see the module docs of [`super`] for the contract.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::pool::{AutoAssign, BuggyIps, Pool};
use super::range::{Family, buggy_count, from_u128, is_buggy_ip, to_u128};
use super::request::{FamilyPolicy, ServiceKey, ServiceRequest};
use super::{AllocError, Assignment, Overlap, PoolCounts, PoolsReport};

/// Held addresses of one family as maximal runs `start -> end` (inclusive): the first free
/// address at or after `x` is one lookup away, and the map never holds more entries than
/// there are held addresses, whatever the pool size.
#[derive(Debug, Clone, Default)]
struct Runs(BTreeMap<u128, u128>);

impl Runs {
    /// The end of the run holding `x`, if `x` is held.
    fn run_end(&self, x: u128) -> Option<u128> {
        self.0
            .range(..=x)
            .next_back()
            .filter(|(_, e)| **e >= x)
            .map(|(_, e)| *e)
    }

    fn insert(&mut self, x: u128) {
        let left = self.0.range(..=x).next_back().map(|(s, e)| (*s, *e));
        let mut start = x;
        if let Some((s, e)) = left {
            if e >= x {
                return;
            }
            if e + 1 == x {
                start = s;
            }
        }
        let end = x
            .checked_add(1)
            .and_then(|n| self.0.remove(&n))
            .unwrap_or(x);
        self.0.insert(start, end);
    }

    fn remove(&mut self, x: u128) {
        let Some((s, e)) = self.0.range(..=x).next_back().map(|(s, e)| (*s, *e)) else {
            return;
        };
        if e < x {
            return;
        }
        self.0.remove(&s);
        if s < x {
            self.0.insert(s, x - 1);
        }
        if x < e {
            self.0.insert(x + 1, e);
        }
    }

    /// The lowest address in `lo..=hi` neither held nor (with `avoid`) a `.0`/`.255`.
    fn first_free(&self, family: Family, lo: u128, hi: u128, avoid: bool) -> Option<u128> {
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

/// Per-pool bookkeeping that changes as addresses are held and freed.
#[derive(Debug, Clone)]
struct PoolRuntime {
    /// Addresses the pool hands out, per family (index: [`fam_idx`]).
    size: [u128; 2],
    /// Of those, how many are held by anyone (through any pool).
    taken: [u128; 2],
    /// Addresses held whose holders got them from this pool.
    assigned: [u128; 2],
}

/// Who holds one address.
#[derive(Debug, Clone)]
struct IpRecord {
    /// The pool the first holder got it from (for `assigned` counts).
    pool: String,
    /// Sorted, usually one.
    holders: Vec<ServiceKey>,
}

/// What one Service holds and the request it last made (for sharing and pool re-checks).
#[derive(Debug, Clone)]
struct ServiceRecord {
    req: ServiceRequest,
    ips: Vec<(IpAddr, String)>,
}

/// Why a Service may not take an address that others hold.
enum Clash {
    InUse(ServiceKey),
    Sharing(ServiceKey, String),
}

#[derive(Debug, Default)]
pub(super) struct State {
    pools: BTreeMap<String, Pool>,
    runtime: BTreeMap<String, PoolRuntime>,
    ips: HashMap<IpAddr, IpRecord>,
    /// The keys of `ips`, per family, as runs.
    runs: [Runs; 2],
    services: HashMap<ServiceKey, ServiceRecord>,
    /// Sharing key -> addresses whose holders use that key.
    shared: HashMap<String, BTreeSet<IpAddr>>,
}

fn fam_idx(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
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

fn ports_clash(a: &ServiceRequest, b: &ServiceRequest) -> Option<String> {
    a.ports
        .iter()
        .find(|p| b.ports.contains(p))
        .map(|(proto, port)| {
            format!("both use port {port}/{proto}; shared IPs need distinct ports")
        })
}

fn local_clash(a: &ServiceRequest, b: &ServiceRequest) -> Option<String> {
    match (&a.local_traffic_selector, &b.local_traffic_selector) {
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
fn wanted_families(req: &ServiceRequest) -> Result<Vec<Family>, AllocError> {
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
    let mut fams: Vec<Family> = Vec::new();
    let declared: Vec<Family> = if req.families.ip_families.is_empty() {
        if req.requested_ips.is_empty() {
            vec![Family::V4]
        } else {
            req.requested_ips.iter().map(|ip| Family::of(*ip)).collect()
        }
    } else {
        req.families.ip_families.clone()
    };
    for f in declared {
        if !fams.contains(&f) {
            fams.push(f);
        }
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

impl State {
    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        &self.pools
    }

    pub fn held(&self, key: &ServiceKey) -> &[(IpAddr, String)] {
        self.services.get(key).map_or(&[], |r| r.ips.as_slice())
    }

    pub fn holders(&self, ip: IpAddr) -> Vec<ServiceKey> {
        self.ips
            .get(&ip)
            .map_or_else(Vec::new, |r| r.holders.clone())
    }

    pub fn pool_counts(&self, name: &str) -> PoolCounts {
        let Some(rt) = self.runtime.get(name) else {
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
        let runs: usize = self.runs.iter().map(|r| r.0.len()).sum();
        let holders: usize = self.ips.values().map(|r| r.holders.len()).sum();
        let service_ips: usize = self.services.values().map(|r| r.ips.len()).sum();
        let shared: usize = self.shared.values().map(BTreeSet::len).sum();
        self.ips.len() + holders + self.services.len() + service_ips + shared + runs
    }

    // ---- pools -------------------------------------------------------------------------------

    pub fn set_pools(&mut self, pools: Vec<Pool>) -> PoolsReport {
        self.pools = pools.into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut report = PoolsReport {
            overlaps: self.overlaps(),
            ..PoolsReport::default()
        };

        let mut keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let rec = &self.services[&key];
            let mut repooled = false;
            let mut new_ips = Vec::with_capacity(rec.ips.len());
            for (ip, old_pool) in &rec.ips {
                let Some(pool) = self.pool_for(&rec.req, *ip, Some(old_pool)) else {
                    new_ips.clear();
                    break;
                };
                repooled |= pool != *old_pool;
                new_ips.push((*ip, pool));
            }
            if new_ips.len() < rec.ips.len() {
                report.invalidated.push(key.clone());
                self.services.remove(&key);
            } else if repooled {
                report.repooled.push(key.clone());
                if let Some(r) = self.services.get_mut(&key) {
                    r.ips = new_ips;
                }
            }
        }
        self.rebuild_tables();
        report
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
        self.runtime = self
            .pools
            .values()
            .map(|p| {
                let rt = PoolRuntime {
                    size: pool_size(p),
                    taken: [0; 2],
                    assigned: [0; 2],
                };
                (p.name.clone(), rt)
            })
            .collect();
        let mut keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let ips = self.services[&key].ips.clone();
            for (ip, pool) in ips {
                self.hold(ip, &pool, &key);
            }
            self.reindex(&key);
        }
    }

    // ---- rules -------------------------------------------------------------------------------

    /// Why the Service may not use `pool`, or `None` if it may.
    fn refusal(req: &ServiceRequest, pool: &Pool) -> Option<String> {
        let ns = &req.key.namespace;
        if !pool.serves_namespace(ns, &req.namespace_labels) {
            return Some(format!(
                "pool {} does not serve namespace {ns} (serviceAllocation namespaces/namespaceSelectors)",
                pool.name
            ));
        }
        if !pool.serves_service(&req.service_labels) {
            return Some(format!(
                "pool {} does not serve this Service's labels (serviceAllocation serviceSelectors)",
                pool.name
            ));
        }
        None
    }

    /// The pool the Service may hold `ip` from: `prefer` if allowed, else the best-ranked one.
    fn pool_for(&self, req: &ServiceRequest, ip: IpAddr, prefer: Option<&str>) -> Option<String> {
        let allowed = |p: &&Pool| {
            p.contains(ip)
                && Self::refusal(req, p).is_none()
                && req.requested_pool.as_ref().is_none_or(|n| *n == p.name)
        };
        if let Some(p) = prefer.and_then(|n| self.pools.get(n)).filter(allowed) {
            return Some(p.name.clone());
        }
        let mut c: Vec<&Pool> = self.pools.values().filter(allowed).collect();
        c.sort_by(|a, b| a.rank_cmp(b));
        c.first().map(|p| p.name.clone())
    }

    /// Whether `req` may hold `ip` alongside its current holders (itself excluded).
    fn clash(&self, req: &ServiceRequest, ip: IpAddr) -> Option<Clash> {
        let rec = self.ips.get(&ip)?;
        for h in rec.holders.iter().filter(|h| **h != req.key) {
            let Some(other) = self.services.get(h).map(|r| &r.req) else {
                continue;
            };
            if req.sharing_key.is_none() || req.sharing_key != other.sharing_key {
                return Some(Clash::InUse(h.clone()));
            }
            if let Some(why) = ports_clash(req, other).or_else(|| local_clash(req, other)) {
                return Some(Clash::Sharing(h.clone(), why));
            }
        }
        None
    }

    /// The pools to pick from, best first, or why there are none.
    fn candidate_pools(&self, req: &ServiceRequest) -> Result<Vec<String>, AllocError> {
        let none = |why: String| AllocError::NoMatchingPool { why };
        if let Some(name) = &req.requested_pool {
            let Some(pool) = self.pools.get(name) else {
                return Err(none(format!(
                    "no pool named {name:?} (from ferrolb.io/address-pool); check the name with kubectl get ipaddresspools"
                )));
            };
            return match Self::refusal(req, pool) {
                Some(why) => Err(none(why)),
                None => Ok(vec![name.clone()]),
            };
        }
        if self.pools.is_empty() {
            return Err(none("there is no IPAddressPool; create one".to_owned()));
        }
        let mut c: Vec<&Pool> = self
            .pools
            .values()
            .filter(|p| p.auto_assign == AutoAssign::Yes && Self::refusal(req, p).is_none())
            .collect();
        if c.is_empty() {
            return Err(none(format!(
                "no pool with autoAssign serves namespace {} and this Service's labels; \
                 name a pool with ferrolb.io/address-pool or adjust the pools' serviceAllocation",
                req.key.namespace
            )));
        }
        c.sort_by(|a, b| a.rank_cmp(b));
        Ok(c.into_iter().map(|p| p.name.clone()).collect())
    }

    /// The lowest address of `pool` and `family` nobody holds.
    fn first_free(&self, pool: &Pool, family: Family) -> Option<IpAddr> {
        let avoid = pool.avoid_buggy_ips == BuggyIps::Avoid;
        let runs = &self.runs[fam_idx(family)];
        pool.ranges
            .iter()
            .filter(|r| r.family() == family)
            .filter_map(|r| {
                let (lo, hi) = r.bounds();
                runs.first_free(family, lo, hi, avoid)
            })
            .min()
            .map(|n| from_u128(family, n))
    }

    /// An address of `family` already shared under the Service's key that it may join.
    fn joinable(&self, req: &ServiceRequest, pool: &Pool, family: Family) -> Option<IpAddr> {
        let key = req.sharing_key.as_ref()?;
        self.shared.get(key)?.iter().copied().find(|ip| {
            Family::of(*ip) == family && pool.contains(*ip) && self.clash(req, *ip).is_none()
        })
    }

    /// The Service's address for `family`, picked from the candidate pools.
    fn pick(
        &self,
        req: &ServiceRequest,
        family: Family,
        pools: &[String],
        prefer: Option<&str>,
    ) -> Result<(IpAddr, String), AllocError> {
        let mut order: Vec<&String> = pools
            .iter()
            .filter(|n| self.pools.get(*n).is_some_and(|p| p.has_family(family)))
            .collect();
        if order.is_empty() {
            let names: Vec<&str> = pools.iter().map(String::as_str).collect();
            return Err(AllocError::NoMatchingPool {
                why: format!(
                    "none of the pools this Service may use ({}) has {family} addresses",
                    names.join(", ")
                ),
            });
        }
        if let Some(i) = prefer.and_then(|p| order.iter().position(|n| *n == p)) {
            let p = order.remove(i);
            order.insert(0, p);
        }
        for name in &order {
            let pool = &self.pools[*name];
            if let Some(ip) = self.joinable(req, pool, family) {
                return Ok((ip, (*name).clone()));
            }
            if let Some(ip) = self.first_free(pool, family) {
                return Ok((ip, (*name).clone()));
            }
        }
        let names: Vec<&str> = order.iter().map(|s| s.as_str()).collect();
        Err(AllocError::PoolExhausted {
            pool: names.join(", "),
            family,
        })
    }

    /// The current address of `family` the Service may keep, if any.
    fn keepable(&self, req: &ServiceRequest, family: Family) -> Option<(IpAddr, String)> {
        let held = self
            .services
            .get(&req.key)
            .map_or(&[][..], |r| r.ips.as_slice());
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
                let prefer = prefer.or_else(|| self.ips.get(&ip).map(|r| r.pool.as_str()));
                let pool = self.pool_for(req, ip, prefer)?;
                self.clash(req, ip).is_none().then_some((ip, pool))
            })
    }

    /// The requested address of `family`, or why it cannot be had.
    fn requested(&self, req: &ServiceRequest, ip: IpAddr) -> Result<(IpAddr, String), AllocError> {
        let prefer = self.ips.get(&ip).map(|r| r.pool.as_str());
        let pool = self
            .pool_for(req, ip, prefer)
            .ok_or(AllocError::RequestedIPNotInPool { ip })?;
        match self.clash(req, ip) {
            None => Ok((ip, pool)),
            Some(Clash::InUse(by)) => Err(AllocError::RequestedIPInUse { ip, by }),
            Some(Clash::Sharing(with, why)) => Err(AllocError::SharingConflict { ip, with, why }),
        }
    }

    fn plan(&self, req: &ServiceRequest) -> Result<Vec<(IpAddr, String)>, AllocError> {
        let fams = wanted_families(req)?;
        let mut plan: Vec<(IpAddr, String)> = Vec::new();
        let mut candidates: Option<Result<Vec<String>, AllocError>> = None;
        let mut first_err: Option<AllocError> = None;
        for fam in fams {
            let got = if let Some(kept) = self.keepable(req, fam) {
                Ok(kept)
            } else if let Some(ip) = req.requested_ips.iter().find(|ip| Family::of(**ip) == fam) {
                self.requested(req, *ip)
            } else {
                let pools = candidates
                    .get_or_insert_with(|| self.candidate_pools(req))
                    .clone();
                let prefer = plan.first().map(|(_, p)| p.clone());
                pools.and_then(|pools| self.pick(req, fam, &pools, prefer.as_deref()))
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
        let kept: Vec<(IpAddr, String)> = match wanted_families(req) {
            Ok(fams) => fams
                .into_iter()
                .filter_map(|f| self.keepable(req, f))
                .collect(),
            Err(_) => Vec::new(),
        };
        if kept.is_empty() {
            self.release(&req.key);
        } else {
            self.commit(req, kept.clone());
        }
        kept
    }

    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        match self.plan(req) {
            Ok(plan) => {
                self.commit(req, plan.clone());
                let changed = plan
                    .iter()
                    .map(|(ip, _)| *ip)
                    .ne(req.current_ips.iter().copied());
                Ok(Assignment { ips: plan, changed })
            }
            Err(e) => {
                self.release(&req.key);
                Err(e)
            }
        }
    }

    fn commit(&mut self, req: &ServiceRequest, plan: Vec<(IpAddr, String)>) {
        let key = req.key.clone();
        let old = self
            .services
            .get(&key)
            .map(|r| r.ips.clone())
            .unwrap_or_default();
        let touched: BTreeSet<IpAddr> = old.iter().chain(&plan).map(|(ip, _)| *ip).collect();
        for ip in &touched {
            self.deindex(*ip);
        }
        for (ip, _) in old
            .iter()
            .filter(|(ip, _)| !plan.iter().any(|(p, _)| p == ip))
        {
            self.unhold(*ip, &key);
        }
        for (ip, pool) in plan
            .iter()
            .filter(|(ip, _)| !old.iter().any(|(o, _)| o == ip))
        {
            self.hold(*ip, pool, &key);
        }
        let mut stored = req.clone();
        stored.current_ips.clear();
        self.services.insert(
            key,
            ServiceRecord {
                req: stored,
                ips: plan,
            },
        );
        for ip in touched {
            self.index(ip);
        }
    }

    pub fn release(&mut self, key: &ServiceKey) {
        let Some(rec) = self.services.get(key) else {
            return;
        };
        let ips: Vec<IpAddr> = rec.ips.iter().map(|(ip, _)| *ip).collect();
        for ip in &ips {
            self.deindex(*ip);
        }
        for ip in &ips {
            self.unhold(*ip, key);
        }
        self.services.remove(key);
        for ip in ips {
            self.index(ip);
        }
    }

    fn hold(&mut self, ip: IpAddr, pool: &str, key: &ServiceKey) {
        if let Some(rec) = self.ips.get_mut(&ip) {
            if let Err(i) = rec.holders.binary_search(key) {
                rec.holders.insert(i, key.clone());
            }
            return;
        }
        self.ips.insert(
            ip,
            IpRecord {
                pool: pool.to_owned(),
                holders: vec![key.clone()],
            },
        );
        self.runs[fam_idx(Family::of(ip))].insert(to_u128(ip));
        self.count(ip, pool, 1);
    }

    fn unhold(&mut self, ip: IpAddr, key: &ServiceKey) {
        let Some(rec) = self.ips.get_mut(&ip) else {
            return;
        };
        rec.holders.retain(|h| h != key);
        if !rec.holders.is_empty() {
            return;
        }
        let pool = rec.pool.clone();
        self.ips.remove(&ip);
        self.count(ip, &pool, -1);
        self.runs[fam_idx(Family::of(ip))].remove(to_u128(ip));
    }

    /// Adds `delta` (+1/-1) to the counters `ip` affects.
    fn count(&mut self, ip: IpAddr, holder_pool: &str, delta: i8) {
        let f = fam_idx(Family::of(ip));
        let apply = |v: &mut u128| {
            *v = if delta > 0 {
                *v + 1
            } else {
                v.saturating_sub(1)
            };
        };
        for (name, rt) in self.runtime.iter_mut() {
            if self.pools.get(name).is_some_and(|p| p.contains(ip)) {
                apply(&mut rt.taken[f]);
            }
            if name == holder_pool {
                apply(&mut rt.assigned[f]);
            }
        }
    }

    /// The sharing key of `ip`'s holders (they all have the same one).
    fn ip_key(&self, ip: IpAddr) -> Option<String> {
        let h = self.ips.get(&ip)?.holders.first()?;
        self.services.get(h)?.req.sharing_key.clone()
    }

    fn deindex(&mut self, ip: IpAddr) {
        if let Some(k) = self.ip_key(ip)
            && let Some(set) = self.shared.get_mut(&k)
        {
            set.remove(&ip);
            if set.is_empty() {
                self.shared.remove(&k);
            }
        }
    }

    fn index(&mut self, ip: IpAddr) {
        if let Some(k) = self.ip_key(ip) {
            self.shared.entry(k).or_default().insert(ip);
        }
    }

    fn reindex(&mut self, key: &ServiceKey) {
        let ips: Vec<IpAddr> = self.held(key).iter().map(|(ip, _)| *ip).collect();
        for ip in ips {
            self.index(ip);
        }
    }
}
