//! `IPAddressPool`: the addresses FerroLB may hand out to LoadBalancer Services.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::schema::{self, rule};

/// A pool of IPv4 and/or IPv6 addresses from which Services get their external IPs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    doc = "A pool of addresses FerroLB hands out to LoadBalancer Services.",
    plural = "ipaddresspools",
    shortname = "ipp",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn = r#"{"name":"Assigned","type":"string","jsonPath":".status.assigned"}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.available"}"#,
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs (`192.0.2.0/24`, `2001:db8::/64`) and inclusive ranges (`192.0.2.10-192.0.2.20`)
    /// of addresses to hand out, IPv4 and IPv6 may be mixed across entries.
    #[schemars(schema_with = "addresses_schema")]
    pub addresses: Vec<String>,

    /// Whether Services that name no pool may get addresses from this one.
    #[serde(default = "default_true")]
    pub auto_assign: bool,

    /// Skip addresses ending in `.0` and `.255`, which some old routers and clients mishandle.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Which Services this pool serves, and in which order pools are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Restricts a pool to some Services and orders pools that could serve the same Service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Pools with a lower number are tried first; pools without a priority come last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,

    /// Namespaces whose Services may use this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "namespaces_schema")]
    pub namespaces: Vec<String>,

    /// Namespaces, by label, whose Services may use this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub namespace_selectors: Vec<LabelSelector>,

    /// Services, by label, that may use this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::selector_list")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller reports about a pool.
///
/// `availableIPv6` saturates at `i64::MAX`: a /64 alone holds 2^64 addresses, more than an
/// int64 (the widest integer Kubernetes schemas have) can count. The exact numbers, of any size,
/// are in the `assigned` and `available` summaries, which are what `kubectl get` shows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses of this pool held by Services.
    #[serde(default)]
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// IPv6 addresses of this pool held by Services.
    #[serde(default)]
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    /// IPv4 addresses of this pool still free.
    #[serde(default)]
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// IPv6 addresses of this pool still free, saturating at 9223372036854775807.
    #[serde(default)]
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: i64,
    /// Human summary of assigned addresses, e.g. `3 IPv4, 1 IPv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<String>,
    /// Human summary of free addresses with exact counts, e.g. `250 IPv4, 18446744073709551616 IPv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
    /// Observations such as `Overlapping` (with another pool) or `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// Address counts of one pool, exact, as the allocator reports them.
pub use ferrolb_core::alloc::PoolCounts;

impl IPAddressPoolStatus {
    /// Sets the four counters (saturating at `i64::MAX`) and the exact summaries.
    pub fn set_counts(&mut self, c: PoolCounts) {
        let sat = |n: u128| i64::try_from(n).unwrap_or(i64::MAX);
        self.assigned_ipv4 = sat(c.assigned_v4);
        self.assigned_ipv6 = sat(c.assigned_v6);
        self.available_ipv4 = sat(c.available_v4);
        self.available_ipv6 = sat(c.available_v6);
        self.assigned = Some(summary(c.assigned_v4, c.assigned_v6));
        self.available = Some(summary(c.available_v4, c.available_v6));
    }
}

/// `3 IPv4, 1 IPv6`, leaving out a family the pool does not have.
fn summary(v4: u128, v6: u128) -> String {
    match (v4, v6) {
        (0, 0) => "0".to_owned(),
        (v4, 0) => format!("{v4} IPv4"),
        (0, v6) => format!("{v6} IPv6"),
        (v4, v6) => format!("{v4} IPv4, {v6} IPv6"),
    }
}

fn default_true() -> bool {
    true
}

/// Longest accepted `addresses` entry: two 39-character IPv6 addresses and a dash.
const MAX_ADDRESS_LEN: u64 = 80;

/// CEL: `a <= b` for two valid IP addresses of the same family.
///
/// Kubernetes CEL (1.34) has `ip()` but no ordering on IPs, no `cel.bind`, and its cost
/// estimator gives `join()` and `string(int)` unbounded cost, so:
/// - IPv4: the four octets as one integer.
/// - IPv6: `a < b` when, at some bit `p`, `a` is in `b`'s `/p` network but not in its
///   `/p+1` network (they first differ at bit `p`) and bit `p` of `b` is set (its `/p+1`
///   network address differs from its `/p` one). The prefix pairs are literals because
///   computed strings have unknown size, which the cost estimator refuses.
pub(crate) fn cel_ip_le(a: &str, b: &str) -> String {
    let v4 = |x: &str| {
        format!(
            "(int({x}.split('.')[0]) * 16777216 + int({x}.split('.')[1]) * 65536 \
             + int({x}.split('.')[2]) * 256 + int({x}.split('.')[3]))"
        )
    };
    let prefixes = (0..128)
        .map(|p| format!("'/{p} /{}'", p + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let (p, p1) = ("q.split(' ')[0]", "q.split(' ')[1]");
    let v6 = format!(
        "ip({a}) == ip({b}) || [{prefixes}].exists(q, \
         cidr({b} + {p}).masked().containsIP({a}) \
         && !cidr({b} + {p1}).masked().containsIP({a}) \
         && !(cidr({b} + {p1}).masked().ip() == cidr({b} + {p}).masked().ip()))"
    );
    format!("({a}.contains(':') ? ({v6}) : {} <= {})", v4(a), v4(b))
}

/// The CEL rules checked on each `addresses` entry.
pub(crate) fn address_rules() -> Vec<serde_json::Value> {
    let a = "self.split('-')[0]";
    let b = "self.split('-')[1]";
    let two_ips = format!("size(self.split('-')) == 2 && isIP({a}) && isIP({b})");
    vec![
        rule(
            &format!("self.contains('-') ? ({two_ips}) : isCIDR(self)"),
            "must be a CIDR (192.0.2.0/24, 2001:db8::/64) or a range of two IP addresses \
             first-last (192.0.2.10-192.0.2.20), without spaces",
        ),
        rule(
            "self.contains('-') || !isCIDR(self) || cidr(self) == cidr(self).masked()",
            "CIDR has host bits set: write the network address, e.g. 192.0.2.0/24 not 192.0.2.1/24",
        ),
        rule(
            &format!("!self.contains('-') || !({two_ips}) || ip({a}).family() == ip({b}).family()"),
            "both ends of a range must be of the same IP family",
        ),
        rule(
            &format!(
                "!self.contains('-') || !({two_ips}) || ip({a}).family() != ip({b}).family() \
                 || {}",
                cel_ip_le(a, b)
            ),
            "range is reversed: the first address must not be greater than the last",
        ),
    ]
}

/// Most entries one pool may list; bounded so the range-order rule fits the CEL cost budget.
const MAX_ADDRESSES: u64 = 32;

fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    let mut s = schema::string_set(
        schema::string(MAX_ADDRESS_LEN, &address_rules()),
        MAX_ADDRESSES,
    );
    s.insert("minItems".into(), 1.into());
    s
}

fn namespaces_schema(_: &mut SchemaGenerator) -> Schema {
    schema::string_set(
        serde_json::json!({
            "type": "string",
            "maxLength": 63,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        }),
        schema::MAX_LIST,
    )
}

/// `conditions` as a map keyed by `type`, so server-side apply merges them one by one.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    let mut s = schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "maxItems": 16,
    });
    s.insert("items".into(), item.to_value());
    s
}
