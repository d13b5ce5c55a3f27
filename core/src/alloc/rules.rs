//! The allocation rules: which address a Service may keep, request or get, and why not.
//!
//! Read-only over [`State`]: `plan` decides, then `State::commit` (in `state.rs`) records
//! the decision in the tables. Keeping the two apart means no rule can leave the tables
//! half-updated.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::AllocError;
use super::pool::{AutoAssign, BuggyIps, Pool};
use super::range::{Family, from_u128};
use super::request::{FamilyPolicy, Protocol, ServiceKey, ServiceRequest};
use super::state::{PoolRt, ServiceRecord, State, fam_idx};
use super::table::{PerFamily, PoolId, SvcId};

/// A Service as the rules see it: borrowed from a request or from a stored record.
#[derive(Clone, Copy)]
pub(super) struct Who<'a> {
    namespace: &'a str,
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
    pub(super) fn of_req(req: &'a ServiceRequest, id: Option<SvcId>) -> Who<'a> {
        Who {
            namespace: &req.key.namespace,
            id,
            namespace_labels: &req.namespace_labels,
            service_labels: &req.service_labels,
            requested_pool: req.requested_pool.as_deref(),
            sharing_key: req.sharing_key.as_deref(),
            ports: &req.ports,
            local: req.local_traffic_selector.as_ref(),
        }
    }

    pub(super) fn of_rec(rec: &'a ServiceRecord, id: SvcId) -> Who<'a> {
        let t = rec.terms();
        Who {
            namespace: rec.key.namespace(),
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
        pool.serves_namespace(self.namespace, self.namespace_labels)
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

impl State {
    /// Why the Service may not use `pool`, or `None` if it may.
    fn refusal(who: Who<'_>, pool: &Pool) -> Option<String> {
        let ns = who.namespace;
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
    pub(super) fn pool_for(
        &self,
        who: Who<'_>,
        ip: IpAddr,
        prefer: Option<PoolId>,
    ) -> Option<PoolId> {
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
            let t = other.terms();
            if who.sharing_key.is_none() || who.sharing_key != t.sharing_key.as_deref() {
                return Some(Clash::InUse(other.key.to_key()));
            }
            let why = ports_clash(who.ports, &t.ports)
                .or_else(|| local_clash(who.local, t.local_traffic_selector.as_ref()));
            if let Some(why) = why {
                return Some(Clash::Sharing(other.key.to_key(), why));
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
                who.namespace
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
        let held = who.id.map(|id| self.rec(id).ips).unwrap_or_default();
        let mine = held.iter().map(|(ip, p)| (ip, Some(p)));
        let current = req
            .current_ips
            .iter()
            .map(|ip| (*ip, held.iter().find(|(h, _)| h == ip).map(|(_, p)| p)));
        current
            .chain(mine)
            .filter(|(ip, _)| Family::of(*ip) == family)
            .find_map(|(ip, prefer)| {
                if !req.requested_ips.is_empty() && !req.requested_ips.contains(&ip) {
                    return None;
                }
                let prefer = prefer.or_else(|| self.ips.get(&ip).map(|r| r.pool));
                let pool = self.pool_for(who, ip, prefer)?;
                self.clash(who, ip).is_none().then_some((ip, pool))
            })
    }

    /// Every current address the Service may keep, taking nothing new (for `restore`).
    pub(super) fn keep_all(
        &self,
        req: &ServiceRequest,
        who: Who<'_>,
    ) -> PerFamily<(IpAddr, PoolId)> {
        match wanted_families(req) {
            Ok(fams) => fams
                .iter()
                .filter_map(|f| self.keepable(who, req, f))
                .collect(),
            Err(_) => PerFamily::default(),
        }
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

    pub(super) fn plan(
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
}
