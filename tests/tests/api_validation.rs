//! The real kube-apiserver refuses bad FerroLB objects, naming the field, and accepts good ones.

use ferrolb_api::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement, ServiceAnnouncement};
use ferrolb_tests::{apply_crds, client, unique_name};
use kube::Resource;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};

/// One object to create and what the API server must answer.
struct Case {
    /// What the case is about, for failure messages.
    what: &'static str,
    kind: &'static str,
    spec: Value,
    /// `None`: must be accepted. `Some(path)`: must be refused with a 422 naming `path`.
    refused_at: Option<&'static str>,
}

fn ok(what: &'static str, kind: &'static str, spec: Value) -> Case {
    Case {
        what,
        kind,
        spec,
        refused_at: None,
    }
}

fn bad(what: &'static str, kind: &'static str, field: &'static str, spec: Value) -> Case {
    Case {
        what,
        kind,
        spec,
        refused_at: Some(field),
    }
}

fn peer(extra: Value) -> Value {
    let mut spec = json!({ "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1" });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn announcement(extra: Value) -> Value {
    let mut spec = json!({ "serviceName": "web", "node": "node-1", "protocol": "layer2" });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    spec
}

fn cases() -> Vec<Case> {
    let pool = |a: &[&str]| json!({ "addresses": a });
    vec![
        // Good objects: one of each kind, with IPv6 and ranges.
        ok(
            "pool with CIDRs and ranges of both families",
            "IPAddressPool",
            json!({
                "addresses": [
                    "192.0.2.0/24", "203.0.113.10-203.0.113.20", "198.51.100.255-198.51.101.0",
                    "2001:db8::/64", "2001:db8:ff::10-2001:db8:ff::ff", "2001:db8:1::ffff-2001:db8:1::1:0",
                    "2001:db8:2::1-2001:db8:2::1"
                ],
                "autoAssign": false,
                "serviceAllocation": { "priority": 0, "namespaces": ["web"],
                                       "serviceSelectors": [{ "matchLabels": { "app": "web" } }] }
            }),
        ),
        ok(
            "IPv4 peer with timers, router ID and secret",
            "BGPPeer",
            peer(json!({
                "holdTime": "90s", "keepaliveTime": "30s", "routerID": "192.0.2.2",
                "passwordSecret": { "name": "bgp-password" }, "ebgpMultiHop": true,
                "sourceAddress": "192.0.2.3", "peerPort": 1179
            })),
        ),
        ok(
            "IPv6 peer with hold time 0s",
            "BGPPeer",
            peer(json!({
                "peerAddress": "2001:db8::1", "holdTime": "0s", "keepaliveTime": "1m"
            })),
        ),
        ok(
            "advertisement with every community form",
            "BGPAdvertisement",
            json!({
                "communities": ["65535:65282", "no-export", "large:64512:1:4294967295", "local-as"],
                "localPref": 100, "aggregationLength": 24, "aggregationLengthV6": 64,
                "ipAddressPools": ["lan"], "peers": ["router"]
            }),
        ),
        ok(
            "L2 advertisement on a VLAN interface",
            "L2Advertisement",
            json!({
                "interfaces": ["eth0", "br-lan.100"], "ipAddressPools": ["lan"]
            }),
        ),
        ok(
            "announcement of two IPs",
            "ServiceAnnouncement",
            announcement(json!({
                "interface": "eth0", "ips": ["192.0.2.10", "2001:db8::10"],
                "lastGratuitousTime": "2025-01-01T00:00:00Z"
            })),
        ),
        // Bad objects.
        bad(
            "prefix longer than 32",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["192.0.2.0/33"]),
        ),
        bad(
            "CIDR with host bits",
            "IPAddressPool",
            "spec.addresses[1]",
            pool(&["192.0.2.0/24", "192.0.2.1/24"]),
        ),
        bad(
            "not an address",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["lan"]),
        ),
        bad(
            "reversed IPv4 range",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["192.0.2.20-192.0.2.10"]),
        ),
        bad(
            "reversed IPv4 range across octets",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["10.0.1.0-10.0.0.255"]),
        ),
        bad(
            "reversed IPv6 range",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["2001:db8::1:0-2001:db8::ffff"]),
        ),
        bad(
            "range mixing families",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["192.0.2.1-2001:db8::1"]),
        ),
        bad(
            "range with three parts",
            "IPAddressPool",
            "spec.addresses[0]",
            pool(&["192.0.2.1-192.0.2.2-192.0.2.3"]),
        ),
        bad("no addresses", "IPAddressPool", "spec.addresses", pool(&[])),
        bad(
            "negative priority",
            "IPAddressPool",
            "spec.serviceAllocation.priority",
            json!({
                "addresses": ["192.0.2.0/24"], "serviceAllocation": { "priority": -1 }
            }),
        ),
        bad(
            "ASN 0",
            "BGPPeer",
            "spec.myASN",
            peer(json!({ "myASN": 0 })),
        ),
        bad(
            "ASN above 32 bits",
            "BGPPeer",
            "spec.peerASN",
            peer(json!({ "peerASN": 4294967296u64 })),
        ),
        bad(
            "hold time 1s",
            "BGPPeer",
            "spec.holdTime",
            peer(json!({ "holdTime": "1s" })),
        ),
        bad(
            "hold time not a duration",
            "BGPPeer",
            "spec.holdTime",
            peer(json!({ "holdTime": "90" })),
        ),
        bad(
            "keepalive equal to hold time",
            "BGPPeer",
            "spec.keepaliveTime",
            peer(json!({ "holdTime": "90s", "keepaliveTime": "90s" })),
        ),
        bad(
            "password and passwordSecret",
            "BGPPeer",
            "spec.passwordSecret",
            peer(json!({ "password": "x", "passwordSecret": { "name": "s" } })),
        ),
        bad(
            "IPv6 router ID",
            "BGPPeer",
            "spec.routerID",
            peer(json!({ "routerID": "2001:db8::1" })),
        ),
        bad(
            "bad peer address",
            "BGPPeer",
            "spec.peerAddress",
            peer(json!({ "peerAddress": "192.0.2.300" })),
        ),
        bad(
            "port 0",
            "BGPPeer",
            "spec.peerPort",
            peer(json!({ "peerPort": 0 })),
        ),
        bad(
            "eBGP multihop on an iBGP session",
            "BGPPeer",
            "spec.ebgpMultiHop",
            peer(json!({ "peerASN": 64512, "ebgpMultiHop": true })),
        ),
        bad(
            "community above 16 bits",
            "BGPAdvertisement",
            "spec.communities[1]",
            json!({ "communities": ["no-export", "65536:1"] }),
        ),
        bad(
            "unknown community name",
            "BGPAdvertisement",
            "spec.communities[0]",
            json!({ "communities": ["no-exports"] }),
        ),
        bad(
            "large community above 32 bits",
            "BGPAdvertisement",
            "spec.communities[0]",
            json!({ "communities": ["large:1:2:4294967296"] }),
        ),
        bad(
            "aggregation longer than 32",
            "BGPAdvertisement",
            "spec.aggregationLength",
            json!({ "aggregationLength": 33 }),
        ),
        bad(
            "interface name with a slash",
            "L2Advertisement",
            "spec.interfaces[0]",
            json!({ "interfaces": ["eth/0"] }),
        ),
        bad(
            "interface name of 16 characters",
            "L2Advertisement",
            "spec.interfaces[0]",
            json!({ "interfaces": ["abcdefghijklmnop"] }),
        ),
        bad(
            "pool name with upper case",
            "L2Advertisement",
            "spec.ipAddressPools[0]",
            json!({ "ipAddressPools": ["Lan"] }),
        ),
        bad(
            "unknown protocol",
            "ServiceAnnouncement",
            "spec.protocol",
            announcement(json!({ "protocol": "ospf" })),
        ),
        bad(
            "announced IP not an IP",
            "ServiceAnnouncement",
            "spec.ips[0]",
            announcement(json!({ "ips": ["192.0.2.999"] })),
        ),
    ]
}

/// The dynamic API for one of our kinds (namespaced ones in `default`).
fn api_for(client: &kube::Client, kind: &str) -> (Api<DynamicObject>, ApiResource) {
    let ar = match kind {
        "IPAddressPool" => ApiResource::erase::<IPAddressPool>(&()),
        "L2Advertisement" => ApiResource::erase::<L2Advertisement>(&()),
        "BGPPeer" => ApiResource::erase::<BGPPeer>(&()),
        "BGPAdvertisement" => ApiResource::erase::<BGPAdvertisement>(&()),
        "ServiceAnnouncement" => ApiResource::erase::<ServiceAnnouncement>(&()),
        other => panic!("unknown kind {other}"),
    };
    let api = if kind == "ServiceAnnouncement" {
        Api::namespaced_with(client.clone(), "default", &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    (api, ar)
}

#[tokio::test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
async fn api_server_enforces_the_schema() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    assert_eq!(IPAddressPool::group(&()), "ferrolb.io");

    let mut failures = Vec::new();
    let mut created = Vec::new();
    for case in cases() {
        let (api, ar) = api_for(&client, case.kind);
        let name = unique_name("validation");
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": ar.api_version, "kind": ar.kind,
            "metadata": { "name": name }, "spec": case.spec,
        }))?;
        let result = api.create(&PostParams::default(), &obj).await;
        match (case.refused_at, result) {
            (None, Ok(_)) => created.push((api, name)),
            (None, Err(e)) => {
                failures.push(format!("{}: good {} refused: {e}", case.what, case.kind))
            }
            (Some(field), Ok(_)) => {
                failures.push(format!(
                    "{}: bad {} accepted (expected refusal at {field})",
                    case.what, case.kind
                ));
                created.push((api, name));
            }
            (Some(field), Err(kube::Error::Api(status))) => {
                if status.code != 422 {
                    failures.push(format!(
                        "{}: HTTP {} not 422: {}",
                        case.what, status.code, status.message
                    ));
                } else if !status.message.contains(&format!("{field}:")) {
                    failures.push(format!(
                        "{}: message does not name {field}: {}",
                        case.what, status.message
                    ));
                } else {
                    println!("refused as expected ({}): {}", case.what, status.message);
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{}: unexpected error {e}", case.what)),
        }
    }
    for (api, name) in created {
        api.delete(&name, &DeleteParams::default()).await?;
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs the lab control plane: run cargo xtask test"]
async fn api_server_applies_defaults() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let (api, ar) = api_for(&client, "IPAddressPool");
    let name = unique_name("defaults");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": ar.kind,
        "metadata": { "name": name }, "spec": { "addresses": ["203.0.113.0/28"] },
    }))?;
    let created = api.create(&PostParams::default(), &obj).await?;
    api.delete(&name, &DeleteParams::default()).await?;
    let pool: IPAddressPool = serde_json::from_value(serde_json::to_value(&created)?)?;
    assert!(pool.spec.auto_assign);
    assert!(!pool.spec.avoid_buggy_ips);

    let (api, ar) = api_for(&client, "BGPAdvertisement");
    let name = unique_name("defaults");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": ar.kind, "metadata": { "name": name }, "spec": {},
    }))?;
    let created = api.create(&PostParams::default(), &obj).await?;
    api.delete(&name, &DeleteParams::default()).await?;
    assert_eq!(created.data["spec"]["aggregationLength"], 32);
    assert_eq!(created.data["spec"]["aggregationLengthV6"], 128);
    Ok(())
}
