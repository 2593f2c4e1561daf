//! Secrets in the configuration: the NIP-42 keys, read from the environment, a file, or
//! the value itself. Errors name where a key came from, never the key.

use super::{AuthSettings, RelaySettings};

/// Environment variable that may hold the NIP-42 secret key (nsec or hex).
pub const AUTH_KEY_ENV: &str = "NOSTR_SYNC_AUTH_KEY";

impl RelaySettings {
    /// `auth_key` as a key: the value itself, or what the file it names holds.
    pub(super) fn keys(&self, i: usize) -> Result<Option<nostr_sdk::Keys>, String> {
        let value = self.auth_key.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if let Ok(keys) = nostr_sdk::Keys::parse(value) {
            return Ok(Some(keys));
        }
        let held = std::fs::read_to_string(value).map_err(|_| {
            format!(
                "`relay[{i}].auth_key` is neither a secret key (nsec or hex) nor a readable file"
            )
        })?;
        nostr_sdk::Keys::parse(held.trim()).map(Some).map_err(|_| {
            format!("`relay[{i}].auth_key` names a file that does not hold a secret key")
        })
    }
}

impl AuthSettings {
    /// The key to authenticate with, if one is configured.
    pub fn keys(&self) -> Result<Option<nostr_sdk::Keys>, String> {
        let (secret, source) = match std::env::var(AUTH_KEY_ENV) {
            Ok(s) if !s.trim().is_empty() => (s, format!("${AUTH_KEY_ENV}")),
            _ if self.secret_key_file.is_empty() => return Ok(None),
            _ => {
                let s = std::fs::read_to_string(&self.secret_key_file).map_err(|e| {
                    format!(
                        "`auth.secret_key_file` {:?} cannot be read: {e}",
                        self.secret_key_file
                    )
                })?;
                (s, "`auth.secret_key_file`".to_owned())
            }
        };
        // The error names the source, never the value.
        nostr_sdk::Keys::parse(secret.trim())
            .map(Some)
            .map_err(|_| format!("{source} does not hold a secret key (nsec or 64 hex digits)"))
    }
}
