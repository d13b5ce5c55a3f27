//! Which Service and EndpointSlice events can change what this speaker announces or forwards.
//!
//! The speaker recomputes from whole stores on every wake-up, so a wake-up for a Service of
//! another class, or for the endpoints of a ClusterIP Service, costs a full recompute in
//! three loops for nothing. In a cluster those are nearly all events: every pod start and
//! stop rewrites an EndpointSlice. Only the Services of our selection (and those that just
//! stopped being ours) and their EndpointSlices wake the loops; nodes, pools and
//! advertisements always do.

use ferrolb_api::service::Ours;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::views::{Selection, slice_service};

/// Remembers which Services are ours, from the Service watch, for both watches' filters.
#[derive(Debug, Clone)]
pub struct Relevance {
    ours: Ours,
}

impl Relevance {
    /// Relevance for Services of `selection`.
    pub fn new(selection: Selection) -> Self {
        Self {
            ours: Ours::new(selection),
        }
    }

    /// Whether this Service event matters: it is ours now, or was ours until now (it changed
    /// class or type, or was deleted).
    pub fn service(&self, svc: &Service, deleted: bool) -> bool {
        self.ours.event(svc, deleted)
    }

    /// Whether this EndpointSlice event matters: its Service is ours.
    pub fn slice(&self, slice: &EndpointSlice) -> bool {
        slice_service(slice).is_some_and(|service| {
            self.ours.contains(
                slice.metadata.namespace.as_deref().unwrap_or_default(),
                service,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, type_: &str, class: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"type": type_, "loadBalancerClass": class}
        }))
        .unwrap()
    }

    fn slice(service: &str) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abcde"), "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap()
    }

    fn relevance() -> Relevance {
        Relevance::new(Selection {
            class: "ferrolb.io/ferrolb".into(),
            classless: true,
        })
    }

    #[test]
    fn ours_and_their_slices_wake_others_do_not() {
        let r = relevance();
        assert!(r.service(&svc("web", "LoadBalancer", None), false));
        assert!(r.slice(&slice("web")));
        assert!(!r.service(&svc("db", "ClusterIP", None), false));
        assert!(!r.slice(&slice("db")));
        assert!(!r.service(&svc("other", "LoadBalancer", Some("example.com/lb")), false));
        assert!(!r.slice(&slice("other")));
        // A slice without the Service label (hand-made) belongs to nobody.
        let mut orphan = slice("web");
        orphan.metadata.labels = None;
        assert!(!r.slice(&orphan));
        // Same name, another namespace: not ours.
        let mut elsewhere = slice("web");
        elsewhere.metadata.namespace = Some("lab".into());
        assert!(!r.slice(&elsewhere));
    }

    #[test]
    fn a_service_leaving_us_wakes_once_then_not_again() {
        let r = relevance();
        assert!(r.service(&svc("web", "LoadBalancer", None), false));
        // It turns ClusterIP: this change matters (its IP must go), later ones do not.
        assert!(r.service(&svc("web", "ClusterIP", None), false));
        assert!(!r.slice(&slice("web")));
        assert!(!r.service(&svc("web", "ClusterIP", None), false));
        // It comes back, then is deleted: both matter, and then its slices no longer do.
        assert!(r.service(&svc("web", "LoadBalancer", None), false));
        assert!(r.service(&svc("web", "LoadBalancer", None), true));
        assert!(!r.slice(&slice("web")));
        // A class change away from us matters once, too.
        assert!(r.service(&svc("api", "LoadBalancer", None), false));
        assert!(r.service(&svc("api", "LoadBalancer", Some("example.com/lb")), false));
        assert!(!r.service(&svc("api", "LoadBalancer", Some("example.com/lb")), false));
    }
}
