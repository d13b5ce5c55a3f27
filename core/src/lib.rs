//! FerroLB's pure core: allocation, election, planning and wire codecs, without I/O.
pub mod alloc;
pub mod announce;
pub mod bfd;
pub mod bgp;
pub mod duration;
pub mod forward;
pub mod l2;
pub mod proxy_protocol;
pub mod selector;
pub mod service;

pub use selector::{LabelSelector, Requirement};
pub use service::ServiceKey;
