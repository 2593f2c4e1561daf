//! LNURL-pay as NIP-57 uses it, without I/O: where a recipient's LNURL server answers
//! (from the `lud16` or `lud06` of their kind-0 profile), and which key that server signs
//! zap receipts with (`nostrPubkey` of its pay-request document, when `allowsNostr`).

use bitcoin::bech32;
use nostr_sdk::{Event, Kind, PublicKey};

/// Largest pay-request document read; real ones are well under 2 kB.
pub const MAX_DOCUMENT: usize = 16 * 1024;

/// The URL of the LNURL-pay document of the profile `profile` (a kind 0): LUD-16
/// `name@domain` is `https://domain/.well-known/lnurlp/name` (the default port
/// only); LUD-06 is a bech32 `lnurl1…` string holding the URL. `lud16` wins when both
/// are there. Only HTTPS; plain HTTP only with `allow_private` (a test or a private
/// deployment). Onion services are not reached (no proxy is configured). Where the
/// host may be is the fetch's to check, after name resolution (`fetch::get_public`).
pub fn pay_url(profile: &Event, allow_private: bool) -> Option<String> {
    if profile.kind != Kind::Metadata {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_str(&profile.content).ok()?;
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).map(str::trim);
    if let Some(address) = field("lud16").filter(|a| !a.is_empty()) {
        if let Some(url) = lud16(address) {
            return Some(url);
        }
    }
    field("lud06").and_then(|l| lud06(l, allow_private))
}

fn lud16(address: &str) -> Option<String> {
    let (name, domain) = address.split_once('@')?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    let host = url::Host::parse(domain).ok()?;
    if !name_ok || domain.contains(['/', '?', '#', '@', ':']) {
        return None;
    }
    Some(format!(
        "https://{}/.well-known/lnurlp/{}",
        host,
        name.to_ascii_lowercase()
    ))
}

fn lud06(lnurl: &str, allow_private: bool) -> Option<String> {
    let lnurl = lnurl.strip_prefix("lightning:").unwrap_or(lnurl);
    let (hrp, data) = bech32::decode(lnurl).ok()?;
    if !hrp.as_str().eq_ignore_ascii_case("lnurl") {
        return None;
    }
    let url = url::Url::parse(std::str::from_utf8(&data).ok()?).ok()?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => allow_private,
        _ => false,
    };
    let onion = url
        .host_str()
        .is_some_and(|h| h.to_ascii_lowercase().ends_with(".onion"));
    let plain = url.username().is_empty() && url.password().is_none();
    (scheme_ok && url.host().is_some() && !onion && plain).then(|| url.to_string())
}

/// How long to wait before asking a server again after `failures` failures in a row:
/// a minute, doubling, at most a day.
pub fn retry_after(failures: i32) -> std::time::Duration {
    let doublings = failures.saturating_sub(1).clamp(0, 20) as u32;
    std::time::Duration::from_secs((60u64 << doublings).min(86_400))
}

/// What a pay-request document says of zap receipts: `Some(Some(key))` when it allows
/// Nostr and names its key, `Some(None)` when it is a pay request that does not,
/// `None` when it is no pay-request document at all (an error page, say).
pub fn server_key(body: &str) -> Option<Option<PublicKey>> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    if doc.get("tag").and_then(|t| t.as_str()) != Some("payRequest") {
        return None;
    }
    let allows = doc.get("allowsNostr").and_then(|v| v.as_bool()) == Some(true);
    let key = doc
        .get("nostrPubkey")
        .and_then(|v| v.as_str())
        .and_then(|k| PublicKey::from_hex(k.trim()).ok());
    Some(key.filter(|_| allows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr_sdk::{EventBuilder, Keys};

    fn profile(content: &str) -> Event {
        EventBuilder::new(Kind::Metadata, content)
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    use nostr_sync_tools::lnurl::lud06 as lnurl;

    /// LUD-16: "<username>@<domainname>" is fetched from
    /// "https://<domain>/.well-known/lnurlp/<username>"; LUD-06: bech32 with the `lnurl`
    /// prefix, of a URL that LUD-01 allows.
    #[test]
    fn pay_urls_follow_lud06_and_lud16() {
        let cases = [
            (
                r#"{"lud16":"Alice@pay.example.com"}"#.to_owned(),
                Some("https://pay.example.com/.well-known/lnurlp/alice"),
            ),
            (
                format!(
                    r#"{{"lud16":"bob@w.example","lud06":"{}"}}"#,
                    lnurl("https://other.example/x")
                ),
                Some("https://w.example/.well-known/lnurlp/bob"),
            ),
            (
                format!(
                    r#"{{"lud06":"{}"}}"#,
                    lnurl("https://s.example/lnurlp/c?x=1")
                ),
                Some("https://s.example/lnurlp/c?x=1"),
            ),
            (
                format!(
                    r#"{{"lud06":"{}"}}"#,
                    lnurl("https://127.0.0.1:8080/lnurlp/d").to_uppercase()
                ),
                Some("https://127.0.0.1:8080/lnurlp/d"),
            ),
            (
                format!(
                    r#"{{"lud06":"{}"}}"#,
                    lnurl("http://127.0.0.1:8080/lnurlp/d")
                ),
                None,
            ),
            (
                format!(r#"{{"lud06":"{}"}}"#, lnurl("http://pay.example/x")),
                None,
            ),
            (r#"{"lud16":"no-at-sign"}"#.to_owned(), None),
            (r#"{"lud16":"a@b/c"}"#.to_owned(), None),
            (r#"{"lud16":"a b@c.example"}"#.to_owned(), None),
            (r#"{"lud06":"lnurl1garbage"}"#.to_owned(), None),
            (r#"{"name":"x"}"#.to_owned(), None),
            ("not json".to_owned(), None),
        ];
        for (content, want) in cases {
            assert_eq!(
                pay_url(&profile(&content), false).as_deref(),
                want,
                "{content}"
            );
        }
        // Plain HTTP only where private servers are allowed; never user info or onions.
        let cases = [
            (
                lnurl("http://127.0.0.1:8080/lnurlp/d"),
                Some("http://127.0.0.1:8080/lnurlp/d"),
            ),
            (lnurl("http://pay.example/x"), Some("http://pay.example/x")),
            (lnurl("https://user:pw@pay.example/x"), None),
            (lnurl("http://abc.onion/x"), None),
            (lnurl("ftp://pay.example/x"), None),
        ];
        for (l, want) in cases {
            let content = format!(r#"{{"lud06":"{l}"}}"#);
            assert_eq!(pay_url(&profile(&content), true).as_deref(), want, "{l}");
        }
    }

    #[test]
    fn retries_double_from_a_minute_to_a_day() {
        let cases = [
            (0, 60),
            (1, 60),
            (2, 120),
            (3, 240),
            (11, 61_440),
            (12, 86_400),
            (i32::MAX, 86_400),
        ];
        for (failures, secs) in cases {
            assert_eq!(retry_after(failures).as_secs(), secs, "{failures}");
        }
    }

    /// NIP-57: the server's document has `allowsNostr: true` and `nostrPubkey`.
    #[test]
    fn server_keys_follow_nip57() {
        let key = Keys::generate().public_key();
        let hex = key.to_hex();
        let cases = [
            (
                format!(r#"{{"tag":"payRequest","allowsNostr":true,"nostrPubkey":"{hex}"}}"#),
                Some(Some(key)),
            ),
            (
                format!(r#"{{"tag":"payRequest","allowsNostr":false,"nostrPubkey":"{hex}"}}"#),
                Some(None),
            ),
            (
                r#"{"tag":"payRequest","minSendable":1000}"#.to_owned(),
                Some(None),
            ),
            (
                r#"{"tag":"payRequest","allowsNostr":true,"nostrPubkey":"zz"}"#.to_owned(),
                Some(None),
            ),
            (r#"{"status":"ERROR"}"#.to_owned(), None),
            ("<html>".to_owned(), None),
        ];
        for (body, want) in cases {
            assert_eq!(server_key(&body), want, "{body}");
        }
    }
}
