//! `redis-partition`: cut the master off from its replicas and the Sentinels (the apps still reach it), heal
//! after 10 s.
//!
//! Inside: the isolated master loses its replicas, so `WAIT` confirms nothing there and, after
//! `min-replicas-max-lag`, it refuses writes outright (`NOREPLICAS`). The Sentinels promote a replica; the
//! store switches to it. When the partition heals, the old master is demoted and discards what it accepted
//! alone, none of which was ever acknowledged.
//! Budget: 0 acknowledged writes lost, nothing acknowledged by the isolated master (the same measure: an
//! acknowledged write there would be lost).

use std::time::Duration;

use super::{Budget, Ctx, Injected, session_budgets};
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let old = ctx.lab.redis_master().await?;
    let fault_at = ctx.mark(&format!("partition {old} from replicas and Sentinels"));
    let partition = ctx.lab.partition(&old).await?;
    let hold = if ctx.short {
        Duration::from_secs(6)
    } else {
        Duration::from_secs(10)
    };
    let new = ctx
        .lab
        .wait_for_master_change(&old, Duration::from_secs(30))
        .await;
    tokio::time::sleep(hold.saturating_sub(ctx.started.elapsed() - fault_at)).await;
    ctx.mark("heal the partition");
    partition.heal().await?;
    let new = new?;
    let following = ctx.lab.wait_rejoined(&old, Duration::from_secs(40)).await?;
    ctx.mark(&format!("{old} rejoined as a replica of {following}"));
    let mut notes = vec![format!("{old} isolated; Sentinels promoted {new}")];
    notes.extend(super::another_failover(ctx.lab, &new, &following));
    Ok(Injected {
        fault_at: Some(fault_at),
        notes,
        ..Injected::default()
    })
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    session_budgets(report)
}
