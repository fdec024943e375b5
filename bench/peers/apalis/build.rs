//! Reads the apalis and apalis-postgres versions resolved in `Cargo.lock`, so the JSON line
//! reports what was actually built.

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("apalis", "KEEL_PEER_APALIS_VERSION"),
        ("apalis-postgres", "KEEL_PEER_APALIS_POSTGRES_VERSION"),
    ] {
        let version = version_in(&lock, krate).unwrap_or_else(|| "unknown".to_owned());
        println!("cargo:rustc-env={var}={version}");
    }
}

/// The `version` of the `[[package]]` named `krate` in a Cargo.lock.
fn version_in(lock: &str, krate: &str) -> Option<String> {
    let wanted = format!("name = \"{krate}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?;
            return next
                .trim()
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}
