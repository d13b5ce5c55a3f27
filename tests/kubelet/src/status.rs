//! Pod status from what the kubelet knows of its containers, restart decisions and
//! back-off. Pure: times are passed in.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// One container's state as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not running: being created, backing off, or refused.
    Waiting {
        /// `ContainerCreating`, `CrashLoopBackOff`, `ImageNotInLab`, ...
        reason: String,
        /// Details for a human.
        message: Option<String>,
    },
    /// Running since `started`.
    Running {
        /// Start time.
        started: Timestamp,
    },
    /// Exited.
    Terminated {
        /// Exit code (128+signal when killed by a signal).
        exit_code: i32,
        /// The signal that killed it, if any.
        signal: Option<i32>,
        /// Start time.
        started: Timestamp,
        /// Exit time.
        finished: Timestamp,
    },
}

impl State {
    /// The waiting state with `reason`.
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        State::Waiting {
            reason: reason.into(),
            message,
        }
    }

    fn api(&self) -> ContainerState {
        match self {
            State::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { started } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started)),
                }),
                ..Default::default()
            },
            State::Terminated {
                exit_code,
                signal,
                started,
                finished,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(
                        if *exit_code == 0 {
                            "Completed"
                        } else {
                            "Error"
                        }
                        .into(),
                    ),
                    started_at: Some(Time(*started)),
                    finished_at: Some(Time(*finished)),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }
}

/// A container as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// Current state.
    pub state: State,
    /// The previous run's end, once it has restarted.
    pub last: Option<State>,
    /// Restarts so far.
    pub restarts: i32,
    /// Readiness probe result (only meaningful while running).
    pub ready: bool,
}

impl ContainerView {
    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}

/// Everything [`build`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// `spec.restartPolicy`: `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    /// Network namespace and addresses are in place.
    pub sandbox_ready: bool,
    /// Pod IPs (IPv4 first); empty until the sandbox exists.
    pub pod_ips: Vec<String>,
    /// Node IPs.
    pub host_ips: Vec<String>,
    /// When the kubelet accepted the pod.
    pub start_time: Timestamp,
    /// The containers, in spec order.
    pub containers: Vec<ContainerView>,
}

/// The pod phase, with the kubelet's rules.
pub fn phase(view: &PodView) -> &'static str {
    let mut running = 0;
    let mut never_ran = 0;
    let mut restarting = 0;
    let mut failed = 0;
    for c in &view.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Waiting { .. } if c.last.is_none() => never_ran += 1,
            State::Waiting { .. } => restarting += 1,
            State::Terminated { exit_code, .. } if *exit_code != 0 => failed += 1,
            State::Terminated { .. } => {}
        }
    }
    if never_ran > 0 || view.containers.is_empty() {
        "Pending"
    } else if running > 0 || restarting > 0 {
        "Running"
    } else {
        match view.restart_policy.as_str() {
            "Never" if failed > 0 => "Failed",
            "Never" => "Succeeded",
            "OnFailure" if failed > 0 => "Running",
            "OnFailure" => "Succeeded",
            _ => "Running",
        }
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    prev: Option<&PodStatus>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status does not change, as the kubelet does.
    let since = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind && c.status == status))
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: kind.into(),
        status: status.into(),
        reason: if ok { None } else { reason.map(String::from) },
        last_transition_time: Some(since),
        ..Default::default()
    }
}

/// The pod status to write; `prev` is the last written one (for transition times).
pub fn build(view: &PodView, prev: Option<&PodStatus>, now: Timestamp) -> PodStatus {
    let containers_ready =
        !view.containers.is_empty() && view.containers.iter().all(|c| c.running() && c.ready);
    let not_ready = Some("ContainersNotReady");
    let conditions = vec![
        condition(
            "PodReadyToStartContainers",
            view.sandbox_ready,
            None,
            prev,
            now,
        ),
        condition("Initialized", true, None, prev, now),
        condition("ContainersReady", containers_ready, not_ready, prev, now),
        condition("Ready", containers_ready, not_ready, prev, now),
        condition("PodScheduled", true, None, prev, now),
    ];
    let statuses = view
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone(),
            image_id: String::new(),
            container_id: None,
            ready: c.running() && c.ready,
            started: Some(c.running()),
            restart_count: c.restarts,
            state: Some(c.state.api()),
            last_state: c.last.as_ref().map(State::api),
            ..Default::default()
        })
        .collect();
    PodStatus {
        phase: Some(phase(view).into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        pod_ip: view.pod_ips.first().cloned(),
        pod_ips: (!view.pod_ips.is_empty()).then(|| {
            view.pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect()
        }),
        host_ip: view.host_ips.first().cloned(),
        host_ips: Some(
            view.host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        ),
        start_time: Some(Time(view.start_time)),
        // The API server sets the QoS class at creation and refuses any change to it.
        qos_class: prev
            .and_then(|p| p.qos_class.clone())
            .or_else(|| Some("BestEffort".into())),
        ..Default::default()
    }
}

/// Whether a container that exited with `exit_code` starts again under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// First restart delay. Shorter than the kubelet's 10 s: the lab's programs start in
/// milliseconds and tests should not wait on crash loops.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay (the kubelet's is 5 min).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(120);

/// The delay before the next start, given the previous delay and how long the last run lasted.
pub fn next_backoff(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        Some(prev) if ran_for < BACKOFF_RESET => (prev * 2).min(BACKOFF_MAX),
        _ => BACKOFF_START,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn c(state: State, last: Option<State>, ready: bool) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "ferrolb.io/lab/echo".into(),
            state,
            last,
            restarts: 0,
            ready,
        }
    }

    fn view(policy: &str, containers: Vec<ContainerView>) -> PodView {
        PodView {
            restart_policy: policy.into(),
            sandbox_ready: true,
            pod_ips: vec!["198.18.1.2".into(), "2001:db8:1:1::2".into()],
            host_ips: vec!["192.0.2.11".into(), "2001:db8:0:1::11".into()],
            start_time: ts(0),
            containers,
        }
    }

    fn term(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            signal: None,
            started: ts(1),
            finished: ts(2),
        }
    }

    #[test]
    fn phases() {
        let run = State::Running { started: ts(1) };
        let creating = State::waiting("ContainerCreating", None);
        let backoff = State::waiting("CrashLoopBackOff", None);
        let cases = [
            ("Always", vec![c(creating.clone(), None, false)], "Pending"),
            (
                "Always",
                vec![c(run.clone(), None, false), c(creating, None, false)],
                "Pending",
            ),
            ("Always", vec![c(run.clone(), None, true)], "Running"),
            ("Always", vec![c(backoff, Some(term(1)), false)], "Running"),
            ("Never", vec![c(term(0), None, false)], "Succeeded"),
            (
                "Never",
                vec![c(term(0), None, false), c(term(2), None, false)],
                "Failed",
            ),
            ("OnFailure", vec![c(term(0), None, false)], "Succeeded"),
            (
                "Never",
                vec![c(run, None, false), c(term(2), None, false)],
                "Running",
            ),
        ];
        for (policy, containers, want) in cases {
            assert_eq!(
                phase(&view(policy, containers.clone())),
                want,
                "{policy} {containers:?}"
            );
        }
    }

    #[test]
    fn ready_pod_status() {
        let v = view(
            "Always",
            vec![c(State::Running { started: ts(1) }, None, true)],
        );
        let s = build(&v, None, ts(5));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("198.18.1.2"));
        assert_eq!(s.pod_ips.as_ref().unwrap().len(), 2);
        assert_eq!(s.host_ip.as_deref(), Some("192.0.2.11"));
        let cond = |t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        for t in [
            "PodScheduled",
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodReadyToStartContainers",
        ] {
            assert_eq!(cond(t), "True", "{t}");
        }
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.started, Some(true));
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    #[test]
    fn transition_times_stay_while_status_is_unchanged() {
        let not_ready = view(
            "Always",
            vec![c(State::Running { started: ts(1) }, None, false)],
        );
        let first = build(&not_ready, None, ts(5));
        let again = build(&not_ready, Some(&first), ts(9));
        assert_eq!(first, again, "nothing changed, nothing to write");
        let ready = view(
            "Always",
            vec![c(State::Running { started: ts(1) }, None, true)],
        );
        let next = build(&ready, Some(&again), ts(10));
        let t = |s: &PodStatus, kind: &str| {
            let c = s
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == kind)
                .unwrap();
            (
                c.status.clone(),
                c.reason.clone(),
                c.last_transition_time.clone().unwrap().0,
            )
        };
        assert_eq!(
            t(&first, "Ready"),
            ("False".into(), Some("ContainersNotReady".into()), ts(5))
        );
        assert_eq!(t(&next, "Ready"), ("True".into(), None, ts(10)));
        assert_eq!(t(&next, "Initialized").2, ts(5));
    }

    #[test]
    fn refused_image_is_waiting_with_reason() {
        let mut v = view(
            "Always",
            vec![c(
                State::waiting("ImageNotInLab", Some("image \"nginx\" ...".into())),
                None,
                false,
            )],
        );
        v.sandbox_ready = false;
        v.pod_ips.clear();
        let s = build(&v, None, ts(0));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.pod_ip, None);
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ImageNotInLab"));
    }

    #[test]
    fn restart_policy_and_backoff() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
        let short = Duration::from_secs(1);
        assert_eq!(next_backoff(None, short), BACKOFF_START);
        assert_eq!(
            next_backoff(Some(Duration::from_secs(4)), short),
            Duration::from_secs(8)
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(50)), short),
            BACKOFF_MAX
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(50)), BACKOFF_RESET),
            BACKOFF_START
        );
    }
}
