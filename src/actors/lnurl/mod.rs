//! LnurlActor: learns the keys zap receipts must be signed with (NIP-57 appendix F).
//!
//! Every `aggregates.lnurl_check_secs` it asks the database for the recipients of zap
//! receipts still waiting in the aggregation backlog, and for each recipient whose
//! LNURL server is not known yet: reads their newest stored kind 0, fetches the pay
//! document its `lud16`/`lud06` names (bounded: one at a time, at most a few a second,
//! 16 kB, a deadline, no redirects), and remembers the server's `nostrPubkey` in the
//! database (`zap_servers`) and in the trust receipts are judged by. Then it asks the
//! aggregator to apply the backlog again, which counts the receipts now judged.
//! Recipients without a stored profile, or whose server cannot be reached, are tried
//! again later (doubling from a minute to a day).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Recipient, WrapFuture};
use nostr_sdk::PublicKey;

use crate::actors::aggregator::messages::Rejudge;
use crate::config::Settings;
use crate::nostr::lnurl;
use crate::nostr::zap::ZapPolicy;
use crate::storage::{EventStore, StoreResult};

/// Recipients looked at per round.
const PER_ROUND: i64 = 200;
/// Pause between two fetches.
const BETWEEN_FETCHES: Duration = Duration::from_millis(200);
/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait before a recipient is tried again.
const RETRY_MIN: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(86_400);

pub struct LnurlActor {
    store: Arc<dyn EventStore>,
    /// Where learnt servers go.
    zaps: ZapPolicy,
    aggregator: Recipient<Rejudge>,
    every: Duration,
    /// Recipients that failed: when to try again, and the wait after that.
    retry: Arc<std::sync::Mutex<HashMap<PublicKey, (Instant, Duration)>>>,
    busy: bool,
}

impl LnurlActor {
    pub fn new(
        store: Arc<dyn EventStore>,
        zaps: ZapPolicy,
        aggregator: Recipient<Rejudge>,
        every: Duration,
    ) -> Self {
        Self {
            store,
            zaps,
            aggregator,
            every,
            retry: Default::default(),
            busy: false,
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (store, retry) = (self.store.clone(), self.retry.clone());
        let zaps = self.zaps.clone();
        ctx.spawn(
            async move { learn(store.as_ref(), &zaps, &retry).await }
                .into_actor(self)
                .map(|result, act, _| {
                    act.busy = false;
                    match result {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(recipients = n, "LNURL servers learnt for zap receipts");
                            act.aggregator.do_send(Rejudge);
                        }
                        Err(error) => tracing::warn!(%error, "looking up zap recipients failed"),
                    }
                }),
        );
    }
}

impl Actor for LnurlActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.round(ctx);
        ctx.run_interval(self.every, |act, ctx| act.round(ctx));
    }
}

/// One round: returns how many recipients' receipts can be judged now.
async fn learn(
    store: &dyn EventStore,
    zaps: &ZapPolicy,
    retry: &std::sync::Mutex<HashMap<PublicKey, (Instant, Duration)>>,
) -> StoreResult<usize> {
    let mut judged = 0;
    for hex in store.pending_zap_recipients(PER_ROUND).await? {
        let Ok(recipient) = PublicKey::from_hex(&hex) else {
            continue;
        };
        if zaps.knows(&recipient) {
            // Learnt before these receipts arrived (or before the last judging).
            judged += 1;
            continue;
        }
        let due = retry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&recipient)
            .is_none_or(|(at, _)| *at <= Instant::now());
        if !due {
            continue;
        }
        match server_of(store, &recipient, &hex).await? {
            Some(server) => {
                store
                    .save_zap_server(&hex, server.map(|k| k.to_hex()).as_deref())
                    .await?;
                zaps.learn(recipient, server);
                retry
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&recipient);
                judged += 1;
            }
            None => {
                let mut retry = retry.lock().unwrap_or_else(|e| e.into_inner());
                let wait = retry
                    .get(&recipient)
                    .map_or(RETRY_MIN, |(_, w)| (*w * 2).min(RETRY_MAX));
                retry.insert(recipient, (Instant::now() + wait, wait));
            }
        }
        tokio::time::sleep(BETWEEN_FETCHES).await;
    }
    Ok(judged)
}

/// The LNURL server key of `recipient`: `Some(Some(key))`, `Some(None)` when their
/// server signs no receipts, `None` when it cannot be told now (no profile stored, no
/// LNURL in it, the server unreachable or not answering a pay document).
async fn server_of(
    store: &dyn EventStore,
    recipient: &PublicKey,
    hex: &str,
) -> StoreResult<Option<Option<PublicKey>>> {
    let Some(profile) = store.profile(hex).await? else {
        tracing::debug!(%recipient, "no stored profile for a zap recipient");
        return Ok(None);
    };
    let Some(url) = lnurl::pay_url(&profile) else {
        tracing::debug!(%recipient, "the zap recipient's profile names no LNURL");
        return Ok(None);
    };
    match crate::fetch::get(&url, "application/json", FETCH_TIMEOUT, lnurl::MAX_DOCUMENT).await {
        Ok(body) => Ok(lnurl::server_key(&body)),
        Err(error) => {
            tracing::debug!(%recipient, %url, %error, "LNURL server not reached");
            Ok(None)
        }
    }
}

/// The trust zap receipts are judged by: the configuration, and every LNURL server the
/// database remembers. Set before anything is counted (start-up, `check-aggregates`).
pub async fn load_trust(
    settings: &Settings,
    store: &dyn EventStore,
    zaps: &ZapPolicy,
) -> StoreResult<()> {
    let mut trust = settings.aggregates.zap_trust();
    for (recipient, server) in store.zap_servers().await? {
        if let Ok(recipient) = PublicKey::from_hex(&recipient) {
            let server = server.and_then(|s| PublicKey::from_hex(&s).ok());
            trust.servers.insert(recipient, server);
        }
    }
    zaps.set(trust);
    Ok(())
}
