//! Probe specs from the container spec and the probe schedule/threshold state machine.
//! Pure: time is passed in; running a probe is the caller's job.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// An HTTP GET; success is a status in 200..400.
    Http {
        /// TCP port.
        port: u16,
        /// Request path.
        path: String,
        /// `Host` header; the pod IP when `None`.
        host: Option<String>,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// `HTTPS` probes only check that the port accepts a connection (no TLS client here).
        https: bool,
    },
    /// A TCP connect to each port succeeds.
    Tcp {
        /// The ports, all of which must accept.
        ports: Vec<u16>,
    },
    /// Always succeeds (a container without probe and without TCP ports).
    Always,
    /// The spec cannot be probed (named port not found, exec probe): always fails, with why.
    Invalid(String),
}

/// A probe with its timing, in the API's units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// What to check.
    pub check: Check,
    /// `initialDelaySeconds`
    pub initial_delay: Duration,
    /// `periodSeconds`
    pub period: Duration,
    /// `timeoutSeconds`
    pub timeout: Duration,
    /// `successThreshold`
    pub success_threshold: u32,
    /// `failureThreshold`
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

fn threshold(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn resolve_port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no containerPort named {name:?}")),
    }
}

fn from_probe(container: &Container, probe: &Probe) -> Spec {
    let check = if let Some(h) = &probe.http_get {
        match resolve_port(container, &h.port) {
            Ok(port) => Check::Http {
                port,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
                host: h.host.clone().filter(|h| !h.is_empty()),
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
                https: h.scheme.as_deref() == Some("HTTPS"),
            },
            Err(e) => Check::Invalid(e),
        }
    } else if let Some(t) = &probe.tcp_socket {
        match resolve_port(container, &t.port) {
            Ok(port) => Check::Tcp { ports: vec![port] },
            Err(e) => Check::Invalid(e),
        }
    } else if probe.exec.is_some() {
        Check::Invalid("exec probes are not supported in the lab".into())
    } else if probe.grpc.is_some() {
        Check::Invalid("gRPC probes are not supported in the lab".into())
    } else {
        Check::Invalid("probe without a handler".into())
    };
    Spec {
        check,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10),
        timeout: secs(probe.timeout_seconds, 1),
        success_threshold: threshold(probe.success_threshold, 1),
        failure_threshold: threshold(probe.failure_threshold, 3),
    }
}

/// The container's readiness probe; without one, "ready once every declared TCP port
/// accepts connections" (immediately when it declares none).
pub fn readiness(container: &Container) -> Spec {
    if let Some(p) = &container.readiness_probe {
        return from_probe(container, p);
    }
    let ports: Vec<u16> = container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    Spec {
        check: if ports.is_empty() {
            Check::Always
        } else {
            Check::Tcp { ports }
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 3,
    }
}

/// The container's liveness probe, if it declares one.
pub fn liveness(container: &Container) -> Option<Spec> {
    container
        .liveness_probe
        .as_ref()
        .map(|p| from_probe(container, p))
}

/// One probe's schedule and result for one run of a container.
#[derive(Debug, Clone)]
pub struct Prober {
    spec: Spec,
    next: Instant,
    successes: u32,
    failures: u32,
    healthy: bool,
    in_flight: bool,
}

impl Prober {
    /// A prober for a container started at `started`. `initial` is the result before the
    /// thresholds are met: `false` for readiness, `true` for liveness.
    pub fn new(spec: Spec, started: Instant, initial: bool) -> Self {
        let next = started + spec.initial_delay;
        Self {
            spec,
            next,
            successes: 0,
            failures: 0,
            healthy: initial,
            in_flight: false,
        }
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The current result.
    #[cfg(test)]
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// When the next probe is due (`None` while one is running).
    pub fn next_due(&self) -> Option<Instant> {
        (!self.in_flight).then_some(self.next)
    }

    /// Whether a probe should start now; if so it is marked running.
    pub fn start_if_due(&mut self, now: Instant) -> bool {
        if self.in_flight || now < self.next {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// Records a finished probe; returns the new result if it changed.
    pub fn record(&mut self, ok: bool, now: Instant) -> Option<bool> {
        self.in_flight = false;
        self.next = now + self.spec.period;
        let before = self.healthy;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.spec.success_threshold {
                self.healthy = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.spec.failure_threshold {
                self.healthy = false;
            }
        }
        (self.healthy != before).then_some(self.healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn implicit_readiness_waits_for_declared_tcp_ports() {
        let c = container(json!({"name": "c", "ports": [
            {"containerPort": 3000}, {"containerPort": 53, "protocol": "UDP"}, {"containerPort": 9000}
        ]}));
        assert_eq!(
            readiness(&c).check,
            Check::Tcp {
                ports: vec![3000, 9000]
            }
        );
        let c = container(json!({"name": "c"}));
        assert_eq!(readiness(&c).check, Check::Always);
    }

    #[test]
    fn explicit_probes_with_named_ports_and_defaults() {
        let c = container(json!({"name": "c",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 3},
            "livenessProbe": {"tcpSocket": {"port": "nope"}}
        }));
        let r = readiness(&c);
        assert_eq!(r.period, Duration::from_secs(3));
        assert_eq!((r.success_threshold, r.failure_threshold), (1, 3));
        assert!(
            matches!(r.check, Check::Http { port: 8080, ref path, https: false, .. } if path == "/readyz")
        );
        let l = liveness(&c).unwrap();
        assert!(matches!(l.check, Check::Invalid(ref m) if m.contains("nope")));
    }

    fn spec(delay: u64, period: u64, success: u32, failure: u32) -> Spec {
        Spec {
            check: Check::Always,
            initial_delay: Duration::from_secs(delay),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn schedule_honours_initial_delay_and_period() {
        let t0 = Instant::now();
        let mut p = Prober::new(spec(5, 10, 1, 3), t0, false);
        assert!(!p.start_if_due(t0 + Duration::from_secs(4)));
        assert!(p.start_if_due(t0 + Duration::from_secs(5)));
        assert!(
            !p.start_if_due(t0 + Duration::from_secs(6)),
            "one probe at a time"
        );
        assert_eq!(p.next_due(), None);
        assert_eq!(p.record(true, t0 + Duration::from_secs(6)), Some(true));
        assert_eq!(p.next_due(), Some(t0 + Duration::from_secs(16)));
    }

    #[test]
    fn thresholds() {
        let t = Instant::now();
        let mut p = Prober::new(spec(0, 1, 2, 3), t, false);
        assert_eq!(p.record(true, t), None, "one success of two");
        assert_eq!(p.record(false, t), None, "resets the success count");
        assert_eq!(p.record(true, t), None);
        assert_eq!(p.record(true, t), Some(true));
        assert_eq!(p.record(false, t), None);
        assert_eq!(p.record(false, t), None);
        assert_eq!(p.record(false, t), Some(false), "third failure in a row");
        let mut live = Prober::new(spec(0, 1, 1, 1), t, true);
        assert!(live.healthy());
        assert_eq!(live.record(false, t), Some(false));
    }
}
