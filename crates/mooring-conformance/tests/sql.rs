//! The conformance suite against `SqlStore` on real SQLite, PostgreSQL and MariaDB, each test in its own fresh
//! database (see `mooring_conformance::provision`). PostgreSQL and MariaDB must be running: `scripts/test.sh`
//! starts them.

use std::sync::Arc;

use async_trait::async_trait;
use mooring::{SessionStore, StoreKey};
use mooring_conformance::Harness;
use mooring_conformance::provision::{self, TestDb};
use mooring_sql::SqlStore;

/// A store on a fresh database. Field order matters: the store (and its pool) goes before the database.
struct SqlHarness {
    store: SqlStore,
    _db: TestDb,
}

impl SqlHarness {
    async fn on(db: TestDb) -> Self {
        let store = match SqlStore::connect(&db.url).await {
            Ok(store) => store,
            Err(e) => panic!("cannot open SqlStore on test database {}: {e}", db.name),
        };
        Self { store, _db: db }
    }
}

#[async_trait]
impl Harness for SqlHarness {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }

    async fn corrupt(&self, key: &StoreKey) {
        // Format byte 0xEE is no known record format, and the rest is noise.
        let found = self
            .store
            .overwrite_raw(key, vec![0xEE, 0x01, 0x02, 0xFF, 0x00])
            .await;
        assert!(
            matches!(found, Ok(true)),
            "corrupt: the record must exist, got {found:?}"
        );
    }
}

/// SQLite: a file in a temporary directory.
mod sqlite {
    use super::*;

    mooring_conformance::conformance_suite!(SqlHarness::on(provision::sqlite().await).await);
}

/// PostgreSQL: a fresh database per test.
mod postgres {
    use super::*;

    mooring_conformance::conformance_suite!(SqlHarness::on(provision::postgres().await).await);
}

/// MariaDB (or MySQL): a fresh database per test.
mod mariadb {
    use super::*;

    mooring_conformance::conformance_suite!(SqlHarness::on(provision::mysql().await).await);
}
