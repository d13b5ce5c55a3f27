//! Shared daemon plumbing: kube config and client, logging, the health and metrics
//! server, readiness, reflector-backed watches and shutdown.
//!
//! Both `ferrolb-controller` and `ferrolb-speaker` are thin: they parse their own flags,
//! call [`Daemon::start`], register the watches they need with [`Daemon::reflect`] and
//! hand over to [`Daemon::run`].

mod args;
mod config;
mod daemon;
mod error;
mod logging;
mod metrics;
mod readiness;
mod server;
mod shutdown;
mod watch;

pub use args::CommonArgs;
pub use config::{ConfigSource, LoadedConfig, choose_source, load_config};
pub use daemon::Daemon;
pub use error::Error;
pub use logging::{LogFormat, filter_directives, init_logging, parse_filter};
pub use metrics::Metrics;
pub use readiness::{Gate, Readiness};
pub use server::{router, serve};
pub use shutdown::{Shutdown, Signals};
pub use watch::{Wake, reflect, reflect_notify, reflect_stripped};

/// This crate's version, which is the workspace version every daemon reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
