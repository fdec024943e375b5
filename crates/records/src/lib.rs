//! The records module.
