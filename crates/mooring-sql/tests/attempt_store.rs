//! The attempt store cases (login throttling) against `SqlAttemptStore` on real SQLite, PostgreSQL and
//! MariaDB, each test in its own fresh database. PostgreSQL and MariaDB must be running (`scripts/test.sh`).

use std::sync::Arc;

use mooring::AttemptStore;
use mooring_conformance::provision::{self, TestDb};
use mooring_sql::SqlAttemptStore;

/// A store on a fresh database; the database is returned as the guard that keeps it alive.
async fn on(db: TestDb) -> (TestDb, Arc<dyn AttemptStore>) {
    let store = match SqlAttemptStore::connect(&db.url).await {
        Ok(store) => store,
        Err(e) => panic!("cannot open SqlAttemptStore on test database {}: {e}", db.name),
    };
    (db, Arc::new(store))
}

mod sqlite {
    use super::*;

    mooring_conformance::attempt_store_suite!(on(provision::sqlite().await).await);
}

mod postgres {
    use super::*;

    mooring_conformance::attempt_store_suite!(on(provision::postgres().await).await);
}

mod mariadb {
    use super::*;

    mooring_conformance::attempt_store_suite!(on(provision::mysql().await).await);
}

/// Dead rows (past their window and their block) are deleted by the cleanup; live ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_only_dead_rows() {
    use std::time::Duration;
    let db = provision::sqlite().await;
    let store = SqlAttemptStore::connect(&db.url).await.expect("connect");
    let dead = mooring::AttemptKey::new("t", &["dead"]);
    let blocked = mooring::AttemptKey::new("t", &["blocked"]);
    let counting = mooring::AttemptKey::new("t", &["counting"]);
    store
        .record_failure(&dead, Duration::from_millis(100))
        .await
        .expect("record");
    store
        .record_failure(&blocked, Duration::from_millis(100))
        .await
        .expect("record");
    store
        .block(&blocked, Duration::from_secs(60))
        .await
        .expect("block");
    store
        .record_failure(&counting, Duration::from_secs(60))
        .await
        .expect("record");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.delete_expired().await.expect("cleanup"),
        1,
        "only the dead row goes"
    );
    assert!(store.blocked_for(&blocked).await.expect("blocked_for").is_some());
    assert_eq!(
        store
            .record_failure(&counting, Duration::from_secs(60))
            .await
            .expect("record"),
        2
    );
}
