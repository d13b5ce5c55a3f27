//! What the controller writes: Service ingress, annotation and condition; pool status.
//!
//! `desired_*` and `observed_*` are pure, so the reconciler writes only differences; the
//! `write_*` functions do the I/O with server-side apply (field manager
//! [`FIELD_MANAGER`]), which also means a Service that is no longer ours loses exactly the
//! fields we applied, never someone else's.

use std::net::IpAddr;

use ferrolb_api::{IPAddressPool, IPAddressPoolStatus, PoolCounts};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::convert::{ANN_ALLOCATED_FROM_POOL, CONDITION_ALLOCATED};
use crate::error::Error;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// `ipMode` of the ingress entries (`--ip-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IpMode {
    /// FerroLB's forwarder carries the traffic; kube-proxy leaves it alone.
    Proxy,
    /// Traffic arrives addressed to the VIP; kube-proxy handles it.
    Vip,
}

impl IpMode {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            IpMode::Proxy => "Proxy",
            IpMode::Vip => "VIP",
        }
    }
}

/// The parts of a Service the controller owns, as they are or as they should be.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ServiceView {
    /// `status.loadBalancer.ingress[]` as (ip, ipMode).
    pub ingress: Vec<(IpAddr, Option<String>)>,
    /// `ferrolb.io/ip-allocated-from-pool`.
    pub pool_annotation: Option<String>,
    /// The `ferrolb.io/Allocated` condition as (status, reason, message).
    pub condition: Option<(String, String, String)>,
}

impl ServiceView {
    /// Whether the controller has left any mark on the Service.
    pub fn has_our_marks(&self) -> bool {
        self.pool_annotation.is_some() || self.condition.is_some()
    }
}

/// What the Service shows now.
pub fn observed(svc: &Service) -> ServiceView {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| Some((i.ip.as_deref()?.parse().ok()?, i.ip_mode.clone())))
                .collect()
        })
        .unwrap_or_default();
    let pool_annotation = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_ALLOCATED_FROM_POOL).cloned());
    let condition =
        our_condition(svc).map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    ServiceView {
        ingress,
        pool_annotation,
        condition,
    }
}

fn our_condition(svc: &Service) -> Option<&Condition> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == CONDITION_ALLOCATED)
}

/// The view of a Service that got `ips` (each with its pool).
pub fn allocated<S: AsRef<str>>(ips: &[(IpAddr, S)], mode: IpMode) -> ServiceView {
    let mut pools: Vec<&str> = Vec::new();
    for (_, pool) in ips {
        if !pools.contains(&pool.as_ref()) {
            pools.push(pool.as_ref());
        }
    }
    let listed = ips
        .iter()
        .map(|(ip, pool)| format!("{ip} from pool {}", pool.as_ref()))
        .collect::<Vec<_>>()
        .join(", ");
    ServiceView {
        ingress: ips
            .iter()
            .map(|(ip, _)| (*ip, Some(mode.as_str().to_owned())))
            .collect(),
        pool_annotation: Some(pools.join(",")),
        condition: Some((
            "True".to_owned(),
            "IPAllocated".to_owned(),
            format!("assigned {listed}"),
        )),
    }
}

/// The view of a Service that got nothing, with the allocator's reason and message.
pub fn failed(reason: &str, message: &str) -> ServiceView {
    ServiceView {
        ingress: Vec::new(),
        pool_annotation: None,
        condition: Some(("False".to_owned(), reason.to_owned(), message.to_owned())),
    }
}

/// Applies `want` to the Service in one request to its status subresource: the ingress and
/// condition, and the pool annotation in the same object's metadata (the API server keeps
/// metadata changes made through a Service's `status`, and one request per allocation is what
/// lets a burst of Services get their IPs at the API server's write rate). An empty `want`
/// (`ServiceView::default()`) removes what we applied before. Returns the Service as written;
/// [`annotation_missed`] says whether the annotation still needs its own write.
pub async fn write_service_status(
    api: &Api<Service>,
    svc: &Service,
    want: &ServiceView,
) -> Result<Service, Error> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let key = format!("{}/{name}", svc.metadata.namespace.as_deref().unwrap_or(""));
    let mut status = json!({});
    if !want.ingress.is_empty() {
        let ingress: Vec<_> = want
            .ingress
            .iter()
            .map(|(ip, mode)| match mode {
                Some(mode) => json!({"ip": ip.to_string(), "ipMode": mode}),
                None => json!({"ip": ip.to_string()}),
            })
            .collect();
        status["loadBalancer"] = json!({ "ingress": ingress });
    }
    if let Some((cond_status, reason, message)) = &want.condition {
        // Keep the transition time while the status stays the same, as the convention asks.
        let since = our_condition(svc)
            .filter(|c| &c.status == cond_status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(Timestamp::now()));
        let condition = Condition {
            type_: CONDITION_ALLOCATED.to_owned(),
            status: cond_status.clone(),
            reason: reason.clone(),
            message: truncate(message, 32 * 1024),
            last_transition_time: since,
            observed_generation: svc.metadata.generation,
        };
        status["conditions"] = json!([condition]);
    }
    let mut metadata = json!({"name": name, "namespace": svc.metadata.namespace});
    if let Some(pools) = &want.pool_annotation {
        metadata["annotations"] = json!({ ANN_ALLOCATED_FROM_POOL: pools });
    }
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::ServiceStatus { key, source })
}

/// Whether `written` (what [`write_service_status`] returned) still shows another pool
/// annotation than `want`: the annotation was set by an older FerroLB with a merge patch (so
/// server-side apply does not own it and leaves it), or an API server ignored metadata sent to
/// `status`. Then [`write_pool_annotation`] fixes it.
pub fn annotation_missed(written: &Service, want: &ServiceView) -> bool {
    observed(written).pool_annotation != want.pool_annotation
}

/// Sets or removes `ferrolb.io/ip-allocated-from-pool` (a merge patch touching only that key);
/// returns the Service's new resourceVersion.
pub async fn write_pool_annotation(
    api: &Api<Service>,
    svc: &Service,
    value: Option<&str>,
) -> Result<Option<String>, Error> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let key = format!("{}/{name}", svc.metadata.namespace.as_deref().unwrap_or(""));
    let patch = json!({"metadata": {"annotations": {ANN_ALLOCATED_FROM_POOL: value}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|svc| svc.metadata.resource_version)
        .map_err(|source| Error::ServiceAnnotation { key, source })
}

/// What a pool's status should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Counts from the allocator.
    pub counts: PoolCounts,
    /// `None` when the pool is usable, else why not.
    pub invalid: Option<String>,
    /// The pools it shares addresses with.
    pub overlapping: Vec<String>,
}

/// The desired status, keeping transition times of conditions whose status is unchanged.
pub fn desired_pool_status(pool: &IPAddressPool, view: &PoolView) -> IPAddressPoolStatus {
    let old = pool.status.clone().unwrap_or_default();
    let mut status = IPAddressPoolStatus::default();
    status.set_counts(view.counts);
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status_text = if ok { "True" } else { "False" };
        let since = old
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status_text)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(Timestamp::now()));
        Condition {
            type_: type_.to_owned(),
            status: status_text.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: pool.metadata.generation,
        }
    };
    status.conditions.push(match &view.invalid {
        None => condition("Ready", true, "Valid", "addresses are in use".to_owned()),
        Some(why) => condition("Ready", false, "InvalidPool", why.clone()),
    });
    status.conditions.push(if view.overlapping.is_empty() {
        condition(
            "Overlapping",
            false,
            "NoOverlap",
            "no other pool shares addresses with this one".to_owned(),
        )
    } else {
        condition(
            "Overlapping",
            true,
            "OverlapsOtherPool",
            format!(
                "shares addresses with pool(s) {}; an address is given to one Service only",
                view.overlapping.join(", ")
            ),
        )
    });
    status
}

/// Whether two pool statuses differ in anything but transition times.
pub fn pool_status_differs(have: Option<&IPAddressPoolStatus>, want: &IPAddressPoolStatus) -> bool {
    let Some(have) = have else { return true };
    let strip = |s: &IPAddressPoolStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    strip(have) != strip(want)
}

/// Applies a pool's status.
pub async fn write_pool_status(
    api: &Api<IPAddressPool>,
    name: &str,
    status: &IPAddressPoolStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::PoolStatus {
        name: name.to_owned(),
        source,
    })
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_view_names_pools_once() {
        let ips = vec![
            ("192.0.2.130".parse().unwrap(), "a".to_owned()),
            ("2001:db8:0:1::5".parse().unwrap(), "a".to_owned()),
        ];
        let v = allocated(&ips, IpMode::Proxy);
        assert_eq!(v.pool_annotation.as_deref(), Some("a"));
        assert_eq!(v.ingress[0].1.as_deref(), Some("Proxy"));
        let (status, reason, message) = v.condition.unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("True", "IPAllocated"));
        assert!(message.contains("192.0.2.130 from pool a"), "{message}");
        let two = vec![
            ("192.0.2.130".parse().unwrap(), "a".to_owned()),
            ("2001:db8:0:1::5".parse().unwrap(), "b".to_owned()),
        ];
        assert_eq!(
            allocated(&two, IpMode::Vip).pool_annotation.as_deref(),
            Some("a,b")
        );
    }

    #[test]
    fn observed_reads_back_what_we_write() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "b",
                         "annotations": {ANN_ALLOCATED_FROM_POOL: "p"}},
            "status": {
                "loadBalancer": {"ingress": [{"ip": "192.0.2.130", "ipMode": "Proxy"}]},
                "conditions": [{"type": CONDITION_ALLOCATED, "status": "True",
                                "reason": "IPAllocated", "message": "assigned 192.0.2.130 from pool p",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }
        }))
        .unwrap();
        let have = observed(&svc);
        let want = allocated(
            &[("192.0.2.130".parse().unwrap(), "p".to_owned())],
            IpMode::Proxy,
        );
        assert_eq!(have, want);

        assert!(have.has_our_marks());
        assert_ne!(have, failed("PoolExhausted", "full"));
        // The annotation alone is a difference too: it travels in the same request.
        let other_pool = ServiceView {
            pool_annotation: Some("q".into()),
            ..want.clone()
        };
        assert_ne!(have, other_pool);
        assert!(!annotation_missed(&svc, &want));
        assert!(annotation_missed(&svc, &other_pool));
        // A released Service whose annotation an older version set stays marked until the
        // separate write removes it.
        assert!(annotation_missed(&svc, &ServiceView::default()));
    }

    #[test]
    fn pool_status_has_counts_and_conditions() {
        let pool: IPAddressPool = serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "a", "generation": 2},
            "spec": {"addresses": ["192.0.2.128/30"]}
        }))
        .unwrap();
        let view = PoolView {
            counts: PoolCounts {
                assigned_v4: 1,
                available_v4: 3,
                ..Default::default()
            },
            invalid: None,
            overlapping: vec!["b".to_owned()],
        };
        let s = desired_pool_status(&pool, &view);
        assert_eq!((s.assigned_ipv4, s.available_ipv4), (1, 3));
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        let overlap = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Overlapping")
            .unwrap();
        assert_eq!(overlap.status, "True");
        assert!(overlap.message.contains("pool(s) b"));
        assert!(!pool_status_differs(
            Some(&s),
            &desired_pool_status(&pool, &view)
        ));
        assert!(pool_status_differs(None, &s));
    }
}
