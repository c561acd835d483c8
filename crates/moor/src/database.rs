//! `moor backup-db` and `moor restore-db`: backups of the app's database, taken and restored by the
//! database's own tools, kept in the signed envelope of [`crate::archive`] beside the session backups.
//!
//! - **Backup.** PostgreSQL: `pg_dump -Fc --no-owner --no-privileges` (the custom format, restored by
//!   `pg_restore`). MySQL/MariaDB: `mysqldump --single-transaction --routines --triggers --events --hex-blob
//!   --no-tablespaces` (a consistent InnoDB snapshot without locking, binary columns as hex so the SQL text
//!   survives any client charset). Or the dump another process wrote (`--file`): the chart runs the tool from
//!   the database's own image in an init container, so its version always matches the server. The dump is
//!   sealed as [`Kind::Database`] with the engine and format in the header (`postgres-custom`, `mysql-sql`).
//! - **Restore.** The newest database backup is fetched and opened (a signature that does not match
//!   refuses, nothing is written), then either written to a file (mode 0600) for another container to feed
//!   to its tool, or restored with `pg_restore --clean --if-exists --no-owner --no-privileges -d` / `mysql`
//!   (the dump on standard input).
//! - **Secrets.** A password in a database URL reaches the tools through their environment (`PGPASSWORD`,
//!   `MYSQL_PWD`), never their arguments, and messages show URLs without it.
//! - SQLite is out of scope: its database is a file next to the app; copy it with `sqlite3 .backup`.
//!
//! The drill ([`crate::drill`]) uses [`create_database`], [`drop_database`] and [`row_counts`] to restore
//! into a scratch database and compare.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;

use anyhow::{Context, bail, ensure};
use percent_encoding::percent_decode_str;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, MySqlConnection, PgConnection, Row};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::archive::{self, BackupKeys, Header, Kind};
use crate::repo::Repo;

/// The database engines `moor backup-db` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL: `pg_dump -Fc` / `pg_restore`.
    Postgres,
    /// MySQL or MariaDB: `mysqldump` / `mysql`.
    Mysql,
}

impl Engine {
    /// The header's `engine`: the engine and the dump's format.
    pub fn format(self) -> &'static str {
        match self {
            Self::Postgres => "postgres-custom",
            Self::Mysql => "mysql-sql",
        }
    }

    /// The engine of a header's `engine` field.
    pub fn from_format(format: &str) -> anyhow::Result<Self> {
        match format {
            "postgres-custom" => Ok(Self::Postgres),
            "mysql-sql" => Ok(Self::Mysql),
            other => bail!("the backup holds a '{other}' dump, which this moor cannot restore"),
        }
    }
}

impl FromStr for Engine {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::Mysql),
            "sqlite" => bail!(
                "SQLite databases are not backed up by moor backup-db (the database is a file: copy it with \
                 sqlite3's .backup command)"
            ),
            other => bail!("unknown engine '{other}': use postgres or mysql"),
        }
    }
}

/// A database URL, parsed: what the tools need, the password kept apart.
#[derive(Clone)]
pub struct DbUrl {
    /// The engine, from the scheme.
    pub engine: Engine,
    url: Url,
    password: Option<String>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl DbUrl {
    /// Parses `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URLs; a SQLite URL is refused with
    /// a message saying why.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let trimmed = text.trim();
        if trimmed.starts_with("sqlite:") {
            bail!(
                "SQLite databases are not backed up by moor backup-db (the database is a file next to the app: \
                 copy it with sqlite3's .backup command)"
            );
        }
        let url = Url::parse(trimmed).map_err(|err| {
            anyhow::anyhow!(
                "the database URL is not valid ({err}); it looks like postgres://user@host:5432/db"
            )
        })?;
        let engine: Engine = url.scheme().parse()?;
        ensure!(
            url.host_str().is_some_and(|h| !h.is_empty()),
            "the database URL names no host"
        );
        let password = url
            .password()
            .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned());
        let mut url = url;
        let _ = url.set_password(None);
        let db = Self {
            engine,
            url,
            password,
        };
        ensure!(
            !db.database().is_empty(),
            "the database URL {db} names no database"
        );
        Ok(db)
    }

    /// The URL without its password, as messages and headers show it.
    pub fn redacted(&self) -> String {
        self.url.to_string()
    }

    /// The database's name.
    pub fn database(&self) -> String {
        percent_decode_str(self.url.path().trim_start_matches('/'))
            .decode_utf8_lossy()
            .into_owned()
    }

    fn host(&self) -> String {
        self.url.host_str().unwrap_or("localhost").to_owned()
    }

    fn port(&self) -> u16 {
        self.url.port().unwrap_or(match self.engine {
            Engine::Postgres => 5432,
            Engine::Mysql => 3306,
        })
    }

    fn user(&self) -> Option<String> {
        let user = self.url.username();
        (!user.is_empty()).then(|| percent_decode_str(user).decode_utf8_lossy().into_owned())
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, name: &str) -> Self {
        let mut other = self.clone();
        other.url.set_path(&format!("/{name}"));
        other
    }

    /// The full URL, password included, for a client library inside this process (never argv, never logs).
    fn secret_url(&self) -> String {
        let mut url = self.url.clone();
        if url.scheme() == "mariadb" {
            // sqlx names the protocol mysql.
            let text = url.to_string().replacen("mariadb://", "mysql://", 1);
            url = Url::parse(&text).unwrap_or(url);
        }
        if let Some(password) = &self.password {
            let _ = url.set_password(Some(password));
        }
        url.to_string()
    }

    /// A tool of this engine with the connection in its arguments and the password in its environment.
    fn tool(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.kill_on_drop(true);
        match self.engine {
            Engine::Postgres => {
                cmd.env_remove("PGPASSWORD");
                if let Some(password) = &self.password {
                    cmd.env("PGPASSWORD", password);
                }
            }
            Engine::Mysql => {
                cmd.env_remove("MYSQL_PWD");
                if let Some(password) = &self.password {
                    cmd.env("MYSQL_PWD", password);
                }
                cmd.arg("--protocol=tcp")
                    .arg(format!("--host={}", self.host()))
                    .arg(format!("--port={}", self.port()));
                if let Some(user) = self.user() {
                    cmd.arg(format!("--user={user}"));
                }
            }
        }
        cmd
    }
}

/// Runs `cmd`, feeding it `stdin`, and returns its standard output; a failure to start, a non-zero exit
/// or (with `want_output`) an empty output is an error carrying the tool's standard error.
async fn run_tool(
    mut cmd: tokio::process::Command,
    what: &str,
    stdin: Option<&[u8]>,
    want_output: bool,
) -> anyhow::Result<Vec<u8>> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot run {program} for {what}: is it installed? (Debian: apt-get install -y \
             postgresql-client or mariadb-client)"
        )
    })?;
    let feed = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_vec();
            Some(tokio::spawn(async move {
                let written = pipe.write_all(&input).await;
                drop(pipe);
                written
            }))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .await
        .with_context(|| format!("{program} for {what}"))?;
    let fed = match feed {
        Some(task) => task.await.map_err(anyhow::Error::from).and_then(|r| Ok(r?)),
        None => Ok(()),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    ensure!(
        out.status.success(),
        "{program} for {what} failed ({}): {}",
        out.status,
        if stderr.is_empty() {
            "it printed nothing"
        } else {
            stderr
        }
    );
    fed.with_context(|| format!("cannot send the dump to {program}"))?;
    ensure!(
        !want_output || !out.stdout.is_empty(),
        "{program} for {what} wrote nothing{}",
        if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        }
    );
    Ok(out.stdout)
}

/// Dumps the database at `db` with its engine's tool.
pub async fn dump(db: &DbUrl) -> anyhow::Result<Vec<u8>> {
    let what = format!("the backup of {db}");
    match db.engine {
        Engine::Postgres => {
            let mut cmd = db.tool("pg_dump");
            cmd.args(["-Fc", "--no-owner", "--no-privileges", "--dbname"])
                .arg(db.redacted());
            run_tool(cmd, &what, None, true).await
        }
        Engine::Mysql => {
            let mut cmd = db.tool("mysqldump");
            cmd.args([
                "--single-transaction",
                "--routines",
                "--triggers",
                "--events",
                "--hex-blob",
                "--no-tablespaces",
            ])
            .arg("--")
            .arg(db.database());
            run_tool(cmd, &what, None, true).await
        }
    }
}

/// Restores a dump of `format` (a header's `engine`) into the database at `db` with its engine's tool.
pub async fn restore_dump(db: &DbUrl, format: &str, dump: &[u8]) -> anyhow::Result<()> {
    let engine = Engine::from_format(format)?;
    ensure!(
        engine == db.engine,
        "the backup holds a {format} dump and {db} is a {:?} database",
        db.engine
    );
    let what = format!("the restore into {db}");
    match engine {
        Engine::Postgres => {
            let mut cmd = db.tool("pg_restore");
            cmd.args(["--clean", "--if-exists", "--no-owner", "--no-privileges", "-d"])
                .arg(db.redacted());
            run_tool(cmd, &what, Some(dump), false).await?;
        }
        Engine::Mysql => {
            let mut cmd = db.tool("mysql");
            cmd.arg("--").arg(db.database());
            run_tool(cmd, &what, Some(dump), false).await?;
        }
    }
    Ok(())
}

/// Where a database backup's dump comes from.
pub enum DumpSource {
    /// Run the engine's dump tool against this database.
    Database(DbUrl),
    /// A dump another process wrote, of this engine.
    File(std::path::PathBuf, Engine),
}

/// What `backup-db` wrote.
#[derive(Clone, Debug)]
pub struct BackupDbSummary {
    /// Where the backup went.
    pub location: String,
    /// The dump's size in bytes.
    pub dump_bytes: u64,
    /// The sealed backup's size in bytes.
    pub bytes: u64,
    /// The header's engine.
    pub engine: &'static str,
    /// Old backups deleted by `keep`.
    pub pruned: Vec<String>,
}

/// Takes a database backup: dumps (or reads the dump), seals it, writes it to `repo` and keeps the newest
/// `keep` there.
pub async fn backup_db(
    source: &DumpSource,
    repo: &Repo,
    keys: &BackupKeys,
    encrypt: bool,
    keep: Option<usize>,
) -> anyhow::Result<BackupDbSummary> {
    let (dump, engine, origin) = match source {
        DumpSource::Database(db) => (dump(db).await?, db.engine, db.redacted()),
        DumpSource::File(path, engine) => {
            let dump = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            ensure!(
                !dump.is_empty(),
                "{} is empty: the dump tool wrote nothing",
                path.display()
            );
            (dump, *engine, format!("file {}", path.display()))
        }
    };
    let created_at_ms = mooring::now_ms();
    let mut header = Header::new(Kind::Database, created_at_ms, origin);
    header.engine = Some(engine.format().to_owned());
    let sealed = archive::seal(header, &dump, keys, encrypt)?;
    let bytes = sealed.len() as u64;
    let location = repo.put(Kind::Database, created_at_ms, sealed).await?;
    let pruned = match keep {
        Some(keep) if !repo.is_single() => repo.prune(Kind::Database, keep.max(1)).await?,
        _ => Vec::new(),
    };
    Ok(BackupDbSummary {
        location,
        dump_bytes: dump.len() as u64,
        bytes,
        engine: engine.format(),
        pruned,
    })
}

/// Fetches the newest database backup of `repo` and checks it: its location, header and dump.
pub async fn fetch_verified(repo: &Repo, keys: &BackupKeys) -> anyhow::Result<(String, Header, Vec<u8>)> {
    let (location, bytes) = repo.fetch(Kind::Database).await?;
    let (header, dump) = archive::open(&bytes, keys).with_context(|| format!("{location} is refused"))?;
    ensure!(
        header.kind == Kind::Database,
        "{location} is a {} backup, not a database backup",
        header.kind.as_str()
    );
    let format = header
        .engine
        .as_deref()
        .with_context(|| format!("{location} does not say which engine its dump is for"))?;
    Engine::from_format(format)?;
    Ok((location, header, dump))
}

/// Writes a checked dump to `path`, mode 0600, whole or not at all.
pub fn write_private(path: &Path, dump: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temp = path.with_extension(format!("partial.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    file.write_all(dump)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Quotes a database or table name for `engine`.
fn quote(engine: Engine, name: &str) -> String {
    match engine {
        Engine::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
        Engine::Mysql => format!("`{}`", name.replace('`', "``")),
    }
}

/// Checks that a scratch database name is one this process may create and drop.
fn scratch_name(name: &str) -> anyhow::Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "'{name}' is not a scratch database name (lowercase letters, digits and _)"
    );
    Ok(())
}

/// Creates the database `name` through `admin` (a user that may create databases); returns its URL.
pub async fn create_database(admin: &DbUrl, name: &str) -> anyhow::Result<DbUrl> {
    scratch_name(name)?;
    let sql = format!("CREATE DATABASE {}", quote(admin.engine, name));
    execute(admin, &sql)
        .await
        .with_context(|| format!("cannot create the database {name} through {admin}"))?;
    Ok(admin.with_database(name))
}

/// Drops the database `name` through `admin`, with its connections (PostgreSQL: `WITH (FORCE)`).
pub async fn drop_database(admin: &DbUrl, name: &str) -> anyhow::Result<()> {
    scratch_name(name)?;
    let sql = match admin.engine {
        Engine::Postgres => format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(admin.engine, name)
        ),
        Engine::Mysql => format!("DROP DATABASE IF EXISTS {}", quote(admin.engine, name)),
    };
    execute(admin, &sql)
        .await
        .with_context(|| format!("cannot drop the database {name} through {admin}"))
}

/// A PostgreSQL connection that logs no statements: a `DROP DATABASE ... WITH (FORCE)` or a `COUNT(*)` of a
/// large table is slow by nature, and the drill's report says how long things took.
async fn pg(db: &DbUrl) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(&db.secret_url())?
        .disable_statement_logging()
        .connect()
        .await
}

/// A MySQL connection that logs no statements (see [`pg`]).
async fn mysql(db: &DbUrl) -> Result<MySqlConnection, sqlx::Error> {
    MySqlConnectOptions::from_str(&db.secret_url())?
        .disable_statement_logging()
        .connect()
        .await
}

async fn execute(db: &DbUrl, sql: &str) -> anyhow::Result<()> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db.engine {
        Engine::Postgres => {
            let mut conn = pg(db).await?;
            conn.execute(sql).await?;
            conn.close().await?;
        }
        Engine::Mysql => {
            let mut conn = mysql(db).await?;
            conn.execute(sql).await?;
            conn.close().await?;
        }
    }
    Ok(())
}

/// The exact number of rows of every table of the database at `db` (PostgreSQL: every schema but the
/// system ones, named `schema.table`; MySQL: the URL's database), from `information_schema` and `COUNT(*)`.
pub async fn row_counts(db: &DbUrl) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    match db.engine {
        Engine::Postgres => {
            let mut conn = pg(db).await.with_context(|| format!("cannot connect to {db}"))?;
            let tables = sqlx::query(
                "SELECT table_schema, table_name FROM information_schema.tables \
                 WHERE table_type = 'BASE TABLE' \
                 AND table_schema NOT IN ('pg_catalog', 'information_schema') \
                 ORDER BY 1, 2",
            )
            .fetch_all(&mut conn)
            .await
            .with_context(|| format!("cannot list the tables of {db}"))?;
            for row in tables {
                let (schema, table): (String, String) = (row.try_get(0)?, row.try_get(1)?);
                let sql = format!(
                    "SELECT COUNT(*) FROM {}.{}",
                    quote(Engine::Postgres, &schema),
                    quote(Engine::Postgres, &table)
                );
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut conn)
                    .await
                    .with_context(|| format!("cannot count the rows of {schema}.{table} in {db}"))?;
                counts.insert(format!("{schema}.{table}"), n.max(0) as u64);
            }
            conn.close().await?;
        }
        Engine::Mysql => {
            let mut conn = mysql(db)
                .await
                .with_context(|| format!("cannot connect to {db}"))?;
            let tables = sqlx::query(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .with_context(|| format!("cannot list the tables of {db}"))?;
            for row in tables {
                let table: String = row.try_get(0)?;
                let sql = format!("SELECT COUNT(*) FROM {}", quote(Engine::Mysql, &table));
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut conn)
                    .await
                    .with_context(|| format!("cannot count the rows of {table} in {db}"))?;
                counts.insert(table, n.max(0) as u64);
            }
            conn.close().await?;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_password_apart() {
        let db =
            DbUrl::parse("postgres://app:s%40cret@db.example:6432/inventory?sslmode=require").expect("url");
        assert_eq!(db.engine, Engine::Postgres);
        assert_eq!(db.database(), "inventory");
        assert_eq!(db.port(), 6432);
        assert_eq!(db.password.as_deref(), Some("s@cret"));
        assert!(!db.to_string().contains("cret"), "{db}");
        assert!(!format!("{db:?}").contains("cret"));
        assert!(db.secret_url().contains("s%40cret"));
        let my = DbUrl::parse("mariadb://root@127.0.0.1/app").expect("url");
        assert_eq!(
            (my.engine, my.port(), my.user().as_deref()),
            (Engine::Mysql, 3306, Some("root"))
        );
        assert!(my.secret_url().starts_with("mysql://"));
        assert_eq!(my.with_database("moor_drill_1").database(), "moor_drill_1");
    }

    #[test]
    fn bad_urls_say_why() {
        let sqlite = DbUrl::parse("sqlite:///var/lib/app.db").expect_err("sqlite");
        assert!(sqlite.to_string().contains("SQLite"), "{sqlite}");
        assert!(DbUrl::parse("redis://127.0.0.1/0").is_err());
        assert!(DbUrl::parse("postgres://127.0.0.1:5432/").is_err());
        assert!(DbUrl::parse("not a url").is_err());
        assert!(scratch_name("moor_drill_1795000000000").is_ok());
        assert!(scratch_name("x; DROP DATABASE y").is_err());
    }
}
