//! `cargo xtask bench alloc`: how fast the controller gives N new LoadBalancer Services
//! their IPs, against the ceiling of a plain client writing the same statuses.
//!
//! Per N, two phases against the lab's real API server, each in a fresh namespace:
//! - **controller**: the release-built `ferrolb-controller` runs as a process (no leader
//!   election, a class and pool label unique to the run, so it touches nothing else); N
//!   Services are created 32 at a time and a watch records when each first shows an IP.
//! - **ceiling**: no controller; the same N Services, and an in-process writer that watches
//!   them and applies `status.loadBalancer.ingress` (server-side apply on the status
//!   subresource, 32 at a time): one write per Service, no decisions, the fastest any
//!   controller could be on this machine and API server.
//!
//! Every Service is IPv6 single-stack from a pool holding 2001:db8:ff::/64 (and
//! 203.0.113.0/24, which one /24 could not fill for 1,000 Services): the documentation
//! ranges routed in the lab, one allocation path for every N, and a /64 that never runs out.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use ferrolb_api::IPAddressPool;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use super::{client, ms, percentile, rss, write_json};
use crate::{controlplane, run};

/// Options of `cargo xtask bench alloc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many Services per round (one round per value).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    services: Vec<usize>,
    /// Run the remaining rounds after one fails (Services not all allocated in time, an
    /// API error), and report what was measured; the command still fails at the end.
    #[arg(long)]
    keep_going: bool,
    /// Requests in flight at once, for creating Services and for the ceiling's writes
    /// (the controller's own write concurrency is 32).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up on a phase when not every Service has an IP this many seconds after the
    /// first create.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// Labels the bench's pools, so one delete finds them.
const RUN_LABEL: &str = "bench.ferrolb.io/run";
/// The field manager of the ceiling's status writes.
const CEILING_MANAGER: &str = "ferrolb-bench-ceiling";
/// The pool's addresses: the documentation ranges routed in the lab.
const POOL_ADDRESSES: [&str; 2] = ["203.0.113.0/24", "2001:db8:ff::/64"];
/// Goals from issue 4.
const GOAL_RATIO: f64 = 0.8;
const GOAL_P99_MS_AT_1000: f64 = 200.0;
const GOAL_RSS_MIB_AT_5000: f64 = 40.0;

/// Builds the controller, brings up the control plane if needed, runs every round, prints
/// the table, writes `target/bench/alloc.json`, and cleans up.
pub fn run(root: &Path, args: Args) -> anyhow::Result<()> {
    if args.services.is_empty() || args.services.contains(&0) || args.concurrency == 0 {
        bail!("--services needs positive counts and --concurrency must be positive");
    }
    run::status(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(root)
            .args(["build", "--release", "-p", "ferrolb-controller"]),
    )?;
    let controller = root.join("target/release/ferrolb-controller");
    let cp = controlplane::up(root)?;
    let result = tokio::runtime::Runtime::new()?.block_on(bench(root, &controller, &args));
    if cp == controlplane::Started::Now
        && let Err(e) = controlplane::down(root)
    {
        eprintln!("stopping the control plane: {e:#}");
    }
    result
}

async fn bench(root: &Path, controller: &Path, args: &Args) -> anyhow::Result<()> {
    let client = client(root).await?;
    apply_pool_crd(&client).await?;
    sweep_abandoned(&client).await;
    let started = SystemTime::now();
    let mut rounds = Vec::new();
    let mut failed = Vec::new();
    for &n in &args.services {
        let run_id = format!("bench-alloc-{}-{n}", std::process::id());
        eprintln!("== {n} Services ({run_id}) ==");
        let result = round(&client, controller, args, n, &run_id).await;
        cleanup(&client, &run_id).await;
        match result {
            Ok(r) => {
                eprintln!("{}", Round::table(std::slice::from_ref(&r)));
                rounds.push(r);
            }
            Err(e) => {
                eprintln!("round with {n} Services failed: {e:#}");
                failed.push(format!("{n}: {e:#}"));
                if !args.keep_going {
                    break;
                }
            }
        }
    }
    let report = json!({
        "bench": "alloc",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_unix": started.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "git_commit": git_commit(root),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "concurrency": args.concurrency,
        "services_family": "IPv6 SingleStack",
        "pool": POOL_ADDRESSES,
        "goals": {
            "ratio_min": GOAL_RATIO,
            "p99_ms_max_at_1000": GOAL_P99_MS_AT_1000,
            "peak_rss_mib_max_at_5000": GOAL_RSS_MIB_AT_5000,
        },
        "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
        "failed": failed,
    });
    let path = write_json(root, "alloc", &report)?;
    if !rounds.is_empty() {
        println!("{}", Round::table(&rounds));
    }
    println!("results: {}", path.display());
    if !failed.is_empty() {
        bail!("{} round(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

/// What one phase measured.
#[derive(Debug, Clone)]
struct Phase {
    n: usize,
    /// From the first create request to the last Service seen with an IP.
    total: Duration,
    /// From the first create request to the last create response.
    creates: Duration,
    /// Create response to first IP seen, sorted.
    latencies: Vec<Duration>,
    /// Create retries (API errors).
    retries: usize,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.n as f64 / self.total.as_secs_f64()
    }
    fn p(&self, q: f64) -> Duration {
        percentile(&self.latencies, q).unwrap_or_default()
    }
    fn json(&self) -> Value {
        json!({
            "services_per_s": round2(self.per_second()),
            "total_s": round2(self.total.as_secs_f64()),
            "creates_per_s": round2(self.n as f64 / self.creates.as_secs_f64()),
            "create_to_ip_ms": {
                "p50": round2(ms(self.p(0.5))),
                "p90": round2(ms(self.p(0.9))),
                "p99": round2(ms(self.p(0.99))),
                "max": round2(ms(self.p(1.0))),
            },
            "create_retries": self.retries,
        })
    }
}

/// One N: the controller, its ceiling and the controller's memory.
#[derive(Debug, Clone)]
struct Round {
    n: usize,
    controller: Phase,
    ceiling: Phase,
    peak_rss: u64,
    rss_at_end: u64,
    /// The controller's `ferrolb_service_writes_total` at the end: requests writing a
    /// Service's status, and its annotation (one each per Service when nothing is redone).
    status_writes: u64,
    annotation_writes: u64,
    /// From the last Service showing its IP to its `IPAllocated` Event existing for every
    /// Service (Events queue behind the writes that make IPs visible); `None` if not within
    /// [`EVENTS_TIMEOUT`].
    events_after: Option<Duration>,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.controller.per_second() / self.ceiling.per_second()
    }
    fn peak_rss_mib(&self) -> f64 {
        self.peak_rss as f64 / (1024.0 * 1024.0)
    }
    /// Each goal that applies to this N, and whether it was met.
    fn goals(&self) -> Vec<(&'static str, bool)> {
        let mut goals = vec![
            ("ratio", self.ratio() >= GOAL_RATIO),
            // One allocation, one status write (issue 4: nothing written twice).
            ("writes", self.status_writes == self.n as u64),
        ];
        if self.n == 1000 {
            goals.push(("p99", ms(self.controller.p(0.99)) < GOAL_P99_MS_AT_1000));
        }
        if self.n == 5000 {
            goals.push(("rss", self.peak_rss_mib() < GOAL_RSS_MIB_AT_5000));
        }
        goals
    }
    fn json(&self) -> Value {
        json!({
            "services": self.n,
            "controller": self.controller.json(),
            "ceiling": self.ceiling.json(),
            "ratio": round2(self.ratio()),
            "controller_peak_rss_mib": round2(self.peak_rss_mib()),
            "controller_rss_at_end_mib": round2(self.rss_at_end as f64 / (1024.0 * 1024.0)),
            "controller_status_writes": self.status_writes,
            "controller_annotation_writes": self.annotation_writes,
            "events_all_published_after_last_ip_s": self.events_after.map(|d| round2(d.as_secs_f64())),
            "goals_met": self.goals().into_iter().collect::<HashMap<_, _>>(),
        })
    }
    fn table(rounds: &[Round]) -> String {
        let mut out = format!(
            "{:>6} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} | {:>6} | {:>8} | {:>11} | {:>8} | goals (ratio>={GOAL_RATIO}, p99<{GOAL_P99_MS_AT_1000}ms@1000, rss<{GOAL_RSS_MIB_AT_5000}MiB@5000, one status write per Service)\n",
            "N",
            "ctl svc/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "ceil svc/s",
            "p99 ms",
            "ratio",
            "peak RSS",
            "status/ann",
            "events+s"
        );
        for r in rounds {
            let goals: Vec<String> = r
                .goals()
                .iter()
                .map(|(g, ok)| format!("{g} {}", if *ok { "ok" } else { "MISSED" }))
                .collect();
            out += &format!(
                "{:>6} | {:>10.1} {:>8.1} {:>8.1} {:>8.1} | {:>10.1} {:>8.1} | {:>5.2}x | {:>4.1} MiB | {:>5}/{:<5} | {:>8} | {}\n",
                r.n,
                r.controller.per_second(),
                ms(r.controller.p(0.5)),
                ms(r.controller.p(0.99)),
                ms(r.controller.p(1.0)),
                r.ceiling.per_second(),
                ms(r.ceiling.p(0.99)),
                r.ratio(),
                r.peak_rss_mib(),
                r.status_writes,
                r.annotation_writes,
                r.events_after
                    .map_or("timeout".to_owned(), |d| format!("{:.1}", d.as_secs_f64())),
                goals.join(", ")
            );
        }
        out
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn round(
    client: &kube::Client,
    controller: &Path,
    args: &Args,
    n: usize,
    run_id: &str,
) -> anyhow::Result<Round> {
    let ctl_ns = format!("{run_id}-ctl");
    let ceil_ns = format!("{run_id}-ceil");
    let class = format!("bench.ferrolb.io/{run_id}");
    create_namespace(client, &ctl_ns).await?;
    create_pool(client, run_id, &ctl_ns).await?;

    let mut proc = ControllerProcess::start(controller, &class, run_id)?;
    proc.wait_ready(Duration::from_secs(60)).await?;
    eprintln!("controller phase: creating {n} Services in {ctl_ns}");
    let measured = measure(client, &ctl_ns, &class, n, args, &mut || proc.check_alive()).await;
    let events_after = match &measured {
        Ok(_) => events_published(client, &ctl_ns, n).await,
        Err(_) => None,
    };
    let (peak_rss, rss_at_end) = rss(proc.pid()).unwrap_or_default();
    let metrics = http_get(proc.addr, "/metrics").await.unwrap_or_default();
    proc.stop();
    let controller_phase = measured.with_context(|| {
        format!(
            "controller phase (controller peak RSS so far {:.1} MiB); its log ({}):\n{}",
            peak_rss as f64 / (1024.0 * 1024.0),
            proc.log.display(),
            run::tail(&proc.log, 20)
        )
    })?;

    create_namespace(client, &ceil_ns).await?;
    eprintln!("ceiling phase: creating {n} Services in {ceil_ns}, a plain client writes status");
    let writer = tokio::spawn(ceiling_writer(
        Api::namespaced(client.clone(), &ceil_ns),
        args.concurrency,
    ));
    let ceiling = measure(client, &ceil_ns, &class, n, args, &mut || Ok(())).await;
    writer.abort();
    Ok(Round {
        n,
        controller: controller_phase,
        ceiling: ceiling.context("ceiling phase")?,
        peak_rss,
        rss_at_end,
        status_writes: service_writes(&metrics, "status"),
        annotation_writes: service_writes(&metrics, "annotation"),
        events_after,
    })
}

/// How long the controller may take to publish the Events once every IP is visible.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until `ns` holds an `IPAllocated` Event for each of its `n` Services; returns how
/// long that took, or `None` after [`EVENTS_TIMEOUT`].
async fn events_published(client: &kube::Client, ns: &str, n: usize) -> Option<Duration> {
    use k8s_openapi::api::events::v1::Event;
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    while start.elapsed() < EVENTS_TIMEOUT {
        if let Ok(list) = api.list(&Default::default()).await {
            let about: std::collections::HashSet<_> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("IPAllocated"))
                .filter_map(|e| e.regarding.as_ref()?.name.clone())
                .collect();
            if about.len() >= n {
                return Some(start.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// `ferrolb_service_writes_total{write="<what>"}` from a Prometheus text exposition.
fn service_writes(metrics: &str, what: &str) -> u64 {
    let series = format!("ferrolb_service_writes_total{{write=\"{what}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Creates `n` Services in `ns`, `concurrency` at a time, and waits until every one shows an
/// IP; `check` fails the phase early (a dead controller).
async fn measure(
    client: &kube::Client,
    ns: &str,
    class: &str,
    n: usize,
    args: &Args,
    check: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Phase> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_ips(api.clone(), seen.clone(), synced_tx));
    synced_rx
        .await
        .context("the measuring watch stopped before its first sync")?;

    let start = Instant::now();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let retries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creates = {
        let (api, created, retries) = (api.clone(), created.clone(), retries.clone());
        let class = class.to_owned();
        let concurrency = args.concurrency;
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let (api, created, retries, class) =
                        (api.clone(), created.clone(), retries.clone(), class.clone());
                    async move {
                        let name = format!("svc-{i:05}");
                        create_service(&api, &name, &class, &retries).await?;
                        created.lock().unwrap().insert(name, Instant::now());
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(concurrency)
                .try_collect::<Vec<()>>()
                .await
                .map(|_| Instant::now())
        })
    };

    let deadline = start + Duration::from_secs(args.timeout);
    let mut creates = Some(creates);
    let mut creates_done = None;
    loop {
        if let Some(handle) = creates.as_mut()
            && handle.is_finished()
        {
            creates_done = Some(creates.take().unwrap().await??);
        }
        let have = seen.lock().unwrap().len();
        if have >= n && creates_done.is_some() {
            break;
        }
        if let Err(e) = check() {
            watch.abort();
            return Err(e);
        }
        if Instant::now() > deadline {
            watch.abort();
            if let Some(h) = creates {
                h.abort();
            }
            bail!(
                "after {}s only {have} of {n} Services have an IP ({} created)",
                args.timeout,
                created.lock().unwrap().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();

    let seen = seen.lock().unwrap();
    let created = created.lock().unwrap();
    let last_ip = seen.values().max().copied().unwrap_or(start);
    let mut latencies: Vec<Duration> = created
        .iter()
        .map(|(name, at)| {
            // A watch event may overtake the create response; count that as zero.
            seen.get(name)
                .map(|ip| ip.saturating_duration_since(*at))
                .unwrap_or_default()
        })
        .collect();
    latencies.sort();
    Ok(Phase {
        n,
        total: last_ip - start,
        creates: creates_done.unwrap_or(last_ip) - start,
        latencies,
        retries: retries.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Records when each Service in the watch first shows an ingress IP.
async fn watch_ips(
    api: Api<Service>,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    synced: tokio::sync::oneshot::Sender<()>,
) {
    let mut synced = Some(synced);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                if let Some(tx) = synced.take() {
                    let _ = tx.send(());
                }
            }
            Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) => {
                if has_ip(&svc) {
                    let now = Instant::now();
                    seen.lock().unwrap().entry(svc.name_any()).or_insert(now);
                }
            }
            Ok(_) => {}
            // The watcher retries by itself; an error only delays what it sees.
            Err(e) => eprintln!("watch: {e}"),
        }
    }
}

/// The ceiling: on each Service without an IP, one server-side apply of its status.
async fn ceiling_writer(api: Api<Service>, concurrency: usize) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watch = {
        let api = api.clone();
        async move {
            let mut queued = std::collections::HashSet::new();
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) = event
                    && !has_ip(&svc)
                    && queued.insert(svc.name_any())
                    && tx.send(svc.name_any()).is_err()
                {
                    return;
                }
            }
        }
    };
    let next_ip = std::sync::atomic::AtomicU64::new(1);
    let write = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|name| (name, rx))
    })
    .for_each_concurrent(concurrency, |name| {
        let ip = Ipv6Addr::from(
            u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0))
                + u128::from(next_ip.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        );
        let api = api.clone();
        async move {
            let status = json!({
                "apiVersion": "v1",
                "kind": "Service",
                "status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "Proxy"}]}},
            });
            let params = PatchParams::apply(CEILING_MANAGER).force();
            for attempt in 0..5 {
                match api.patch_status(&name, &params, &Patch::Apply(&status)).await {
                    Ok(_) => return,
                    Err(e) if attempt == 4 => eprintln!("ceiling: writing {name}: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    });
    tokio::join!(watch, write);
}

fn has_ip(svc: &Service) -> bool {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| i.iter().any(|i| i.ip.is_some()))
}

/// An IPv6 single-stack LoadBalancer Service of `class`, without NodePorts and without a
/// selector (so no EndpointSlices add work that is not ours); retried on API errors, counted.
async fn create_service(
    api: &Api<Service>,
    name: &str,
    class: &str,
    retries: &std::sync::atomic::AtomicUsize,
) -> anyhow::Result<()> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": class,
            "ipFamilyPolicy": "SingleStack",
            "ipFamilies": ["IPv6"],
            // The NodePort range holds 2,768 ports; 5,000 Services would exhaust it.
            "allocateLoadBalancerNodePorts": false,
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
        },
    }))?;
    for attempt in 0.. {
        match api.create(&PostParams::default(), &svc).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt >= 5 => return Err(e).with_context(|| format!("creating {name}")),
            Err(_) => {
                retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    unreachable!()
}

/// Applies the IPAddressPool CRD (the others are not needed) and waits until it is served.
async fn apply_pool_crd(client: &kube::Client) -> anyhow::Result<()> {
    use kube::CustomResourceExt;
    let crd = IPAddressPool::crd();
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("ferrolb-bench").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("applying the IPAddressPool CRD")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let established = api.get(&name).await?.status.is_some_and(|s| {
            s.conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRD {name} not established after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// The run's pool, serving only `ns`.
async fn create_pool(client: &kube::Client, run_id: &str, ns: &str) -> anyhow::Result<()> {
    let pool: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": run_id, "labels": {RUN_LABEL: run_id}},
        "spec": {"addresses": POOL_ADDRESSES, "serviceAllocation": {"namespaces": [ns]}},
    }))?;
    Api::<IPAddressPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .context("creating the bench pool")?;
    Ok(())
}

/// Deletes the round's pool and namespaces and waits (up to 3 min) until the namespaces are
/// gone, so the next round's controller does not hold them in its caches.
/// Cleans up after earlier runs that were killed before their own cleanup (their process is
/// gone): their Services would load every controller and speaker watching Services and skew
/// this run.
async fn sweep_abandoned(client: &kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Ok(list) = namespaces.list(&ListParams::default()).await else {
        return;
    };
    let mut runs = std::collections::BTreeSet::new();
    for ns in list.items {
        let name = ns.name_any();
        let Some(run_id) = name
            .strip_suffix("-ctl")
            .or_else(|| name.strip_suffix("-ceil"))
            .filter(|r| r.starts_with("bench-alloc-"))
        else {
            continue;
        };
        let pid = run_id.split('-').nth(2).unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            runs.insert(run_id.to_owned());
        }
    }
    for run_id in runs {
        eprintln!("removing what the abandoned run {run_id} left");
        cleanup(client, &run_id).await;
    }
}

async fn cleanup(client: &kube::Client, run_id: &str) {
    let pools: Api<IPAddressPool> = Api::all(client.clone());
    let _ = pools
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{RUN_LABEL}={run_id}")),
        )
        .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names = [format!("{run_id}-ctl"), format!("{run_id}-ceil")];
    for ns in &names {
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let _ = services
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let _ = namespaces.delete(ns, &DeleteParams::default()).await;
    }
    let started = Instant::now();
    for ns in &names {
        while matches!(namespaces.get_opt(ns).await, Ok(Some(_))) {
            if started.elapsed() > Duration::from_secs(180) {
                eprintln!("namespace {ns} still terminating after 3 min; going on");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!("cleaned up {run_id} in {:.1?}", started.elapsed());
}

/// The release-built controller as a child process, its log in `target/bench/`.
struct ControllerProcess {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl ControllerProcess {
    fn start(bin: &Path, class: &str, run_id: &str) -> anyhow::Result<Self> {
        let root = crate::repo_root();
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let dir = root.join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{run_id}-controller.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("--kubeconfig")
            .arg(controlplane::kubeconfig(&root))
            .args(["--metrics-addr", &addr.to_string()])
            .args(["--load-balancer-class", class, "--ignore-classless"])
            .args(["--pool-selector", &format!("{RUN_LABEL}={run_id}")])
            .arg("--leader-elect=false")
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            // FERROLB_BENCH_LOG overrides the controller's log filter (e.g. to see passes).
            .env(
                "RUST_LOG",
                std::env::var("FERROLB_BENCH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { child, addr, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("the controller exited: {status}"),
            None => Ok(()),
        }
    }

    /// Until `/readyz` answers 200 (its caches have synced).
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()
                .with_context(|| run::tail(&self.log, 20))?;
            if http_status(self.addr, "/readyz").await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller was not ready after {timeout:?}:\n{}",
                    run::tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            run::signal(self.child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The HTTP status of `GET path`, or `None` if nothing answers.
async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let text = http_response(addr, path).await?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The body of `GET path` if it answered 200.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let text = http_response(addr, path).await?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_owned())
}

/// The raw response to `GET path` (HTTP/1.1, connection closed after it).
async fn http_response(addr: SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

fn git_commit(root: &Path) -> Option<String> {
    run::output(
        Command::new("git")
            .current_dir(root)
            .args(["rev-parse", "HEAD"]),
    )
    .ok()
    .map(|s| s.trim().to_owned())
}
