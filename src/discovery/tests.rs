use super::score::{score, History, Sample, Windowed};
use super::*;

fn rules() -> Rules {
    Rules {
        allow_private: false,
        blocklist: vec!["evil.example".into(), "wss://bad.example/path".into()],
    }
}

/// What `admit` gives: the URL and its host name, if not an address.
type Admitted<'a> = Result<(&'a str, Option<&'a str>), Refusal>;

#[test]
fn published_urls_are_admitted_only_when_public_and_plain() {
    let long = format!("wss://relay.example/{}", "a".repeat(MAX_URL_BYTES));
    let cases: Vec<(&str, Admitted)> = vec![
        (
            "wss://Relay.Example/",
            Ok(("wss://relay.example", Some("relay.example"))),
        ),
        ("ws://8.8.8.8:7000", Ok(("ws://8.8.8.8:7000", None))),
        ("ws://10.0.0.1", Err(Refusal::NotPublic)),
        ("ws://169.254.169.254", Err(Refusal::NotPublic)),
        ("ws://127.0.0.1:7777", Err(Refusal::NotPublic)),
        ("ws://192.168.1.1", Err(Refusal::NotPublic)),
        ("ws://100.64.0.1", Err(Refusal::NotPublic)),
        ("ws://0.0.0.0", Err(Refusal::NotPublic)),
        ("ws://[::1]", Err(Refusal::NotPublic)),
        ("ws://[fd00::1]", Err(Refusal::NotPublic)),
        ("ws://[fe80::1]", Err(Refusal::NotPublic)),
        ("ws://[::ffff:10.0.0.1]", Err(Refusal::NotPublic)),
        ("ws://localhost:7000", Err(Refusal::NotPublic)),
        ("ws://relay.localhost", Err(Refusal::NotPublic)),
        ("ws://user:pw@relay.example", Err(Refusal::UserInfo)),
        ("ws://user@relay.example", Err(Refusal::UserInfo)),
        ("http://relay.example", Err(Refusal::NotRelay)),
        ("https://relay.example", Err(Refusal::NotRelay)),
        ("relay.example", Err(Refusal::NotRelay)),
        ("", Err(Refusal::NotRelay)),
        (long.as_str(), Err(Refusal::TooLong)),
        ("wss://evil.example", Err(Refusal::Blocked)),
        ("wss://EVIL.example:443/", Err(Refusal::Blocked)),
        ("wss://bad.example/path/", Err(Refusal::Blocked)),
        ("wss://evil.example./", Err(Refusal::Blocked)),
        ("wss://relay.evil.example", Err(Refusal::Blocked)),
        (
            "wss://notevil.example",
            Ok(("wss://notevil.example", Some("notevil.example"))),
        ),
        (
            "wss://bad.example/other",
            Ok(("wss://bad.example/other", Some("bad.example"))),
        ),
    ];
    for (input, want) in cases {
        let got = admit(input, &rules());
        let got = got
            .as_ref()
            .map(|(u, h)| (u.as_str(), h.as_deref()))
            .map_err(|e| *e);
        assert_eq!(got, want, "{input}");
    }
    let private = Rules {
        allow_private: true,
        ..rules()
    };
    assert!(admit("ws://127.0.0.1:7777", &private).is_ok());
    assert!(admit("ws://localhost:7777", &private).is_ok());
    assert_eq!(
        admit("ws://user:pw@127.0.0.1", &private),
        Err(Refusal::UserInfo)
    );
}

#[test]
fn public_means_public_unicast() {
    for (ip, want) in [
        ("1.1.1.1", true),
        ("93.184.216.34", true),
        ("2606:4700::1111", true),
        ("127.0.0.1", false),
        ("10.1.2.3", false),
        ("172.16.0.1", false),
        ("169.254.169.254", false),
        ("224.0.0.1", false),
        ("255.255.255.255", false),
        ("240.0.0.1", false),
        ("198.18.0.1", false),
        ("192.0.2.1", false),
        ("::", false),
        ("ff02::1", false),
        ("2001:db8::1", false),
        ("::ffff:127.0.0.1", false),
        ("64:ff9b::a00:1", false),
    ] {
        assert_eq!(public(ip.parse().unwrap()), want, "{ip}");
    }
}

#[test]
fn write_relays_follow_nip65_markers() {
    let tag = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let tags = vec![
        tag(&["r", "wss://both.example"]),
        tag(&["r", "wss://write.example", "write"]),
        tag(&["r", "wss://read.example", "read"]),
        tag(&["p", "wss://not-a-relay-tag.example"]),
        tag(&["r"]),
        tag(&["r", "wss://both.example"]),
    ];
    assert_eq!(
        write_relays(&tags),
        vec!["wss://both.example", "wss://write.example"]
    );
}

fn lists(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(a, rs)| (a.to_string(), rs.iter().map(|r| r.to_string()).collect()))
        .collect()
}

/// `plan` with no scores, no current relays and none excluded.
fn unscored(lists: &BTreeMap<String, Vec<String>>, per_author: usize, max_relays: usize) -> Plan {
    plan(
        lists,
        &HashMap::new(),
        &HashSet::new(),
        &HashSet::new(),
        per_author,
        max_relays,
    )
}

fn authors_of(plan: &Plan, url: &str) -> Vec<String> {
    plan.relays.get(url).cloned().unwrap_or_default()
}

#[test]
fn each_author_gets_its_most_shared_relays() {
    let l = lists(&[
        ("a", &["ws://x", "ws://y", "ws://z", "ws://only-a"]),
        ("b", &["ws://y", "ws://z"]),
        ("c", &["ws://z"]),
    ]);
    let p = unscored(&l, 2, 100);
    // a: z (3 authors) and y (2); x and only-a (1 each) are left out.
    assert_eq!(authors_of(&p, "ws://z"), vec!["a", "b", "c"]);
    assert_eq!(authors_of(&p, "ws://y"), vec!["a", "b"]);
    assert!(!p.relays.contains_key("ws://x"));
    assert_eq!(p.candidates, 4);
}

#[test]
fn the_budget_keeps_the_relays_most_authors_need() {
    let l = lists(&[
        ("a", &["ws://shared"]),
        ("b", &["ws://shared"]),
        ("c", &["ws://lonely-c"]),
        ("d", &["ws://lonely-d"]),
    ]);
    let mut scores = HashMap::new();
    scores.insert("ws://lonely-d".to_string(), 0.9);
    scores.insert("ws://lonely-c".to_string(), 0.1);
    let p = plan(&l, &scores, &HashSet::new(), &HashSet::new(), 3, 2);
    assert_eq!(p.relays.len(), 2);
    assert_eq!(authors_of(&p, "ws://shared"), vec!["a", "b"]);
    // Equal need: the lower score goes.
    assert_eq!(authors_of(&p, "ws://lonely-d"), vec!["d"]);
    assert!(!p.relays.contains_key("ws://lonely-c"));
}

#[test]
fn excluded_relays_give_way_to_the_next_candidate() {
    let l = lists(&[("a", &["ws://down", "ws://next", "ws://third"])]);
    let excluded: HashSet<String> = ["ws://down".to_string()].into();
    let p = plan(&l, &HashMap::new(), &HashSet::new(), &excluded, 1, 10);
    assert_eq!(p.relays.keys().collect::<Vec<_>>(), vec!["ws://next"]);
}

#[test]
fn ten_thousand_relays_of_one_author_stay_within_budget() {
    let many: Vec<String> = (0..10_000).map(|i| format!("wss://r{i}.example")).collect();
    let l: BTreeMap<String, Vec<String>> = [("a".to_string(), many)].into();
    let p = unscored(&l, 3, 100);
    assert_eq!(p.relays.len(), 3);
    assert_eq!(p.candidates, 10_000);
    let wide: BTreeMap<String, Vec<String>> = (0..1_000)
        .map(|a| {
            let own = (0..10).map(|i| format!("wss://a{a}r{i}.example")).collect();
            (format!("author{a:04}"), own)
        })
        .collect();
    let p = unscored(&wide, 3, 100);
    assert_eq!(p.relays.len(), 100);
}

#[test]
fn equal_relays_do_not_swap_between_refreshes() {
    let l = lists(&[("a", &["ws://x", "ws://y"])]);
    let current: HashSet<String> = ["ws://y".to_string()].into();
    // x scores better, but y is synced already and as many authors name each.
    let scores: HashMap<String, f64> = [("ws://x".to_string(), 0.9)].into();
    let p = plan(&l, &scores, &current, &HashSet::new(), 1, 10);
    assert_eq!(p.relays.keys().collect::<Vec<_>>(), vec!["ws://y"]);
}

#[test]
fn an_author_whose_pick_went_keeps_a_listed_relay() {
    // b's own pick (ws://b-only) goes over the budget of one; it lists ws://shared too.
    let l = lists(&[
        ("a", &["ws://shared"]),
        ("c", &["ws://shared"]),
        ("b", &["ws://b-only", "ws://b-two", "ws://shared"]),
    ]);
    let p = unscored(&l, 1, 1);
    assert_eq!(authors_of(&p, "ws://shared"), vec!["a", "b", "c"]);
}

#[test]
fn filters_are_narrowed_to_a_relays_authors() {
    let f = |kinds: &[u16], authors: &[&str]| FilterSettings {
        kinds: kinds.to_vec(),
        authors: authors.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    let filters = vec![f(&[1], &[]), f(&[7], &["a", "b", "c"]), f(&[6], &["z"])];
    let mine = vec!["b".to_string(), "a".to_string()];
    assert_eq!(
        narrow(&filters, &mine),
        vec![f(&[1], &["a", "b"]), f(&[7], &["a", "b"])]
    );
    let mut s = crate::config::Settings {
        filters: filters.clone(),
        ..Default::default()
    };
    assert_eq!(s.selected_authors(), Vec::<String>::new());
    s.filters.remove(0);
    let want: Vec<String> = ["a", "b", "c", "z"].map(String::from).to_vec();
    assert_eq!(s.selected_authors(), want);
    s.discovery.max_authors = 2;
    assert_eq!(s.selected_authors(), want[..2].to_vec());
}

#[test]
fn scores_rank_novelty_and_uptime() {
    let novel = Windowed {
        novel: 100,
        duplicates: 0,
        failures: 0,
        uptime: 1.0,
    };
    let copies = Windowed {
        novel: 0,
        duplicates: 100,
        ..novel
    };
    let flaky = Windowed {
        uptime: 0.5,
        ..novel
    };
    assert!(score(&novel) > 0.98);
    assert!(score(&copies) < 0.02);
    assert!((score(&flaky) - score(&novel) / 2.0).abs() < 1e-9);
    assert!(
        (score(&Windowed {
            uptime: 1.0,
            ..Default::default()
        }) - 0.5)
            .abs()
            < 1e-9
    );
}

#[test]
fn a_history_keeps_only_its_window() {
    let s = |at, novel, received, connected| Sample {
        at,
        novel,
        received,
        rejected: 0,
        cycles_failed: 0,
        connected,
    };
    let mut h = History::default();
    h.record(s(0, 0, 0, true), 100);
    h.record(s(50, 10, 30, true), 100);
    assert_eq!(
        h.windowed(),
        Windowed {
            novel: 10,
            duplicates: 20,
            failures: 0,
            uptime: 1.0
        }
    );
    h.record(s(120, 10, 40, false), 100);
    h.record(s(160, 15, 50, false), 100);
    // The window starts at 60: the sample at 50 is its start, the one at 0 is gone.
    let w = h.windowed();
    assert_eq!((w.novel, w.duplicates), (5, 15));
    assert!((w.uptime - 1.0 / 3.0).abs() < 1e-9);
}
