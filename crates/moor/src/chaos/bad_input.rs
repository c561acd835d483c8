//! `bad-input`: forged and garbled cookies, oversized headers and a cookie flood at the load balancer, while
//! real users keep working.
//!
//! Inside: a cookie whose MAC fails is dropped before any store lookup; `Cookie` headers over 16 KiB get 431
//! from the app (HAProxy refuses much larger requests itself with 400); nothing reaches the store.
//! Budget: 0 5xx for the hostile requests, 0 logouts of real users.

use std::time::Duration;

use super::{Budget, Ctx, Injected};
use crate::probe::ProbeReport;

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let fault_at = ctx.mark("hostile traffic begins");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = ctx.lab.url();
    let forged = [
        "inventory_session=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        "inventory_session=garbage".to_owned(),
        "inventory_session=%00%ff".to_owned(),
        "inventory_session===;;;==".to_owned(),
        format!("inventory_session={}", "Z".repeat(4000)),
        format!("junk={}", "x".repeat(100 * 1024)),
        (0..400)
            .map(|i| format!("c{i}=v{i}"))
            .collect::<Vec<_>>()
            .join("; "),
    ];
    let rounds = if ctx.short { 15 } else { 60 };
    let (mut sent, mut server_errors, mut statuses) = (0u64, 0u64, std::collections::BTreeMap::new());
    for _ in 0..rounds {
        let batch = forged.iter().flat_map(|cookie| {
            ["/", "/dashboard", "/session", "/session/values/x", "/items"].map(|path| {
                let request = http
                    .get(format!("{base}{path}"))
                    .header("cookie", cookie.as_str());
                async move { request.send().await.map(|r| r.status().as_u16()) }
            })
        });
        for outcome in futures_util::future::join_all(batch).await {
            sent += 1;
            match outcome {
                Ok(status) => {
                    *statuses.entry(status).or_insert(0u64) += 1;
                    if status >= 500 {
                        server_errors += 1;
                    }
                }
                Err(err) if err.is_timeout() => server_errors += 1,
                // HAProxy may close a connection on a request it refuses outright; that is not a 5xx.
                Err(_) => *statuses.entry(0).or_insert(0u64) += 1,
            }
        }
    }
    ctx.mark("hostile traffic ends");
    Ok(Injected {
        fault_at: Some(fault_at),
        notes: vec![format!(
            "{sent} hostile requests; statuses {statuses:?} (0 = connection refused by HAProxy)"
        )],
        budgets: vec![Budget::at_most(
            "5xx or timeouts for hostile requests",
            server_errors,
            0,
        )],
    })
}

pub(super) fn budgets(report: &ProbeReport) -> Vec<Budget> {
    vec![
        Budget::at_most("logouts of real users", report.totals.logouts, 0),
        Budget::at_most("acknowledged writes lost", report.totals.lost_writes, 0),
        Budget::at_most("5xx for real users", super::server_errors(report), 0),
    ]
}
