//! Events (`events.k8s.io/v1`) without kube's `Recorder` cache.
//!
//! `Recorder` keeps every Event it published for six minutes (to turn repeats into a series)
//! and sweeps that whole cache under a write lock on every publish: at 5,000 allocations it
//! holds 5,000 Event objects and each publish costs O(cache) behind one lock. The controller
//! publishes an Event only when a Service's outcome changes, so repeats are rare and the
//! series is not worth the memory: each Event is created once and forgotten.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};

/// Publishes Events as `controller`/`instance`.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher reporting as `controller` (the component) and `instance` (the replica).
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
        }
    }

    /// Creates `ev` about `regarding`, in its namespace.
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let event = self.build(ev, regarding, Timestamp::now());
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }

    fn build(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // As client-go and kube name them: unique per object and nanosecond.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            related: ev.secondary.clone(),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_a_complete_event() {
        // A client is needed to construct the publisher; it is never called.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let publisher = Publisher::new(client, "ferrolb-controller".into(), "pod-a".into());
        let regarding = ObjectReference {
            kind: Some("Service".into()),
            namespace: Some("ns".into()),
            name: Some("web".into()),
            ..ObjectReference::default()
        };
        let ev = Event {
            type_: EventType::Warning,
            reason: "AllocationFailed".into(),
            note: Some("pool exhausted".into()),
            action: "Allocate".into(),
            secondary: None,
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let got = publisher.build(&ev, &regarding, now);
        assert_eq!(got.metadata.namespace.as_deref(), Some("ns"));
        assert!(got.metadata.name.as_deref().unwrap().starts_with("web."));
        assert_eq!(got.type_.as_deref(), Some("Warning"));
        assert_eq!(got.reason.as_deref(), Some("AllocationFailed"));
        assert_eq!(got.action.as_deref(), Some("Allocate"));
        assert_eq!(got.note.as_deref(), Some("pool exhausted"));
        assert_eq!(
            got.reporting_controller.as_deref(),
            Some("ferrolb-controller")
        );
        assert_eq!(got.reporting_instance.as_deref(), Some("pod-a"));
        assert_eq!(got.event_time, Some(MicroTime(now)));
        assert!(got.series.is_none());
    }
}
