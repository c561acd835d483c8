//! The conformance suite against the in-process memory store.

use std::sync::Arc;

use async_trait::async_trait;
use mooring::{MemoryStore, SessionStore, StoreKey};
use mooring_conformance::Harness;

struct MemoryHarness(MemoryStore);

#[async_trait]
impl Harness for MemoryHarness {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.0.clone())
    }

    async fn corrupt(&self, key: &StoreKey) {
        assert!(
            self.0.overwrite_raw(key, vec![0xff, 0x00, 0x13]),
            "record to corrupt must exist"
        );
    }
}

mooring_conformance::conformance_suite!(MemoryHarness(MemoryStore::new()));
