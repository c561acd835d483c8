//! The revocation log cases against the in-process [`mooring::MemoryRevocationLog`].

use std::sync::Arc;

use mooring::{MemoryRevocationLog, RevocationLog};

mooring_conformance::revocation_log_suite!(retention => ((), Arc::new(MemoryRevocationLog::new(retention)) as Arc<dyn RevocationLog>));
