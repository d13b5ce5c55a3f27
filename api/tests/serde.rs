//! JSON shape of the resources: camelCase names, defaults, round trips.

use ferrolb_api::*;
use serde_json::json;

#[test]
fn pool_defaults_and_camel_case() {
    let spec: IPAddressPoolSpec =
        serde_json::from_value(json!({ "addresses": ["192.0.2.0/24"] })).unwrap();
    assert!(spec.auto_assign);
    assert!(!spec.avoid_buggy_ips);
    assert_eq!(spec.service_allocation, None);

    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        v,
        json!({ "addresses": ["192.0.2.0/24"], "autoAssign": true, "avoidBuggyIPs": false })
    );
}

#[test]
fn pool_round_trips() {
    let v = json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": { "name": "lan" },
        "spec": {
            "addresses": ["192.0.2.10-192.0.2.20", "2001:db8::/64"],
            "autoAssign": false,
            "avoidBuggyIPs": true,
            "serviceAllocation": {
                "priority": 10,
                "namespaces": ["web"],
                "serviceSelectors": [{ "matchLabels": { "app": "web" } }]
            }
        },
        "status": {
            "assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 10,
            "availableIPv6": 9223372036854775807i64,
            "assigned": "1 IPv4", "available": "10 IPv4, 18446744073709551616 IPv6",
            "conditions": [{
                "type": "Overlapping", "status": "False", "reason": "NoOverlap",
                "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"
            }]
        }
    });
    let pool: IPAddressPool = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(
        pool.spec.service_allocation.as_ref().unwrap().priority,
        Some(10)
    );
    assert_eq!(serde_json::to_value(&pool).unwrap(), v);
}

#[test]
fn status_counts_saturate_but_summaries_are_exact() {
    let mut status = IPAddressPoolStatus::default();
    status.set_counts(PoolCounts {
        assigned_v4: 3,
        assigned_v6: 1,
        available_v4: 250,
        available_v6: 1 << 64,
    });
    assert_eq!(status.available_ipv6, i64::MAX);
    assert_eq!(status.available_ipv4, 250);
    assert_eq!(status.assigned.as_deref(), Some("3 IPv4, 1 IPv6"));
    assert_eq!(
        status.available.as_deref(),
        Some("250 IPv4, 18446744073709551616 IPv6")
    );

    status.set_counts(PoolCounts {
        available_v6: 16,
        ..PoolCounts::default()
    });
    assert_eq!(status.assigned.as_deref(), Some("0"));
    assert_eq!(status.available.as_deref(), Some("16 IPv6"));
}

#[test]
fn bgp_defaults_and_field_names() {
    let peer: BGPPeerSpec = serde_json::from_value(json!({
        "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1", "routerID": "192.0.2.2"
    }))
    .unwrap();
    assert_eq!(peer.peer_port, 179);
    assert_eq!(peer.router_id.as_deref(), Some("192.0.2.2"));
    let v = serde_json::to_value(&peer).unwrap();
    assert_eq!(v["myASN"], 64512);
    assert_eq!(v["peerASN"], 64513);
    assert_eq!(v["routerID"], "192.0.2.2");

    let adv: BGPAdvertisementSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(
        (adv.aggregation_length, adv.aggregation_length_v6),
        (32, 128)
    );
    assert_eq!(adv, BGPAdvertisementSpec::default());
    assert_eq!(
        serde_json::to_value(&adv).unwrap(),
        json!({ "aggregationLength": 32, "aggregationLengthV6": 128 })
    );
}

#[test]
fn announcement_round_trips() {
    let v = json!({
        "serviceName": "web", "node": "node-1", "protocol": "layer2", "interface": "eth0",
        "ips": ["192.0.2.10", "2001:db8::10"], "lastGratuitousTime": "2025-01-01T00:00:00Z"
    });
    let spec: ServiceAnnouncementSpec = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(spec.protocol, AnnouncementProtocol::Layer2);
    assert_eq!(serde_json::to_value(&spec).unwrap(), v);
    let bgp: AnnouncementProtocol = serde_json::from_value(json!("bgp")).unwrap();
    assert_eq!(bgp, AnnouncementProtocol::Bgp);
}

#[test]
fn l2_advertisement_empty_spec_is_empty_object() {
    assert_eq!(
        serde_json::to_value(L2AdvertisementSpec::default()).unwrap(),
        json!({})
    );
}
