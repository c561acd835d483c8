//! The periodic cleanup task shared by the session table, the login attempts and the revocation log: one
//! round every interval, each deleting what has expired; a failed round is logged and retried on the next.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::dialect::Dialect;
use crate::error::Result;

/// Spawns a task that waits `first_delay`, then runs `round` every `interval` (at least 10 ms) until the
/// handle is aborted or the runtime shuts down. `what` names the table's contents in the log lines.
pub(crate) fn spawn<F, Fut>(
    what: &'static str,
    dialect: Dialect,
    interval: Duration,
    first_delay: Duration,
    mut round: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64>> + Send,
{
    let interval = interval.max(Duration::from_millis(10));
    tokio::spawn(async move {
        tokio::time::sleep(first_delay).await;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match round().await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::debug!(deleted, what, dialect = dialect.name(), "deleted expired rows")
                }
                Err(err) => {
                    tracing::warn!(error = %err, what, dialect = dialect.name(), "expired row cleanup failed");
                }
            }
        }
    })
}
