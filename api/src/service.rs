//! Reading a core/v1 Service in FerroLB's terms: what the controller, the speaker and the
//! forwarder all need from it.

use std::net::IpAddr;

use ferrolb_core::ServiceKey;
use k8s_openapi::api::core::v1::Service;

/// The Service's namespace and name.
pub fn key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The IPs in `status.loadBalancer.ingress`, in order; entries without a valid IP are skipped.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// Which LoadBalancer Services are FerroLB's: the controller's and the speaker's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// `--load-balancer-class`.
    pub class: String,
    /// Whether Services without `spec.loadBalancerClass` are ours too.
    pub classless: bool,
}

impl Selection {
    /// Whether `svc` is ours: type LoadBalancer with our class (or none, if classless).
    pub fn is_ours(&self, svc: &Service) -> bool {
        let Some(spec) = &svc.spec else { return false };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            Some(class) => class == self.class,
            None => self.classless,
        }
    }
}

/// Follows a Service watch and remembers which Services are ours, so a daemon can tell the
/// events that matter to it (see [`Ours::event`]) from the churn of everyone else's.
#[derive(Debug, Clone)]
pub struct Ours {
    selection: Selection,
    keys: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

impl Ours {
    /// Tracks the Services `selection` calls ours.
    pub fn new(selection: Selection) -> Self {
        Self {
            selection,
            keys: Default::default(),
        }
    }

    /// Records a watch event; true when it concerns a Service that is ours now or was ours
    /// until this event (it changed class or type, or was deleted).
    pub fn event(&self, svc: &Service, deleted: bool) -> bool {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let is_ours = self.selection.is_ours(svc);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let was_ours = if is_ours && !deleted {
            !keys.insert(key)
        } else {
            keys.remove(&key)
        };
        is_ours || was_ours
    }

    /// Whether Service `namespace/name` is ours, as of the last event seen.
    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(namespace.to_owned(), name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_ingress_ips_of_a_service() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "shop", "name": "web"},
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.10"}, {"hostname": "lb.example"}, {"ip": "bogus"},
                {"ip": "2001:db8::10"}
            ]}}
        }))
        .unwrap();
        assert_eq!(key(&svc), ServiceKey::new("shop", "web"));
        assert_eq!(
            ingress_ips(&svc),
            vec![
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        assert!(ingress_ips(&Service::default()).is_empty());
    }
}
