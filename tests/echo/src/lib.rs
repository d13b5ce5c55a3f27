//! Echo backends for the FerroLB lab.
//!
//! One binary, three modes:
//! - `http`: HTTP/1.1 and h2c (prior knowledge) answering every request with the JSON layout of the
//!   Gateway API conformance `echo-basic` server, plus FerroLB extras (`node`, `podIP`,
//!   `remoteAddr`, `localAddr`);
//! - `tcp`: echoes every byte back;
//! - `udp`: echoes every datagram back to its sender (optionally prefixed with the pod name).
//!
//! Every mode stops accepting on shutdown and lets in-flight work finish for a grace period.

pub mod duration;
pub mod headers;
pub mod http;
pub mod identity;
pub mod net;
pub mod tcp;
pub mod udp;

pub use identity::Identity;
