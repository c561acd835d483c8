//! `redis-master-kill` (seed 000, scenario 2): `kill -9` the Redis master; restart it later on its data dir.
//!
//! Inside: after `down-after-milliseconds` the Sentinels agree the master is down, elect a leader, promote the
//! replica with the most data and announce `+switch-master`; the session store follows within milliseconds.
//! Every write it acknowledged had reached a replica (`WAIT`), so none is lost. The old master, restarted on
//! its AOF, is turned into a replica of the new one; the store never writes to it.
//! Budget: 0 logouts, 0 acknowledged writes lost, writes back ≤ down-after + 2 s.
//!
//! Why + 2 s and not + 1 s: Sentinel itself needs that long beyond `down-after-milliseconds` to promote a
//! replica (it polls the other Sentinels once a second before the master is objectively down, delays the
//! failover start by up to a second at random to avoid split votes, then waits for the promoted replica's
//! next INFO). Measured here with `down-after` 1 s: promotion 2.34 s after the kill, first acknowledged write
//! 0.10 s later. A write cannot be acknowledged before a replica follows the new master, so no client can
//! beat the promotion; the store's part is the 0.1 s.

use std::time::Duration;

use super::{Budget, Ctx, Injected, session_budgets};
use crate::lab::Signal;
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let old = ctx.lab.redis_master().await?;
    let writer = super::Writer::new(&ctx.lab.url()).await?;
    let fault_at = ctx.mark(&format!("kill -9 Redis master {old}"));
    ctx.lab.signal_redis(&old, Signal::Kill).await?;
    let writes = tokio::spawn(writer.first_ok_within(Duration::from_secs(60)));
    let new = ctx
        .lab
        .wait_for_master_change(&old, Duration::from_secs(30))
        .await?;
    let failover = ctx.started.elapsed() - fault_at;
    ctx.mark(&format!("new master {new}"));
    let writes_back = writes.await??;
    ctx.settle(Duration::from_secs(5), Duration::from_secs(2)).await;
    ctx.mark(&format!("restart {old} on its data dir"));
    ctx.lab.start_redis(&old).await?;
    let following = ctx.lab.wait_rejoined(&old, Duration::from_secs(40)).await?;
    ctx.mark(&format!("{old} rejoined as a replica of {following}"));
    let limit = ctx.down_after + Duration::from_secs(2);
    let mut notes = vec![
        format!(
            "master {old} killed; Sentinels promoted {new} after {:.2} s",
            failover.as_secs_f64()
        ),
        format!(
            "first write acknowledged {:.2} s after the kill",
            writes_back.as_secs_f64()
        ),
    ];
    notes.extend(super::another_failover(ctx.lab, &new, &following));
    Ok(Injected {
        fault_at: Some(fault_at),
        notes,
        budgets: vec![Budget::within("writes back after the kill", writes_back, limit)],
    })
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    session_budgets(report)
}
