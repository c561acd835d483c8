//! `app-kill` (seed 000, scenario 1): `kill -9` one app instance under load, restart it.
//!
//! Inside: the load balancer's health check sees the instance gone within half a second; requests already
//! on that instance's sockets fail, new ones are retried by HAProxy on another instance (`retry-on
//! conn-failure`). Sessions live in the store, so every other instance continues them.
//! Budget: 0 logouts, 0 acknowledged writes lost, errors ≤ the requests that can be in flight on that
//! instance (one per virtual user, spread over the instances).

use std::time::Duration;

use super::{Budget, Ctx, Injected, session_budgets};
use crate::lab::Signal;
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let fault_at = ctx.mark("kill -9 app 0");
    ctx.lab.signal_app(0, Signal::Kill).await?;
    ctx.settle(Duration::from_secs(5), Duration::from_secs(2)).await;
    ctx.mark("restart app 0");
    ctx.lab.start_app(0).await?;
    ctx.mark("app 0 ready");
    Ok(Injected {
        fault_at: Some(fault_at),
        ..Injected::default()
    })
}

pub(super) fn budgets(users: usize, apps: usize, report: &ProbeReport) -> Vec<Budget> {
    let in_flight = users.div_ceil(apps) as u64;
    let mut budgets = session_budgets(report);
    budgets.push(Budget::at_most(
        "failed requests",
        super::errors(report),
        in_flight,
    ));
    budgets
}
