//! `nostr-sync status`: per relay and filter, how far the sync is and how it is going,
//! from the database alone (it works while the service runs and never migrates).
//! Pure: it turns what the database says ([`Overview`]) into a report.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::storage::registry::RelayEntry;
use crate::storage::{Overview, RelayState};
use crate::sync::cursor::{CursorKey, Part};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub relays: Vec<RelayStatus>,
    pub events: i64,
    /// Stored events whose aggregates are not applied yet.
    pub unaggregated: i64,
    pub migrations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayStatus {
    pub relay: String,
    /// Whether the configuration names it (a relay removed since still has rows).
    pub configured: bool,
    /// Its registry row: where it came from, its state, and who holds its lease.
    pub registry: Option<RelayEntry>,
    pub filters: Vec<FilterStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FilterStatus {
    /// The filter's key (what it selects, as JSON).
    pub filter: String,
    /// Everything up to this unix time has been synced.
    pub cursor: Option<i64>,
    /// Now minus the cursor, in seconds.
    pub cursor_lag_secs: Option<i64>,
    /// An interrupted backfill: committed from this time up to its start.
    pub backfill_floor: Option<i64>,
    /// How much of the filter's range is synced, 0 to 100.
    pub percent_done: f64,
    pub last_repair: Option<i64>,
    pub last_success: Option<i64>,
    pub last_failure: Option<i64>,
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
}

/// The report for `configured` relays and filter keys at unix time `now`.
pub fn report(
    configured: &[(String, Vec<String>)],
    registry: &[RelayEntry],
    o: &Overview,
    now: i64,
) -> Status {
    // relay -> filter key -> status
    let mut relays: BTreeMap<String, BTreeMap<String, FilterStatus>> = BTreeMap::new();
    for r in registry {
        relays.entry(r.url.clone()).or_default();
    }
    for (relay, filter_keys) in configured {
        let filters = relays.entry(relay.clone()).or_default();
        for key in filter_keys {
            filters.entry(key.clone()).or_insert_with(|| FilterStatus {
                filter: key.clone(),
                ..Default::default()
            });
        }
    }
    let mut tops: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (relay, key, at) in &o.cursors {
        let CursorKey { filter, part } = CursorKey::parse(key);
        let s = entry(&mut relays, relay, &filter);
        match part {
            Part::Synced => s.cursor = Some(*at),
            Part::BackfillFloor => s.backfill_floor = Some(*at),
            Part::BackfillTop => {
                tops.insert((relay.clone(), filter), *at);
            }
            Part::Repaired => s.last_repair = Some(*at),
        }
    }
    for RelayState {
        relay,
        filter,
        last_success,
        last_failure,
        consecutive_failures,
        last_error,
        ..
    } in &o.states
    {
        let s = entry(&mut relays, relay, filter);
        s.last_success = *last_success;
        s.last_failure = *last_failure;
        s.consecutive_failures = *consecutive_failures;
        s.last_error = last_error.clone();
    }
    for (relay, filters) in relays.iter_mut() {
        for (key, s) in filters.iter_mut() {
            s.cursor_lag_secs = s.cursor.map(|c| (now - c).max(0));
            let since = filter_since(key);
            let top = tops.get(&(relay.clone(), key.clone())).copied();
            s.percent_done = match (s.backfill_floor, top) {
                (Some(floor), Some(top)) if top > since => {
                    100.0 * (top - floor).max(0) as f64 / (top - since) as f64
                }
                _ if s.cursor.is_some() => 100.0,
                _ => 0.0,
            };
        }
    }
    Status {
        relays: relays
            .into_iter()
            .map(|(relay, filters)| RelayStatus {
                configured: configured.iter().any(|(url, _)| *url == relay),
                registry: registry.iter().find(|r| r.url == relay).cloned(),
                relay,
                filters: filters.into_values().collect(),
            })
            .collect(),
        events: o.events,
        unaggregated: o.unaggregated,
        migrations: o.migrations.clone(),
    }
}

fn entry<'a>(
    relays: &'a mut BTreeMap<String, BTreeMap<String, FilterStatus>>,
    relay: &str,
    filter: &str,
) -> &'a mut FilterStatus {
    relays
        .entry(relay.to_owned())
        .or_default()
        .entry(filter.to_owned())
        .or_insert_with(|| FilterStatus {
            filter: filter.to_owned(),
            ..Default::default()
        })
}

/// The `since` a filter key names (0 when it names none).
fn filter_since(key: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(key)
        .ok()
        .and_then(|v| v.get("since")?.as_i64())
        .unwrap_or(0)
}

/// Unix time as `YYYY-MM-DD HH:MM:SS UTC` ("never" for `None`).
pub fn time(t: Option<i64>) -> String {
    let Some(t) = t else { return "never".into() };
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// A registry row in one line: source, state, and its lease.
fn lease_line(e: &RelayEntry) -> String {
    let lease = match &e.holder {
        Some(holder) => format!(
            "held by {holder} until {} (token {})",
            time(Some(e.lease_until)),
            e.token
        ),
        None => format!("not held (token {})", e.token),
    };
    format!("{} from {}, {lease}", e.state(), e.source)
}

/// A registry row with its relay's health (`nostr-sync relays list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistryRow {
    #[serde(flatten)]
    pub entry: RelayEntry,
    /// The last window of any filter that succeeded.
    pub last_success: Option<i64>,
    /// The most failures in a row of any of its filters.
    pub consecutive_failures: i64,
}

/// `rows` with the health `states` record of each.
pub fn registry_rows(rows: Vec<RelayEntry>, states: &[RelayState]) -> Vec<RegistryRow> {
    // relay -> (last success, most failures in a row), over its filters
    let mut health: BTreeMap<&str, (Option<i64>, i64)> = BTreeMap::new();
    for s in states {
        let h = health.entry(s.relay.as_str()).or_default();
        h.0 = h.0.max(s.last_success);
        h.1 = h.1.max(s.consecutive_failures);
    }
    rows.into_iter()
        .map(|entry| {
            let (last_success, consecutive_failures) =
                health.get(entry.url.as_str()).copied().unwrap_or_default();
            RegistryRow {
                entry,
                last_success,
                consecutive_failures,
            }
        })
        .collect()
}

/// The registry as text for a terminal.
pub fn render_registry(rows: &[RegistryRow], now: i64) -> String {
    let mut out = String::new();
    for r in rows {
        let e = &r.entry;
        let lapsed = if e.holder.is_some() && e.lease_until < now {
            " (lapsed)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{}\n  {}{lapsed}\n  last success {}, {} failures in a row\n",
            e.url,
            lease_line(e),
            time(r.last_success),
            r.consecutive_failures
        ));
    }
    out.push_str(&format!("{} relays\n", rows.len()));
    out
}

/// The report as text for a terminal.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    for r in &s.relays {
        let note = if r.configured {
            ""
        } else {
            " (no longer configured)"
        };
        out.push_str(&format!("{}{note}\n", r.relay));
        if let Some(e) = &r.registry {
            out.push_str(&format!("  registry       {}\n", lease_line(e)));
        }
        for f in &r.filters {
            out.push_str(&format!("  filter {}\n", f.filter));
            let lag = f
                .cursor_lag_secs
                .map_or(String::new(), |l| format!(" (lag {l} s)"));
            out.push_str(&format!("    synced up to   {}{lag}\n", time(f.cursor)));
            out.push_str(&format!("    done           {:.1}%", f.percent_done));
            if let Some(floor) = f.backfill_floor {
                out.push_str(&format!(" (backfill down to {})", time(Some(floor))));
            }
            out.push('\n');
            out.push_str(&format!("    last success   {}\n", time(f.last_success)));
            out.push_str(&format!("    last repair    {}\n", time(f.last_repair)));
            if f.consecutive_failures > 0 || f.last_error.is_some() {
                out.push_str(&format!(
                    "    failures       {} in a row; last at {}: {}\n",
                    f.consecutive_failures,
                    time(f.last_failure),
                    f.last_error.as_deref().unwrap_or("")
                ));
            }
        }
    }
    out.push_str(&format!(
        "events {}, not yet aggregated {}\nmigrations {}\n",
        s.events,
        s.unaggregated,
        s.migrations.join(", ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time(Some(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(Some(1_795_000_000)), "2026-11-18 11:06:40 UTC");
        assert_eq!(time(Some(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(time(None), "never");
    }

    #[test]
    fn a_report_from_cursors_and_states() {
        let key = r#"{"authors":[],"kinds":[],"since":1000}"#.to_string();
        let o = Overview {
            cursors: vec![
                ("wss://a".into(), key.clone(), 5_000),
                ("wss://b".into(), format!("{key}#backfill-top"), 3_000),
                ("wss://b".into(), format!("{key}#backfill-floor"), 2_500),
                ("wss://old".into(), key.clone(), 4_000),
            ],
            states: vec![RelayState {
                relay: "wss://b".into(),
                filter: key.clone(),
                last_success: None,
                last_failure: Some(2_900),
                consecutive_failures: 3,
                last_error: Some("not connected".into()),
                updated_at: 2_900,
            }],
            events: 10,
            unaggregated: 2,
            migrations: vec!["1".into()],
        };
        let configured = [
            ("wss://a".to_owned(), vec![key.clone()]),
            ("wss://b".to_owned(), vec![key.clone()]),
        ];
        let s = report(&configured, &[], &o, 6_000);
        assert_eq!(s.relays.len(), 3);
        let a = &s.relays[0].filters[0];
        assert_eq!(
            (a.cursor, a.cursor_lag_secs, a.percent_done),
            (Some(5_000), Some(1_000), 100.0)
        );
        let b = &s.relays[1].filters[0];
        assert_eq!(b.cursor, None);
        assert_eq!(b.percent_done, 25.0);
        assert_eq!(b.consecutive_failures, 3);
        assert!(!s.relays[2].configured);
        let text = render(&s);
        assert!(text.contains("3 in a row"), "{text}");
        assert!(text.contains("no longer configured"), "{text}");
    }
}
