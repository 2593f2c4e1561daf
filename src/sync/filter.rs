//! NIP-01 filters from the configuration: what a REQ asks for (the configured filter,
//! narrowed as the paging planner says), and the cursor key a filter is kept under.

use nostr_sdk::{Filter, Kind, PublicKey, SingleLetterTag, Timestamp};

use crate::config::FilterSettings;
use crate::sync::plan::Query;

/// The filter of `f`, narrowed to what `q` asks for.
pub fn narrowed(f: &FilterSettings, q: &Query) -> Filter {
    let mut filter = to_filter(f).since(Timestamp::from(q.since)).limit(q.limit);
    if let Some(u) = q.until {
        filter = filter.until(Timestamp::from(u));
    }
    // Replaced, not added to: the SDK's `kinds()` and `authors()` extend the sets the
    // configured filter already has, which would undo the narrowing.
    if let Some(kinds) = &q.kinds {
        filter.kinds = Some(kinds.iter().map(|k| Kind::from(*k)).collect());
    }
    if let Some(authors) = &q.authors {
        filter.authors = Some(
            authors
                .iter()
                .filter_map(|a| PublicKey::from_hex(a).ok())
                .collect(),
        );
    }
    filter
}

/// The filter `f` configures, with no window.
pub fn to_filter(f: &FilterSettings) -> Filter {
    let mut filter = Filter::new();
    if !f.kinds.is_empty() {
        filter = filter.kinds(f.kinds.iter().map(|k| Kind::from(*k)));
    }
    for (letter, values) in f.tags() {
        if let Ok(tag) = SingleLetterTag::from_char(letter) {
            filter = filter.custom_tags(tag, values.iter().cloned());
        }
    }
    let authors: Vec<PublicKey> = f
        .authors
        .iter()
        .filter_map(|a| PublicKey::from_hex(a).ok())
        .collect();
    if !authors.is_empty() {
        filter = filter.authors(authors);
    }
    filter
}

/// Longest cursor key kept as it is: the key is part of a database index key, with
/// the relay's URL (PostgreSQL's btree entries stop at about 2.7 kB, and a filter of
/// a few hundred authors is 17 kB of JSON). Keys up to this long were kept whole
/// before, and stay so: their cursors carry over.
pub const MAX_KEY_BYTES: usize = 2_400;

/// The cursor key of a filter: what it selects, without the moving window. Tag
/// filters and `until` appear only when set, so keys of filters without them stay
/// those earlier versions saved. A key longer than [`MAX_KEY_BYTES`] (many authors or
/// tag values) keeps its kinds, `since` and `until`, and gives for the lists only
/// their lengths and the SHA-256 of the whole key.
pub fn filter_key(f: &FilterSettings) -> String {
    let full = full_key(f);
    if full.len() <= MAX_KEY_BYTES {
        return full;
    }
    use bitcoin::hashes::{sha256, Hash};
    let digest = sha256::Hash::hash(full.as_bytes());
    let mut kinds = f.kinds.clone();
    kinds.sort_unstable();
    let mut key = serde_json::json!({
        "kinds": kinds,
        "authors": f.authors.len(),
        "since": f.since,
        "sha256": digest.to_string(),
    });
    for (letter, values) in f.tags() {
        key[format!("#{letter}")] = serde_json::json!(values.len());
    }
    if f.until > 0 {
        key["until"] = serde_json::json!(f.until);
    }
    key.to_string()
}

fn full_key(f: &FilterSettings) -> String {
    let mut kinds = f.kinds.clone();
    kinds.sort_unstable();
    let mut authors = f.authors.clone();
    authors.sort();
    let mut key = serde_json::json!({ "kinds": kinds, "authors": authors, "since": f.since });
    for (letter, values) in f.tags() {
        let mut values = values.to_vec();
        values.sort();
        key[format!("#{letter}")] = serde_json::json!(values);
    }
    if f.until > 0 {
        key["until"] = serde_json::json!(f.until);
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    /// Keys name what a filter selects, in a stable order, and stay those earlier
    /// versions saved for filters without tags or an end.
    #[test]
    fn long_keys_are_digested_and_stay_distinct() {
        let authors = |n: usize, salt: &str| -> Vec<String> {
            (0..n).map(|i| format!("{salt}{i:063}")).collect()
        };
        let f = |authors: Vec<String>| FilterSettings {
            kinds: vec![1, 7],
            authors,
            since: 5,
            ..Default::default()
        };
        let short = filter_key(&f(authors(3, "a")));
        assert!(short.contains("\"authors\":[\""), "{short}");
        let long = filter_key(&f(authors(300, "a")));
        let other = filter_key(&f(authors(300, "b")));
        let reordered = {
            let mut a = authors(300, "a");
            a.reverse();
            filter_key(&f(a))
        };
        assert!(long.len() <= MAX_KEY_BYTES, "{} bytes", long.len());
        assert!(
            long.contains("\"authors\":300") && long.contains("\"kinds\":[1,7]"),
            "{long}"
        );
        assert_ne!(long, other);
        assert_eq!(long, reordered);
    }

    #[test]
    fn cursor_keys() {
        let plain = FilterSettings {
            kinds: vec![7, 1],
            ..Default::default()
        };
        assert_eq!(
            filter_key(&plain),
            r#"{"authors":[],"kinds":[1,7],"since":0}"#
        );
        let tagged = FilterSettings {
            kinds: vec![1, 7],
            t: vec!["b".into(), "a".into()],
            until: 9,
            ..Default::default()
        };
        assert_eq!(
            filter_key(&tagged),
            r##"{"#t":["a","b"],"authors":[],"kinds":[1,7],"since":0,"until":9}"##
        );
    }

    #[test]
    fn requests_are_the_filter_narrowed_as_planned() {
        let other = "c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
        let f = FilterSettings {
            kinds: vec![1, 7],
            authors: vec![PK.into(), other.into()],
            ..Default::default()
        };
        let q = Query {
            since: 10,
            until: Some(20),
            kinds: Some(vec![7]),
            authors: Some(vec![PK.into()]),
            limit: 500,
        };
        let json: serde_json::Value =
            serde_json::from_str(&nostr_sdk::JsonUtil::as_json(&narrowed(&f, &q))).unwrap();
        assert_eq!(json["since"], 10);
        assert_eq!(json["until"], 20);
        assert_eq!(json["limit"], 500);
        assert_eq!(json["kinds"], serde_json::json!([7]));
        assert_eq!(json["authors"], serde_json::json!([PK]));
    }
}
