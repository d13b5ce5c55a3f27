//! `BGPPeer` and `BGPAdvertisement`: announce pools to routers over BGP.

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::schema::{self, rule};

/// A BGP router the speakers on matching nodes open a session to.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPPeer",
    doc = "A BGP router that speakers peer with.",
    plural = "bgppeers",
    shortname = "bgpp",
    category = "ferrolb",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"My ASN","type":"integer","jsonPath":".spec.myASN"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.ebgpMultiHop) || !self.ebgpMultiHop || self.myASN != self.peerASN"
).message("ebgpMultiHop only applies to eBGP sessions: myASN must differ from peerASN").field_path(".ebgpMultiHop"))]
#[x_kube(validation = Rule::new("!has(self.password) || !has(self.passwordSecret)")
    .message("password and passwordSecret are mutually exclusive: set at most one").field_path(".passwordSecret"))]
#[x_kube(validation = Rule::new(KEEPALIVE_BELOW_HOLD).message(
    "keepaliveTime must be less than holdTime (unless holdTime is 0s)").field_path(".keepaliveTime"))]
pub struct BGPPeerSpec {
    /// Our autonomous system number.
    #[serde(rename = "myASN")]
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub my_asn: u32,

    /// The peer's autonomous system number.
    #[serde(rename = "peerASN")]
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub peer_asn: u32,

    /// The peer's IPv4 or IPv6 address.
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("must be an IPv4 or IPv6 address"))]
    pub peer_address: String,

    /// The peer's TCP port.
    #[serde(default = "default_peer_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: u16,

    /// Local address to open the session from; by default the node's address towards the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("must be an IPv4 or IPv6 address"))]
    pub source_address: Option<String>,

    /// Proposed hold time, a duration like `90s`: `0s` (no keepalives) or at least `3s` (RFC 4271).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(HOLD_TIME_RULE)
        .message("must be a duration like 90s: 0s, or between 3s and 65535s"))]
    pub hold_time: Option<String>,

    /// Interval between keepalives, a duration like `30s`; must be less than `holdTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(KEEPALIVE_RULE)
        .message("must be a duration like 30s, at most 65535s"))]
    pub keepalive_time: Option<String>,

    /// BGP identifier, an IPv4 address in dotted-quad form; by default the node's IPv4 address.
    #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    #[x_kube(validation = Rule::new("isIP(self) && ip(self).family() == 4")
        .message("must be an IPv4 address in dotted-quad form, e.g. 192.0.2.1"))]
    pub router_id: Option<String>,

    /// TCP MD5 password, in clear; prefer `passwordSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub password: Option<String>,

    /// Secret (of type `kubernetes.io/basic-auth`) whose `password` key holds the TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,

    /// Allow the peer to be more than one hop away (eBGP multihop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp_multi_hop: Option<bool>,

    /// Nodes, by label, that peer with this router; empty means every node running a speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub node_selectors: Vec<LabelSelector>,

    /// Advertise the graceful restart capability (RFC 4724).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_graceful_restart: Option<bool>,

    /// Name of a BFD profile to run on this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub bfd_profile: Option<String>,
}

/// Go duration syntax accepted by CEL's `duration()` (no sign, no `µs`), escaped for a CEL string.
macro_rules! duration_re {
    () => {
        r"^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"
    };
}

fn default_peer_port() -> u16 {
    179
}

/// Hold time: well-formed, and 0s or 3s..=65535s.
pub(crate) const HOLD_TIME_RULE: &str = concat!(
    "self.matches('",
    duration_re!(),
    "') && (duration(self) == duration('0s') || ",
    "(duration(self) >= duration('3s') && duration(self) <= duration('65535s')))"
);

/// Keepalive: well-formed, at most 65535s.
pub(crate) const KEEPALIVE_RULE: &str = concat!(
    "self.matches('",
    duration_re!(),
    "') && duration(self) <= duration('65535s')"
);

/// Keepalive below hold time, checked only when both parse (their own rules report bad syntax).
const KEEPALIVE_BELOW_HOLD: &str = concat!(
    "!has(self.holdTime) || !has(self.keepaliveTime) ",
    "|| !self.holdTime.matches('",
    duration_re!(),
    "') || !self.keepaliveTime.matches('",
    duration_re!(),
    "') || duration(self.holdTime) == duration('0s') ",
    "|| duration(self.keepaliveTime) < duration(self.holdTime)"
);

/// Which pools are advertised over BGP, to which peers, with which attributes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    doc = "Announces pools to BGP peers.",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    category = "ferrolb",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Prefix length IPv4 addresses are advertised with (32: each IP on its own).
    #[serde(default = "default_aggregation_v4")]
    #[schemars(range(min = 0, max = 32))]
    pub aggregation_length: i32,

    /// Prefix length IPv6 addresses are advertised with (128: each IP on its own).
    #[serde(rename = "aggregationLengthV6", default = "default_aggregation_v6")]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: i32,

    /// LOCAL_PREF attribute for iBGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub local_pref: Option<u32>,

    /// BGP communities: `65535:65282`, `large:1:2:3`, or a well-known name such as `no-export`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "communities_schema")]
    pub communities: Vec<String>,

    /// Pools, by name, to advertise; with no pools and no selectors, every pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::name_list")]
    pub ip_address_pools: Vec<String>,

    /// Pools, by label, to advertise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,

    /// Nodes, by label, that advertise; empty means every node running a speaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub node_selectors: Vec<LabelSelector>,

    /// BGPPeers, by name, to advertise to; empty means every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::name_list")]
    pub peers: Vec<String>,
}

impl Default for BGPAdvertisementSpec {
    fn default() -> Self {
        Self {
            aggregation_length: default_aggregation_v4(),
            aggregation_length_v6: default_aggregation_v6(),
            local_pref: None,
            communities: Vec::new(),
            ip_address_pools: Vec::new(),
            ip_address_pool_selectors: Vec::new(),
            node_selectors: Vec::new(),
            peers: Vec::new(),
        }
    }
}

fn default_aggregation_v4() -> i32 {
    32
}

fn default_aggregation_v6() -> i32 {
    128
}

/// Well-known community names (RFC 1997, RFC 3765 and `local-as` as FRR spells NO_EXPORT_SUBCONFED).
pub const WELL_KNOWN_COMMUNITIES: [&str; 6] = [
    "no-export",
    "no-advertise",
    "no-peer",
    "blackhole",
    "local-as",
    "no-export-subconfed",
];

/// A community: well-known name, `A:B` (16 bits each) or `large:A:B:C` (32 bits each).
pub(crate) fn community_rule() -> String {
    let names = WELL_KNOWN_COMMUNITIES
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let part = |i: usize| format!("int(self.split(':')[{i}])");
    format!(
        "self in [{names}] \
         || (self.matches('^[0-9]{{1,5}}:[0-9]{{1,5}}$') && {} <= 65535 && {} <= 65535) \
         || (self.matches('^large:[0-9]{{1,10}}:[0-9]{{1,10}}:[0-9]{{1,10}}$') \
         && {} <= 4294967295 && {} <= 4294967295 && {} <= 4294967295)",
        part(0),
        part(1),
        part(1),
        part(2),
        part(3),
    )
}

fn communities_schema(_: &mut SchemaGenerator) -> Schema {
    schema::string_set(
        schema::string(
            40,
            &[rule(
                &community_rule(),
                "must be a BGP community: 'A:B' with two numbers 0-65535 (e.g. 65535:65282), \
                 'large:A:B:C' with three numbers 0-4294967295, or one of no-export, \
                 no-advertise, no-peer, blackhole, local-as, no-export-subconfed",
            )],
        ),
        schema::MAX_LIST,
    )
}
