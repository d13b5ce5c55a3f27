//! Hand-written schema fragments for fields whose items need their own CEL rules.
//!
//! `#[x_kube(validation)]` attaches a rule to a whole field; a rule on each *item* of a list is
//! what makes the API server name the item (`spec.addresses[1]`) in its error, so list fields
//! use `schema_with` and these helpers. Every list and string has `maxItems`/`maxLength`: the
//! API server multiplies a rule's estimated cost by the largest possible list and refuses the
//! CRD if the total is over its budget.

use schemars::{Schema, json_schema};
use serde_json::{Value, json};

/// Longest textual IPv6 address (with an embedded IPv4 suffix) is 45 characters.
pub(crate) const MAX_IP_LEN: u64 = 45;
/// Upper bound on list lengths that carry per-item CEL rules.
pub(crate) const MAX_LIST: u64 = 64;
/// Upper bound on Kubernetes object names (DNS subdomain).
pub(crate) const MAX_NAME_LEN: u64 = 253;

/// A CEL rule with its message, as the API server wants it in `x-kubernetes-validations`.
pub(crate) fn rule(rule: &str, message: &str) -> Value {
    json!({ "rule": rule, "message": message })
}

/// A string schema with a length bound and CEL rules.
pub(crate) fn string(max_length: u64, rules: &[Value]) -> Value {
    let mut s = json!({ "type": "string", "maxLength": max_length });
    if !rules.is_empty() {
        s["x-kubernetes-validations"] = Value::Array(rules.to_vec());
    }
    s
}

/// A list (`x-kubernetes-list-type: atomic`) of items, bounded to `max_items`.
pub(crate) fn list(items: Value, min_items: u64, max_items: u64) -> Schema {
    let mut s = json!({
        "type": "array",
        "items": items,
        "maxItems": max_items,
    });
    if min_items > 0 {
        s["minItems"] = json!(min_items);
    }
    Schema::try_from(s).expect("a list schema is an object")
}

/// A set of strings (`x-kubernetes-list-type: set`): duplicates are refused by the API server.
pub(crate) fn string_set(items: Value, max_items: u64) -> Schema {
    let mut s = list(items, 0, max_items);
    s.insert("x-kubernetes-list-type".into(), json!("set"));
    s
}

/// A list of object names (pools, peers): DNS-1123 subdomains.
pub(crate) fn name_list(_: &mut schemars::SchemaGenerator) -> Schema {
    string_set(
        string(
            MAX_NAME_LEN,
            &[rule(
                "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
                "must be the name of an object: lower case alphanumerics, '-' and '.'",
            )],
        ),
        MAX_LIST,
    )
}

/// A list of label selectors, bounded so it cannot grow without limit.
pub(crate) fn selector_list(generator: &mut schemars::SchemaGenerator) -> Schema {
    let item =
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>();
    let mut s = json_schema!({ "type": "array", "maxItems": MAX_LIST });
    s.insert("items".into(), item.to_value());
    s
}
