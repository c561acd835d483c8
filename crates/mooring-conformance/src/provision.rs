//! Fresh, isolated databases for tests: one per test, removed when the test ends.
//!
//! - [`sqlite`]: a file in a temporary directory that lives as long as the [`TestDb`].
//! - [`postgres`] / [`mysql`]: `CREATE DATABASE mooring_t_<random hex>` through an admin connection taken from
//!   `MOORING_TEST_POSTGRES_URL` / `MOORING_TEST_MYSQL_URL` (defaults: [`DEFAULT_POSTGRES_URL`],
//!   [`DEFAULT_MYSQL_URL`]), dropped again when the [`TestDb`] is dropped (or by [`TestDb::drop_db`]).
//!
//! A server that cannot be reached fails the test with a message saying to run `scripts/test.sh`, which starts
//! PostgreSQL and MariaDB and creates the `mooring` users: a test that silently skips proves nothing.
//!
//! [`stop_postgres_db`] and [`resume_postgres_db`] take ONE test database offline and back, leaving every other
//! database on the server alone, so failure tests can pull the store out from under a running request.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, PgConnection};

/// Environment variable holding the PostgreSQL admin URL (a role that may create databases).
pub const POSTGRES_URL_ENV: &str = "MOORING_TEST_POSTGRES_URL";
/// Environment variable holding the MySQL/MariaDB admin URL (a user that may create databases).
pub const MYSQL_URL_ENV: &str = "MOORING_TEST_MYSQL_URL";
/// The PostgreSQL admin URL used when [`POSTGRES_URL_ENV`] is unset (the role `scripts/services.sh` creates).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://mooring:mooring@127.0.0.1:5432/postgres";
/// The MySQL/MariaDB admin URL used when [`MYSQL_URL_ENV`] is unset (the user `scripts/services.sh` creates).
pub const DEFAULT_MYSQL_URL: &str = "mysql://mooring:mooring@127.0.0.1:3306/mysql";

/// How long dropping a database at the end of a test may take before we give up on it.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which server a [`TestDb`] lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
    /// A MySQL/MariaDB database.
    MySql,
}

/// A database created for one test. Dropping it removes the database (best effort).
#[derive(Debug)]
pub struct TestDb {
    /// The URL a store under test connects to.
    pub url: String,
    /// Which server the database lives on.
    pub backend: Backend,
    /// The database name (for SQLite, the file path).
    pub name: String,
    /// The admin URL that created it (empty for SQLite).
    admin_url: String,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
    /// Set once the database has been dropped, so `Drop` does not try again.
    dropped: bool,
}

impl TestDb {
    /// For SQLite, the path of the database file.
    pub fn path(&self) -> Option<PathBuf> {
        (self.backend == Backend::Sqlite).then(|| PathBuf::from(&self.name))
    }

    /// Drops the database now, waiting for it, and reports a failure (instead of ignoring it as `Drop` does).
    pub async fn drop_db(mut self) -> Result<(), sqlx::Error> {
        self.dropped = true;
        drop_database(self.backend, &self.admin_url, &self.name).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped || self.backend == Backend::Sqlite {
            return; // The TempDir removes the SQLite file.
        }
        self.dropped = true;
        // Drop cannot await, and we may be inside a runtime, so the DROP DATABASE runs on its own thread and
        // runtime; we wait a bounded time so the process does not exit before it is done.
        let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("drop-test-db".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let result = match runtime {
                    Ok(runtime) => runtime
                        .block_on(drop_database(backend, &admin_url, &name))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    eprintln!("warning: could not drop test database {name}: {e}");
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            let _ = done_rx.recv_timeout(DROP_TIMEOUT);
        }
    }
}

/// A fresh SQLite database file in its own temporary directory.
///
/// # Panics
/// If the temporary directory cannot be created.
pub async fn sqlite() -> TestDb {
    let dir = match tempfile::Builder::new().prefix("mooring-test-").tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot create a temporary directory for a SQLite test database: {e}"),
    };
    let path = dir.path().join("sessions.db");
    let name = path.to_string_lossy().into_owned();
    TestDb {
        url: format!("sqlite://{name}"),
        backend: Backend::Sqlite,
        name,
        admin_url: String::new(),
        _dir: Some(dir),
        dropped: false,
    }
}

/// A fresh PostgreSQL database on the server named by `MOORING_TEST_POSTGRES_URL`.
///
/// # Panics
/// If the server cannot be reached or refuses to create the database; the message says how to fix it.
pub async fn postgres() -> TestDb {
    let admin_url = admin_url(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL);
    let name = random_name();
    let mut admin = connect_pg(&admin_url).await;
    if let Err(e) = admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
    {
        panic!(
            "cannot create PostgreSQL test database {name} as {}: {e}",
            redact(&admin_url)
        );
    }
    let _ = admin.close().await;
    TestDb {
        url: with_database(&admin_url, &name),
        backend: Backend::Postgres,
        name,
        admin_url,
        _dir: None,
        dropped: false,
    }
}

/// A fresh MySQL/MariaDB database on the server named by `MOORING_TEST_MYSQL_URL`.
///
/// # Panics
/// If the server cannot be reached or refuses to create the database; the message says how to fix it.
pub async fn mysql() -> TestDb {
    let admin_url = admin_url(MYSQL_URL_ENV, DEFAULT_MYSQL_URL);
    let name = random_name();
    let mut admin = connect_mysql(&admin_url).await;
    let create = format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin");
    if let Err(e) = admin.execute(AssertSqlSafe(create)).await {
        panic!(
            "cannot create MySQL test database {name} as {}: {e}",
            redact(&admin_url)
        );
    }
    let _ = admin.close().await;
    TestDb {
        url: with_database(&admin_url, &name),
        backend: Backend::MySql,
        name,
        admin_url,
        _dir: None,
        dropped: false,
    }
}

/// Makes one PostgreSQL test database unavailable: new connections are refused and every open session to it
/// is terminated, as if its server had gone away. Other databases on the server are untouched.
///
/// # Panics
/// If `db` is not a PostgreSQL database, or the admin connection fails.
pub async fn stop_postgres_db(db: &TestDb) {
    assert_eq!(
        db.backend,
        Backend::Postgres,
        "stop_postgres_db needs a database from provision::postgres()"
    );
    let mut admin = connect_pg(&db.admin_url).await;
    let steps = [
        format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
            db.name
        ),
    ];
    for step in steps {
        if let Err(e) = admin.execute(AssertSqlSafe(step)).await {
            panic!("cannot stop PostgreSQL test database {}: {e}", db.name);
        }
    }
    let _ = admin.close().await;
}

/// Makes a database stopped by [`stop_postgres_db`] available again.
///
/// # Panics
/// If `db` is not a PostgreSQL database, or the admin connection fails.
pub async fn resume_postgres_db(db: &TestDb) {
    assert_eq!(
        db.backend,
        Backend::Postgres,
        "resume_postgres_db needs a database from provision::postgres()"
    );
    let mut admin = connect_pg(&db.admin_url).await;
    let step = format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name);
    if let Err(e) = admin.execute(AssertSqlSafe(step)).await {
        panic!("cannot resume PostgreSQL test database {}: {e}", db.name);
    }
    let _ = admin.close().await;
}

/// The admin URL from the environment, or the default.
fn admin_url(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `mooring_t_` and 16 random hex digits: unique per test, safe to splice into SQL unquoted.
fn random_name() -> String {
    let mut bytes = [0u8; 8];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system CSPRNG is unavailable: {e}");
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("mooring_t_{hex}")
}

async fn connect_pg(url: &str) -> PgConnection {
    match PgConnection::connect(url).await {
        Ok(conn) => conn,
        Err(e) => panic!("{}", unreachable("PostgreSQL", POSTGRES_URL_ENV, url, &e)),
    }
}

async fn connect_mysql(url: &str) -> MySqlConnection {
    match MySqlConnection::connect(url).await {
        Ok(conn) => conn,
        Err(e) => panic!("{}", unreachable("MySQL/MariaDB", MYSQL_URL_ENV, url, &e)),
    }
}

fn unreachable(server: &str, var: &str, url: &str, err: &sqlx::Error) -> String {
    format!(
        "cannot connect to {server} at {} ({err}). Run scripts/test.sh, which starts PostgreSQL and MariaDB and \
         creates the `mooring` users (or run scripts/services.sh once as root), or point {var} at an admin URL \
         that may create databases.",
        redact(url)
    )
}

async fn drop_database(backend: Backend, admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    match backend {
        Backend::Sqlite => Ok(()),
        Backend::Postgres => {
            let mut admin = PgConnection::connect(admin_url).await?;
            // FORCE terminates the pools the test left open.
            admin
                .execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await?;
            admin.close().await
        }
        Backend::MySql => {
            let mut admin = MySqlConnection::connect(admin_url).await?;
            admin
                .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}")))
                .await?;
            admin.close().await
        }
    }
}

/// The admin URL with its database (path) replaced by `name`; the query string is kept.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// The URL with its password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_into_the_admin_url() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("mysql://u@h/mysql?ssl-mode=DISABLED", "x"),
            "mysql://u@h/x?ssl-mode=DISABLED"
        );
        assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn names_are_fresh_and_sql_safe() {
        let (a, b) = (random_name(), random_name());
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{a}"
        );
        assert!(a.len() < 64);
    }
}
