//! The generated schemas carry the validation the API server is expected to enforce.

use ferrolb_api::{crd_file_name, crds};
use serde_json::Value;

/// The `openAPIV3Schema` of the CRD with this plural, as JSON.
fn schema(plural: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no CRD {plural}"));
    let v = serde_json::to_value(&crd.spec.versions[0]).expect("CRD version serializes");
    v["schema"]["openAPIV3Schema"].clone()
}

/// All `rule` strings at a JSON pointer into a schema.
fn rules(s: &Value, pointer: &str) -> Vec<String> {
    s.pointer(pointer)
        .and_then(|n| n["x-kubernetes-validations"].as_array())
        .unwrap_or_else(|| panic!("no rules at {pointer}"))
        .iter()
        .map(|r| {
            assert!(
                r["message"].is_string(),
                "rule without message at {pointer}: {r}"
            );
            r["rule"].as_str().expect("rule is a string").to_owned()
        })
        .collect()
}

const SPEC: &str = "/properties/spec/properties";

#[test]
fn every_kind_has_a_crd_with_a_stable_file_name() {
    let names: Vec<String> = crds().iter().map(crd_file_name).collect();
    assert_eq!(
        names,
        [
            "ferrolb.io_ipaddresspools.yaml",
            "ferrolb.io_l2advertisements.yaml",
            "ferrolb.io_bgppeers.yaml",
            "ferrolb.io_bgpadvertisements.yaml",
            "ferrolb.io_serviceannouncements.yaml",
        ]
    );
    for crd in crds() {
        assert_eq!(crd.spec.group, "ferrolb.io");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1beta1");
        let scope = if crd.spec.names.kind == "ServiceAnnouncement" {
            "Namespaced"
        } else {
            "Cluster"
        };
        assert_eq!(crd.spec.scope, scope, "{}", crd.spec.names.kind);
    }
}

#[test]
fn pool_addresses_are_checked_item_by_item() {
    let s = schema("ipaddresspools");
    let addresses = &s.pointer(&format!("{SPEC}/addresses")).unwrap();
    assert_eq!(addresses["minItems"], 1);
    assert!(
        addresses["maxItems"].as_u64().is_some(),
        "unbounded lists break the CEL cost budget"
    );
    assert!(addresses["items"]["maxLength"].as_u64().is_some());
    let r = rules(&s, &format!("{SPEC}/addresses/items"));
    assert!(r.iter().any(|r| r.contains("isCIDR(self)")));
    assert!(r.iter().any(|r| r.contains("cidr(self).masked()")));
    assert!(r.iter().any(|r| r.contains(".family() == ip(")));
    assert!(r.iter().any(|r| r.contains(" <= ")), "range order rule");
    let priority = s
        .pointer(&format!("{SPEC}/serviceAllocation/properties/priority"))
        .unwrap();
    assert_eq!(priority["minimum"], 0.0);
}

#[test]
fn pool_has_status_subresource_short_name_and_columns() {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "IPAddressPool")
        .unwrap();
    assert_eq!(crd.spec.names.short_names, Some(vec!["ipp".to_owned()]));
    let v = &crd.spec.versions[0];
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Addresses", ".spec.addresses"),
            ("Auto Assign", ".spec.autoAssign"),
            ("Assigned", ".status.assigned"),
            ("Available", ".status.available"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn bgp_peer_rules() {
    let s = schema("bgppeers");
    for asn in ["myASN", "peerASN"] {
        let f = s.pointer(&format!("{SPEC}/{asn}")).unwrap();
        assert_eq!(f["minimum"], 1.0, "{asn}");
        assert_eq!(f["maximum"], 4294967295.0, "{asn}");
    }
    let port = s.pointer(&format!("{SPEC}/peerPort")).unwrap();
    assert_eq!(
        (
            port["minimum"].clone(),
            port["maximum"].clone(),
            port["default"].clone()
        ),
        (1.0.into(), 65535.0.into(), 179.into())
    );
    assert!(rules(&s, &format!("{SPEC}/peerAddress"))[0].contains("isIP(self)"));
    assert!(rules(&s, &format!("{SPEC}/routerID"))[0].contains("family() == 4"));
    assert!(rules(&s, &format!("{SPEC}/holdTime"))[0].contains("duration('3s')"));
    let spec_rules = s["properties"]["spec"]["x-kubernetes-validations"]
        .as_array()
        .unwrap();
    let paths: Vec<_> = spec_rules
        .iter()
        .map(|r| r["fieldPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [".ebgpMultiHop", ".passwordSecret", ".keepaliveTime"]
    );
}

#[test]
fn bgp_advertisement_rules_and_defaults() {
    let s = schema("bgpadvertisements");
    let v4 = s.pointer(&format!("{SPEC}/aggregationLength")).unwrap();
    assert_eq!(
        (v4["maximum"].clone(), v4["default"].clone()),
        (32.0.into(), 32.into())
    );
    let v6 = s.pointer(&format!("{SPEC}/aggregationLengthV6")).unwrap();
    assert_eq!(
        (v6["maximum"].clone(), v6["default"].clone()),
        (128.0.into(), 128.into())
    );
    let r = rules(&s, &format!("{SPEC}/communities/items"));
    assert!(r[0].contains("'no-export'") && r[0].contains("large:"));
}

#[test]
fn interfaces_and_announcements() {
    let l2 = schema("l2advertisements");
    let item = l2.pointer(&format!("{SPEC}/interfaces/items")).unwrap();
    assert_eq!(item["maxLength"], 15);
    assert!(rules(&l2, &format!("{SPEC}/interfaces/items"))[0].contains("matches("));

    let ann = schema("serviceannouncements");
    let protocol = ann.pointer(&format!("{SPEC}/protocol")).unwrap();
    assert_eq!(protocol["enum"], serde_json::json!(["layer2", "bgp"]));
    assert_eq!(
        ann.pointer(&format!("{SPEC}/lastGratuitousTime/format"))
            .unwrap(),
        "date-time"
    );
    assert!(rules(&ann, &format!("{SPEC}/ips/items"))[0].contains("isIP(self)"));
}

#[test]
fn every_string_and_list_with_rules_is_bounded() {
    fn walk(path: &str, node: &Value, out: &mut Vec<String>) {
        if let Some(obj) = node.as_object() {
            if obj.contains_key("x-kubernetes-validations") {
                match obj.get("type").and_then(Value::as_str) {
                    Some("string") if !obj.contains_key("maxLength") => out.push(path.to_owned()),
                    Some("array") if !obj.contains_key("maxItems") => out.push(path.to_owned()),
                    _ => {}
                }
            }
            if obj.get("type").and_then(Value::as_str) == Some("array")
                && !obj.contains_key("maxItems")
            {
                // Lists under rule-carrying items multiply cost; ours are all bounded.
                if obj["items"].get("x-kubernetes-validations").is_some() {
                    out.push(path.to_owned());
                }
            }
            for (k, v) in obj {
                walk(&format!("{path}/{k}"), v, out);
            }
        }
    }
    for crd in crds() {
        let mut unbounded = Vec::new();
        let v = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&crd.spec.names.plural, &v, &mut unbounded);
        assert!(
            unbounded.is_empty(),
            "unbounded fields with CEL rules: {unbounded:?}"
        );
    }
}
