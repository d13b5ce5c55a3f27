use std::{fmt::Debug, future::Future, hash::Hash};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
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
/// The future never ends on its own: watch errors are logged, counted, turn `gate` not
/// ready and are retried with kube's default exponential backoff. `gate` turns ready once
/// the initial list is in the store and again after each recovery. Drop the future to stop.
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
    let (store, writer) = reflector::store();
    let reader = store.clone();
    let driver = async move {
        let stream = watcher(api)
            // Nobody reads managedFields; dropping them roughly halves the cache's memory.
            .modify(|obj| obj.managed_fields_mut().clear());
        let mut stream = std::pin::pin!(reflector::reflector(writer, stream));
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    metrics.watch_event(resource, event_kind(&event));
                    match event {
                        Event::InitDone => {
                            info!(
                                resource,
                                objects = reader.state().len(),
                                recovered = failing,
                                "cache synced"
                            );
                            failing = false;
                            gate.mark_ready();
                        }
                        Event::Apply(_) | Event::Delete(_) if failing => {
                            info!(resource, "watch recovered");
                            failing = false;
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
                    failing = true;
                    gate.mark_not_ready(reason);
                }
            }
        }
    };
    (store, driver)
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
}
