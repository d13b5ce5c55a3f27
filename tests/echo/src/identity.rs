//! Who this backend is: the pod's identity from its environment (downward API).

use serde::Serialize;

/// The identity the process kubelet passes through the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `POD_NAME`.
    pub pod: String,
    /// `NAMESPACE`, or `POD_NAMESPACE` when `NAMESPACE` is unset.
    pub namespace: String,
    /// `NODE_NAME`.
    pub node: String,
    /// `POD_IP`.
    pub pod_ip: String,
    /// `SERVICE_NAME` (as echo-basic).
    pub service: String,
    /// `INGRESS_NAME` (as echo-basic).
    pub ingress: String,
}

impl Identity {
    /// Reads the identity from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the identity through `lookup` (a stand-in for the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).unwrap_or_default();
        let namespace = lookup("NAMESPACE")
            .filter(|s| !s.is_empty())
            .or_else(|| lookup("POD_NAMESPACE"))
            .unwrap_or_default();
        Self {
            // echo-basic reads POD_NAME; without it, the pod's HOSTNAME (its name).
            pod: lookup("POD_NAME")
                .filter(|s| !s.is_empty())
                .or_else(|| lookup("HOSTNAME"))
                .unwrap_or_default(),
            namespace,
            node: get("NODE_NAME"),
            pod_ip: get("POD_IP"),
            service: get("SERVICE_NAME"),
            ingress: get("INGRESS_NAME"),
        }
    }

    /// The name to prefix UDP answers with: the pod name, else `HOSTNAME`, else `unknown`.
    pub fn display_name(&self) -> String {
        if !self.pod.is_empty() {
            return self.pod.clone();
        }
        std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn reads_all_fields() {
        let id = Identity::from_lookup(env(&[
            ("POD_NAME", "echo-1"),
            ("NAMESPACE", "ns"),
            ("NODE_NAME", "node-2"),
            ("POD_IP", "198.18.2.5"),
            ("SERVICE_NAME", "svc"),
            ("INGRESS_NAME", "ing"),
        ]));
        assert_eq!(id.pod, "echo-1");
        assert_eq!(id.namespace, "ns");
        assert_eq!(id.node, "node-2");
        assert_eq!(id.pod_ip, "198.18.2.5");
        assert_eq!(id.service, "svc");
        assert_eq!(id.ingress, "ing");
    }

    #[test]
    fn pod_namespace_is_a_fallback() {
        let id = Identity::from_lookup(env(&[("POD_NAMESPACE", "b")]));
        assert_eq!(id.namespace, "b");
        let id = Identity::from_lookup(env(&[("NAMESPACE", "a"), ("POD_NAMESPACE", "b")]));
        assert_eq!(id.namespace, "a");
        let id = Identity::from_lookup(env(&[]));
        assert_eq!(id, Identity::default());
    }
}
