//! The `ferrolb.io/v1beta1` custom resources.
//!
//! Validation lives in the generated schemas (OpenAPI bounds and CEL `x-kubernetes-validations`)
//! so the API server refuses bad objects itself; see `docs/decisions/0002-crd-validation.md`.

mod announcement;
mod bgp;
mod l2;
mod pool;
mod schema;
pub mod service;

pub use announcement::{AnnouncementProtocol, ServiceAnnouncement, ServiceAnnouncementSpec};
pub use bgp::{
    BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec, WELL_KNOWN_COMMUNITIES,
};
pub use l2::{L2Advertisement, L2AdvertisementSpec};
pub use pool::{
    IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, PoolCounts, ServiceAllocation,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every FerroLB resource.
pub const GROUP: &str = "ferrolb.io";

/// Every FerroLB CustomResourceDefinition, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        BGPPeer::crd(),
        BGPAdvertisement::crd(),
        ServiceAnnouncement::crd(),
    ]
}

/// The file name a CRD is written to under `charts/ferrolb/crds/`, e.g. `ferrolb.io_ipaddresspools.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// A CRD as the YAML committed to the chart (with a header saying it is generated).
pub fn render_crd(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(crd)?;
    Ok(format!(
        "# Generated from the ferrolb-api crate by `cargo xtask gen`; do not edit.\n{body}"
    ))
}

/// Every CRD as `(file name, YAML)`, sorted by file name.
pub fn rendered_crds() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    let mut files = crds()
        .iter()
        .map(|crd| Ok((crd_file_name(crd), render_crd(crd)?)))
        .collect::<Result<Vec<_>, serde_yaml_ng::Error>>()?;
    files.sort();
    Ok(files)
}
