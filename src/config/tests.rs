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

/// `Settings::load` from a file holding `toml`.
fn load(toml: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    Settings::load(Some(&path))
}

#[test]
fn every_misfit_is_named_at_once() {
    let cases: &[(&str, &[&str])] = &[
        (
            "[database]\nmax_connections = -3\n[nonsense]\nx = 1",
            &["`database.max_connections`", "`nonsense`"],
        ),
        (
            "[sync]\npage_limit = \"x\"\nbogus = 2\n[[filters]]\nkinds = [\"one\"]",
            &["`sync.page_limit`", "`sync.bogus`", "`filters[0].kinds[0]`"],
        ),
        // Each misfit of one list named where the file has it.
        (
            "[[filters]]\nkinds = [1, \"a\", 2, \"b\", \"c\"]",
            &[
                "`filters[0].kinds[1]`",
                "`filters[0].kinds[3]`",
                "`filters[0].kinds[4]`",
            ],
        ),
    ];
    for (toml, keys) in cases {
        let problems = load(toml).unwrap_err().0;
        assert_eq!(problems.len(), keys.len(), "{problems:?}");
        for key in *keys {
            assert!(
                problems.iter().any(|p| p.contains(key)),
                "{key} not in {problems:?}"
            );
        }
    }
}

#[test]
fn a_reload_applies_relays_and_filters_and_names_the_rest() {
    let running = load("relays = [\"wss://one.example\"]").unwrap();
    let read = load(
        "relays = [\"wss://two.example/\"]\n[[filters]]\nkinds = [1]\n\
         [storage]\nworkers = 3\n[fleet]\npoll_secs = 2",
    )
    .unwrap();
    let (applied, ignored) = running.live_update(read);
    assert_eq!(applied.relays, vec!["wss://two.example"]);
    assert_eq!(applied.filters[0].kinds, vec![1]);
    assert_eq!(applied.storage, running.storage);
    assert_eq!(applied.fleet, running.fleet);
    assert_eq!(ignored, vec!["fleet.poll_secs", "storage.workers"]);
    let (_, none) = running.live_update(running.clone());
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn reconcile_from_takes_the_fingerprints_of_relays_provenance_records() {
    use ReconcileFrom::*;
    for (from, source, want) in [
        (Auto, 0, false),
        (Auto, 3, true),
        (Items, 0, false),
        (Items, 3, false),
        (Fingerprints, 0, true),
        (Fingerprints, 3, true),
    ] {
        assert_eq!(from.by_sums(source), want, "{from:?}, relay {source}");
    }
}
