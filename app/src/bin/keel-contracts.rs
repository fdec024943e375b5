//! `keel-contracts`: prints the event contracts as JSON for `cargo xtask check-contracts` and
//! `cargo xtask docs` (tooling, not shipped to operators; see `app::contracts`).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match app::contracts::dump().await {
        Ok(dump) => match serde_json::to_string_pretty(&dump) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keel-contracts: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("keel-contracts: {e:#}");
            ExitCode::FAILURE
        }
    }
}
