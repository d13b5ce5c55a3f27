//! A container's environment from its spec, with the kubelet's rules. Pure: ConfigMaps and
//! Secrets are fetched by the caller and passed in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// What the downward API and the service variables draw on, for one pod.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    /// The pod's IPs, IPv4 first.
    pub pod_ips: Vec<String>,
    /// The node's IPs, IPv4 first.
    pub host_ips: Vec<String>,
    /// Where in-cluster clients reach the API server (`KUBERNETES_SERVICE_HOST`).
    pub api_host: String,
    /// Its port (`KUBERNETES_SERVICE_PORT`).
    pub api_port: u16,
}

/// ConfigMap and Secret data by object name, for `*KeyRef` and `envFrom`.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// ConfigMap name -> data.
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret name -> data (decoded as UTF-8).
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// A ConfigMap or Secret the environment refers to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceRef {
    /// A ConfigMap name.
    ConfigMap(String),
    /// A Secret name.
    Secret(String),
}

/// Why the environment cannot be built (`CreateContainerConfigError` in the pod status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A `fieldRef` this kubelet does not provide.
    #[error("env {var}: unsupported fieldRef {path:?}")]
    UnsupportedField {
        /// The variable.
        var: String,
        /// The field path.
        path: String,
    },
    /// A `resourceFieldRef`; the lab sets no resources.
    #[error("env {var}: resourceFieldRef is not supported in the lab")]
    ResourceField {
        /// The variable.
        var: String,
    },
    /// A non-optional ConfigMap/Secret or key that does not exist.
    #[error("env {var}: {what} not found")]
    Missing {
        /// The variable (or `envFrom`).
        var: String,
        /// What is missing.
        what: String,
    },
}

/// Every ConfigMap and Secret `container` refers to, for the caller to fetch.
pub fn sources_needed(container: &Container) -> Vec<SourceRef> {
    let mut out = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(c) = &from.config_map_ref {
            out.push(SourceRef::ConfigMap(c.name.clone()));
        }
        if let Some(s) = &from.secret_ref {
            out.push(SourceRef::Secret(s.name.clone()));
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(c) = &from.config_map_key_ref {
            out.push(SourceRef::ConfigMap(c.name.clone()));
        }
        if let Some(s) = &from.secret_key_ref {
            out.push(SourceRef::Secret(s.name.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The variables every container gets, as the kubelet sets them for the `kubernetes`
/// Service (pointing at the control plane's management address in the lab).
fn service_vars(facts: &PodFacts) -> Vec<(String, String)> {
    let (h, p) = (&facts.api_host, facts.api_port);
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), h.clone()),
        ("KUBERNETES_SERVICE_PORT".into(), p.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), p.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://{h}:{p}")),
        (format!("KUBERNETES_PORT_{p}_TCP"), format!("tcp://{h}:{p}")),
        (format!("KUBERNETES_PORT_{p}_TCP_PROTO"), "tcp".into()),
        (format!("KUBERNETES_PORT_{p}_TCP_PORT"), p.to_string()),
        (format!("KUBERNETES_PORT_{p}_TCP_ADDR"), h.clone()),
    ]
}

/// A downward-API `fieldRef` value.
fn field(pod: &Pod, facts: &PodFacts, var: &str, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let indexed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        "status.hostIP" => facts.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => facts.host_ips.join(","),
        _ => indexed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| indexed("metadata.annotations['", meta.annotations.as_ref()))
            .ok_or_else(|| EnvError::UnsupportedField {
                var: var.into(),
                path: path.into(),
            })?,
    };
    Ok(value)
}

/// Looks up `key` of a ConfigMap/Secret; `Ok(None)` when missing but optional.
fn key_ref(
    map: &BTreeMap<String, BTreeMap<String, String>>,
    kind: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
    var: &str,
) -> Result<Option<String>, EnvError> {
    match map.get(name).and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(v.clone())),
        None if optional == Some(true) => Ok(None),
        None => Err(EnvError::Missing {
            var: var.into(),
            what: format!("key {key:?} of {kind} {name:?}"),
        }),
    }
}

/// The container's environment in order: the `kubernetes` Service variables, `envFrom`,
/// then `env` (later entries win, `$(VAR)` refers to earlier ones).
pub fn resolve(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    sources: &Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = service_vars(facts);
    // Container runtimes set HOSTNAME to the pod's name (its UTS hostname); programs
    // that name themselves by it expect it.
    if let Some(name) = &pod.metadata.name {
        vars.insert(0, ("HOSTNAME".into(), name.clone()));
    }
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| match vars
        .iter_mut()
        .find(|(name, _)| *name == k)
    {
        Some(slot) => slot.1 = v,
        None => vars.push((k, v)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, optional) = if let Some(c) = &from.config_map_ref {
            (
                sources.config_maps.get(&c.name),
                format!("ConfigMap {:?}", c.name),
                c.optional,
            )
        } else if let Some(s) = &from.secret_ref {
            (
                sources.secrets.get(&s.name),
                format!("Secret {:?}", s.name),
                s.optional,
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut vars, format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(EnvError::Missing {
                    var: "envFrom".into(),
                    what,
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let raw = var.value.clone().unwrap_or_default();
                Some(expand(&raw, |name| lookup(&vars, name)))
            }
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    Some(field(pod, facts, &var.name, &f.field_path)?)
                } else if let Some(c) = &from.config_map_key_ref {
                    let m = &sources.config_maps;
                    key_ref(m, "ConfigMap", &c.name, &c.key, c.optional, &var.name)?
                } else if let Some(s) = &from.secret_key_ref {
                    key_ref(
                        &sources.secrets,
                        "Secret",
                        &s.name,
                        &s.key,
                        s.optional,
                        &var.name,
                    )?
                } else if from.resource_field_ref.is_some() {
                    return Err(EnvError::ResourceField {
                        var: var.name.clone(),
                    });
                } else {
                    None
                }
            }
        };
        if let Some(value) = value {
            set(&mut vars, var.name.clone(), value);
        }
    }
    Ok(vars)
}

fn lookup<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Expands `$(VAR)` references with the kubelet's rules: `$$` is a literal `$`, and a
/// reference to an unknown variable is left as written.
pub fn expand<'a>(input: &str, vars: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match vars(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Expands `$(VAR)` in `command`/`args` from the resolved environment.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    items
        .iter()
        .map(|s| expand(s, |name| lookup(env, name)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node-2", "serviceAccountName": "web",
                     "containers": [{"name": "c"}]}
        }))
        .unwrap()
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ips: vec!["198.18.2.5".into(), "2001:db8:1:2::5".into()],
            host_ips: vec!["192.0.2.12".into()],
            api_host: "198.19.0.1".into(),
            api_port: 6443,
        }
    }

    fn container(env: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "env": env})).unwrap()
    }

    fn get<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
        lookup(vars, k)
    }

    #[test]
    fn downward_api_and_service_variables() {
        let c = container(json!([
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        ]));
        let env = resolve(&pod(), &c, &facts(), &Sources::default()).unwrap();
        assert_eq!(get(&env, "POD_NAME"), Some("web-1"));
        assert_eq!(get(&env, "NS"), Some("shop"));
        assert_eq!(get(&env, "NODE"), Some("node-2"));
        assert_eq!(get(&env, "IP"), Some("198.18.2.5"));
        assert_eq!(get(&env, "IPS"), Some("198.18.2.5,2001:db8:1:2::5"));
        assert_eq!(get(&env, "SA"), Some("web"));
        assert_eq!(get(&env, "UID"), Some("u-1"));
        assert_eq!(get(&env, "APP"), Some("web"));
        assert_eq!(get(&env, "HOST"), Some("192.0.2.12"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("198.19.0.1"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT"), Some("6443"));
    }

    #[test]
    fn literal_values_expand_earlier_variables_and_override() {
        let c = container(json!([
            {"name": "A", "value": "one"},
            {"name": "B", "value": "$(A)-two $$(A) $(NOPE) $"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": "1"},
        ]));
        let env = resolve(&pod(), &c, &facts(), &Sources::default()).unwrap();
        assert_eq!(get(&env, "B"), Some("one-two $(A) $(NOPE) $"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT"), Some("1"));
        let args = expand_all(&["--name=$(A)".to_string()], &env);
        assert_eq!(args, vec!["--name=one".to_string()]);
    }

    #[test]
    fn config_map_and_secret_refs() {
        let c: Container = serde_json::from_value(json!({
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}},
                {"name": "O", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            ]
        }))
        .unwrap();
        assert_eq!(
            sources_needed(&c),
            vec![
                SourceRef::ConfigMap("cm".into()),
                SourceRef::ConfigMap("gone".into()),
                SourceRef::Secret("sec".into())
            ]
        );
        let mut sources = Sources::default();
        sources
            .config_maps
            .insert("cm".into(), [("x".to_string(), "1".to_string())].into());
        let err = resolve(&pod(), &c, &facts(), &sources).unwrap_err();
        assert!(
            matches!(err, EnvError::Missing { ref var, .. } if var == "S"),
            "{err}"
        );
        sources
            .secrets
            .insert("sec".into(), [("k".to_string(), "s3".to_string())].into());
        let env = resolve(&pod(), &c, &facts(), &sources).unwrap();
        assert_eq!(get(&env, "CM_x"), Some("1"));
        assert_eq!(get(&env, "S"), Some("s3"));
        assert_eq!(get(&env, "O"), None);
    }

    #[test]
    fn unsupported_field_is_an_error() {
        let c = container(json!([
            {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}},
        ]));
        let err = resolve(&pod(), &c, &facts(), &Sources::default()).unwrap_err();
        assert!(err.to_string().contains("spec.hostname"));
    }
}
