//! Leader election on a `coordination.k8s.io/v1` Lease, with optimistic concurrency.
//!
//! Small on purpose (see docs/decisions/0007-controller.md): one loop that creates, renews or
//! takes over the Lease with `replace` guarded by `resourceVersion`, so two candidates can
//! never both win one round; the API server's 409 decides. The decision itself is the pure
//! [`decide`], tested without a cluster.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tracing::{info, warn};

/// How a candidate takes part in the election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name, else host name and pid).
    pub identity: String,
    /// How long things take.
    pub timing: Timing,
}

impl LeaseConfig {
    /// A candidate for Lease `namespace/name` as `identity`.
    pub fn new(namespace: String, name: String, identity: String, timing: Timing) -> Self {
        Self {
            namespace,
            name,
            identity,
            timing,
        }
    }
}

/// The election's clock. FerroLB's default (the controller's flags) is a 10 s Lease, renewed
/// every 2 s, a 7 s renew deadline and a check every second: a killed leader is replaced
/// within 11 s of its last renewal, inside the 15 s issue 4 allows with room for a slow API
/// server (client-go's defaults, 15/10/2 s, leave none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops acting as leader; shorter than
    /// `lease_duration`, so it has stopped writing before anyone else may start.
    pub renew_deadline: Duration,
    /// How often the leader renews; shorter than `renew_deadline`, so one failed renewal
    /// does not end a leadership.
    pub renew_every: Duration,
    /// How often a follower checks whether the Lease has expired.
    pub retry_every: Duration,
}

impl Timing {
    /// Checks the order the election relies on (renewal < deadline < Lease), in flag names.
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        renew_every: Duration,
        retry_every: Duration,
    ) -> Result<Timing, String> {
        let s = |d: Duration| d.as_secs();
        if renew_deadline >= lease_duration {
            return Err(format!(
                "--lease-renew-deadline ({} s) must be shorter than --lease-duration ({} s): \
                 a leader must stop writing before another may take over",
                s(renew_deadline),
                s(lease_duration)
            ));
        }
        if renew_every >= renew_deadline {
            return Err(format!(
                "--lease-renew-period ({} s) must be shorter than --lease-renew-deadline ({} s): \
                 otherwise one slow renewal ends the leadership",
                s(renew_every),
                s(renew_deadline)
            ));
        }
        Ok(Timing {
            lease_duration,
            renew_deadline,
            renew_every,
            retry_every,
        })
    }
}

/// What to do with the Lease as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: write a new renewTime.
    Renew,
    /// Nobody holds it (released, or expired): take it over.
    Acquire {
        /// Whether the holder changes, which counts a transition.
        transition: bool,
    },
    /// Someone else holds a valid Lease.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides from the Lease's spec, our identity and the time now.
///
/// Expiry is judged on the Lease's `renewTime` against our clock; FerroLB, like node
/// heartbeats, assumes node clocks are kept in sync (NTP). A skew of a few seconds only
/// shifts the takeover by as much; two leaders cannot result, as every write is
/// guarded by `resourceVersion`.
pub fn decide(spec: &LeaseSpec, me: &str, now: Timestamp) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire { transition: true };
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = match &spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(MicroTime(renewed)) => *renewed + duration < now,
        None => true,
    };
    if expired {
        Decision::Acquire { transition: true }
    } else {
        Decision::Follow {
            holder: holder.to_owned(),
        }
    }
}

/// Runs the election until `stop` fires, publishing leadership on the returned channel.
///
/// On stop, a leader releases the Lease (empty holder) so a successor need not wait for it
/// to expire.
pub async fn run(
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    stop: ferrolb_runtime::Shutdown,
) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        let was_leader = *leader.borrow();
        let outcome = round(&api, &cfg).await;
        let now_leader = match outcome {
            Ok(is) => {
                if is {
                    last_renewed = tokio::time::Instant::now();
                }
                is
            }
            Err(err) => {
                warn!(error = %err, lease = %cfg.name, "lease round failed");
                // Keep leading through brief API trouble, but never past the deadline.
                was_leader && last_renewed.elapsed() < cfg.timing.renew_deadline
            }
        };
        if now_leader != was_leader {
            if now_leader {
                info!(identity = %cfg.identity, lease = %cfg.name, "became leader");
            } else {
                warn!(identity = %cfg.identity, lease = %cfg.name, "lost leadership");
            }
            leader.send_replace(now_leader);
        }
        let pause = if now_leader {
            cfg.timing.renew_every
        } else {
            cfg.timing.retry_every
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait() => break,
        }
    }
    if *leader.borrow() {
        leader.send_replace(false);
        match release(&api, &cfg).await {
            Ok(()) => info!(lease = %cfg.name, "released the lease"),
            Err(err) => warn!(error = %err, lease = %cfg.name, "releasing the lease failed"),
        }
    }
}

/// One read-decide-write round; `Ok(true)` when we hold the Lease afterwards.
async fn round(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(fresh_spec(cfg, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(err) if is_conflict(&err) => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let new_spec = match decide(&spec, &cfg.identity, now) {
        Decision::Follow { .. } => return Ok(false),
        Decision::Renew => LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(secs(cfg.timing.lease_duration)),
            ..spec
        },
        Decision::Acquire { transition } => {
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(transition);
            fresh_spec(cfg, now, transitions)
        }
    };
    lease.spec = Some(new_spec);
    // `replace` carries the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(err) if is_conflict(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let mut spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    lease.spec = Some(spec);
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

fn fresh_spec(cfg: &LeaseConfig, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(secs(cfg.timing.lease_duration)),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> (LeaseSpec, Timestamp) {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let renewed = now - SignedDuration::from_secs(renewed_secs_ago);
        (
            LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(renewed)),
                ..Default::default()
            },
            now,
        )
    }

    #[test]
    fn own_lease_is_renewed_even_if_late() {
        let (s, now) = spec(Some("a"), 60, 15);
        assert_eq!(decide(&s, "a", now), Decision::Renew);
    }

    #[test]
    fn valid_foreign_lease_is_followed() {
        let (s, now) = spec(Some("b"), 14, 15);
        assert_eq!(
            decide(&s, "a", now),
            Decision::Follow {
                holder: "b".to_owned()
            }
        );
    }

    #[test]
    fn expired_or_released_lease_is_taken() {
        let (s, now) = spec(Some("b"), 16, 15);
        assert_eq!(decide(&s, "a", now), Decision::Acquire { transition: true });
        let (s, now) = spec(None, 0, 1);
        assert_eq!(decide(&s, "a", now), Decision::Acquire { transition: true });
        let s = LeaseSpec {
            holder_identity: Some("b".to_owned()),
            ..Default::default()
        };
        assert_eq!(
            decide(&s, "a", Timestamp::now()),
            Decision::Acquire { transition: true }
        );
    }

    #[test]
    fn timing_keeps_renewal_under_deadline_under_lease() {
        let secs = Duration::from_secs;
        let t = Timing::new(secs(10), secs(7), secs(2), secs(1)).unwrap();
        // Issue 4: a new leader within 15 s of the old one dying.
        assert!(t.lease_duration + t.retry_every <= secs(11));
        assert!(Timing::new(secs(10), secs(10), secs(2), secs(1)).is_err());
        assert!(Timing::new(secs(10), secs(7), secs(7), secs(1)).is_err());
    }
}
