//! LnurlActor: learns the keys zap receipts must be signed with (NIP-57 appendix F).
//!
//! Every `aggregates.lnurl_check_secs` it asks the database which recipients' servers
//! are due to be asked (`zap_servers.next_check`, the longest due first: a recipient
//! is due when a receipt waits for their server, at once if it was never asked, else
//! `aggregates.lnurl_recheck_secs` after its last answer). For each, it reads their
//! newest stored kind 0 and fetches the pay document its `lud16`/`lud06` names
//! (`fetch::get_public`: public addresses only unless `aggregates.lnurl_allow_private`;
//! one fetch at a time, at most `lnurl_fetches_per_sec` in all and
//! `lnurl_host_fetches_per_sec` per host; 16 kB, a deadline, no redirects). The answer goes to the database
//! (`zap_servers`: the few newest keys the server named), then `Learnt` to the zap
//! actor, which judges that recipient's waiting receipts. A recipient without a
//! stored profile, or whose server cannot be reached, is asked again later (doubling
//! from a minute to a day, `nostr::lnurl::retry_after`); the schedule lives in the
//! database, so instances sharing it share it, and this actor holds only a bounded
//! map of hosts.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Recipient, WrapFuture};
use nostr_sdk::PublicKey;

use crate::actors::zaps::messages::Learnt;
use crate::nostr::lnurl;
use crate::storage::{EventStore, StoreResult, ZapStore};

/// Recipients looked at per round.
const PER_ROUND: i64 = 1_000;
/// Deadline of one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Hosts whose last fetch is remembered.
const HOSTS: usize = 1_024;

/// What a round needs besides the store (`[aggregates]`).
#[derive(Clone)]
pub struct LnurlOptions {
    pub every: Duration,
    pub allow_private: bool,
    /// Pause after each fetch (`lnurl_fetches_per_sec`).
    pub between_fetches: Duration,
    /// Least time between two fetches from one host (`lnurl_host_fetches_per_sec`).
    pub per_host: Duration,
}

pub struct LnurlActor {
    store: Arc<dyn EventStore>,
    zaps: Arc<dyn ZapStore>,
    judge: Recipient<Learnt>,
    options: LnurlOptions,
    /// When each host was last fetched from.
    hosts: Arc<std::sync::Mutex<lru::LruCache<String, Instant>>>,
    busy: bool,
    /// Quiesced: no new step starts.
    stopped: bool,
}

impl LnurlActor {
    pub fn new(
        store: Arc<dyn EventStore>,
        judge: Recipient<Learnt>,
        options: LnurlOptions,
    ) -> Self {
        let hosts = lru::LruCache::new(NonZeroUsize::new(HOSTS).unwrap_or(NonZeroUsize::MIN));
        Self {
            zaps: store.zap_store(),
            store,
            judge,
            options,
            hosts: Arc::new(std::sync::Mutex::new(hosts)),
            busy: false,
            stopped: false,
        }
    }

    fn round(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.stopped {
            return;
        }
        self.busy = true;
        let (store, zaps, judge) = (self.store.clone(), self.zaps.clone(), self.judge.clone());
        let (hosts, options) = (self.hosts.clone(), self.options.clone());
        ctx.spawn(
            async move { learn(&*store, &*zaps, &judge, &hosts, &options).await }
                .into_actor(self)
                .map(|result, act, _| {
                    act.busy = false;
                    match result {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            recipients = n,
                            "LNURL servers answered for zap receipts"
                        ),
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
        ctx.run_interval(self.options.every, |act, ctx| act.round(ctx));
    }
}

/// How asking one recipient's server went.
enum Asked {
    /// It answered: the key it names, if any.
    Answered(Option<PublicKey>),
    /// No answer now (no profile, no LNURL, unreachable, not a pay document).
    Failed,
    /// Its host was asked moments ago: left due for the next round.
    HostBusy,
}

/// One round: returns how many servers answered.
async fn learn(
    store: &dyn EventStore,
    zaps: &dyn ZapStore,
    judge: &Recipient<Learnt>,
    hosts: &std::sync::Mutex<lru::LruCache<String, Instant>>,
    options: &LnurlOptions,
) -> StoreResult<usize> {
    let mut answered = 0;
    let now = crate::storage::now_secs();
    for (recipient, failures) in zaps.due_zap_recipients(now, PER_ROUND).await? {
        let (asked, fetched) = ask(store, &recipient, hosts, options).await?;
        match asked {
            Asked::Answered(server) => {
                let server = server.map(|k| k.to_hex());
                zaps.zap_server_answered(&recipient, server.as_deref(), crate::storage::now_secs())
                    .await?;
                judge.do_send(Learnt(recipient));
                answered += 1;
            }
            Asked::Failed => {
                let wait = lnurl::retry_after(failures.saturating_add(1));
                zaps.zap_server_failed(&recipient, now + wait.as_secs() as i64, now)
                    .await?;
            }
            Asked::HostBusy => {}
        }
        if fetched {
            tokio::time::sleep(options.between_fetches).await;
        }
    }
    Ok(answered)
}

/// Asks the LNURL server of `recipient` (hex); says whether a request went out.
async fn ask(
    store: &dyn EventStore,
    recipient: &str,
    hosts: &std::sync::Mutex<lru::LruCache<String, Instant>>,
    options: &LnurlOptions,
) -> StoreResult<(Asked, bool)> {
    let allow_private = options.allow_private;
    let Some(profile) = store.profile(recipient).await? else {
        tracing::debug!(%recipient, "no stored profile for a zap recipient");
        return Ok((Asked::Failed, false));
    };
    let Some(url) = lnurl::pay_url(&profile, allow_private) else {
        tracing::debug!(%recipient, "the zap recipient's profile names no usable LNURL");
        return Ok((Asked::Failed, false));
    };
    let host = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    {
        let mut hosts = hosts.lock().unwrap_or_else(|e| e.into_inner());
        if hosts
            .get(&host)
            .is_some_and(|at| at.elapsed() < options.per_host)
        {
            return Ok((Asked::HostBusy, false));
        }
        hosts.put(host, Instant::now());
    }
    let fetched = crate::fetch::get_public(
        &url,
        "application/json",
        FETCH_TIMEOUT,
        lnurl::MAX_DOCUMENT,
        allow_private,
    )
    .await;
    match fetched {
        Ok(body) => Ok((
            lnurl::server_key(&body).map_or(Asked::Failed, Asked::Answered),
            true,
        )),
        Err(error) => {
            tracing::debug!(%recipient, %url, %error, "LNURL server not reached");
            Ok((Asked::Failed, true))
        }
    }
}

impl actix::Handler<crate::actors::Quiesce> for LnurlActor {
    type Result = bool;

    fn handle(&mut self, _: crate::actors::Quiesce, _: &mut Self::Context) -> bool {
        self.stopped = true;
        self.busy
    }
}
