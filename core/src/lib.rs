//! FerroLB's pure core: allocation, election, planning and wire codecs, without I/O.
pub mod alloc;
pub mod bgp;
