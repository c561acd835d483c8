//! `redis-crash-all`: `kill -9` of every Redis node at once, then a restart.
//!
//! Inside: with `appendfsync everysec` each node's AOF is at most about a second behind, so a simultaneous
//! crash of every copy can lose the last second of writes: the documented bound. Sessions older than that
//! survive, so signed-in users stay signed in.
//! Budget: acknowledged writes lost ≤ one second of writes (at the rate measured before the crash), 0
//! logouts of sessions older than that.

use super::{Budget, Ctx, Injected};
use crate::lab::Signal;
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    super::restart_every_redis(ctx, Signal::Kill, "kill -9 every Redis node").await
}

pub(super) fn budgets(report: &ProbeReport, injected: &Injected) -> Vec<Budget> {
    let fault = injected.fault_at.unwrap_or_default();
    let per_second = super::acked_rate_before(report, fault);
    vec![
        Budget::at_most(
            "acknowledged writes lost (≤ 1 s of writes)",
            report.totals.lost_writes,
            per_second.ceil() as u64,
        ),
        Budget::at_most("logouts", report.totals.logouts, 0),
    ]
}
