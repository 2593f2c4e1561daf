//! NIP-11: a relay's information document, fetched over HTTP(S) from the relay's own
//! URL with `Accept: application/nostr+json`. Only what paging needs is read, and
//! leniently: a document that is missing, malformed or slow changes nothing.

use std::time::Duration;

/// What the document says that the sync uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// `limitation.max_limit`: the most events the relay returns for one REQ.
    pub max_limit: Option<usize>,
    /// `limitation.auth_required`.
    pub auth_required: bool,
    /// `supported_nips`.
    pub nips: Vec<u64>,
}

/// The HTTP(S) URL the document of the relay at `ws_url` is served from.
pub fn http_url(ws_url: &str) -> Option<String> {
    let (scheme, rest) = ws_url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" => "http",
        "wss" => "https",
        _ => return None,
    };
    Some(format!("{scheme}://{rest}"))
}

/// Reads a document; `None` if it is not a JSON object.
pub fn parse(body: &str) -> Option<Info> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    let doc = doc.as_object()?;
    let limitation = doc.get("limitation");
    let field = |name: &str| limitation.and_then(|l| l.get(name));
    let max_limit = field("max_limit")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
        .filter(|n| *n > 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let nips = doc
        .get("supported_nips")
        .and_then(|n| n.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    Some(Info {
        max_limit,
        auth_required: field("auth_required").and_then(|v| v.as_bool()) == Some(true),
        nips,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum Nip11Error {
    #[error("not a ws:// or wss:// URL")]
    Url,
    #[error("{0}")]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("not a NIP-11 document")]
    Document,
}

/// Largest document read; real ones are a few kB.
pub const MAX_DOCUMENT: usize = 64 * 1024;

/// Fetches the document of the relay at `ws_url` (no redirect: it is served at the
/// relay's own URL), reading at most [`MAX_DOCUMENT`] bytes within `timeout`.
pub async fn fetch(ws_url: &str, timeout: Duration) -> Result<Info, Nip11Error> {
    let url = http_url(ws_url).ok_or(Nip11Error::Url)?;
    let body = crate::fetch::get(&url, "application/nostr+json", timeout, MAX_DOCUMENT).await?;
    parse(&body).ok_or(Nip11Error::Document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases = [
            ("wss://relay.example.com", Some("https://relay.example.com")),
            ("ws://127.0.0.1:7777/", Some("http://127.0.0.1:7777/")),
            ("WSS://r.example/path", Some("https://r.example/path")),
            ("http://r.example", None),
            ("nonsense", None),
        ];
        for (ws, want) in cases {
            assert_eq!(http_url(ws).as_deref(), want, "{ws}");
        }
    }

    #[test]
    fn documents() {
        let info = parse(r#"{"name":"x","supported_nips":[1,11,42,77],"limitation":{"max_limit":100,"auth_required":true}}"#).unwrap();
        assert_eq!(
            info,
            Info {
                max_limit: Some(100),
                auth_required: true,
                nips: vec![1, 11, 42, 77]
            }
        );
        let cases = [
            (r#"{"limitation":{"max_limit":"150"}}"#, Some(150)),
            (r#"{"limitation":{"max_limit":0}}"#, None),
            (r#"{"limitation":{"max_limit":-5}}"#, None),
            (r#"{"limitation":{"max_limit":"lots"}}"#, None),
            (r#"{"limitation":null}"#, None),
            (r#"{}"#, None),
        ];
        for (doc, want) in cases {
            assert_eq!(parse(doc).unwrap().max_limit, want, "{doc}");
        }
        assert_eq!(parse("<html>"), None);
        assert_eq!(parse("[1]"), None);
    }
}
