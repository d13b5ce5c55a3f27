//! The lab's process kubelet.
mod env;
mod error;
mod image;
mod ipam;
mod node;
mod probe;
mod status;
fn main() {}
