//! The controller's one error type.

/// What can go wrong while the controller acts on the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a Service's status (ingress, condition) failed.
    #[error("writing status of Service {key}: {source}")]
    ServiceStatus {
        /// `namespace/name`.
        key: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// Writing a Service's annotation failed.
    #[error("writing annotation of Service {key}: {source}")]
    ServiceAnnotation {
        /// `namespace/name`.
        key: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// Writing a pool's status failed.
    #[error("writing status of IPAddressPool {name}: {source}")]
    PoolStatus {
        /// The pool.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// Publishing an Event failed (the allocation itself stands).
    #[error("publishing event for Service {key}: {source}")]
    Event {
        /// `namespace/name`.
        key: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },

    /// An object could not be serialized for a patch (a bug).
    #[error("serializing a patch: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A short, stable label for the `ferrolb_controller_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ServiceStatus { .. } => "service_status",
            Error::ServiceAnnotation { .. } => "service_annotation",
            Error::PoolStatus { .. } => "pool_status",
            Error::Event { .. } => "event",
            Error::Serialize(_) => "serialize",
        }
    }

    /// Whether the object was gone or changed under us: the next pass sees the new state,
    /// so this is not worth a warning.
    pub fn is_benign(&self) -> bool {
        let source = match self {
            Error::ServiceStatus { source, .. }
            | Error::ServiceAnnotation { source, .. }
            | Error::PoolStatus { source, .. }
            | Error::Event { source, .. } => source,
            Error::Serialize(_) => return false,
        };
        matches!(source, kube::Error::Api(s) if s.code == 404 || s.code == 409)
    }
}
