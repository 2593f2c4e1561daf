//! What the cursor table holds per relay and filter: the synced cursor, the progress
//! of an interrupted window, and when the last repair pass ran. Each is a row whose
//! key is the filter's key (`filter::filter_key`) with a suffix naming the part.

/// Which of a filter's cursor rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything up to here is synced.
    Synced,
    /// An interrupted window started here (`Backfill::top`).
    BackfillTop,
    /// Everything from here up to `BackfillTop` is committed.
    BackfillFloor,
    /// When the last repair pass ran.
    Repaired,
}

impl Part {
    const SUFFIXES: [(Part, &'static str); 3] = [
        (Part::BackfillTop, "#backfill-top"),
        (Part::BackfillFloor, "#backfill-floor"),
        (Part::Repaired, "#repair"),
    ];

    fn suffix(self) -> &'static str {
        Self::SUFFIXES
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, s)| s)
    }
}

/// A cursor row's key: a filter key and which of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorKey {
    pub filter: String,
    pub part: Part,
}

impl CursorKey {
    pub fn new(filter: &str, part: Part) -> Self {
        Self {
            filter: filter.to_owned(),
            part,
        }
    }

    /// The key as stored.
    pub fn key(&self) -> String {
        format!("{}{}", self.filter, self.part.suffix())
    }

    /// A stored key. Filter keys are JSON and may hold `#` themselves (`"#e"`): only
    /// a known suffix at the end names a part.
    pub fn parse(stored: &str) -> Self {
        for (part, suffix) in Part::SUFFIXES {
            if let Some(filter) = stored.strip_suffix(suffix) {
                return Self::new(filter, part);
            }
        }
        Self::new(stored, Part::Synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_written() {
        let tagged = r##"{"#e":["ab"],"authors":[],"kinds":[1],"since":0}"##;
        let cases = [
            (r#"{"kinds":[1]}"#, Part::Synced, r#"{"kinds":[1]}"#),
            (
                r#"{"kinds":[1]}"#,
                Part::BackfillTop,
                r#"{"kinds":[1]}#backfill-top"#,
            ),
            (
                r#"{"kinds":[1]}"#,
                Part::BackfillFloor,
                r#"{"kinds":[1]}#backfill-floor"#,
            ),
            (
                r#"{"kinds":[1]}"#,
                Part::Repaired,
                r#"{"kinds":[1]}#repair"#,
            ),
            (tagged, Part::Synced, tagged),
        ];
        for (filter, part, stored) in cases {
            let key = CursorKey::new(filter, part);
            assert_eq!(key.key(), stored);
            assert_eq!(CursorKey::parse(stored), key, "{stored}");
        }
        let repair_of_tagged = format!("{tagged}#repair");
        assert_eq!(
            CursorKey::parse(&repair_of_tagged),
            CursorKey::new(tagged, Part::Repaired)
        );
    }
}
