//! `moor backup-db` and `moor restore-db`, run as the operator runs them, against the machine's real
//! PostgreSQL and MariaDB (a fresh database per test, through MOORING_TEST_POSTGRES_URL /
//! MOORING_TEST_MYSQL_URL): rows with binary columns and unicode text come back identical after the data is
//! dropped, a backup with one changed byte is refused with nothing written, and the dump written by `--out` is
//! the one the tool wrote.

use std::path::Path;
use std::process::Output;

use mooring_conformance::provision::{self, Backend, TestDb};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

/// The key the tests sign backups with.
const BACKUP_KEY: &str = "a backup key for the database tests, 32+ bytes";

#[path = "support/cli.rs"]
mod cli;

/// Runs the `moor` binary with the backup key (see [`cli::run`]).
fn moor(args: &[&str]) -> Output {
    cli::run(BACKUP_KEY, args, |_| {})
}

fn ok(args: &[&str]) -> String {
    cli::stdout_of_success(args, moor(args))
}

/// The rows the tests write: every byte value in a binary column, text in several scripts, a NULL.
fn rows() -> Vec<(i32, String, Option<Vec<u8>>)> {
    vec![
        (1, "Äpfel, Birnen & Öl ✓".to_owned(), Some((0..=255u8).collect())),
        (
            2,
            "日本語のテキスト 🍎🍐".to_owned(),
            Some(vec![0, 0, 0, b'\'', b'\\', b'"', 0xff]),
        ),
        (3, "plain".to_owned(), None),
        (
            4,
            "Ελληνικά — \"quotes\" 'and' \\backslashes\\".to_owned(),
            Some(Vec::new()),
        ),
    ]
}

/// Creates `items` (and an empty `audit_log`) and fills it with [`rows`].
async fn fill(db: &TestDb) {
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            conn.execute(
                "CREATE TABLE items (id INT PRIMARY KEY, name TEXT NOT NULL, data BYTEA); \
                 CREATE TABLE audit_log (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL DEFAULT now())",
            )
            .await
            .expect("create");
            for (id, name, data) in rows() {
                sqlx::query("INSERT INTO items (id, name, data) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(name)
                    .bind(data)
                    .execute(&mut conn)
                    .await
                    .expect("insert");
            }
        }
        Backend::MySql => {
            let mut conn = MySqlConnection::connect(&db.url).await.expect("connect");
            conn.execute(
                "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL, \
                 data BLOB) ENGINE=InnoDB",
            )
            .await
            .expect("create");
            conn.execute("CREATE TABLE audit_log (id BIGINT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB")
                .await
                .expect("create");
            for (id, name, data) in rows() {
                sqlx::query("INSERT INTO items (id, name, data) VALUES (?, ?, ?)")
                    .bind(id)
                    .bind(name)
                    .bind(data)
                    .execute(&mut conn)
                    .await
                    .expect("insert");
            }
        }
        Backend::Sqlite => unreachable!("not backed up by backup-db"),
    }
}

/// The rows of `items`, or the error reading them (no such table).
async fn read(db: &TestDb) -> Result<Vec<(i32, String, Option<Vec<u8>>)>, sqlx::Error> {
    let sql = "SELECT id, name, data FROM items ORDER BY id";
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await?;
            sqlx::query_as(sql).fetch_all(&mut conn).await
        }
        _ => {
            let mut conn = MySqlConnection::connect(&db.url).await?;
            sqlx::query_as(sql).fetch_all(&mut conn).await
        }
    }
}

async fn drop_data(db: &TestDb) {
    let sql = "DROP TABLE items";
    match db.backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(&db.url).await.expect("connect");
            conn.execute(sql).await.expect("drop");
        }
        _ => {
            let mut conn = MySqlConnection::connect(&db.url).await.expect("connect");
            conn.execute(sql).await.expect("drop");
        }
    }
}

fn only_backup(dir: &Path) -> std::path::PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "moorbak"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Back up, drop the data, restore: the same rows. Then one changed byte: refused, nothing written.
async fn round_trip(db: TestDb) {
    fill(&db).await;
    let before = read(&db).await.expect("read");
    assert_eq!(before, rows());
    let dir = tempfile::tempdir().expect("tempdir");
    let dir_arg = format!("{}/", dir.path().display());
    for _ in 0..3 {
        let said = ok(&[
            "backup-db",
            "--database-url",
            &db.url,
            "--out",
            &dir_arg,
            "--keep",
            "1",
        ]);
        assert!(said.contains("backed up the database"), "{said}");
        assert!(!said.contains(":mooring@"), "no password in the output: {said}");
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let file = only_backup(dir.path());
    let sealed = std::fs::read(&file).expect("read backup");
    assert!(
        !sealed.windows(5).any(|w| w == b"plain"),
        "the backup is encrypted by default"
    );

    drop_data(&db).await;
    assert!(read(&db).await.is_err(), "the table is gone");
    let said = ok(&["restore-db", "--in", &dir_arg, "--database-url", &db.url]);
    assert!(said.contains("restored"), "{said}");
    assert_eq!(read(&db).await.expect("read"), before, "the same rows");

    // One byte changed (in the body, and in the signature): refused, the database untouched.
    drop_data(&db).await;
    for at in [sealed.len() / 2, sealed.len() - 1] {
        let mut changed = sealed.clone();
        changed[at] ^= 0x20;
        std::fs::write(&file, &changed).expect("write");
        let out = moor(&["restore-db", "--in", &dir_arg, "--database-url", &db.url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "byte {at} changed: {stderr}");
        assert!(stderr.contains("signature does not match"), "{stderr}");
        assert!(read(&db).await.is_err(), "nothing was restored");
    }

    // --out writes the checked dump, private.
    std::fs::write(&file, &sealed).expect("write");
    let dump = dir.path().join("dump");
    ok(&[
        "restore-db",
        "--in",
        &dir_arg,
        "--out",
        dump.to_str().expect("utf-8"),
    ]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dump).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dumped = std::fs::read(&dump).expect("dump");
    match db.backend {
        Backend::Postgres => assert!(dumped.starts_with(b"PGDMP"), "a pg_dump custom-format file"),
        _ => assert!(
            String::from_utf8_lossy(&dumped).contains("INSERT INTO `items`"),
            "a mysqldump SQL file"
        ),
    }

    // The dump another container wrote (--file) is sealed as it is.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let engine = if db.backend == Backend::Postgres {
        "postgres"
    } else {
        "mysql"
    };
    let out2 = format!("{}/", dir2.path().display());
    ok(&[
        "backup-db",
        "--file",
        dump.to_str().expect("utf-8"),
        "--engine",
        engine,
        "--out",
        &out2,
    ]);
    let again = dir2.path().join("again");
    ok(&[
        "restore-db",
        "--in",
        &out2,
        "--out",
        again.to_str().expect("utf-8"),
    ]);
    assert_eq!(std::fs::read(&again).expect("again"), dumped);
    db.drop_db().await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_survive_a_backup_and_restore() {
    round_trip(provision::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_rows_survive_a_backup_and_restore() {
    round_trip(provision::mysql().await).await;
}

#[test]
fn bad_input_is_refused_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("utf-8");
    for (args, says) in [
        (
            vec![
                "backup-db",
                "--database-url",
                "sqlite:///var/lib/app.db",
                "--out",
                out,
            ],
            "SQLite",
        ),
        (
            vec!["backup-db", "--database-url", "redis://127.0.0.1/0", "--out", out],
            "unknown engine",
        ),
        (vec!["backup-db", "--out", out], "--database-url"),
        (
            vec![
                "backup-db",
                "--file",
                "/nonexistent/dump",
                "--engine",
                "postgres",
                "--out",
                out,
            ],
            "cannot read /nonexistent/dump",
        ),
        (
            vec!["restore-db", "--in", out, "--out", "/tmp/never-written"],
            "no database backup",
        ),
        (
            vec![
                "backup-db",
                "--database-url",
                "postgres://mooring:wrong-password@127.0.0.1:1/none",
                "--out",
                out,
            ],
            "pg_dump for the backup of postgres://mooring@127.0.0.1:1/none failed",
        ),
    ] {
        let result = moor(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("wrong-password"),
            "no password in messages: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
