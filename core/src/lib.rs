//! FerroLB's pure core: allocation, election, planning and wire codecs, without I/O.
pub mod alloc;
pub mod bfd;
pub mod announce;
pub mod bgp;
pub mod l2;
pub mod forward;
