use std::{fmt::Debug, future::Future, hash::Hash, sync::Arc};

use tokio::sync::Notify;

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::{Gate, Metrics};

// Enough to name the failing call and its cause; `/readyz` is read by people and probes.
const MAX_REASON: usize = 240;

/// Starts a reflector over `api`: returns the store and the future that keeps it filled.
///
/// The future never ends on its own: watch errors are logged, counted and retried with
/// kube's default exponential backoff. `gate` turns ready once the initial list is in the
/// store and stays ready; until then it carries the latest error as its reason. Drop the
/// future to stop.
pub fn reflect<K>(
    api: Api<K>,
    resource: &'static str,
    gate: Gate,
    metrics: Metrics,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    reflect_notify(api, resource, gate, metrics, None)
}

/// When a reflector wakes its daemon: after the initial list, and after each object event
/// that `when(object, deleted)` calls relevant (always, for [`Wake::always`]).
pub struct Wake<K> {
    notify: Arc<Notify>,
    when: Box<Relevant<K>>,
}

/// `(object, deleted) -> relevant`.
type Relevant<K> = dyn FnMut(&K, bool) -> bool + Send;

impl<K> Debug for Wake<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake").finish_non_exhaustive()
    }
}

impl<K> Wake<K> {
    /// Wakes `notify` after every event.
    pub fn always(notify: Arc<Notify>) -> Self {
        Self::when(notify, |_, _| true)
    }

    /// Wakes `notify` after the initial list and after the object events `when` accepts:
    /// a daemon that acts on a few of many objects (its own class of Services, say) is not
    /// woken to recompute by churn of the others.
    pub fn when(notify: Arc<Notify>, when: impl FnMut(&K, bool) -> bool + Send + 'static) -> Self {
        Self {
            notify,
            when: Box::new(when),
        }
    }

    fn event(&mut self, event: &Event<K>) {
        let relevant = match event {
            Event::Apply(obj) => (self.when)(obj, false),
            Event::Delete(obj) => (self.when)(obj, true),
            // Objects of the initial list are judged (so `when` can learn them), but the
            // daemon is woken once, at `InitDone`.
            Event::InitApply(obj) => {
                (self.when)(obj, false);
                false
            }
            Event::Init | Event::InitDone => true,
        };
        if relevant {
            self.notify.notify_one();
        }
    }
}

/// Like [`reflect`], also waking `changed` after every event has reached the store, for
/// daemons that recompute from whole stores rather than per object.
pub fn reflect_notify<K>(
    api: Api<K>,
    resource: &'static str,
    gate: Gate,
    metrics: Metrics,
    changed: Option<Arc<Notify>>,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    reflect_stripped(
        api,
        resource,
        gate,
        metrics,
        changed.map(Wake::always),
        |_| {},
    )
}

/// Like [`reflect_notify`], also passing every object through `strip` before it enters the
/// store, for daemons that cache many objects of which they read a few fields: what `strip`
/// clears costs no memory for as long as the object is cached. (managedFields are always
/// dropped.)
pub fn reflect_stripped<K>(
    api: Api<K>,
    resource: &'static str,
    gate: Gate,
    metrics: Metrics,
    changed: Option<Wake<K>>,
    mut strip: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    // Nobody reads managedFields; dropping them roughly halves the cache's memory. (`None`,
    // not `clear()`: an emptied Vec keeps its allocation.)
    let events = watcher(api).modify(move |obj| {
        obj.meta_mut().managed_fields = None;
        strip(obj);
    });
    let driver = drive(
        reflector::reflector(writer, events),
        store.clone(),
        resource,
        gate,
        metrics,
        changed,
    );
    (store, driver)
}

/// Consumes reflected watch events, keeping `gate` and the metrics up to date.
async fn drive<K, S>(
    events: S,
    store: Store<K>,
    resource: &'static str,
    gate: Gate,
    metrics: Metrics,
    mut changed: Option<Wake<K>>,
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut synced = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                metrics.watch_event(resource, event_kind(&event));
                if let Some(changed) = &mut changed {
                    changed.event(&event);
                }
                match event {
                    Event::InitDone => {
                        info!(resource, objects = store.state().len(), "cache synced");
                        synced = true;
                        gate.mark_ready();
                    }
                    Event::Init => debug!(resource, "listing"),
                    _ => {}
                }
            }
            Err(err) => {
                metrics.watch_error(resource);
                let reason = short(&format!("watch failing: {}", error_chain(&err)));
                warn!(resource, error = %reason, "watch error, retrying with backoff");
                // Once synced, the store keeps serving the last known state, which is what
                // the daemon acts on anyway; and the watcher resumes a broken watch without
                // emitting any event, so there would be no signal to turn ready again.
                if !synced {
                    gate.mark_not_ready(reason);
                }
            }
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

fn event_kind<K>(event: &Event<K>) -> &'static str {
    match event {
        Event::Apply(_) => "apply",
        Event::Delete(_) => "delete",
        Event::Init => "init",
        Event::InitApply(_) => "init_apply",
        Event::InitDone => "init_done",
    }
}

/// The error and its sources, joined the way people read them.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Many wrappers repeat their source's text; say it once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn short(text: &str) -> String {
    if text.len() <= MAX_REASON {
        return text.to_owned();
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner: connection refused")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: inner: connection refused")]
    struct Repeats(#[source] Inner);

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use crate::Readiness;

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn gate_follows_the_first_sync_and_then_stays_ready() {
        let readiness = Readiness::new();
        let gate = readiness.gate("configmaps", "waiting for initial list");
        let metrics = Metrics::new("test");
        let (store, writer) = reflector::store::<ConfigMap>();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let driver = tokio::spawn(drive(
            reflector::reflector(writer, rx),
            store.clone(),
            "configmaps",
            gate,
            metrics.clone(),
            None,
        ));
        let step = |event| {
            tx.unbounded_send(event).unwrap();
            async {
                // The driver runs on this single-threaded test runtime; a few yields let it
                // drain the channel through the reflector.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            }
        };

        step(Err(watcher::Error::NoResourceVersion)).await;
        let reason = readiness.status().unwrap_err();
        assert!(
            reason.starts_with("configmaps: watch failing: "),
            "{reason}"
        );

        step(Ok(Event::Init)).await;
        step(Ok(Event::InitApply(config_map("a")))).await;
        assert!(!readiness.is_ready(), "ready before the list completed");
        step(Ok(Event::InitDone)).await;
        assert!(readiness.is_ready());
        assert_eq!(store.state().len(), 1);

        step(Err(watcher::Error::NoResourceVersion)).await;
        assert!(
            readiness.is_ready(),
            "a later error must not flip readiness"
        );

        let text = metrics.encode().unwrap();
        assert!(
            text.contains("ferrolb_watch_errors_total{resource=\"configmaps\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "ferrolb_watch_events_total{resource=\"configmaps\",event=\"init_done\"} 1"
            ),
            "{text}"
        );
        drop(tx);
        driver.await.unwrap();
    }

    #[test]
    fn chain_joins_sources_once() {
        assert_eq!(
            error_chain(&Outer(Inner)),
            "outer: inner: connection refused"
        );
        assert_eq!(
            error_chain(&Repeats(Inner)),
            "wrapped: inner: connection refused"
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        assert_eq!(short("brief"), "brief");
        let long = "é".repeat(MAX_REASON);
        let cut = short(&long);
        assert!(cut.ends_with('…'));
        assert!(cut.len() <= MAX_REASON + '…'.len_utf8());
    }

    /// The daemon is woken once for the initial list and then only for the events its
    /// filter accepts; the filter still sees every object, the initial ones included.
    #[tokio::test]
    async fn wake_follows_the_filter() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let notify = Arc::new(Notify::new());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut wake = {
            let seen = seen.clone();
            Wake::when(notify.clone(), move |cm: &ConfigMap, deleted| {
                let name = cm.metadata.name.clone().unwrap_or_default();
                seen.lock().unwrap().push((name.clone(), deleted));
                name.starts_with("ours")
            })
        };
        let cm = |name: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let woken = |notify: &Notify| {
            let n = notify.notified();
            let mut n = std::pin::pin!(n);
            n.as_mut().enable()
        };
        wake.event(&Event::Init);
        assert!(woken(&notify));
        wake.event(&Event::InitApply(cm("ours-1")));
        wake.event(&Event::InitApply(cm("theirs-1")));
        assert!(!woken(&notify), "initial objects wake nobody one by one");
        wake.event(&Event::InitDone);
        assert!(woken(&notify));
        wake.event(&Event::Apply(cm("theirs-2")));
        assert!(!woken(&notify));
        wake.event(&Event::Apply(cm("ours-2")));
        assert!(woken(&notify));
        wake.event(&Event::Delete(cm("ours-1")));
        assert!(woken(&notify));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("ours-1".to_owned(), false),
                ("theirs-1".to_owned(), false),
                ("theirs-2".to_owned(), false),
                ("ours-2".to_owned(), false),
                ("ours-1".to_owned(), true),
            ]
        );
    }
}
