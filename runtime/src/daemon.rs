use std::{fmt::Debug, hash::Hash, net::SocketAddr, time::Duration};

use kube::{Api, Resource, runtime::reflector::Store};
use serde::de::DeserializeOwned;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{info, warn};

use crate::{CommonArgs, Error, Metrics, Readiness, Shutdown, Signals, load_config, router, serve};

// Kubernetes waits 30 s before SIGKILL; we aim to be gone long before, so a rolling
// update is not slowed by a stuck keep-alive connection.
const SERVER_GRACE: Duration = Duration::from_secs(2);

/// A running daemon: kube client, health and metrics server, watches and shutdown.
pub struct Daemon {
    client: kube::Client,
    readiness: Readiness,
    metrics: Metrics,
    shutdown: Shutdown,
    signals: Signals,
    watches: JoinSet<()>,
    server: JoinHandle<std::io::Result<()>>,
    metrics_addr: SocketAddr,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kube::Client has no Debug; its default namespace is the useful part.
        f.debug_struct("Daemon")
            .field("namespace", &self.client.default_namespace())
            .field("readiness", &self.readiness)
            .field("metrics_addr", &self.metrics_addr)
            .field("watches", &self.watches.len())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Loads the kube config, builds the client and starts serving health and metrics.
    ///
    /// Does not contact the API server: an unreachable one shows in `/readyz`, not as
    /// a failed start, so the pod stays up and says why it is not ready.
    pub async fn start(
        component: &'static str,
        common: &CommonArgs,
        metrics_addr: SocketAddr,
    ) -> Result<Self, Error> {
        Self::start_with_metrics(component, common, metrics_addr, Metrics::new(component)).await
    }

    /// Like [`Daemon::start`], serving `metrics`, which the daemon built with its own
    /// metrics through [`Metrics::new_with`].
    pub async fn start_with_metrics(
        component: &'static str,
        common: &CommonArgs,
        metrics_addr: SocketAddr,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        let signals = Signals::install()?;
        let loaded = load_config(common.kubeconfig.as_deref()).await?;
        let api_server = loaded.config.cluster_url.to_string();
        let client = kube::Client::try_from(loaded.config).map_err(Error::Client)?;

        let readiness = Readiness::new();
        let shutdown = Shutdown::new();
        let (bound, server) = serve(
            metrics_addr,
            router(readiness.clone(), metrics.clone()),
            shutdown.clone(),
        )
        .await?;
        info!(
            component,
            version = crate::VERSION,
            config_source = %loaded.source,
            api_server,
            metrics_addr = %bound,
            "starting"
        );
        Ok(Self {
            client,
            readiness,
            metrics,
            shutdown,
            signals,
            watches: JoinSet::new(),
            server,
            metrics_addr: bound,
        })
    }

    /// The kube client built from the loaded config.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The readiness handle behind `/readyz`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The metrics behind `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address the health and metrics server listens on.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Watches `api` into a store that stays filled until shutdown; `/readyz` waits for it.
    pub fn reflect<K>(&mut self, api: Api<K>, resource: &'static str) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let gate = self.readiness.gate(resource, "waiting for initial list");
        let (store, driver) = crate::reflect(api, resource, gate, self.metrics.clone());
        self.watches.spawn(driver);
        store
    }

    /// Like [`Daemon::reflect`], waking `changed` after each event reaches the store.
    pub fn reflect_notify<K>(
        &mut self,
        api: Api<K>,
        resource: &'static str,
        changed: std::sync::Arc<tokio::sync::Notify>,
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let gate = self.readiness.gate(resource, "waiting for initial list");
        let (store, driver) =
            crate::reflect_notify(api, resource, gate, self.metrics.clone(), Some(changed));
        self.watches.spawn(driver);
        store
    }

    /// Like [`Daemon::reflect_notify`], waking `changed` only after the initial list and the
    /// object events `when(object, deleted)` calls relevant (see [`crate::Wake::when`]).
    pub fn reflect_notify_when<K>(
        &mut self,
        api: Api<K>,
        resource: &'static str,
        changed: std::sync::Arc<tokio::sync::Notify>,
        when: impl FnMut(&K, bool) -> bool + Send + 'static,
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let gate = self.readiness.gate(resource, "waiting for initial list");
        let (store, driver) = crate::reflect_stripped(
            api,
            resource,
            gate,
            self.metrics.clone(),
            Some(crate::Wake::when(changed, when)),
            |_| {},
        );
        self.watches.spawn(driver);
        store
    }

    /// Runs until SIGTERM or SIGINT, then stops the watches and the server.
    pub async fn run(mut self) -> Result<(), Error> {
        let cause = tokio::select! {
            signal = self.signals.recv() => signal,
            _ = self.shutdown.wait() => "shutdown requested",
        };
        info!(signal = cause, "shutting down");
        self.readiness
            .gate("shutdown", "shutting down")
            .mark_not_ready("shutting down");
        self.shutdown.trigger();
        self.watches.shutdown().await;
        match tokio::time::timeout(SERVER_GRACE, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => warn!(error = %err, "metrics server failed while stopping"),
            Ok(Err(err)) => warn!(error = %err, "metrics server task failed"),
            Err(_) => {
                warn!(grace = ?SERVER_GRACE, "metrics server still had open connections; closing them");
                self.server.abort();
            }
        }
        info!("shutdown complete");
        Ok(())
    }

    /// A handle that ends [`Daemon::run`] as a signal would, for embedding and tests.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }
}
