use std::time::{Duration, Instant};

use nostr_sdk::Filter;

use super::feed::Tail;
use super::rate::{Bucket, Verdict};
use super::*;
use crate::config::ServeSettings;

const ID: &str = "5c83da77af1dec6d7289834998ad7aafbd9e2191396d75ec3cc27f5a77226f36";
const KEY: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

fn filter(json: &str) -> Filter {
    serde_json::from_str(json).unwrap()
}

fn limits() -> ServeSettings {
    ServeSettings {
        max_limit: 500,
        max_filter_values: 3,
        max_filters: 2,
        ..Default::default()
    }
}

#[test]
fn filters_become_queries_within_the_limits() {
    let q = query(
        &filter(&format!(
            r##"{{"ids":["{ID}"],"authors":["{KEY}"],"kinds":[1,7],"#e":["{ID}"],"#t":["a","b"],"since":10,"until":20,"limit":7}}"##
        )),
        &limits(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(q.ids, vec![ID.to_owned()]);
    assert_eq!(q.authors, vec![KEY.to_owned()]);
    assert_eq!(q.kinds, vec![1, 7]);
    assert_eq!(
        q.tags,
        vec![
            ("e".to_owned(), vec![ID.to_owned()]),
            ("t".to_owned(), vec!["a".to_owned(), "b".to_owned()])
        ]
    );
    assert_eq!((q.since, q.until, q.limit), (Some(10), Some(20), 7));

    // NIP-01: `limit` is lowered to the relay's maximum, which is also its default.
    let cases: [(&str, Option<i64>); 3] = [
        (r#"{"limit":100000}"#, Some(500)),
        (r#"{}"#, Some(500)),
        (r#"{"limit":0}"#, None),
    ];
    for (json, want) in cases {
        let got = query(&filter(json), &limits()).unwrap().map(|q| q.limit);
        assert_eq!(got, want, "{json}");
    }
}

#[test]
fn filters_past_the_bounds_are_refused_with_their_prefix() {
    let cases = [
        (r#"{"kinds":[1,2,3,4]}"#, "blocked:"),
        (r##"{"#t":["a","b","c","d"]}"##, "blocked:"),
        (r#"{"search":"nostr"}"#, "invalid:"),
    ];
    for (json, prefix) in cases {
        let why = query(&filter(json), &limits()).unwrap_err();
        assert!(why.starts_with(prefix), "{json}: {why}");
    }
}

#[test]
fn only_the_aggregate_shapes_are_counted_from_the_aggregates() {
    let address = format!("30023:{KEY}:post");
    let cases: Vec<(String, Option<(Counter, String)>)> = vec![
        (
            format!(r##"{{"kinds":[7],"#e":["{ID}"]}}"##),
            Some((Counter::Reactions, ID.into())),
        ),
        (
            format!(r##"{{"kinds":[1],"#e":["{ID}"]}}"##),
            Some((Counter::Replies, ID.into())),
        ),
        (
            format!(r##"{{"kinds":[16,6],"#e":["{ID}"]}}"##),
            Some((Counter::Reposts, ID.into())),
        ),
        (
            format!(r##"{{"kinds":[16],"#a":["{address}"]}}"##),
            Some((Counter::Reposts, address.clone())),
        ),
        (
            format!(r##"{{"kinds":[9735],"#e":["{ID}"]}}"##),
            Some((Counter::Zaps, ID.into())),
        ),
        // Anything more or less is a different question: counted in SQL.
        (format!(r##"{{"kinds":[6],"#e":["{ID}"]}}"##), None),
        (
            format!(r##"{{"kinds":[7],"#e":["{ID}"],"since":5}}"##),
            None,
        ),
        (
            format!(r##"{{"kinds":[7],"#e":["{ID}"],"authors":["{KEY}"]}}"##),
            None,
        ),
        (format!(r##"{{"kinds":[7,1],"#e":["{ID}"]}}"##), None),
        (format!(r##"{{"kinds":[7],"#e":["{ID}","{KEY}"]}}"##), None),
        (format!(r##"{{"kinds":[7],"#p":["{KEY}"]}}"##), None),
        (format!(r##"{{"#e":["{ID}"]}}"##), None),
    ];
    for (json, want) in cases {
        assert_eq!(counter(&[filter(&json)]), want, "{json}");
    }
    let one = filter(&format!(r##"{{"kinds":[7],"#e":["{ID}"]}}"##));
    assert_eq!(counter(&[one.clone(), one]), None, "two filters");
}

#[test]
fn client_messages_are_read_or_refused_as_nip01_says() {
    let l = limits();
    assert_eq!(
        parse(r#"["REQ","s",{"kinds":[1]},{"limit":2}]"#, &l),
        Ok(Request::Req {
            sub: "s".into(),
            filters: vec![filter(r#"{"kinds":[1]}"#), filter(r#"{"limit":2}"#)]
        })
    );
    assert_eq!(
        parse(r#"["CLOSE","s"]"#, &l),
        Ok(Request::Close { sub: "s".into() })
    );
    assert_eq!(
        parse(&format!(r#"["EVENT",{{"id":"{ID}"}}]"#), &l),
        Ok(Request::Event { id: ID.into() })
    );
    assert_eq!(
        parse(r#"["NEG-OPEN","n",{"kinds":[1]},"6100"]"#, &l),
        Ok(Request::NegOpen {
            sub: "n".into(),
            filter: filter(r#"{"kinds":[1]}"#),
            message: vec![0x61, 0x00]
        })
    );
    let refused = |text: &str| parse(text, &l).unwrap_err();
    assert!(matches!(refused("not json"), Refusal::Notice(w) if w.starts_with("invalid:")));
    assert!(matches!(refused(r#"{"a":1}"#), Refusal::Notice(_)));
    assert!(matches!(refused(r#"["REQ"]"#), Refusal::Notice(_)));
    assert!(matches!(
        refused(&format!(r#"["REQ","{}",{{}}]"#, "x".repeat(65))),
        Refusal::Notice(_)
    ));
    assert!(matches!(
        refused(r#"["REQ","s",{},{},{}]"#),
        Refusal::Sub { neg: false, why, .. } if why.starts_with("blocked:")
    ));
    assert!(matches!(
        refused(r#"["REQ","s"]"#),
        Refusal::Sub { why, .. } if why.starts_with("invalid:")
    ));
    assert!(matches!(
        refused(r#"["REQ","s",{"ids":["not hex"]}]"#),
        Refusal::Sub { why, .. } if why.starts_with("invalid:")
    ));
    assert!(matches!(
        refused(r#"["NEG-MSG","n","zz"]"#),
        Refusal::Sub { neg: true, why, .. } if why.starts_with("invalid:")
    ));
}

#[test]
fn the_rate_limit_refuses_past_the_burst_and_cuts_off_a_client_that_keeps_on() {
    let start = Instant::now();
    let mut bucket = Bucket::new(1, 3, start);
    let verdicts: Vec<Verdict> = (0..7).map(|_| bucket.take(start)).collect();
    use Verdict::*;
    assert_eq!(
        verdicts,
        [Serve, Serve, Serve, Refuse, Refuse, Refuse, Disconnect]
    );
    let mut bucket = Bucket::new(1, 3, start);
    for _ in 0..4 {
        bucket.take(start);
    }
    // A second later there is a token again, and the refusals start over.
    assert_eq!(bucket.take(start + Duration::from_secs(1)), Serve);
}

#[test]
fn the_tail_finds_rows_committed_behind_higher_ones_and_forgets_unfilled_numbers() {
    let t0 = Instant::now();
    let wait = Duration::from_secs(10);
    let mut tail = Tail::new(0, wait, 4);
    assert_eq!(tail.saw(&[2, 1, 3], t0), vec![1, 2, 3]);
    assert_eq!(tail.saw(&[6], t0), vec![6]);
    assert_eq!(tail.holes(t0), vec![4, 5]);
    assert_eq!(tail.saw(&[5, 6], t0), vec![5], "6 was seen");
    assert_eq!(tail.holes(t0), vec![4]);
    assert_eq!(tail.holes(t0 + wait), Vec::<i64>::new(), "4 expired");
    assert_eq!(tail.saw(&[4], t0 + wait), Vec::<i64>::new());
    // A jump keeps only the highest numbers below it.
    tail.saw(&[100], t0);
    assert_eq!(tail.holes(t0), vec![96, 97, 98, 99]);
    assert_eq!(tail.last(), 100);
}

#[test]
fn a_session_answers_what_each_side_lacks() {
    use negentropy::{Id, Negentropy, NegentropyStorageVector};
    let id = |n: u8| [n; 32];
    let hex = |n: u8| crate::nostr::hex(&id(n));
    let ours: Vec<(String, i64)> = (1..=6).map(|n| (hex(n), i64::from(n))).collect();
    // The client holds 4..=9: it lacks 1..=3 and we lack 7..=9.
    let mut theirs = NegentropyStorageVector::new();
    for n in 4..=9u8 {
        theirs
            .insert(u64::from(n), Id::from_byte_array(id(n)))
            .unwrap();
    }
    theirs.seal().unwrap();
    let mut client = Negentropy::owned(theirs, 0).unwrap();
    let message = client.initiate().unwrap();
    let (mut session, mut answer) = open_session(&ours, &message).unwrap();
    let (mut have, mut need) = (Vec::new(), Vec::new());
    while let Some(next) = client
        .reconcile_with_ids(&answer, &mut have, &mut need)
        .unwrap()
    {
        answer = session.reconcile(&next).unwrap();
    }
    let mut have: Vec<u8> = have.iter().map(|i| i.as_bytes()[0]).collect();
    let mut need: Vec<u8> = need.iter().map(|i| i.as_bytes()[0]).collect();
    have.sort_unstable();
    need.sort_unstable();
    assert_eq!((have, need), (vec![7, 8, 9], vec![1, 2, 3]));
}

#[test]
fn the_document_states_the_limits() {
    let doc: serde_json::Value = serde_json::from_str(&document(&limits())).unwrap();
    assert_eq!(doc["limitation"]["max_limit"], 500);
    assert_eq!(doc["limitation"]["max_filters"], 2);
    assert_eq!(doc["limitation"]["auth_required"], false);
    let nips = doc["supported_nips"].as_array().unwrap();
    for nip in [1, 11, 45, 77] {
        assert!(nips.contains(&serde_json::json!(nip)), "NIP-{nip}");
    }
}
