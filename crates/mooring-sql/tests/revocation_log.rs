//! The revocation log cases against `SqlRevocationLog` on real SQLite, PostgreSQL and MariaDB, each test in
//! its own fresh database, plus the SQL-only behaviour: the table comes with the store's migrations, the log
//! shares the store's pool, and the cleanup task deletes dead entries. PostgreSQL and MariaDB must be running
//! (`scripts/test.sh`).

use std::sync::Arc;
use std::time::Duration;

use mooring::RevocationLog;
use mooring_conformance::provision::{self, TestDb};
use mooring_sql::{SqlRevocationLog, SqlStore};

/// A log on a fresh database; the database is returned as the guard that keeps it alive.
async fn on(db: TestDb, retention: Duration) -> (TestDb, Arc<dyn RevocationLog>) {
    let log = match SqlRevocationLog::connect(&db.url, retention).await {
        Ok(log) => log,
        Err(e) => panic!("cannot open SqlRevocationLog on test database {}: {e}", db.name),
    };
    (db, Arc::new(log))
}

mod sqlite {
    use super::*;

    mooring_conformance::revocation_log_suite!(retention => on(provision::sqlite().await, retention).await);
}

mod postgres {
    use super::*;

    mooring_conformance::revocation_log_suite!(retention => on(provision::postgres().await, retention).await);
}

mod mariadb {
    use super::*;

    mooring_conformance::revocation_log_suite!(retention => on(provision::mysql().await, retention).await);
}

/// The log made from a store shares its pool and table: what one writes, a log connected by URL finds; the
/// spawned cleanup deletes dead entries in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_log_and_its_cleanup_share_the_table() {
    let db = provision::sqlite().await;
    let store = SqlStore::connect(&db.url).await.expect("store");
    let short = store.revocations(Duration::from_millis(200));
    let long = SqlRevocationLog::connect(&db.url, Duration::from_secs(3600))
        .await
        .expect("connect");
    let (dead, live) = ("t:dead".to_owned(), "t:live".to_owned());
    short.record(std::slice::from_ref(&dead)).await.expect("record");
    long.record(std::slice::from_ref(&live)).await.expect("record");
    let both = [dead.clone(), live.clone()];
    assert_eq!(long.find(&both).await.expect("find").len(), 2, "one table");
    let cleanup = long.spawn_cleanup(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(600)).await;
    cleanup.abort();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mooring_revocations")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(
        rows, 1,
        "the cleanup deleted the dead entry and kept the live one"
    );
    assert_eq!(
        short
            .find(&both)
            .await
            .expect("find")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![live]
    );
}
