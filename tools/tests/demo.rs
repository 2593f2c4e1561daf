//! The tools binary as a user runs it.

use std::process::Command;

/// `demo` never writes into the configured database: without `--db` it fills a fresh
/// temporary file.
#[test]
fn demo_leaves_the_configured_database_alone() {
    let dir = tempfile::tempdir().unwrap();
    let configured = dir.path().join("production.db");
    let url = format!("sqlite://{}", configured.display());
    let out = Command::new(env!("CARGO_BIN_EXE_nostr-sync-tools"))
        .args(["demo", "--events", "100"])
        .env("NOSTR_SYNC__DATABASE__URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!configured.exists(), "demo created the configured database");
    let used = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo database: sqlite://"))
        .expect("the demo names its database");
    assert!(std::path::Path::new(used).exists());
    let _ = std::fs::remove_file(used);
}
