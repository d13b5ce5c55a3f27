//! One task per Pod: sandbox, token, containers, probes, status, termination.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::env::{self, PodFacts};
use crate::error::Error;
use crate::image::{self, ImageError, Port};
use crate::ipam::{Ipam, PodAddrs};
use crate::net;
use crate::node::Identity;
use crate::probe::{self, Prober};
use crate::runtime::{self, Record, Spawn, TokenFor};
use crate::status::{self, ContainerView, PodView, State};

/// What every pod worker shares.
pub struct Shared {
    /// API client.
    pub client: kube::Client,
    /// This node.
    pub node: Identity,
    /// Where the workspace binaries are.
    pub bin_dir: PathBuf,
    /// `<state dir>/pods`
    pub pods_dir: PathBuf,
    /// `KUBERNETES_SERVICE_HOST`
    pub api_host: String,
    /// `KUBERNETES_SERVICE_PORT`
    pub api_port: u16,
    /// Pod addresses.
    pub ipam: Mutex<Ipam>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node.name)
            .field("bin_dir", &self.bin_dir)
            .finish_non_exhaustive()
    }
}

/// What the kubelet loop tells a worker.
#[derive(Debug)]
pub enum Msg {
    /// The Pod object changed (possibly now with a deletionTimestamp).
    Update(Box<Pod>),
    /// The Pod object is gone from the API: stop and clean up.
    Gone,
    /// The kubelet is stopping: stop and clean up, leave the API object.
    Shutdown,
}

#[derive(Debug)]
enum Event {
    Exited {
        idx: usize,
        generation: u64,
        status: std::process::ExitStatus,
    },
    Probe {
        idx: usize,
        generation: u64,
        liveness: bool,
        ok: bool,
    },
}

/// A retry interval for things that wait on the API (token, ConfigMaps, sandbox).
const RETRY: Duration = Duration::from_secs(2);
/// Longest grace when the kubelet itself stops (`lab down` waits 40 s for all kubelets).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Ctr {
    spec: Container,
    view: ContainerView,
    pgid: Option<u32>,
    generation: u64,
    started: Option<Instant>,
    /// When to (re)start; `None` when it must not start (done, refused, running).
    next_start: Option<Instant>,
    backoff: Option<Duration>,
    readiness: Option<Prober>,
    liveness: Option<Prober>,
    /// SIGKILL at this time (after a liveness failure's SIGTERM).
    kill_at: Option<Instant>,
}

#[derive(Debug)]
struct Worker {
    sh: Arc<Shared>,
    pod: Pod,
    uid: String,
    name: String,
    namespace: String,
    dir: PathBuf,
    host_network: bool,
    netns: Option<String>,
    addrs: Option<PodAddrs>,
    pod_ips: Vec<String>,
    sandbox_ready: bool,
    sandbox_retry: Option<Instant>,
    /// `None` when the pod mounts no token.
    token_refresh: Option<Instant>,
    token_ok: bool,
    restart_policy: String,
    start_time: Timestamp,
    ctrs: Vec<Ctr>,
    last_status: Option<PodStatus>,
    status_retry: Option<Instant>,
    events: mpsc::UnboundedSender<Event>,
}

/// Runs a pod until it is deleted, gone, or the kubelet stops.
pub async fn run(sh: Arc<Shared>, pod: Pod, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let mut w = Worker::new(sh, pod, events);
    let phase = w.pod.status.as_ref().and_then(|s| s.phase.clone());
    // A pod that already finished (before a kubelet restart) is not run again.
    let finished = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
    if !finished && w.pod.metadata.deletion_timestamp.is_none() {
        w.admit();
    } else {
        w.last_status = w.pod.status.clone();
        for c in &mut w.ctrs {
            c.next_start = None;
        }
    }
    loop {
        if w.pod.metadata.deletion_timestamp.is_some() {
            let grace = w.grace(None);
            w.finish(grace, &mut events_rx).await;
            w.delete_object().await;
            return;
        }
        w.tick().await;
        w.publish().await;
        let wake = w
            .next_wake()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Update(pod)) => w.pod = *pod,
                Some(Msg::Gone) | None => {
                    let grace = w.grace(None);
                    w.finish(grace, &mut events_rx).await;
                    return;
                }
                Some(Msg::Shutdown) => {
                    let grace = w.grace(Some(SHUTDOWN_GRACE));
                    w.finish(grace, &mut events_rx).await;
                    return;
                }
            },
            Some(ev) = events_rx.recv() => w.on_event(ev).await,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

impl Worker {
    fn new(sh: Arc<Shared>, pod: Pod, events: mpsc::UnboundedSender<Event>) -> Self {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let ctrs = spec
            .containers
            .iter()
            .map(|c| Ctr {
                spec: c.clone(),
                view: ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    state: State::waiting("ContainerCreating", None),
                    last: None,
                    restarts: 0,
                    ready: false,
                },
                pgid: None,
                generation: 0,
                started: None,
                next_start: Some(Instant::now()),
                backoff: None,
                readiness: None,
                liveness: None,
                kill_at: None,
            })
            .collect();
        let dir = sh.pods_dir.join(&uid);
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            netns: None,
            addrs: None,
            pod_ips: Vec::new(),
            sandbox_ready: false,
            sandbox_retry: None,
            token_refresh: None,
            token_ok: true,
            host_network: spec.host_network == Some(true),
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            start_time: Timestamp::now(),
            ctrs,
            last_status: None,
            status_retry: None,
            dir,
            uid,
            pod,
            sh,
            events,
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Refuses images the lab does not have; otherwise schedules the sandbox and token.
    fn admit(&mut self) {
        let refused: Vec<(usize, ImageError)> = self
            .ctrs
            .iter()
            .enumerate()
            .filter(|(_, c)| image::program(&c.view.image).is_none())
            .map(|(i, c)| {
                (
                    i,
                    ImageError::NotInLab {
                        image: c.view.image.clone(),
                    },
                )
            })
            .collect();
        if !refused.is_empty() {
            warn!(pod = %self.key(), images = ?refused.iter().map(|(_, e)| e.to_string()).collect::<Vec<_>>(), "refusing pod: image not in the lab");
            for c in &mut self.ctrs {
                c.next_start = None;
                c.view.state = State::waiting(
                    "PodNotStarted",
                    Some("another container's image is not available in the lab".into()),
                );
            }
            for (i, e) in refused {
                self.ctrs[i].view.state = State::waiting(e.reason(), Some(e.to_string()));
            }
            return;
        }
        self.sandbox_retry = Some(Instant::now());
        let automount = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.automount_service_account_token)
            != Some(false);
        if automount {
            self.token_ok = false;
            self.token_refresh = Some(Instant::now());
        }
        info!(pod = %self.key(), uid = %self.uid, host_network = self.host_network, "admitted pod");
    }

    /// The termination grace: the deletion's, else the spec's, else 30 s; capped by `cap`.
    fn grace(&self, cap: Option<Duration>) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        let grace = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        cap.map_or(grace, |c| grace.min(c))
    }

    fn record(&self) -> Record {
        Record {
            pod: self.key(),
            netns: self.netns.clone(),
            pgids: self.ctrs.iter().filter_map(|c| c.pgid).collect(),
        }
    }

    fn save_record(&self) {
        if let Err(e) = runtime::save_record(&self.dir, &self.record()) {
            warn!(pod = %self.key(), error = %e, "could not save the pod record");
        }
    }

    /// Everything that is due now.
    async fn tick(&mut self) {
        let now = Instant::now();
        if self.sandbox_retry.is_some_and(|t| t <= now) {
            self.sandbox_retry = None;
            if let Err(e) = self.make_sandbox().await {
                warn!(pod = %self.key(), error = %e, "sandbox failed; retrying");
                for c in &mut self.ctrs {
                    c.view.state =
                        State::waiting("ContainerCreating", Some(format!("sandbox: {e}")));
                }
                self.sandbox_retry = Some(now + RETRY);
            }
        }
        if self.sandbox_ready && self.token_refresh.is_some_and(|t| t <= now) {
            self.refresh_token().await;
        }
        if !self.sandbox_ready || !self.token_ok {
            return;
        }
        for idx in 0..self.ctrs.len() {
            let c = &mut self.ctrs[idx];
            if c.kill_at.is_some_and(|t| t <= now) {
                c.kill_at = None;
                if let Some(pgid) = c.pgid {
                    runtime::signal_group(pgid, "KILL").await;
                }
            }
            if c.pgid.is_none() && c.next_start.is_some_and(|t| t <= now) {
                self.start(idx).await;
            }
            self.start_probes(idx, now);
        }
    }

    async fn make_sandbox(&mut self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        if self.host_network {
            self.pod_ips = self.sh.node.host_ips();
        } else {
            let addrs = match self.addrs {
                Some(a) => a,
                None => {
                    let a = self
                        .sh
                        .ipam
                        .lock()
                        .expect("ipam lock")
                        .allocate()
                        .ok_or(Error::AddressesExhausted)?;
                    self.addrs = Some(a);
                    a
                }
            };
            let ns = net::pod_ns(self.sh.node.plan, &self.uid);
            self.netns = Some(ns.clone());
            self.save_record();
            net::create(self.sh.node.plan, &ns, addrs).await?;
            self.pod_ips = vec![addrs.v4.to_string(), addrs.v6.to_string()];
            let in_use = self.sh.ipam.lock().expect("ipam lock").in_use();
            info!(pod = %self.key(), netns = %ns, ipv4 = %addrs.v4, ipv6 = %addrs.v6, in_use, "sandbox ready");
        }
        self.save_record();
        self.sandbox_ready = true;
        Ok(())
    }

    fn sa_dir(&self) -> PathBuf {
        self.dir.join("serviceaccount")
    }

    async fn refresh_token(&mut self) {
        let sa = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let t = TokenFor {
            namespace: &self.namespace,
            pod: &self.name,
            uid: &self.uid,
            service_account: &sa,
        };
        match runtime::write_token(&self.sh.client, &t, &self.sa_dir()).await {
            Ok(lifetime) => {
                // Renew at 80% of the lifetime, as the kubelet does.
                self.token_refresh = Some(Instant::now() + lifetime.mul_f32(0.8));
                self.token_ok = true;
                debug!(pod = %self.key(), ?lifetime, "service account token written");
            }
            Err(e) => {
                warn!(pod = %self.key(), error = %e, "service account token failed; retrying");
                self.token_refresh = Some(Instant::now() + RETRY);
                if !self.token_ok {
                    for c in &mut self.ctrs {
                        c.view.state = State::waiting("ContainerCreating", Some(e.to_string()));
                    }
                }
            }
        }
    }

    /// Starts container `idx`, or records why it cannot start.
    async fn start(&mut self, idx: usize) {
        let now = Instant::now();
        let facts = PodFacts {
            pod_ips: self.pod_ips.clone(),
            host_ips: self.sh.node.host_ips(),
            api_host: self.sh.api_host.clone(),
            api_port: self.sh.api_port,
        };
        let spec = self.ctrs[idx].spec.clone();
        let refs = env::sources_needed(&spec);
        let resolved = match runtime::fetch_sources(&self.sh.client, &self.namespace, &refs).await {
            Ok(sources) => {
                env::resolve(&self.pod, &spec, &facts, &sources).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let mut env = match resolved {
            Ok(env) => env,
            Err(msg) => {
                let c = &mut self.ctrs[idx];
                c.view.state = State::waiting("CreateContainerConfigError", Some(msg));
                c.next_start = Some(now + RETRY);
                return;
            }
        };
        let command = env::expand_all(spec.command.as_deref().unwrap_or_default(), &env);
        let args = env::expand_all(spec.args.as_deref().unwrap_or_default(), &env);
        let ports: Vec<Port> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                number: p.container_port,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
            .collect();
        let launch = match image::launch(&self.ctrs[idx].view.image, &command, &args, &ports) {
            Ok(l) => l,
            Err(e) => {
                let c = &mut self.ctrs[idx];
                c.view.state = State::waiting(e.reason(), Some(e.to_string()));
                c.next_start = None;
                return;
            }
        };
        env.push(("HOSTNAME".into(), self.name.clone()));
        let sa_dir = self.token_refresh.is_some().then(|| self.sa_dir());
        if sa_dir.is_some()
            && let Err(e) = std::fs::create_dir_all(runtime::SA_MOUNT)
        {
            warn!(error = %e, path = runtime::SA_MOUNT, "cannot create the token mount point");
        }
        let spawn = Spawn {
            netns: self.netns.clone(),
            sa_dir,
            program: self.sh.bin_dir.join(launch.binary),
            args: launch.args,
            env,
            cwd: self.dir.clone(),
            log: self.dir.join(format!("{}.log", spec.name)),
        };
        let key = self.key();
        let c = &mut self.ctrs[idx];
        if !spawn.program.exists() {
            let msg = format!(
                "{} is not built (cargo build -p {})",
                spawn.program.display(),
                launch.binary
            );
            c.view.state = State::waiting("RunContainerError", Some(msg));
            c.next_start = Some(now + RETRY);
            return;
        }
        let mut child = match runtime::spawn(&spawn) {
            Ok(child) => child,
            Err(e) => {
                c.view.state = State::waiting("RunContainerError", Some(e.to_string()));
                c.next_start = Some(now + RETRY);
                return;
            }
        };
        let pgid = child.id().unwrap_or_default();
        if c.started.is_some() {
            c.view.restarts += 1;
        }
        c.generation += 1;
        c.pgid = Some(pgid);
        c.started = Some(now);
        c.next_start = None;
        c.view.state = State::Running {
            started: Timestamp::now(),
        };
        c.view.ready = false;
        c.readiness = Some(Prober::new(probe::readiness(&spec), now.into_std(), false));
        c.liveness = probe::liveness(&spec).map(|s| Prober::new(s, now.into_std(), true));
        info!(pod = %key, container = %spec.name, pid = pgid, program = %spawn.program.display(), args = ?spawn.args, "container started");
        let (events, generation) = (self.events.clone(), c.generation);
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = events.send(Event::Exited {
                    idx,
                    generation,
                    status,
                });
            }
        });
        self.save_record();
    }

    fn probe_ip(&self) -> Option<IpAddr> {
        self.pod_ips.first().and_then(|ip| ip.parse().ok())
    }

    fn start_probes(&mut self, idx: usize, now: Instant) {
        let Some(ip) = self.probe_ip() else { return };
        let c = &mut self.ctrs[idx];
        if c.pgid.is_none() {
            return;
        }
        let generation = c.generation;
        for (liveness, prober) in [(false, c.readiness.as_mut()), (true, c.liveness.as_mut())] {
            let Some(prober) = prober else { continue };
            if !prober.start_if_due(now.into_std()) {
                continue;
            }
            let spec = prober.spec().clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let ok =
                    runtime::check(&spec.check, ip, spec.timeout.max(Duration::from_secs(1))).await;
                let _ = events.send(Event::Probe {
                    idx,
                    generation,
                    liveness,
                    ok,
                });
            });
        }
    }

    async fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Probe {
                idx,
                generation,
                liveness,
                ok,
            } => {
                let key = self.key();
                let c = &mut self.ctrs[idx];
                if c.generation != generation || c.pgid.is_none() {
                    return;
                }
                let prober = if liveness {
                    c.liveness.as_mut()
                } else {
                    c.readiness.as_mut()
                };
                let Some(prober) = prober else { return };
                let changed = prober.record(ok, now.into_std());
                match (liveness, changed) {
                    (false, Some(ready)) => {
                        info!(pod = %key, container = %c.view.name, ready, "readiness changed");
                        c.view.ready = ready;
                    }
                    (true, Some(false)) => {
                        warn!(pod = %key, container = %c.view.name, "liveness probe failed; restarting");
                        if let Some(pgid) = c.pgid {
                            runtime::signal_group(pgid, "TERM").await;
                        }
                        c.kill_at = Some(now + self_grace(&self.pod));
                    }
                    _ => {}
                }
            }
            Event::Exited {
                idx,
                generation,
                status,
            } => self.on_exit(idx, generation, status, now),
        }
    }

    fn on_exit(
        &mut self,
        idx: usize,
        generation: u64,
        status: std::process::ExitStatus,
        now: Instant,
    ) {
        let key = self.key();
        let policy = self.restart_policy.clone();
        let c = &mut self.ctrs[idx];
        if c.generation != generation {
            return;
        }
        let (exit_code, signal) = runtime::exit_of(status);
        let started = match c.view.state {
            State::Running { started } => started,
            _ => Timestamp::now(),
        };
        let ended = State::Terminated {
            exit_code,
            signal,
            started,
            finished: Timestamp::now(),
        };
        c.pgid = None;
        c.kill_at = None;
        c.readiness = None;
        c.liveness = None;
        c.view.ready = false;
        let ran_for = c.started.map_or(Duration::ZERO, |s| now - s);
        info!(pod = %key, container = %c.view.name, exit_code, ?signal, ?ran_for, "container exited");
        if status::should_restart(&policy, exit_code) {
            let delay = status::next_backoff(c.backoff, ran_for);
            c.backoff = Some(delay);
            c.next_start = Some(now + delay);
            c.view.last = Some(ended);
            c.view.state = State::waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {delay:?} restarting failed container {}",
                    c.view.name
                )),
            );
        } else {
            c.next_start = None;
            c.view.state = ended;
        }
        self.save_record();
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut times = vec![self.sandbox_retry, self.status_retry];
        if self.sandbox_ready {
            times.push(self.token_refresh);
        }
        for c in &self.ctrs {
            if c.pgid.is_none() {
                times.push(c.next_start);
            } else {
                times.push(c.kill_at);
                for p in [&c.readiness, &c.liveness].into_iter().flatten() {
                    times.push(p.next_due().map(Instant::from_std));
                }
            }
        }
        times.into_iter().flatten().min()
    }

    fn view(&self) -> PodView {
        PodView {
            restart_policy: self.restart_policy.clone(),
            sandbox_ready: self.sandbox_ready,
            pod_ips: self.pod_ips.clone(),
            host_ips: self.sh.node.host_ips(),
            start_time: self.start_time,
            containers: self.ctrs.iter().map(|c| c.view.clone()).collect(),
        }
    }

    /// Writes the status if it changed since the last successful write.
    async fn publish(&mut self) {
        if self.status_retry.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let status = status::build(&self.view(), self.last_status.as_ref(), Timestamp::now());
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.sh.client.clone(), &self.namespace);
        let body = serde_json::json!({ "status": status });
        match api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                debug!(pod = %self.key(), phase = ?status.phase, "status written");
                self.last_status = Some(status);
                self.status_retry = None;
            }
            Err(e) => {
                let e = Error::kube("writing pod status")(e);
                if e.is_not_found() {
                    self.last_status = Some(status);
                } else {
                    warn!(pod = %self.key(), error = %e, "status write failed; retrying");
                    self.status_retry = Some(Instant::now() + RETRY);
                }
            }
        }
    }

    /// Stops every container (SIGTERM, then SIGKILL after `grace`) and removes the sandbox
    /// and the pod's state.
    async fn finish(&mut self, grace: Duration, events: &mut mpsc::UnboundedReceiver<Event>) {
        info!(pod = %self.key(), ?grace, "stopping pod");
        for c in &mut self.ctrs {
            c.next_start = None;
            if let Some(pgid) = c.pgid {
                runtime::signal_group(pgid, "TERM").await;
            }
        }
        let deadline = Instant::now() + grace;
        self.wait_exits(deadline, events).await;
        for c in &self.ctrs {
            if let Some(pgid) = c.pgid {
                warn!(pod = %self.key(), container = %c.view.name, "grace period over; SIGKILL");
                runtime::signal_group(pgid, "KILL").await;
            }
        }
        self.wait_exits(Instant::now() + Duration::from_secs(5), events)
            .await;
        if let Some(ns) = self.netns.take() {
            net::delete(&ns).await;
        }
        if let Some(addrs) = self.addrs.take() {
            self.sh.ipam.lock().expect("ipam lock").release(addrs.host);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(pod = %self.key(), error = %e, "could not remove the pod's state");
        }
        info!(pod = %self.key(), "pod stopped and cleaned up");
    }

    async fn wait_exits(&mut self, deadline: Instant, events: &mut mpsc::UnboundedReceiver<Event>) {
        while self.ctrs.iter().any(|c| c.pgid.is_some()) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Exited {
                    idx,
                    generation,
                    status,
                })) => self.on_exit(idx, generation, status, Instant::now()),
                Ok(Some(Event::Probe { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for c in &mut self.ctrs {
            c.next_start = None;
        }
    }

    /// Deletes the Pod object now that nothing of it runs (the kubelet's last word).
    async fn delete_object(&self) {
        let api: Api<Pod> = Api::namespaced(self.sh.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name, &params).await {
            Ok(_) => info!(pod = %self.key(), "pod object deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => warn!(pod = %self.key(), error = %e, "deleting the pod object failed"),
        }
    }
}

/// The spec's termination grace (for liveness restarts).
fn self_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}
