//! Log set-up shared by the service and its tools.

/// Logs to stderr, as text or one JSON object per line, filtered by `RUST_LOG`.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // nostr-sdk's own lines repeat what the relay actors log and count (a failed
        // connection, an unreadable frame), some of them once per frame.
        "info,nostr_relay_pool=off,nostr_sdk=off,nostr_relay_builder=off".into()
    });
    // Colour codes only for a person at a terminal, never into a file or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init()
    } else {
        builder.init()
    }
}

/// The configuration file: `--config`, else $NOSTR_SYNC_CONFIG (clap reads it into
/// `--config`), else /etc/nostr-sync/config.toml if it exists.
pub fn config_path(given: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    given.or_else(|| {
        let system = std::path::PathBuf::from("/etc/nostr-sync/config.toml");
        system.exists().then_some(system)
    })
}
