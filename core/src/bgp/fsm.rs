//! The RFC 4271 session state machine, sans-IO.
