use super::*;

const PK: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

#[test]
fn default_toml_matches_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let text = std::fs::read_to_string(&path).expect("config/default.toml");
    let from_file: Settings = toml::from_str(&text).expect("parse config/default.toml");
    assert_eq!(from_file, Settings::default());
}

#[test]
fn relay_tables_and_filters_are_read_and_checked() {
    let text = format!(
        r##"
        relays = ["wss://one.example"]
        [[filters]]
        kinds = [1]
        "#t" = ["nostr"]
        [[relay]]
        url = "wss://two.example"
        page_limit = 100
        auth_key = "{}"
        [[relay.filters]]
        authors = ["{PK}", "{PK}", "{PK}"]
        "#e" = ["{}"]
        until = 10
        [sync]
        max_authors_per_req = 2
        "##,
        "1".repeat(64),
        "ab".repeat(32)
    );
    let s: Settings = toml::from_str(&text).unwrap();
    s.validate().unwrap();
    assert_eq!(
        s.relay_urls(),
        vec!["wss://one.example", "wss://two.example"]
    );
    let one = s.filters_for("wss://one.example");
    assert_eq!((one.len(), one[0].tags().len()), (1, 1));
    let two = s.filters_for("wss://two.example");
    let sizes: Vec<usize> = two.iter().map(|f| f.authors.len()).collect();
    assert_eq!(sizes, vec![2, 1], "three authors, two per REQ");
    assert!(two.iter().all(|f| f.until == 10 && f.e.len() == 1));
    assert_eq!(s.page_limit_for("wss://two.example"), 100);
    assert_eq!(s.page_limit_for("wss://one.example"), 0);
    assert!(s.auth_for("wss://two.example").unwrap().is_some());
}
