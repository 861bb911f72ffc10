//! The MySQL columns an event's strings are stored in (`migrations/`), and the one rule that
//! makes every value fit its column.
//!
//! The widths are written here once; a unit test reads the migration and fails when a width
//! here and the column it names disagree, so the gateway's promise ("what I accept can be
//! stored") cannot drift from the schema.
//!
//! The rule, [`Column::fit`]: a value fits when its length, counted as MySQL counts it
//! (characters for `VARCHAR(n)` in utf8mb4, bytes for `TEXT`), is at most the width. A value
//! that does not fit is refused, cut or dropped, as its column's [`Overflow`] says.

use crate::FieldError;

/// How MySQL measures a column's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `VARCHAR(n)` with utf8mb4: `n` characters, whatever their encoded size.
    Chars,
    /// `TEXT`: 65,535 bytes.
    Bytes,
}

/// What happens to a value longer than its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The event is refused with a field error. A shortened id or name is another id or name,
    /// and would silently merge with it (two user ids cut to one prefix count as one person).
    Refuse,
    /// The value is cut at a character boundary. The start of a title, a user agent or a
    /// version string is still true, and the event is worth more than the value's tail.
    Cut,
    /// The value is left out: a cut IP address is another host's.
    Drop,
}

/// One string column of `user_events` (the same names and widths recur in `users`, `sessions`
/// and the rollups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    name: &'static str,
    width: usize,
    unit: Unit,
    overflow: Overflow,
}

/// What a `TEXT` column holds, in bytes.
pub const TEXT_BYTES: usize = 65_535;

pub const PROJECT: Column = Column::varchar("project", 64, Overflow::Refuse);
pub const EVENT_ID: Column = Column::varchar("event_id", 128, Overflow::Refuse);
pub const EVENT_TYPE: Column = Column::varchar("event_type", 64, Overflow::Refuse);
pub const EVENT_NAME: Column = Column::varchar("event_name", 1024, Overflow::Refuse);
pub const USER_ID: Column = Column::varchar("user_id", 255, Overflow::Refuse);
pub const ANONYMOUS_ID: Column = Column::varchar("anonymous_id", 255, Overflow::Refuse);
/// `user_id`, else `anonymous_id`: fits whenever they do (checked when this compiles).
pub const DISTINCT_ID: Column = Column::varchar("distinct_id", 255, Overflow::Refuse);
const _: () =
    assert!(USER_ID.width <= DISTINCT_ID.width && ANONYMOUS_ID.width <= DISTINCT_ID.width);
pub const SESSION_ID: Column = Column::varchar("session_id", 128, Overflow::Refuse);
pub const PAGE_URL: Column = Column::text("page_url", Overflow::Cut);
/// Cut rather than refused: the migration keeps 512 characters so paths can be indexed and
/// rolled up, and the worker has always stored the path cut so.
pub const PAGE_PATH: Column = Column::varchar("page_path", 512, Overflow::Cut);
pub const PAGE_TITLE: Column = Column::text("page_title", Overflow::Cut);
pub const REFERRER: Column = Column::text("referrer", Overflow::Cut);
pub const ELEMENT_TAG: Column = Column::varchar("element_tag", 64, Overflow::Refuse);
pub const ELEMENT_ID: Column = Column::varchar("element_id", 1024, Overflow::Refuse);
pub const ELEMENT_CLASSES: Column = Column::text("element_classes", Overflow::Cut);
pub const ELEMENT_TEXT: Column = Column::text("element_text", Overflow::Cut);
pub const ELEMENT_SELECTOR: Column = Column::text("element_selector", Overflow::Cut);
pub const USER_AGENT: Column = Column::varchar("user_agent", 512, Overflow::Cut);
pub const BROWSER: Column = Column::varchar("browser", 64, Overflow::Cut);
pub const BROWSER_VERSION: Column = Column::varchar("browser_version", 64, Overflow::Cut);
pub const OS: Column = Column::varchar("os", 64, Overflow::Cut);
pub const DEVICE_TYPE: Column = Column::varchar("device_type", 16, Overflow::Cut);
/// 45 characters hold any textual IPv6 address, IPv4-mapped ones included.
pub const IP: Column = Column::varchar("ip", 45, Overflow::Drop);
/// Acquisition ([`crate::acquisition`]): values are clipped to 255 characters there.
pub const UTM_SOURCE: Column = Column::varchar("utm_source", 255, Overflow::Cut);
pub const UTM_MEDIUM: Column = Column::varchar("utm_medium", 255, Overflow::Cut);
pub const UTM_CAMPAIGN: Column = Column::varchar("utm_campaign", 255, Overflow::Cut);
pub const UTM_TERM: Column = Column::varchar("utm_term", 255, Overflow::Cut);
pub const UTM_CONTENT: Column = Column::varchar("utm_content", 255, Overflow::Cut);
pub const CLICK_ID_TYPE: Column = Column::varchar("click_id_type", 16, Overflow::Refuse);
pub const CLICK_ID: Column = Column::varchar("click_id", 255, Overflow::Cut);
pub const REFERRER_DOMAIN: Column = Column::varchar("referrer_domain", 255, Overflow::Cut);
pub const CHANNEL: Column = Column::varchar("channel", 24, Overflow::Refuse);
/// ISO 3166-1 alpha-2; a cut code would name another country.
pub const COUNTRY: Column = Column::varchar("country", 2, Overflow::Drop);
/// ISO 3166-2 subdivision code without the country (`IDF`).
pub const REGION: Column = Column::varchar("region", 8, Overflow::Drop);
pub const CITY: Column = Column::varchar("city", 128, Overflow::Cut);
/// Written from [`crate::TimestampSource::as_str`]; a test checks every variant fits.
pub const TIMESTAMP_SOURCE: Column = Column::varchar("timestamp_source", 24, Overflow::Refuse);

/// Every string column of `user_events`, for the test that compares them with the migration.
pub const ALL: [Column; 36] = [
    PROJECT,
    EVENT_ID,
    EVENT_TYPE,
    EVENT_NAME,
    USER_ID,
    ANONYMOUS_ID,
    DISTINCT_ID,
    SESSION_ID,
    PAGE_URL,
    PAGE_PATH,
    PAGE_TITLE,
    REFERRER,
    ELEMENT_TAG,
    ELEMENT_ID,
    ELEMENT_CLASSES,
    ELEMENT_TEXT,
    ELEMENT_SELECTOR,
    USER_AGENT,
    BROWSER,
    BROWSER_VERSION,
    OS,
    DEVICE_TYPE,
    IP,
    TIMESTAMP_SOURCE,
    UTM_SOURCE,
    UTM_MEDIUM,
    UTM_CAMPAIGN,
    UTM_TERM,
    UTM_CONTENT,
    CLICK_ID_TYPE,
    CLICK_ID,
    REFERRER_DOMAIN,
    CHANNEL,
    COUNTRY,
    REGION,
    CITY,
];

impl Column {
    const fn varchar(name: &'static str, width: usize, overflow: Overflow) -> Self {
        Self {
            name,
            width,
            unit: Unit::Chars,
            overflow,
        }
    }

    const fn text(name: &'static str, overflow: Overflow) -> Self {
        Self {
            name,
            width: TEXT_BYTES,
            unit: Unit::Bytes,
            overflow,
        }
    }

    /// The column's name in `user_events`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// How much the column holds, in [`Column::unit`]s.
    pub const fn width(&self) -> usize {
        self.width
    }

    pub const fn unit(&self) -> Unit {
        self.unit
    }

    pub const fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Whether MySQL stores `value` in this column whole.
    pub fn fits(&self, value: &str) -> bool {
        // A character is at least one byte: the byte length settles most values without
        // walking the characters.
        value.len() <= self.width || (self.unit == Unit::Chars && self.length(value) <= self.width)
    }

    /// The length of `value` as this column counts it.
    pub fn length(&self, value: &str) -> usize {
        match self.unit {
            Unit::Chars => value.chars().count(),
            Unit::Bytes => value.len(),
        }
    }

    /// The longest start of `value` that fits, cut at a character boundary.
    pub fn cut<'a>(&self, value: &'a str) -> &'a str {
        if value.len() <= self.width {
            return value;
        }
        match self.unit {
            Unit::Chars => match value.char_indices().nth(self.width) {
                Some((end, _)) => &value[..end],
                None => value,
            },
            Unit::Bytes => {
                let mut end = self.width;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                &value[..end]
            }
        }
    }

    /// The one rule: `value` as it will be stored (`None`: left out), or why the event is
    /// refused, naming the client's `field`.
    pub fn fit(&self, mut value: String, field: &str) -> Result<Option<String>, FieldError> {
        if self.fits(&value) {
            return Ok(Some(value));
        }
        match self.overflow {
            Overflow::Refuse => Err(FieldError::new(
                field,
                format!(
                    "must be at most {} {}, got {}",
                    self.width,
                    match self.unit {
                        Unit::Chars => "characters",
                        Unit::Bytes => "bytes",
                    },
                    self.length(&value)
                ),
            )),
            Overflow::Cut => {
                let end = self.cut(&value).len();
                value.truncate(end);
                Ok(Some(value))
            }
            Overflow::Drop => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The migrations, in the order sqlx applies them. A test below checks that this is every
    /// file of `migrations/`, so a later `ALTER TABLE` cannot go unread.
    const MIGRATIONS: [(&str, &str); 8] = [
        (
            "20261122000001_initial.sql",
            include_str!("../../../migrations/20261122000001_initial.sql"),
        ),
        (
            "20261122000002_stats_covering_indexes.sql",
            include_str!("../../../migrations/20261122000002_stats_covering_indexes.sql"),
        ),
        (
            "20261129100000_privacy.sql",
            include_str!("../../../migrations/20261129100000_privacy.sql"),
        ),
        (
            "20261129110000_event_origin.sql",
            include_str!("../../../migrations/20261129110000_event_origin.sql"),
        ),
        (
            "20261129120000_acquisition_geo_bots.sql",
            include_str!("../../../migrations/20261129120000_acquisition_geo_bots.sql"),
        ),
        (
            "20261129130000_server_sessions.sql",
            include_str!("../../../migrations/20261129130000_server_sessions.sql"),
        ),
        (
            "20261129140000_person_links.sql",
            include_str!("../../../migrations/20261129140000_person_links.sql"),
        ),
        (
            "20261129150000_partitioned_events.sql",
            include_str!("../../../migrations/20261129150000_partitioned_events.sql"),
        ),
    ];

    const TYPES: [&str; 13] = [
        "VARCHAR",
        "CHAR",
        "TINYTEXT",
        "TEXT",
        "MEDIUMTEXT",
        "LONGTEXT",
        "JSON",
        "DATETIME",
        "TIMESTAMP",
        "DATE",
        "INT",
        "BIGINT",
        "SMALLINT",
    ];

    /// `(table, column) -> declared type` (`VARCHAR(64)`, `TEXT`, `DATETIME(3)` ...), the last
    /// declaration winning. Reads column lines of `CREATE TABLE` and the `ADD`, `MODIFY` and
    /// `CHANGE` clauses of `ALTER TABLE`: in all of them the column's name is the word before
    /// its type.
    fn declared_columns() -> BTreeMap<(String, String), String> {
        declared_in(MIGRATIONS.map(|(_, sql)| sql))
    }

    fn declared_in<'a>(
        migrations: impl IntoIterator<Item = &'a str>,
    ) -> BTreeMap<(String, String), String> {
        let mut columns = BTreeMap::new();
        let mut table: Option<String> = None;
        for sql in migrations {
            for line in sql.lines() {
                let code = line.split("--").next().unwrap_or("");
                let words: Vec<&str> = code
                    .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                    .filter(|w| !w.is_empty())
                    .collect();
                let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
                // A column's name is at least one word in: `ALTER TABLE t MODIFY c TEXT` names
                // its table and its column on one line.
                let mut first = 1;
                if let Some(i) = upper
                    .windows(2)
                    .position(|w| w[1] == "TABLE" && (w[0] == "CREATE" || w[0] == "ALTER"))
                {
                    table = words
                        .get(i + 2)
                        .map(|t| t.trim_matches(['(', '`']).to_owned());
                    first = i + 4;
                }
                let type_at = (first..upper.len()).find(|&i| {
                    let base = upper[i].split('(').next().unwrap_or("");
                    TYPES.contains(&base)
                });
                if let (Some(t), Some(i)) = (&table, type_at) {
                    columns.insert(
                        (t.clone(), words[i - 1].trim_matches('`').to_owned()),
                        upper[i].clone(),
                    );
                }
                if code.trim_end().ends_with(';') {
                    table = None;
                }
            }
        }
        columns
    }

    fn declared_type(column: &Column) -> String {
        match column.unit {
            Unit::Chars => format!("VARCHAR({})", column.width),
            Unit::Bytes => "TEXT".to_owned(),
        }
    }

    #[test]
    fn every_width_here_is_the_width_the_migration_declares() {
        let declared = declared_columns();
        for column in ALL.iter() {
            let key = ("user_events".to_owned(), column.name.to_owned());
            assert_eq!(
                declared.get(&key),
                Some(&declared_type(column)),
                "user_events.{}",
                column.name
            );
        }
    }

    #[test]
    fn every_string_column_of_user_events_has_a_width_here() {
        let declared = declared_columns();
        let strings: Vec<&str> = declared
            .iter()
            .filter(|((table, _), ty)| {
                table == "user_events" && (ty.starts_with("VARCHAR") || ty.ends_with("TEXT"))
            })
            .map(|((_, name), _)| name.as_str())
            .collect();
        assert!(strings.len() > 20, "the parser found {strings:?}");
        for name in &strings {
            assert!(
                ALL.iter().any(|c| c.name == *name),
                "user_events.{name} has no width in columns.rs"
            );
        }
        assert_eq!(ALL.len(), strings.len());
    }

    #[test]
    fn other_tables_repeat_the_same_widths() {
        let declared = declared_columns();
        let mut compared = 0;
        for ((table, name), ty) in &declared {
            if let Some(column) = ALL.iter().find(|c| c.name == name) {
                assert_eq!(ty, &declared_type(column), "{table}.{name}");
                compared += 1;
            }
        }
        // users, sessions and the rollups repeat project, ids, paths and the device columns.
        assert!(compared > ALL.len() + 10, "compared {compared}");
    }

    #[test]
    fn event_times_are_datetime_with_milliseconds() {
        // crate::time::LATEST_TIME is the last millisecond of DATETIME(3).
        let declared = declared_columns();
        for name in ["event_time", "client_time", "received_at"] {
            let key = ("user_events".to_owned(), name.to_owned());
            assert_eq!(declared.get(&key).map(String::as_str), Some("DATETIME(3)"));
        }
    }

    #[test]
    fn a_later_alter_table_overrides_the_width() {
        let declared = declared_in([
            "CREATE TABLE t (\n    a VARCHAR(8) NOT NULL,\n    b TEXT NULL -- note\n) ENGINE = InnoDB;",
            "ALTER TABLE t MODIFY COLUMN a VARCHAR(16) NOT NULL;",
            "ALTER TABLE t\n    CHANGE b c VARCHAR(4),\n    ADD COLUMN d DATETIME(3);",
        ]);
        let get = |c: &str| declared.get(&("t".to_owned(), c.to_owned())).cloned();
        assert_eq!(get("a").as_deref(), Some("VARCHAR(16)"));
        assert_eq!(get("c").as_deref(), Some("VARCHAR(4)"));
        assert_eq!(get("d").as_deref(), Some("DATETIME(3)"));
    }

    #[test]
    fn the_migrations_read_here_are_all_of_them() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let read: Vec<&str> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, read, "add the new migration to MIGRATIONS");
    }

    #[test]
    fn varchar_counts_characters_and_text_counts_bytes() {
        let clef = "𝄞".repeat(64); // 64 characters, 256 bytes
        assert!(BROWSER.fits(&clef));
        assert!(!BROWSER.fits(&format!("{clef}a")));
        assert_eq!(BROWSER.cut(&format!("{clef}a")), clef);
        let text = format!("{}𝄞", "a".repeat(TEXT_BYTES - 2)); // 65,537 bytes
        assert!(!PAGE_TITLE.fits(&text));
        assert_eq!(PAGE_TITLE.cut(&text), "a".repeat(TEXT_BYTES - 2));
    }

    #[test]
    fn overflow_refuses_cuts_or_drops() {
        let long = "é".repeat(1025);
        let err = EVENT_NAME.fit(long.clone(), "event_name").unwrap_err();
        assert_eq!(err.field, "event_name");
        assert_eq!(err.reason, "must be at most 1024 characters, got 1025");
        let cut = USER_AGENT.fit(long, "context.user_agent").unwrap().unwrap();
        assert_eq!(cut.chars().count(), 512);
        assert_eq!(IP.fit("1".repeat(46), "ip").unwrap(), None);
        assert_eq!(
            IP.fit("::ffff:192.0.2.1".to_owned(), "ip")
                .unwrap()
                .as_deref(),
            Some("::ffff:192.0.2.1")
        );
    }
}
