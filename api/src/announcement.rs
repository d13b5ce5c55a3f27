//! `ServiceAnnouncement`: what a speaker announces for a Service, written by the speaker.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::schema::{self, rule};

/// One node's announcement of one Service's IPs; owned by the Service so it is collected with it.
///
/// The speaker writes it as data (there is no controller acting on it), so it is all `spec`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceAnnouncement",
    doc = "One node's announcement of one Service's IPs, written by the speaker.",
    plural = "serviceannouncements",
    shortname = "svcann",
    category = "ferrolb",
    namespaced,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.serviceName"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.protocol"}"#,
    printcolumn = r#"{"name":"IPs","type":"string","jsonPath":".spec.ips"}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.interface"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAnnouncementSpec {
    /// Name of the Service (in the same namespace) whose IPs are announced.
    #[schemars(length(min = 1, max = 63))]
    pub service_name: String,

    /// Name of the node that announces.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,

    /// How the IPs are announced.
    pub protocol: AnnouncementProtocol,

    /// Interface the node answers ARP/NDP on (layer2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::l2::INTERFACE_RULE).message(crate::l2::INTERFACE_MESSAGE))]
    #[schemars(length(max = 15))]
    pub interface: Option<String>,

    /// The announced IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "ips_schema")]
    pub ips: Vec<String>,

    /// BGPPeers, by name, the IPs are advertised to (bgp only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::name_list")]
    pub peers: Vec<String>,

    /// When the last gratuitous ARP / unsolicited neighbour advertisement was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gratuitous_time: Option<Time>,
}

/// The protocol an IP is announced with.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum AnnouncementProtocol {
    /// ARP for IPv4, NDP for IPv6, from one node at a time.
    Layer2,
    /// BGP to the configured peers, possibly from many nodes.
    Bgp,
}

fn ips_schema(_: &mut SchemaGenerator) -> Schema {
    schema::string_set(
        schema::string(
            schema::MAX_IP_LEN,
            &[rule("isIP(self)", "must be an IPv4 or IPv6 address")],
        ),
        schema::MAX_LIST,
    )
}
