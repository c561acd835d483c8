//! `redis-restart-all`: a graceful restart of every Redis node at once (a maintenance window, a node pool
//! upgrade).
//!
//! Inside: `SHUTDOWN` writes the AOF and an RDB snapshot; on start each node replays its data, replicas
//! resync. Requests during the outage get 503 with `Retry-After` (their cookie untouched); afterwards every
//! session is back.
//! Budget: 0 sessions lost (0 logouts, 0 acknowledged writes lost).

use std::time::Duration;

use super::{Budget, Ctx, Injected, session_budgets};
use crate::lab::Signal;
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let nodes = ctx.lab.redis_nodes().await;
    let fault_at = ctx.mark("graceful stop of every Redis node");
    for node in &nodes {
        ctx.lab.signal_redis(node, Signal::Term).await?;
    }
    ctx.settle(Duration::from_secs(3), Duration::from_secs(1)).await;
    ctx.mark("start every Redis node");
    for node in &nodes {
        ctx.lab.start_redis(node).await?;
    }
    ctx.lab.wait_healthy(Duration::from_secs(60)).await?;
    ctx.mark("Redis healthy again");
    Ok(Injected {
        fault_at: Some(fault_at),
        ..Injected::default()
    })
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    session_budgets(report)
}
