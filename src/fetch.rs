//! Small HTTP GETs of documents other parties serve (NIP-11 relay information, LNURL-pay
//! documents): one shared client, no redirects, a deadline for the whole exchange and a
//! cap on the body, so a slow or huge answer costs little.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
}

/// The client every fetch shares (its connection pool and TLS set-up).
fn client() -> Result<&'static reqwest::Client, FetchError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("nostr-sync/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(CLIENT.get_or_init(|| c))
}

/// GETs `url` with `accept`, reading at most `max` bytes within `timeout` altogether.
pub async fn get(
    url: &str,
    accept: &str,
    timeout: Duration,
    max: usize,
) -> Result<String, FetchError> {
    let mut response = client()?
        .get(url)
        .header("Accept", accept)
        .timeout(timeout)
        .send()
        .await?
        .error_for_status()?;
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
