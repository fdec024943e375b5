//! Operating keel, through the real binary: a webhook receiver breaks, the job dies, an
//! alert arrives signed, `/metrics` shows it, the operator groups and replays the dead
//! letters from the CLI once the receiver is fixed, and `keel trace` tells the whole story —
//! while the logs carry the correlation id and never the owner's email address.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod cli;
mod replay;
mod schedules;
mod story;
