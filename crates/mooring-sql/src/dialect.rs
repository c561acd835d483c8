//! The three SQL dialects the store speaks, and the one rewrite `sqlx::Any` does not do for us.
//!
//! Every query in this crate is written once with `?` placeholders. SQLite and MySQL take them as they are;
//! PostgreSQL wants `$1, $2, ...`, and sqlx's `Any` driver passes SQL through untouched, so
//! [`Dialect::sql`] numbers them. Identifiers that collide with keywords (the `key` column is reserved in
//! MySQL) are quoted per dialect.

use std::borrow::Cow;

use crate::error::SqlStoreError;

/// A SQL dialect, chosen from the scheme of the database URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite (`sqlite:` URLs): the embedded default.
    Sqlite,
    /// PostgreSQL (`postgres:` or `postgresql:` URLs).
    Postgres,
    /// MySQL or MariaDB (`mysql:` or `mariadb:` URLs).
    MySql,
}

impl Dialect {
    /// The dialect of a database URL, from its scheme. Only the scheme is ever echoed back in the error, never
    /// the URL (it may hold a password).
    pub fn from_url(url: &str) -> Result<Self, SqlStoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(SqlStoreError::UnsupportedUrl {
                scheme: scheme.chars().take(32).collect(),
            }),
        }
    }

    /// Rewrites a query written with `?` placeholders for this dialect: PostgreSQL gets `$1, $2, ...` in order,
    /// the others get the text unchanged (borrowed, no allocation).
    ///
    /// A `?` inside a string literal (`'...'`), a quoted identifier (`"..."` or `` `...` ``) or a comment
    /// (`-- ...`, `/* ... */`) is left alone. Every other `?` is a placeholder, so PostgreSQL's `?`-family JSON
    /// operators cannot be written through this function (use their function forms, e.g. `jsonb_exists`).
    pub fn sql<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if *self != Self::Postgres || !text.contains('?') {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 8);
        let mut n = 0u32;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '?' => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                '\'' | '"' | '`' => {
                    // A doubled quote inside the literal reads as closing then reopening, which copies it
                    // through unchanged, so escaping needs no special case.
                    out.push(c);
                    for inner in chars.by_ref() {
                        out.push(inner);
                        if inner == c {
                            break;
                        }
                    }
                }
                '-' if chars.peek() == Some(&'-') => {
                    out.push(c);
                    for inner in chars.by_ref() {
                        out.push(inner);
                        if inner == '\n' {
                            break;
                        }
                    }
                }
                '/' if chars.peek() == Some(&'*') => {
                    out.push(c);
                    let mut prev = '\0';
                    for inner in chars.by_ref() {
                        out.push(inner);
                        if prev == '*' && inner == '/' {
                            break;
                        }
                        prev = inner;
                    }
                }
                _ => out.push(c),
            }
        }
        Cow::Owned(out)
    }

    /// Quotes an identifier for this dialect. Only for names written in this crate, never for input.
    pub(crate) fn quote(&self, ident: &str) -> String {
        match self {
            Self::MySql => format!("`{ident}`"),
            Self::Sqlite | Self::Postgres => format!("\"{ident}\""),
        }
    }

    /// A short name for logs and metrics.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered_in_order() {
        let sql = "UPDATE t SET a = ?, b = ? WHERE k = ? AND v = ?";
        assert_eq!(
            Dialect::Postgres.sql(sql),
            "UPDATE t SET a = $1, b = $2 WHERE k = $3 AND v = $4"
        );
    }

    #[test]
    fn other_dialects_borrow_the_text_unchanged() {
        let sql = "SELECT a FROM t WHERE k = ?";
        for dialect in [Dialect::Sqlite, Dialect::MySql] {
            assert!(matches!(dialect.sql(sql), Cow::Borrowed(s) if s == sql));
        }
        assert!(matches!(
            Dialect::Postgres.sql("SELECT 1"),
            Cow::Borrowed("SELECT 1")
        ));
    }

    #[test]
    fn question_marks_in_literals_identifiers_and_comments_are_kept() {
        let sql = "SELECT '?', 'it''s ?', \"odd?name\" FROM t -- why?\nWHERE a = ? /* or ? */ AND b = ?";
        assert_eq!(
            Dialect::Postgres.sql(sql),
            "SELECT '?', 'it''s ?', \"odd?name\" FROM t -- why?\nWHERE a = $1 /* or ? */ AND b = $2"
        );
    }

    #[test]
    fn ten_and_more_placeholders() {
        let sql = ["?"; 12].join(",");
        let expected = (1..=12).map(|n| format!("${n}")).collect::<Vec<_>>().join(",");
        assert_eq!(Dialect::Postgres.sql(&sql), expected);
    }

    #[test]
    fn dialect_comes_from_the_scheme() {
        assert_eq!(
            Dialect::from_url("sqlite://data/s.db?mode=rwc").ok(),
            Some(Dialect::Sqlite)
        );
        assert_eq!(Dialect::from_url("sqlite::memory:").ok(), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::from_url("postgres://u:p@h/db").ok(),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::from_url("PostgreSQL://h/db").ok(),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::from_url("mysql://h/db").ok(), Some(Dialect::MySql));
        assert_eq!(Dialect::from_url("mariadb://h/db").ok(), Some(Dialect::MySql));
    }

    #[test]
    fn unknown_scheme_error_does_not_echo_the_url() {
        let err = Dialect::from_url("redis://:hunter2@h:6379")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("redis"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
