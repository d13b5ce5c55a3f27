//! Which Service and EndpointSlice events can change what this speaker announces or forwards.
//!
//! The speaker recomputes from whole stores on every wake-up, so a wake-up for a Service of
//! another class, or for the endpoints of a ClusterIP Service, costs a full recompute in
//! three loops for nothing. In a cluster those are nearly all events: every pod start and
//! stop rewrites an EndpointSlice. Only the Services of our selection (and those that just
//! stopped being ours) and their EndpointSlices wake the loops; nodes, pools and
//! advertisements always do.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::views::{Selection, slice_service};

/// Remembers which Services are ours, from the Service watch, for both watches' filters.
#[derive(Debug, Clone)]
pub struct Relevance {
    selection: Selection,
    ours: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Relevance {
    /// Relevance for Services of `selection`.
    pub fn new(selection: Selection) -> Self {
        Self {
            selection,
            ours: Arc::default(),
        }
    }

    /// Whether this Service event matters: it is ours now, or was ours until now (it changed
    /// class or type, or was deleted).
    pub fn service(&self, svc: &Service, deleted: bool) -> bool {
        let key = key(
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        );
        let is_ours = self.selection.is_ours(svc);
        let mut ours = self.ours.lock().unwrap_or_else(|e| e.into_inner());
        let was_ours = if is_ours && !deleted {
            !ours.insert(key)
        } else {
            ours.remove(&key)
        };
        is_ours || was_ours
    }

    /// Whether this EndpointSlice event matters: its Service is ours.
    pub fn slice(&self, slice: &EndpointSlice) -> bool {
        let Some(service) = slice_service(slice) else {
            return false;
        };
        let key = key(slice.metadata.namespace.as_deref(), Some(service));
        self.ours
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
    }
}

fn key(namespace: Option<&str>, name: Option<&str>) -> (String, String) {
    (
        namespace.unwrap_or_default().to_owned(),
        name.unwrap_or_default().to_owned(),
    )
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
