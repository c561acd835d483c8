//! The attempt store cases against the in-process [`mooring::MemoryAttemptStore`].

use std::sync::Arc;

use mooring::{AttemptStore, MemoryAttemptStore};

mooring_conformance::attempt_store_suite!(((), Arc::new(MemoryAttemptStore::new()) as Arc<dyn AttemptStore>));
