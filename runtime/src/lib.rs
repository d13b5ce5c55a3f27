//! Shared daemon plumbing.
