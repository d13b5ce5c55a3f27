//! BGP mode in the lab, against a real router: BIRD 2 in the lab's router namespace
//! (192.0.2.1, AS 64513) peers with every node's speaker (AS 64512), installs what it learns
//! with ECMP, and the remote client behind it (198.51.100.10) reaches a Service's IP through
//! the nodes. What the tests look at is what an operator sees on the router (`birdc show
//! route all <ip>/32`, `ip route`) and what a client gets (`curl`).
//!
//! Each test has its own namespace, pool (203.0.113.224/28, autoAssign off: IPs pinned by
//! annotation), BGPPeer and BGPAdvertisement, and starts its own BIRD; only one BIRD can listen
//! on the router's port 179, so the tests of this binary run one at a time. FerroLB is the lab's
//! chart release (`ferrolb_tests::ensure_ferrolb_installed`). Convergence is polled for up to
//! 60 s; no timing is asserted.
//!
//! A speaker that stops (its pod deleted, as a rollout does) ends its session with a Cease, so
//! the router drops that node's route at once (not after the 90 s hold time) and keeps the
//! others'.
//!
//! The advertisement's aggregationLength and communities show at the router; the exclude
//! label takes a node's route away but not its session.
//!
//! Bad input tried: a BGPPeer with the wrong `myASN` (the router refuses every OPEN with Bad
//! Peer AS, nothing is learned; fixing the peer brings the routes); a second BGPPeer on the
//! router's address (every speaker names it in a `BGPPeer not usable` warning; the first keeps
//! its sessions and routes).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrolb_tests::{
    FIELD_MANAGER, LAB_RELEASE, ensure_ferrolb_installed, kubectl, kubectl_stdin, unique_name,
    workspace_root,
};
use serde_json::{Value, json};

mod bgp_support;
mod lab_support;
use bgp_support::{BirdRoute, NODE_AS, ROUTER_AS, ROUTER_V4, Router, node_lan4};
use lab_support::{Answer, Env, REMOTE_CLIENT_NS, curl, ready_pods};

/// How long convergence is polled for.
const WAIT: Duration = Duration::from_secs(60);
const EXCLUDE: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

// The tests' Service IPs, this binary's part of the BGP range (203.0.113.224/28): each test's
// pool is its one IP, so no two tests' pools overlap, even while one's is still being deleted.
const IP_CLUSTER: &str = "203.0.113.225";
const IP_LOCAL: &str = "203.0.113.226";
const IP_SELECT: &str = "203.0.113.227";
const IP_BADASN: &str = "203.0.113.228";
const IP_CEASE: &str = "203.0.113.229";
const IP_ATTRS: &str = "203.0.113.230";
const IP_DUP: &str = "203.0.113.231";
const IP_EXCLUDE: &str = "203.0.113.232";

/// One BIRD at a time on the router's port.
static ROUTER: Mutex<()> = Mutex::new(());

/// One test's world: BIRD in the router namespace, and the test's namespace, pool, BGPPeer
/// and BGPAdvertisement. Dropped in that order: the objects are deleted (the speakers close
/// their sessions) before BIRD stops.
struct BgpLab {
    /// The Service's IP, the only one in the test's pool.
    ip: &'static str,
    /// `<ip>/32`: what the router learns.
    prefix: String,
    peer: String,
    adv: String,
    /// The lab's nodes that may announce (no exclude label), sorted.
    nodes: Vec<String>,
    env: Env,
    router: Router,
    _alone: MutexGuard<'static, ()>,
}

impl BgpLab {
    /// Starts BIRD with a session per lab node, then makes the namespace, the pool of `ip`, a
    /// BGPPeer for the router (`peer` merged into its spec) and an advertisement of the pool
    /// from every node.
    fn start(test: &str, ip: &'static str, peer: Value) -> BgpLab {
        ensure_ferrolb_installed();
        let alone = ROUTER.lock().unwrap_or_else(|e| e.into_inner());
        let nodes = lab_nodes();
        assert!(!nodes.is_empty(), "the lab has no usable node");
        let router = Router::start(&nodes);
        let run = unique_name(&format!("bgp-{test}"));
        kubectl(&["create", "namespace", &run]).expect("creating the test's namespace");
        // No L2Advertisement of this name exists: Env's drop only deletes the namespace and
        // the pool for us (and finds no L2Advertisement to delete).
        let env = Env {
            ns: run.clone(),
            pool: run.clone(),
            adv: run.clone(),
        };
        apply(&json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": env.pool},
            "spec": {"addresses": [format!("{ip}/32")], "autoAssign": false}
        }));
        let lab = BgpLab {
            ip,
            prefix: format!("{ip}/32"),
            peer: run.clone(),
            adv: run,
            nodes,
            env,
            router,
            _alone: alone,
        };
        lab.peer_spec(peer);
        lab.advertise_spec(json!({}));
        lab
    }

    /// [`BgpLab::start`], and a one-replica echo behind a Cluster-policy Service, running.
    fn serving(test: &str, ip: &'static str, peer: Value) -> BgpLab {
        let lab = BgpLab::start(test, ip, peer);
        lab.web("Cluster", 1, json!({}));
        lab.wait_echo_pods(1, None);
        lab
    }

    /// The last node, and the others.
    fn last_and_others(&self) -> (String, Vec<&str>) {
        let last = self.nodes[self.nodes.len() - 1].clone();
        let others = self
            .node_refs()
            .into_iter()
            .filter(|n| *n != last)
            .collect();
        (last, others)
    }

    /// Applies the BGPPeer for the lab's router with `extra` merged into its spec.
    fn peer_spec(&self, extra: Value) {
        let mut spec = json!({"myASN": NODE_AS, "peerASN": ROUTER_AS, "peerAddress": ROUTER_V4});
        lab_support::merge(&mut spec, extra);
        apply(&json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
            "metadata": {"name": self.peer},
            "spec": spec
        }));
    }

    /// Applies the BGPAdvertisement of the test's pool with `extra` merged into its spec.
    fn advertise_spec(&self, extra: Value) {
        let mut spec = json!({"ipAddressPools": [self.env.pool]});
        lab_support::merge(&mut spec, extra);
        apply(&json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPAdvertisement",
            "metadata": {"name": self.adv},
            "spec": spec
        }));
    }

    /// `replicas` HTTP echo pods (`app: echo`, `pod` merged into their spec) behind a
    /// LoadBalancer Service `web` at the test's IP with `externalTrafficPolicy: policy`.
    fn web(&self, policy: &str, replicas: u32, pod: Value) {
        self.env.deploy(
            "echo",
            "ferrolb.io/lab/echo",
            replicas,
            json!({"ports": [{"containerPort": 3000}]}),
            pod,
        );
        self.env.lb_service(
            "web",
            &[self.ip],
            json!({
                "externalTrafficPolicy": policy,
                "selector": {"app": "echo"},
                "ports": [{"port": 80, "targetPort": 3000}]
            }),
        );
    }

    /// Waits until the router has learned the test's IP (as a /32) from exactly `want` (node
    /// names; none: it is withdrawn), each route with its node's LAN address as next hop, and
    /// has installed it in its kernel table with those addresses as (equal-cost) gateways.
    fn wait_routes(&self, want: &[&str]) -> BTreeMap<String, BirdRoute> {
        self.wait_prefix(&self.prefix, want)
    }

    /// [`BgpLab::wait_routes`] for any `prefix`; the routes by node.
    fn wait_prefix(&self, prefix: &str, want: &[&str]) -> BTreeMap<String, BirdRoute> {
        let want_nodes: BTreeSet<String> = want.iter().map(|n| n.to_string()).collect();
        let mut want_gateways: Vec<String> = want.iter().map(|n| node_lan4(n)).collect();
        want_gateways.sort();
        let started = Instant::now();
        let deadline = started + WAIT;
        loop {
            let learned = self.router.routes_by_node(prefix);
            let kernel = self.router.kernel_gateways(prefix);
            if let Ok(routes) = &learned {
                let from: BTreeSet<String> = routes.keys().cloned().collect();
                let hops_ok = routes
                    .iter()
                    .all(|(node, r)| r.next_hop.as_deref() == Some(node_lan4(node).as_str()));
                if from == want_nodes && hops_ok && kernel == want_gateways {
                    eprintln!(
                        "router: {prefix} from {want_nodes:?} after {:.1?}",
                        started.elapsed()
                    );
                    return routes.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the router's routes to {prefix} after {WAIT:?}: BIRD {learned:?}, kernel \
                 gateways {kernel:?}; want routes from {want_nodes:?} with their LAN addresses \
                 as next hops and gateways {want_gateways:?}\nsessions: {:?}\n\
                 (speaker logs: target/lab/nodes/node-N/pods/<uid>/speaker.log)",
                self.router.sessions()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The names of the ready echo pods, once there are `n` pods, all ready (on `node` when
    /// given; terminating ones count, so a rollout in progress is waited out).
    fn wait_echo_pods(&self, n: usize, node: Option<&str>) -> BTreeSet<String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ready = ready_pods(&self.env.ns, "echo");
            let all = kubectl(&[
                "-n",
                &self.env.ns,
                "get",
                "pods",
                "-l",
                "app=echo",
                "-o",
                "name",
            ])
            .map(|t| t.lines().count())
            .unwrap_or(0);
            let on_node = ready
                .iter()
                .all(|p| node.is_none_or(|want| p["spec"]["nodeName"] == want));
            if ready.len() == n && all == n && on_node {
                return ready
                    .iter()
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "{n} ready echo pods (on {node:?}) in {}: {} ready of {all}",
                self.env.ns,
                ready.len()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn node_refs(&self) -> Vec<&str> {
        self.nodes.iter().map(String::as_str).collect()
    }
}

impl Drop for BgpLab {
    fn drop(&mut self) {
        // Waited for, so the speakers see them gone before BIRD stops.
        let _ = kubectl(&[
            "delete",
            "bgpadvertisement",
            &self.adv,
            "--ignore-not-found",
        ]);
        let _ = kubectl(&["delete", "bgppeer", &self.peer, "--ignore-not-found"]);
    }
}

/// The lab's nodes without the exclude label, sorted.
fn lab_nodes() -> Vec<String> {
    let text = kubectl(&["get", "nodes", "-o", "json"]).expect("listing the nodes");
    let v: Value = serde_json::from_str(&text).expect("kubectl's JSON");
    let mut nodes: Vec<String> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["metadata"]["labels"][EXCLUDE].is_null())
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    nodes
}

/// Server-side applies `obj` as the tests' field manager: fields left out are removed.
fn apply(obj: &Value) {
    kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            "-",
        ],
        Some(&obj.to_string()),
    )
    .unwrap_or_else(|e| panic!("applying {obj}: {e}"));
}

/// Runs `kubectl <args>` when dropped, also when the test panics: undoes a test's change.
struct Undo(Vec<String>);

impl Drop for Undo {
    fn drop(&mut self) {
        let args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        if let Err(e) = kubectl(&args) {
            eprintln!("undoing the test's change: {e}");
        }
    }
}

/// The nodes whose speakers (any of their pods, target/lab/nodes/<node>/pods/*/speaker.log)
/// logged a line that `wanted`, with such a line each.
fn speaker_logged(wanted: impl Fn(&str) -> bool) -> BTreeMap<String, String> {
    let nodes = workspace_root().join("target/lab/nodes");
    let mut found = BTreeMap::new();
    for node in std::fs::read_dir(&nodes).into_iter().flatten().flatten() {
        let pods = node.path().join("pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(pod.path().join("speaker.log")).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| wanted(l)) {
                found.insert(
                    node.file_name().to_string_lossy().into_owned(),
                    line.to_owned(),
                );
            }
        }
    }
    found
}

/// `curl http://<ip>/` from the client behind the router: the echo's JSON, or what went wrong.
fn remote_get(ip: &str) -> Result<Value, String> {
    match curl(
        REMOTE_CLIENT_NS,
        &format!("http://{ip}/"),
        Duration::from_secs(3),
    ) {
        Answer::Echo(v) => Ok(v),
        failed => Err(format!("{failed:?}")),
    }
}

/// Waits until the remote client gets the echo's answer through `ip`.
fn wait_remote_answer(ip: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        match remote_get(ip) {
            Ok(v) => return v,
            Err(e) => assert!(
                Instant::now() < deadline,
                "http://{ip}/ from {REMOTE_CLIENT_NS} within {WAIT:?}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn cluster_policy_is_routed_from_every_node_and_withdrawn_with_advertisement_and_service() {
    let lab = BgpLab::start("cluster", IP_CLUSTER, json!({}));
    lab.web("Cluster", 2, json!({}));
    let pods = lab.wait_echo_pods(2, None);
    let all = lab.node_refs();
    lab.wait_routes(&all);
    let answer = wait_remote_answer(lab.ip);
    let pod = answer["pod"].as_str().unwrap_or_default();
    assert!(
        pods.contains(pod),
        "answered by {pod:?}, not one of {pods:?}: {answer}"
    );

    // No advertisement, no route: the router drops it and the remote client cannot connect.
    kubectl(&["delete", "bgpadvertisement", &lab.adv]).expect("deleting the advertisement");
    lab.wait_routes(&[]);
    assert!(
        remote_get(lab.ip).is_err(),
        "{} still answers the remote client with its route withdrawn",
        lab.ip
    );
    lab.advertise_spec(json!({}));
    lab.wait_routes(&all);
    wait_remote_answer(lab.ip);

    kubectl(&["-n", &lab.env.ns, "delete", "service", "web"]).expect("deleting the Service");
    lab.wait_routes(&[]);
    assert!(
        remote_get(lab.ip).is_err(),
        "{} still answers with its Service deleted",
        lab.ip
    );
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn local_policy_is_routed_only_from_the_endpoints_node_and_follows_it() {
    let lab = BgpLab::start("local", IP_LOCAL, json!({}));
    assert!(lab.nodes.len() >= 2, "needs two lab nodes: {:?}", lab.nodes);
    let (first, second) = (lab.nodes[0].clone(), lab.nodes[1].clone());
    let pin = |node: &str| json!({"nodeSelector": {"kubernetes.io/hostname": node}});
    lab.web("Local", 1, pin(&first));
    lab.wait_echo_pods(1, Some(&first));
    lab.wait_routes(&[&first]);
    let answer = wait_remote_answer(lab.ip);
    let remote = answer["remoteAddr"].as_str().unwrap_or_default();
    assert!(
        remote.starts_with("198.51.100.10:"),
        "with externalTrafficPolicy: Local the echo sees the remote client, saw {answer}"
    );

    // The only endpoint moves: so does the route.
    lab.env.patch_pod_spec("echo", pin(&second));
    lab.wait_echo_pods(1, Some(&second));
    lab.wait_routes(&[&second]);
    wait_remote_answer(lab.ip);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn node_selectors_of_advertisement_and_peer_pick_the_announcing_nodes() {
    let lab = BgpLab::serving("select", IP_SELECT, json!({}));
    assert!(lab.nodes.len() >= 2, "needs two lab nodes: {:?}", lab.nodes);
    lab.wait_routes(&lab.node_refs());
    let only = |node: &str| {
        let n = node.trim_start_matches("node-");
        json!({"nodeSelectors": [{"matchLabels": {"ferrolb.io/lab-node": n}}]})
    };
    let (first, last) = (lab.nodes[0].clone(), lab.nodes[lab.nodes.len() - 1].clone());

    // The advertisement picks the nodes that announce.
    lab.advertise_spec(only(&last));
    lab.wait_routes(&[&last]);
    wait_remote_answer(lab.ip);

    // So does the peer: back to every node's advertisement, but only the first node peers.
    lab.advertise_spec(json!({"nodeSelectors": []}));
    lab.peer_spec(only(&first));
    lab.wait_routes(&[&first]);
    wait_remote_answer(lab.ip);
    // Peer and advertisement select disjoint nodes: nobody announces.
    lab.advertise_spec(only(&last));
    lab.wait_routes(&[]);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn a_peer_with_the_wrong_asn_is_refused_by_the_router_until_fixed() {
    // The router expects AS 64512 from the nodes.
    let lab = BgpLab::serving("badasn", IP_BADASN, json!({"myASN": 64599}));
    let deadline = Instant::now() + WAIT;
    let mut refused = BTreeSet::new();
    while refused.len() < lab.nodes.len() {
        for (node, s) in lab.router.sessions() {
            assert!(
                !s.info.starts_with("Established"),
                "the router established a session with {node} from the wrong AS: {s:?}"
            );
            if s.info.contains("Bad peer AS") {
                refused.insert(node);
            }
        }
        // (A failed birdc query proves nothing either way.)
        if let Ok(routes) = lab.router.routes(&lab.prefix) {
            assert!(
                routes.is_empty(),
                "routes over refused sessions: {routes:?}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "the router refused (Bad peer AS) only {refused:?} of {:?} within {WAIT:?}: {:?}",
            lab.nodes,
            lab.router.sessions()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    lab.peer_spec(json!({"myASN": NODE_AS}));
    lab.wait_routes(&lab.node_refs());
    wait_remote_answer(lab.ip);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn a_stopping_speaker_ends_its_session_with_a_cease_and_only_its_route_goes() {
    let lab = BgpLab::serving("cease", IP_CEASE, json!({}));
    let all = lab.node_refs();
    lab.wait_routes(&all);
    let (node, others) = lab.last_and_others();
    let pod = LAB_RELEASE
        .pods("speaker")
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node))
        .and_then(|p| p.metadata.name)
        .unwrap_or_else(|| panic!("no speaker pod on {node}"));
    // What a rollout does to a speaker: the kubelet stops it with SIGTERM.
    kubectl(&[
        "-n",
        LAB_RELEASE.namespace,
        "delete",
        "pod",
        &pod,
        "--wait=false",
    ])
    .expect("deleting the speaker pod");
    // Within the bound, well under the 90 s hold time: only a NOTIFICATION explains it.
    lab.wait_routes(&others);
    let log = lab.router.node_log(&node);
    assert!(
        log.iter()
            .any(|l| l.contains("Received: Administrative shutdown")),
        "the router got no Cease (Administrative shutdown) from {node}'s speaker:\n{}",
        log.join("\n")
    );
    wait_remote_answer(lab.ip);
    // The DaemonSet's new speaker on the node announces again.
    lab.wait_routes(&all);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn aggregation_length_and_communities_reach_the_router() {
    let lab = BgpLab::start("attrs", IP_ATTRS, json!({}));
    // Every form the API accepts: A:B, a well-known name, large:A:B:C.
    lab.advertise_spec(json!({
        "aggregationLength": 28,
        "communities": ["64512:100", "no-export", "large:64512:1:2"]
    }));
    lab.web("Cluster", 1, json!({}));
    lab.wait_echo_pods(1, None);
    let covering = "203.0.113.224/28";
    let routes = lab.wait_prefix(covering, &lab.node_refs());
    for (node, route) in &routes {
        assert_eq!(
            route.communities,
            ["64512:100", "65535:65281"],
            "communities of {covering} from {node} (no-export is 65535:65281)"
        );
        assert_eq!(
            route.large_communities,
            ["64512:1:2"],
            "large communities of {covering} from {node}"
        );
    }
    if let Ok(exact) = lab.router.routes(&lab.prefix) {
        assert!(
            exact.is_empty(),
            "{} announced on its own too: {exact:?}",
            lab.prefix
        );
    }
    wait_remote_answer(lab.ip);
    kubectl(&["-n", &lab.env.ns, "delete", "service", "web"]).expect("deleting the Service");
    lab.wait_prefix(covering, &[]);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn a_second_peer_on_the_same_address_is_named_in_a_warning_and_the_first_keeps_its_routes() {
    let lab = BgpLab::serving("dup", IP_DUP, json!({}));
    let all = lab.node_refs();
    lab.wait_routes(&all);
    // Named after the first, so it sorts after it (the first by name wins); with another
    // myASN, which the router would refuse if its session replaced the first's.
    let second = format!("{}-second", lab.peer);
    let _delete = Undo(vec![
        "delete".into(),
        "bgppeer".into(),
        second.clone(),
        "--ignore-not-found".into(),
    ]);
    apply(&json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": "BGPPeer",
        "metadata": {"name": second},
        "spec": {"myASN": 64599, "peerASN": ROUTER_AS, "peerAddress": ROUTER_V4}
    }));
    // The warning names both: the second as the peer, and the first (whose name is also in
    // the second's) as the one that has the address.
    let names_both = |l: &str| {
        l.contains("BGPPeer not usable")
            && l.contains(&format!("\"peer\":\"{second}\""))
            && l.matches(lab.peer.as_str()).count() >= 2
    };
    let deadline = Instant::now() + WAIT;
    let mut warned = speaker_logged(names_both);
    while warned.len() < lab.nodes.len() {
        assert!(
            Instant::now() < deadline,
            "speakers that named {second} in a `BGPPeer not usable` warning within {WAIT:?}: \
             {warned:?}, want every node's"
        );
        std::thread::sleep(Duration::from_millis(500));
        warned = speaker_logged(names_both);
    }
    eprintln!(
        "warning: {}",
        warned.values().next().unwrap_or(&String::new())
    );
    // Nothing else changed: the first peer's sessions and routes.
    for (node, s) in lab.router.sessions() {
        assert!(s.info.starts_with("Established"), "{node}: {s:?}");
    }
    lab.wait_routes(&all);
    wait_remote_answer(lab.ip);
}

#[test]
#[ignore = "needs the lab: run cargo xtask test as root"]
fn the_exclude_label_withdraws_a_nodes_route_and_keeps_its_session() {
    let lab = BgpLab::serving("exclude", IP_EXCLUDE, json!({}));
    let all = lab.node_refs();
    lab.wait_routes(&all);
    let (node, others) = lab.last_and_others();
    let label = Undo(vec![
        "label".into(),
        "node".into(),
        node.clone(),
        format!("{EXCLUDE}-"),
    ]);
    kubectl(&[
        "label",
        "node",
        &node,
        &format!("{EXCLUDE}=true"),
        "--overwrite",
    ])
    .expect("labelling the node");
    lab.wait_routes(&others);
    let session = lab.router.sessions().remove(&node);
    assert!(
        session
            .as_ref()
            .is_some_and(|s| s.info.starts_with("Established")),
        "{node} excluded keeps its session, has {session:?}"
    );
    wait_remote_answer(lab.ip);
    drop(label);
    lab.wait_routes(&all);
}

#[test]
fn birdc_output_is_read_as_routes_sessions_and_gateways() {
    // Captured from BIRD 2.0.12 (birdc show route all / show protocols) and iproute2.
    let routes = "BIRD 2.0.12 ready.\nTable master4:\n\
        203.0.113.225/32     unicast [node_1 06:31:43.273] * (100) [AS64512i]\n\
        \tvia 192.0.2.11 on eth0\n\tType: BGP univ\n\tBGP.origin: IGP\n\tBGP.as_path: 64512\n\
        \tBGP.next_hop: 192.0.2.11\n\tBGP.local_pref: 100\n\
        \x20                    unicast [node_2 06:31:43.273] (100) [AS64512i]\n\
        \tvia 192.0.2.12 on eth0\n\tType: BGP univ\n\tBGP.origin: IGP\n\tBGP.as_path: 64512\n\
        \tBGP.next_hop: 192.0.2.12\n\tBGP.local_pref: 100\n";
    let parsed = bgp_support::parse_routes(routes);
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert_eq!(
        (
            parsed[0].protocol.as_str(),
            parsed[0].best,
            parsed[0].next_hop.as_deref()
        ),
        ("node_1", true, Some("192.0.2.11"))
    );
    assert_eq!(
        (
            parsed[1].protocol.as_str(),
            parsed[1].best,
            parsed[1].via.as_deref()
        ),
        ("node_2", false, Some("192.0.2.12"))
    );
    assert_eq!(parsed[1].as_path.as_deref(), Some("64512"));
    let with_communities = bgp_support::parse_routes(
        "203.0.113.224/28     unicast [node_1 07:01:02.003] * (100) [AS64512i]\n\
         \tvia 192.0.2.11 on eth0\n\tBGP.community: (64512,100) (65535,65281)\n\
         \tBGP.large_community: (64512, 1, 2)\n",
    );
    assert_eq!(with_communities[0].large_communities, ["64512:1:2"]);
    assert_eq!(
        with_communities[0].communities,
        ["64512:100", "65535:65281"]
    );
    assert!(bgp_support::parse_routes("BIRD 2.0.12 ready.\nNetwork not found\n").is_empty());

    let protocols = "BIRD 2.0.12 ready.\n\
        Name       Proto      Table      State  Since         Info\n\
        device1    Device     ---        up     06:31:52.427  \n\
        kernel1    Kernel     master4    up     06:31:52.427  \n\
        node_1     BGP        ---        up     06:31:54.092  Established   \n\
        node_2     BGP        ---        start  06:31:59.094  Idle          BGP Error: Bad peer AS\n";
    let sessions = bgp_support::parse_sessions(protocols);
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_eq!(sessions["node_1"].info, "Established");
    assert_eq!(sessions["node_2"].state, "start");
    assert_eq!(
        sessions["node_2"].info,
        "Idle          BGP Error: Bad peer AS"
    );

    let ecmp = r#"[{"dst":"203.0.113.250","flags":[],"nexthops":[{"gateway":"192.0.2.12","dev":"eth0","weight":1,"flags":[]},{"gateway":"192.0.2.11","dev":"eth0","weight":1,"flags":[]}]}]"#;
    assert_eq!(
        bgp_support::kernel_gateways(ecmp),
        ["192.0.2.11", "192.0.2.12"]
    );
    let single = r#"[{"dst":"203.0.113.251","gateway":"192.0.2.11","dev":"eth0","flags":[]}]"#;
    assert_eq!(bgp_support::kernel_gateways(single), ["192.0.2.11"]);
    assert!(bgp_support::kernel_gateways("[]").is_empty());
}

#[test]
fn the_routers_config_is_valid_bird() {
    let dir = std::env::temp_dir().join(unique_name("ferrolb-bird-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = bgp_support::bird_config(&["node-1".to_owned(), "node-3".to_owned()], &dir);
    assert!(conf.contains("protocol bgp node_3 from lab_node { neighbor 192.0.2.13 as 64512; }"));
    let path = dir.join("bird.conf");
    std::fs::write(&path, &conf).unwrap();
    // bird2 is one of the lab's packages (tests/install-deps.sh); -p only parses.
    let out = Command::new("bird").arg("-p").arg("-c").arg(&path).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("running bird -p (apt-get install bird2)");
    assert!(
        out.status.success(),
        "bird rejects the config: {}\n{conf}",
        String::from_utf8_lossy(&out.stderr)
    );
}
