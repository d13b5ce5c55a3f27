//! Which path a Service asks for: `ferrolb.io/forwarding` and `ferrolb.io/proxy-protocol`.
//! A value we do not understand keeps the Service on the default (kernel) path and is reported.

use ferrolb_core::proxy_protocol::Version;
use k8s_openapi::api::core::v1::Service;

use crate::k8s::FORWARDING_ANNOTATION;

/// The annotation asking for a PROXY protocol header towards the backends.
pub const PROXY_PROTOCOL_ANNOTATION: &str = "ferrolb.io/proxy-protocol";

/// The path a Service is forwarded by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// nftables DNAT (default, and the fallback for bad annotations).
    Kernel,
    /// The userspace proxy.
    Userspace {
        /// The header to send to backends, if any.
        proxy_protocol: Option<Version>,
    },
}

/// An annotation value that was not used, for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnnotation {
    /// `ferrolb.io/forwarding` is neither `kernel` nor `userspace`.
    #[error(
        "annotation ferrolb.io/forwarding: {0:?} is not \"kernel\" or \"userspace\"; the Service stays on the kernel path"
    )]
    Forwarding(String),
    /// `ferrolb.io/proxy-protocol` is neither `v1` nor `v2`.
    #[error(
        "annotation ferrolb.io/proxy-protocol: {0:?} is not \"v1\" or \"v2\"; the Service stays on the kernel path"
    )]
    ProxyProtocol(String),
    /// `ferrolb.io/proxy-protocol` on a Service the kernel path forwards.
    #[error(
        "annotation ferrolb.io/proxy-protocol: {0:?} needs ferrolb.io/forwarding: userspace; ignored"
    )]
    ProxyProtocolOnKernel(String),
}

/// The path `svc` is forwarded by, and what in its annotations was not used.
pub fn selection(svc: &Service) -> (Selection, Option<BadAnnotation>) {
    let ann = svc.metadata.annotations.as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str);
    let pp = get(PROXY_PROTOCOL_ANNOTATION);
    match get(FORWARDING_ANNOTATION).map(str::trim) {
        Some("userspace") => match pp.map(|v| (v, Version::parse(v))) {
            None => (
                Selection::Userspace {
                    proxy_protocol: None,
                },
                None,
            ),
            Some((_, Some(v))) => (
                Selection::Userspace {
                    proxy_protocol: Some(v),
                },
                None,
            ),
            Some((raw, None)) => (
                Selection::Kernel,
                Some(BadAnnotation::ProxyProtocol(raw.into())),
            ),
        },
        None | Some("kernel") => (
            Selection::Kernel,
            pp.map(|v| BadAnnotation::ProxyProtocolOnKernel(v.into())),
        ),
        Some(other) => (
            Selection::Kernel,
            Some(BadAnnotation::Forwarding(other.into())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(annotations: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "web", "annotations": annotations}
        }))
        .unwrap()
    }

    #[test]
    fn valid_values() {
        assert_eq!(selection(&svc(json!({}))), (Selection::Kernel, None));
        assert_eq!(
            selection(&svc(json!({"ferrolb.io/forwarding": "kernel"}))),
            (Selection::Kernel, None)
        );
        assert_eq!(
            selection(&svc(json!({"ferrolb.io/forwarding": "userspace"}))),
            (
                Selection::Userspace {
                    proxy_protocol: None
                },
                None
            )
        );
        assert_eq!(
            selection(&svc(json!({"ferrolb.io/forwarding": "userspace",
                                  "ferrolb.io/proxy-protocol": "v2"}))),
            (
                Selection::Userspace {
                    proxy_protocol: Some(Version::V2)
                },
                None
            )
        );
    }

    /// Bad inputs tried: an unknown path, an unknown PROXY version (v3, empty, upper case), and
    /// a PROXY version on a kernel-path Service. Each keeps the kernel path and says why.
    #[test]
    fn bad_values_keep_the_kernel_path() {
        let (sel, bad) = selection(&svc(json!({"ferrolb.io/forwarding": "bogus"})));
        assert_eq!(sel, Selection::Kernel);
        let msg = bad.unwrap().to_string();
        assert!(
            msg.contains("\"bogus\"") && msg.contains("kernel path"),
            "{msg}"
        );
        for v in ["v3", "", "V2"] {
            let (sel, bad) = selection(&svc(json!({"ferrolb.io/forwarding": "userspace",
                                                    "ferrolb.io/proxy-protocol": v})));
            assert_eq!(sel, Selection::Kernel, "{v:?}");
            assert_eq!(bad, Some(BadAnnotation::ProxyProtocol(v.into())));
        }
        let (sel, bad) = selection(&svc(json!({"ferrolb.io/proxy-protocol": "v1"})));
        assert_eq!(sel, Selection::Kernel);
        assert_eq!(bad, Some(BadAnnotation::ProxyProtocolOnKernel("v1".into())));
    }
}
