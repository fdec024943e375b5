//! The notifications module.
