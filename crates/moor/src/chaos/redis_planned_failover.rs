//! `redis-planned-failover`: `SENTINEL FAILOVER`, what a Redis rolling update does.
//!
//! Inside: Sentinel promotes a replica at once, while the old master keeps accepting writes for seconds and
//! its other replica keeps following it. The session store waits for every replica in sync; when one of
//! them turns out to be promoted it holds writes until it has switched, so nothing the old master accepted
//! in that window is ever acknowledged.
//! Budget: 0 acknowledged writes lost (and 0 logouts).

use std::time::Duration;

use super::{Budget, Ctx, Injected, session_budgets};
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let fault_at = ctx.mark("SENTINEL FAILOVER");
    let old = ctx.lab.sentinel_failover().await?;
    let new = ctx
        .lab
        .wait_for_master_change(&old, Duration::from_secs(30))
        .await?;
    let took = ctx.started.elapsed() - fault_at;
    ctx.mark(&format!("new master {new}"));
    Ok(Injected {
        fault_at: Some(fault_at),
        notes: vec![format!(
            "{old} handed over to {new} in {:.2} s",
            took.as_secs_f64()
        )],
        ..Injected::default()
    })
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    session_budgets(report)
}
