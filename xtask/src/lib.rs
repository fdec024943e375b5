//! Keel's project automation as a library, so its checks are testable on fixture workspaces.
//!
//! `main.rs` only parses arguments and maps outcomes to exit codes; everything else lives
//! here: the boundary lint ([`boundaries`]), the CODEOWNERS generator ([`codeowners`]), the
//! CI pipeline ([`ci`]), the test suite's honest runner ([`suite`], `cargo xtask test`), the
//! tidy check ([`tidy`]), the event-contract checks ([`contracts`]) and the event catalog
//! ([`docs`]).

pub mod boundaries;
pub mod ci;
pub mod codeowners;
pub mod contracts;
pub mod docs;
pub mod lexer;
pub mod suite;
pub mod tidy;
pub mod workspace;
