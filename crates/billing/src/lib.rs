//! The billing module.
