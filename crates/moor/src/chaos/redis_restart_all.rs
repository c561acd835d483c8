//! `redis-restart-all`: a graceful restart of every Redis node at once (a maintenance window, a node pool
//! upgrade).
//!
//! Inside: `SHUTDOWN` writes the AOF and an RDB snapshot; on start each node replays its data, replicas
//! resync. Requests during the outage get 503 with `Retry-After` (their cookie untouched); afterwards every
//! session is back.
//! Budget: 0 sessions lost (0 logouts, 0 acknowledged writes lost).

use super::{Budget, Ctx, Injected, session_budgets};
use crate::lab::Signal;
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    super::restart_every_redis(ctx, Signal::Term, "graceful stop of every Redis node").await
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    session_budgets(report)
}
