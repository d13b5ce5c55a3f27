//! `L2Advertisement`: announce pools on the local network with ARP (IPv4) and NDP (IPv6).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::schema::{self, rule};

/// Which pools are answered for by ARP/NDP, from which nodes and interfaces.
///
/// With no pools and no pool selectors it applies to every pool.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    doc = "Announces pools on the local network with ARP and NDP.",
    plural = "l2advertisements",
    shortname = "l2adv",
    category = "ferrolb",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools, by name, to announce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::name_list")]
    pub ip_address_pools: Vec<String>,

    /// Pools, by label, to announce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Nodes, by label, that may announce; empty means every node running a speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub node_selectors: Vec<LabelSelector>,

    /// Linux interfaces to answer on; empty means every interface that has a route to the IP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "interfaces_schema")]
    pub interfaces: Vec<String>,
}

/// Linux refuses interface names longer than 15 bytes (IFNAMSIZ - 1), `.`/`..`, and names
/// with `/`, `:` or whitespace; restricting to printable ASCII makes bytes equal characters.
pub(crate) const INTERFACE_RULE: &str =
    "self.matches('^[!-.0-9;-~]{1,15}$') && self != '.' && self != '..'";

/// Error message for [`INTERFACE_RULE`].
pub(crate) const INTERFACE_MESSAGE: &str = "must be a Linux interface name: 1 to 15 printable ASCII characters, \
     not '.' or '..', without '/', ':' or spaces";

fn interfaces_schema(_: &mut SchemaGenerator) -> Schema {
    schema::string_set(
        schema::string(15, &[rule(INTERFACE_RULE, INTERFACE_MESSAGE)]),
        schema::MAX_LIST,
    )
}
