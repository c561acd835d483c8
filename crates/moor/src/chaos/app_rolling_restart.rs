//! `app-rolling-restart`: SIGTERM each instance in turn, restart it, wait until it is ready, next.
//!
//! Inside: on SIGTERM an instance turns `/readyz` to 503 and keeps serving for `SHUTDOWN_DELAY_SECONDS`, so
//! the load balancer takes it out of rotation before it stops accepting; in-flight requests finish. This is
//! what a Kubernetes rolling update does with a preStop delay.
//! Budget: 0 errors, 0 logouts.

use std::time::Duration;

use super::{Budget, Ctx, Injected};
use crate::lab::Signal;
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let fault_at = ctx.mark("rolling restart begins");
    for i in 0..ctx.apps {
        ctx.mark(&format!("SIGTERM app {i}"));
        ctx.lab.signal_app(i, Signal::Term).await?;
        ctx.lab.wait_app_exit(i, Duration::from_secs(30)).await?;
        ctx.lab.start_app(i).await?;
        ctx.mark(&format!("app {i} ready"));
        ctx.settle(Duration::from_secs(3), Duration::from_secs(1)).await;
    }
    Ok(Injected {
        fault_at: Some(fault_at),
        ..Injected::default()
    })
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    vec![
        Budget::at_most("failed requests", super::errors(report), 0),
        Budget::at_most("logouts", report.totals.logouts, 0),
        Budget::at_most("acknowledged writes lost", report.totals.lost_writes, 0),
    ]
}
