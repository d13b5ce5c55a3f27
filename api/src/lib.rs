//! The `ferrolb.io/v1beta1` custom resources.
