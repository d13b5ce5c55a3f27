use std::net::SocketAddr;

/// Everything that can stop a daemon from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No flag, no KUBECONFIG, no in-cluster environment and no `~/.kube/config`.
    #[error(
        "no Kubernetes config found: pass --kubeconfig, set KUBECONFIG, run in a cluster or create ~/.kube/config"
    )]
    NoConfig,

    /// A kubeconfig file could not be read or did not make a usable config.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Where the kubeconfig came from, as shown to the operator.
        path: String,
        /// What kube-rs said about it.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// The in-cluster service account config could not be loaded.
    #[error("in-cluster config: {0}")]
    InCluster(#[source] kube::config::InClusterError),

    /// The kube client could not be built from a loaded config.
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),

    /// The log filter given by `--log-level` or RUST_LOG does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    LogFilter {
        /// The filter text as given.
        filter: String,
        /// Why tracing-subscriber refused it.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },

    /// A global tracing subscriber was already installed.
    #[error("logging was already initialised")]
    LoggingInit,

    /// The health and metrics listener could not be bound.
    #[error("binding the metrics address {addr}: {source}")]
    Bind {
        /// The address from `--metrics-addr`.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// Installing a signal handler failed.
    #[error("installing signal handlers: {0}")]
    Signal(#[source] std::io::Error),
}

impl Error {
    /// A short, stable label for metrics and log fields.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoConfig => "no_config",
            Error::Kubeconfig { .. } => "kubeconfig",
            Error::InCluster(_) => "in_cluster",
            Error::Client(_) => "client",
            Error::LogFilter { .. } => "log_filter",
            Error::LoggingInit => "logging_init",
            Error::Bind { .. } => "bind",
            Error::Signal(_) => "signal",
        }
    }
}
