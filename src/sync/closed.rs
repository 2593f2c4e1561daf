//! What a relay's CLOSED (or a refused REQ's NOTICE) means for a filter, by its
//! machine-readable prefix (NIP-01, NIP-42).

/// What to do about a REQ the relay closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// `auth-required:`: authenticate (NIP-42) and send the REQ again, or, without a
    /// key, give the filter up on this relay.
    AuthRequired,
    /// `rate-limited:`: back off the whole relay.
    RateLimited,
    /// `restricted:` or `blocked:`: the relay will not serve this filter to us.
    Refused,
    /// `invalid:`, `error:`, `unsupported:` or anything else: this filter failed this
    /// time; the next cycle tries again.
    Failed,
}

impl Closed {
    pub fn of(message: &str) -> Closed {
        let prefix = message
            .split_once(':')
            .map(|(p, _)| p.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match prefix.as_str() {
            "auth-required" => Closed::AuthRequired,
            "rate-limited" => Closed::RateLimited,
            "restricted" | "blocked" => Closed::Refused,
            _ => Closed::Failed,
        }
    }

    /// A short label for counters and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Closed::AuthRequired => "auth-required",
            Closed::RateLimited => "rate-limited",
            Closed::Refused => "refused",
            Closed::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let cases = [
            ("auth-required: we only serve members", Closed::AuthRequired),
            ("rate-limited: slow down", Closed::RateLimited),
            ("restricted: not allowed", Closed::Refused),
            ("blocked: you are banned", Closed::Refused),
            ("invalid: too many filters", Closed::Failed),
            ("error: shutting down", Closed::Failed),
            ("no prefix at all", Closed::Failed),
            ("", Closed::Failed),
            (" Auth-Required :x", Closed::AuthRequired),
        ];
        for (message, want) in cases {
            assert_eq!(Closed::of(message), want, "{message}");
        }
    }
}
