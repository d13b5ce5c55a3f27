//! BGP mode: sessions with the `BGPPeer`s selected for this node, the prefixes the
//! `BGPAdvertisement`s give each of them, and the Service IPs this node then attracts (the
//! forwarder carries their traffic). The plan is core's (`ferrolb_core::announce::routes`);
//! this module turns objects into its views and the plan into sessions (docs/decisions/0017).
//!
//! Each peer gets its own `ferrolb_bgp::Speaker` (dial only): a speaker announces one route
//! table to all its peers, and advertisements may give peers different prefixes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_api::{BGPAdvertisement, BGPPeer, BGPPeerSpec};
use ferrolb_bgp::{PeerConfig, PeerStatus, RouteAttrs, RouteTable, Speaker, SpeakerConfig};
use ferrolb_core::announce::{BgpAdvView, BgpPeerView, NodeName, NodeView, bgp_plan};
use ferrolb_core::bgp::fsm::{AutoRestart, GracefulRestartConfig};
use ferrolb_core::bgp::{Community, ForwardingState, LargeCommunity, RestartState, State};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::Api;
use kube::runtime::reflector::Store;
use tokio::sync::{Notify, oneshot, watch};
use tracing::{debug, info, warn};

use crate::Announced;
use crate::views::{self, PoolRanges, Selection};

/// Time between dial attempts and before a failed session starts again. RFC 4271's 120 s
/// suits routers; a node that just booted should be announcing within seconds.
const RETRY: Duration = Duration::from_secs(5);
/// How long a peer with graceful restart keeps our routes while we restart.
const RESTART_TIME: u16 = 120;
/// The key of a `passwordSecret` that holds the password (as in `kubernetes.io/basic-auth`).
const PASSWORD_KEY: &str = "password";

/// The watched objects BGP mode reads.
#[derive(Clone)]
pub struct Stores {
    /// Services, EndpointSlices, Nodes and pools (the announcer's too).
    pub cluster: views::Cluster,
    /// BGPPeers.
    pub peers: Store<BGPPeer>,
    /// BGPAdvertisements.
    pub advertisements: Store<BGPAdvertisement>,
    /// Woken after any event reaches any store.
    pub changed: Arc<Notify>,
}

/// Fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node.
    pub node: NodeName,
    /// Which Services are ours.
    pub selection: Selection,
    /// The speaker's namespace: `passwordSecret`s are read from it.
    pub namespace: String,
}

/// A running session with one peer.
struct Session {
    /// The spec it was built from (a changed spec restarts the session).
    spec: BGPPeerSpec,
    /// The node's addresses it was built with (a changed one restarts it too).
    node: NodeAddrs,
    speaker: Speaker,
    address: IpAddr,
    routes: RouteTable,
}

/// Runs BGP mode until `stop`: then every session ends with a Cease (the routers withdraw
/// our routes at once) and nothing is attracted any more.
pub async fn run(
    stores: Stores,
    settings: Settings,
    secrets: Api<Secret>,
    attracted: watch::Sender<Announced>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sessions: BTreeMap<String, Session> = BTreeMap::new();
    // Peers whose configuration was refused, with the reason, so it is logged once per change.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    loop {
        reconcile(
            &stores,
            &settings,
            &secrets,
            &mut sessions,
            &mut refused,
            &attracted,
        )
        .await;
        tokio::select! {
            _ = stores.changed.notified() => {}
            _ = &mut stop => break,
        }
    }
    for (name, s) in std::mem::take(&mut sessions) {
        info!(peer = %name, address = %s.address, "ending BGP session");
        s.speaker.shutdown().await;
    }
    attracted.send_replace(Announced::new());
}

async fn reconcile(
    stores: &Stores,
    settings: &Settings,
    secrets: &Api<Secret>,
    sessions: &mut BTreeMap<String, Session>,
    refused: &mut BTreeMap<String, String>,
    attracted: &watch::Sender<Announced>,
) {
    let node_obj = stores.cluster.node(&settings.node);
    let node = match &node_obj {
        Some(n) => views::node_view(n, Vec::new()),
        // Not in the cache yet (or deleted): no labels, so only unselective objects apply.
        None => NodeView {
            name: settings.node.clone(),
            ..NodeView::default()
        },
    };
    let addrs = NodeAddrs::of(node_obj.as_deref());
    let views::Services {
        pools,
        views: services,
        ..
    } = stores.cluster.services(&settings.selection);
    let peer_objs = stores.peers.state();
    let peer_views: Vec<BgpPeerView> = peer_objs.iter().map(|p| peer_view(p)).collect();
    let adv_views: Vec<BgpAdvView> = stores
        .advertisements
        .state()
        .iter()
        .map(|a| adv_view(a, &pools))
        .collect();
    let plan = bgp_plan(&node, &services, &peer_views, &adv_views);

    // Sessions: end those no longer wanted, (re)start new and changed ones.
    let gone: Vec<String> = sessions
        .keys()
        .filter(|n| !plan.peers.contains(*n))
        .cloned()
        .collect();
    for name in gone {
        if let Some(s) = sessions.remove(&name) {
            info!(peer = %name, address = %s.address, "BGP peer no longer selects this node or was deleted: ending the session");
            s.speaker.shutdown().await;
        }
    }
    refused.retain(|name, _| plan.peers.contains(name));
    let mut addresses: BTreeMap<IpAddr, String> = BTreeMap::new();
    for name in &plan.peers {
        let Some(obj) = peer_objs
            .iter()
            .find(|p| p.metadata.name.as_ref() == Some(name))
        else {
            continue;
        };
        let spec = &obj.spec;
        let current = sessions
            .get(name)
            .is_some_and(|s| &s.spec == spec && s.node == addrs);
        if current {
            let s = &sessions[name];
            addresses.insert(s.address, name.clone());
            continue;
        }
        if let Some(old) = sessions.remove(name) {
            info!(peer = %name, "BGPPeer changed: restarting the session");
            old.speaker.shutdown().await;
        }
        let config =
            peer_config(spec, addrs, settings, secrets)
                .await
                .and_then(|c| match addresses.get(&c.address) {
                    Some(first) => Err(format!(
                        "peerAddress {} is BGPPeer {first}'s too: one session per router address",
                        c.address
                    )),
                    None => Ok(c),
                });
        let config = match config {
            Ok(c) => c,
            Err(why) => {
                if refused.get(name) != Some(&why) {
                    warn!(peer = %name, error = %why, "BGPPeer not usable: no session with it");
                    refused.insert(name.clone(), why);
                }
                continue;
            }
        };
        let speaker = match Speaker::new(SpeakerConfig::default()).await {
            Ok(s) => s,
            Err(e) => {
                warn!(peer = %name, error = %e, "BGP session could not start");
                continue;
            }
        };
        let address = config.address;
        if let Err(e) = speaker.add_peer(config) {
            warn!(peer = %name, error = %e, "BGP session could not start");
            continue;
        }
        refused.remove(name);
        info!(peer = %name, %address, asn = spec.peer_asn, my_asn = spec.my_asn, "BGP session configured");
        if let Some(status) = speaker.watch_peer(address) {
            tokio::spawn(log_session(name.clone(), address, status));
        }
        addresses.insert(address, name.clone());
        sessions.insert(
            name.clone(),
            Session {
                spec: spec.clone(),
                node: addrs,
                speaker,
                address,
                routes: RouteTable::new(),
            },
        );
    }

    // Routes: each session gets exactly its prefixes.
    for (name, session) in sessions.iter_mut() {
        let desired: RouteTable = plan
            .routes
            .get(name)
            .into_iter()
            .flatten()
            .map(|(prefix, a)| {
                (
                    *prefix,
                    RouteAttrs {
                        communities: a.communities.iter().copied().collect(),
                        large_communities: a.large_communities.iter().copied().collect(),
                        local_pref: a.local_pref,
                        ..RouteAttrs::default()
                    },
                )
            })
            .collect();
        let (mut added, mut withdrawn) = (0, 0);
        for prefix in session.routes.keys() {
            if !desired.contains_key(prefix) {
                session.speaker.withdraw(*prefix);
                debug!(peer = %name, %prefix, "withdrawing");
                withdrawn += 1;
            }
        }
        for (prefix, attrs) in &desired {
            if session.routes.get(prefix) != Some(attrs) {
                session.speaker.advertise(*prefix, attrs.clone());
                debug!(peer = %name, %prefix, "announcing");
                added += 1;
            }
        }
        if added + withdrawn > 0 {
            info!(peer = %name, announced = added, withdrawn, total = desired.len(), "BGP routes changed");
        }
        session.routes = desired;
    }

    // What the forwarder carries: IPs announced to a peer we do have a session with.
    let carried: Announced = plan
        .attracted
        .into_iter()
        .filter(|(ip, _)| {
            sessions
                .values()
                .any(|s| s.routes.keys().any(|p| p.contains(ip)))
        })
        .collect();
    attracted.send_if_modified(|now| {
        let changed = *now != carried;
        *now = carried;
        changed
    });
}

/// Logs a session's ups and downs, and each new failure, with the BGPPeer's name (the
/// engine's own lines name only the address). Ends with the session.
async fn log_session(name: String, address: IpAddr, mut status: watch::Receiver<PeerStatus>) {
    let (mut state, mut error) = {
        let s = status.borrow();
        (s.state, s.last_error.clone())
    };
    while status.changed().await.is_ok() {
        let now = status.borrow().clone();
        if now.state == State::Established && state != State::Established {
            info!(peer = %name, %address, "BGP session established");
        } else if state == State::Established && now.state != State::Established {
            warn!(peer = %name, %address, error = now.last_error.as_deref().unwrap_or("-"), "BGP session down");
        } else if now.last_error != error
            && let Some(e) = &now.last_error
        {
            warn!(peer = %name, %address, error = %e, "BGP session failing");
        }
        (state, error) = (now.state, now.last_error);
    }
}

fn peer_view(p: &BGPPeer) -> BgpPeerView {
    BgpPeerView {
        name: p.metadata.name.clone().unwrap_or_default(),
        node_selectors: p.spec.node_selectors.iter().map(views::selector).collect(),
    }
}

/// A BGPAdvertisement as the plan's view, its pools resolved. Communities are spelled as the
/// API accepts them: `A:B`, `large:A:B:C` or a well-known name (`no-export`); one that does
/// not parse (the API server's schema refuses them) is logged and left out.
fn adv_view(a: &BGPAdvertisement, pools: &[PoolRanges]) -> BgpAdvView {
    let spec = &a.spec;
    let name = a.metadata.name.clone().unwrap_or_default();
    let mut communities = BTreeSet::new();
    let mut large_communities = BTreeSet::new();
    for c in &spec.communities {
        let parsed = match c.strip_prefix("large:") {
            Some(l) => LargeCommunity::parse(l).map(|l| large_communities.insert(l)),
            None => Community::parse(c).map(|c| communities.insert(c)),
        };
        if parsed.is_none() {
            warn!(advertisement = %name, community = %c, "not a community (A:B, large:A:B:C or a well-known name): left out");
        }
    }
    BgpAdvView {
        pools: views::advertised_pools(
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            pools,
        ),
        node_selectors: spec.node_selectors.iter().map(views::selector).collect(),
        peers: spec.peers.iter().cloned().collect(),
        aggregation_v4: spec.aggregation_length.clamp(0, 32) as u8,
        aggregation_v6: spec.aggregation_length_v6.clamp(0, 128) as u8,
        local_pref: spec.local_pref,
        communities,
        large_communities,
        name,
    }
}

fn seconds(field: &str, text: &str) -> Result<u16, String> {
    let d = ferrolb_core::duration::parse(text).map_err(|e| format!("{field}: {e}"))?;
    u16::try_from(d.as_secs()).map_err(|_| format!("{field}: {text} is over 65535s"))
}

/// A node's first InternalIP of each family: the default router id, and the next hop of the
/// family the session's own address does not give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct NodeAddrs {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl NodeAddrs {
    fn of(node: Option<&Node>) -> Self {
        let mut out = NodeAddrs::default();
        for ip in node.map(views::internal_ips).unwrap_or_default() {
            match ip {
                IpAddr::V4(a) => out.v4 = out.v4.or(Some(a)),
                IpAddr::V6(a) => out.v6 = out.v6.or(Some(a)),
            }
        }
        out
    }
}

/// The session a BGPPeer asks for, from this node. Errors name the field at fault.
async fn peer_config(
    spec: &BGPPeerSpec,
    node: NodeAddrs,
    settings: &Settings,
    secrets: &Api<Secret>,
) -> Result<PeerConfig, String> {
    let password = match (&spec.password, &spec.password_secret) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(r)) => {
            let ns = r.namespace.as_deref().unwrap_or(&settings.namespace);
            if ns != settings.namespace {
                return Err(format!(
                    "passwordSecret must be in the speaker's namespace {}, not {ns}",
                    settings.namespace
                ));
            }
            let name = r.name.as_deref().unwrap_or_default();
            let secret = secrets
                .get_opt(name)
                .await
                .map_err(|e| format!("passwordSecret {ns}/{name}: {e}"))?
                .ok_or_else(|| format!("passwordSecret {ns}/{name} does not exist"))?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(PASSWORD_KEY))
                .ok_or_else(|| format!("passwordSecret {ns}/{name} has no {PASSWORD_KEY:?} key"))?;
            Some(String::from_utf8(bytes.0.clone()).map_err(|_| {
                format!("passwordSecret {ns}/{name}: the password is not UTF-8 text")
            })?)
        }
        (None, None) => None,
    };
    session_config(spec, node, password)
}

/// The session settings of a BGPPeer, its password resolved. Pure, for tests.
fn session_config(
    spec: &BGPPeerSpec,
    node: NodeAddrs,
    password: Option<String>,
) -> Result<PeerConfig, String> {
    let address: IpAddr = spec
        .peer_address
        .parse()
        .map_err(|_| format!("peerAddress {:?} is not an IP address", spec.peer_address))?;
    let router_id = match &spec.router_id {
        Some(r) => r
            .parse()
            .map_err(|_| format!("routerID {r:?} is not an IPv4 address"))?,
        None => node.v4.ok_or(
            "no routerID set and the node has no IPv4 InternalIP to take it from".to_string(),
        )?,
    };
    let source = spec
        .source_address
        .as_deref()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("sourceAddress {s:?} is not an IP address"))
        })
        .transpose()?;
    let mut session = ferrolb_core::bgp::PeerConfig::new(spec.my_asn, spec.peer_asn, router_id);
    if let Some(h) = &spec.hold_time {
        session.hold_time = seconds("holdTime", h)?;
    }
    if let Some(k) = &spec.keepalive_time {
        session.keepalive = Some(seconds("keepaliveTime", k)?);
    }
    session.connect_retry = RETRY;
    session.auto_restart = AutoRestart::After(RETRY);
    if spec.enable_graceful_restart == Some(true) {
        session.graceful_restart = Some(GracefulRestartConfig {
            restart_time: RESTART_TIME,
            restart_state: RestartState::Normal,
            // The node's forwarder keeps carrying the VIPs while the speaker restarts.
            forwarding: ForwardingState::Preserved,
        });
    }
    let mut config = PeerConfig::new(address, session);
    config.port = spec.peer_port;
    config.source = source;
    config.multihop = (spec.ebgp_multi_hop == Some(true)).then_some(255);
    config.password = password;
    // The session's local address is the next hop of its own family; the other family's
    // prefixes (a dual-stack Service over one session) go via the node's address of that family.
    match address {
        IpAddr::V4(_) => config.next_hop_v6 = node.v6,
        IpAddr::V6(_) => config.next_hop_v4 = node.v4,
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BGPPeerSpec {
        serde_json::from_value(serde_json::json!({
            "myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1"
        }))
        .unwrap()
    }

    fn node() -> NodeAddrs {
        NodeAddrs {
            v4: Some("192.0.2.11".parse().unwrap()),
            v6: Some("2001:db8:0:1::11".parse().unwrap()),
        }
    }

    #[test]
    fn defaults_take_the_nodes_address_as_router_id() {
        let c = session_config(&spec(), node(), None).unwrap();
        assert_eq!(c.address, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.port, 179);
        assert_eq!(
            c.session.local_id,
            "192.0.2.11".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!((c.session.local_as, c.session.peer_as), (64512, 64513));
        assert_eq!(c.session.hold_time, 90);
        assert_eq!(c.session.connect_retry, RETRY);
        assert_eq!(c.ttl(), 1, "eBGP is single-hop unless ebgpMultiHop");
        assert!(c.password.is_none() && c.session.graceful_restart.is_none());
        // IPv6 prefixes over this IPv4 session go via the node's IPv6 address.
        assert_eq!(c.next_hop_v6, node().v6);
        assert_eq!(c.next_hop_v4, None, "the session's own address");
        let mut v6 = spec();
        v6.peer_address = "2001:db8:0:1::1".into();
        let c = session_config(&v6, node(), None).unwrap();
        assert_eq!((c.next_hop_v4, c.next_hop_v6), (node().v4, None));
    }

    #[test]
    fn every_field_reaches_the_session() {
        let mut s = spec();
        s.router_id = Some("10.0.0.1".into());
        s.hold_time = Some("1m".into());
        s.keepalive_time = Some("20s".into());
        s.peer_port = 1179;
        s.source_address = Some("192.0.2.11".into());
        s.ebgp_multi_hop = Some(true);
        s.enable_graceful_restart = Some(true);
        let c = session_config(&s, NodeAddrs::default(), Some("secret".into())).unwrap();
        assert_eq!(c.session.local_id, "10.0.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(c.session.hold_time, 60);
        assert_eq!(c.session.keepalive, Some(20));
        assert_eq!(c.port, 1179);
        assert_eq!(c.source, Some("192.0.2.11".parse().unwrap()));
        assert_eq!(c.ttl(), 255);
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert_eq!(
            c.session.graceful_restart.map(|g| g.restart_time),
            Some(RESTART_TIME)
        );
    }

    #[test]
    fn bad_peers_say_which_field() {
        // Bad inputs tried: an address that is not an IP, no router id anywhere, an IPv6
        // router id, a hold time over 16 bits, a malformed source address.
        let cases: Vec<(BGPPeerSpec, &str)> = vec![
            (
                BGPPeerSpec {
                    peer_address: "router.example".into(),
                    ..spec()
                },
                "peerAddress",
            ),
            (
                BGPPeerSpec {
                    router_id: Some("2001:db8::1".into()),
                    ..spec()
                },
                "routerID",
            ),
            (
                BGPPeerSpec {
                    hold_time: Some("20h".into()),
                    ..spec()
                },
                "holdTime",
            ),
            (
                BGPPeerSpec {
                    source_address: Some("eth0".into()),
                    ..spec()
                },
                "sourceAddress",
            ),
        ];
        for (s, field) in cases {
            let err = session_config(&s, node(), None).unwrap_err();
            assert!(err.contains(field), "{field}: {err}");
        }
        let v6_only = NodeAddrs { v4: None, ..node() };
        let err = session_config(&spec(), v6_only, None).unwrap_err();
        assert!(err.contains("routerID"), "{err}");
    }

    #[test]
    fn advertisement_view_resolves_pools_and_skips_bad_communities() {
        let pools = vec![PoolRanges {
            name: "bgp".into(),
            ranges: Vec::new(),
            labels: BTreeMap::new(),
        }];
        let a: BGPAdvertisement = serde_json::from_value(serde_json::json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": "adv"},
            "spec": {"ipAddressPools": ["bgp"], "communities": ["64512:1", "no-such", "no-export", "local-as",
                                     "large:64512:1:2", "large:1:2"],
                     "aggregationLength": 24, "localPref": 50, "peers": ["tor"]}
        }))
        .unwrap();
        let v = adv_view(&a, &pools);
        assert_eq!(v.pools, BTreeSet::from(["bgp".to_string()]));
        assert_eq!(
            v.communities,
            BTreeSet::from([
                Community::new(64512, 1),
                Community::NO_EXPORT,
                Community::NO_EXPORT_SUBCONFED
            ])
        );
        assert_eq!(
            v.large_communities,
            BTreeSet::from([LargeCommunity {
                global_admin: 64512,
                local1: 1,
                local2: 2
            }])
        );
        assert_eq!((v.aggregation_v4, v.aggregation_v6), (24, 128));
        assert_eq!(v.local_pref, Some(50));
        assert_eq!(v.peers, BTreeSet::from(["tor".to_string()]));
    }
}
