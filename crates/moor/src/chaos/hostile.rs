//! `hostile`: an anonymous attacker at the load balancer while the probe's virtual users use the site. All at
//! once, for an attack window (20 s short, 75 s full):
//!
//! - **login flood**: 40 clients (10 short), each from its own source address (127.0.0.100 + i), looping
//!   `GET /login` + `POST /login` with a wrong password for random accounts. Each attempt costs a password
//!   hash (19 MiB of argon2 memory); per-address throttling cannot stop them all, so what holds is the app's
//!   bounded hashing (fixed workers, a bounded queue, `503` + `Retry-After` beyond).
//! - **anonymous flood**: 2,000 cookieless `GET /login` / `GET /register` (600 short), with failing form posts
//!   (those not sent by the end of the window are counted as skipped).
//! - **slowloris**: 200 sockets (40 short) sending one header byte every 5 s (1 s short), half at HAProxy and
//!   half straight at the app instances (as behind a pass-through load balancer); each one's closing time.
//! - **cookie tossing**: a real user's dashboard requests carrying a second, valid session cookie of the
//!   attacker's own account, garbage cookies of the same name, and a non-ASCII cookie.
//! - **malformed and oversized requests**, at HAProxy and at one instance directly.
//! - meanwhile **real users sign in** from 127.0.0.1, two a second (three full): accounts registered before the
//!   flood sign in, and new accounts register, each retrying a `503` that carries `Retry-After`.
//!
//! Budgets, each a check that can fail (the runbook gives the reasons and the figures):
//! - the probe's real users: 0 logouts, 0 failed requests, 0 lost writes, p99 latency ≤ [`P99_BOUND`] (short) or
//!   [`P99_BOUND_FULL`] (full);
//! - every real sign-in and registration during the flood succeeds (retries reported);
//! - peak RSS of every app instance ≤ hashing workers × 19 MiB + [`RSS_BASELINE_MIB`], rounded up to 32 MiB
//!   (the chart's memory request);
//! - 0 session records without a user created during the attack; Redis memory growth beyond the real users'
//!   own keys ≤ [`REDIS_GROWTH_BOUND`]; 0 keys without a TTL created;
//! - slow sockets closed within the header-read timeout + [`SLOW_SLACK`] (the app's `HTTP_HEADER_READ_TIMEOUT_MS`
//!   default at the apps, HAProxy's `timeout http-request` at the load balancer);
//! - cookie tossing never serves the attacker's account, never drops the victim's good cookie, never clears it;
//! - no 5xx (other than `503` + `Retry-After`) and no hanging request for any hostile request; a `PUT` without
//!   JSON is never acknowledged; no panic in the app logs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::{Budget, Ctx, Injected};
use crate::attack::{self, Browser, SignIn, SlowSocket, Tally, measure};
use crate::probe::ProbeReport;

/// The real users' p99 latency bound, short and full form. Measured on the 2-core development machine (debug
/// builds of the apps and of moor, 3 apps, 20 users, attackers and lab on the same two cores). Before the
/// hashing bound: 1.13-1.45 s short, 3.38 s full, with 173 failed requests (real users queued behind 40
/// clients' hashes until HAProxy marked instances down). With it: 0.47 s short, 2.27-2.31 s full and 0
/// failures. The full form's flood (2,000 page views, 40 hashing clients, 200 slow sockets, every process on
/// the same two cores) keeps both cores busy whatever the app does, so a page waits for a core; renicing the
/// hashing threads was tried and did not lower the p99 (2.27 s), it only made sign-ins wait longer. 2 s short
/// and 3 s full leave a margin over what was measured, and still fail when real users queue behind hashes.
pub(crate) const P99_BOUND: Duration = Duration::from_secs(2);
/// The full form's p99 bound (see [`P99_BOUND`]).
pub(crate) const P99_BOUND_FULL: Duration = Duration::from_secs(3);
/// The app's memory besides password hashing: code, allocator arenas, connection buffers under the attack.
/// Measured idle RSS of a debug `inventory` is ~20 MiB; 40 MiB is the figure the chart's formula uses.
pub(crate) const RSS_BASELINE_MIB: u64 = 40;
/// Argon2id memory of one hash with the app's parameters (m = 19 MiB, OWASP's minimum).
pub(crate) const HASH_MIB: u64 = 19;
/// Hashing workers when the app does not document a numeric default (the brief's default).
const DEFAULT_HASH_WORKERS: u64 = 2;
/// Redis memory growth allowed beyond the real users' own keys (`used_memory` less the replication backlog and
/// the AOF buffer, which fill with any write): login throttle counters (short-lived, bounded by their TTL),
/// client buffers, allocator noise. The anonymous-records budget is what catches a record per visit; this
/// one catches anything else that grows with hostile traffic.
pub(crate) const REDIS_GROWTH_BOUND: u64 = 1 << 20;
/// What a slow socket may outlive its timeout by: a timer's granularity and a busy machine.
pub(crate) const SLOW_SLACK: Duration = Duration::from_secs(2);
/// HAProxy's `timeout http-request` in the lab (see `lab/haproxy.rs`).
const HAPROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The header-read timeout assumed when the app documents none: the same as HAProxy's.
const ASSUMED_HEADER_TIMEOUT: Duration = HAPROXY_HEADER_TIMEOUT;

/// How long a real user's sign-in or registration may take, retries included: a user who waits longer has
/// given up.
pub(crate) const SIGN_IN_DEADLINE: Duration = Duration::from_secs(20);
/// How long the probe's real users use the site in the short and the full form: the attack window, the
/// set-up before it and the last sign-ins after it fit inside.
pub(crate) const PROBE_DURATION: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(180));

/// The sizes of one run.
struct Form {
    window: Duration,
    flood_clients: usize,
    anonymous_views: usize,
    slow_sockets: usize,
    slow_interval: Duration,
    sign_in_every: Duration,
    accounts: usize,
    tossing_rounds: usize,
    malformed_rounds: usize,
}

impl Form {
    fn new(short: bool) -> Self {
        if short {
            Self {
                window: Duration::from_secs(20),
                flood_clients: 10,
                anonymous_views: 600,
                slow_sockets: 40,
                slow_interval: Duration::from_secs(1),
                sign_in_every: Duration::from_millis(500),
                accounts: 6,
                tossing_rounds: 5,
                malformed_rounds: 1,
            }
        } else {
            Self {
                window: Duration::from_secs(90),
                flood_clients: 40,
                anonymous_views: 2000,
                slow_sockets: 200,
                slow_interval: Duration::from_secs(5),
                sign_in_every: Duration::from_millis(333),
                accounts: 10,
                tossing_rounds: 20,
                malformed_rounds: 3,
            }
        }
    }
}

/// The number a default of the app's configuration table starts with (the table is compiled into moor from
/// the same workspace; a default such as "10000 (10 s)" gives 10000).
fn app_default(name: &str) -> Option<u64> {
    let default = inventory::config::VARIABLES
        .iter()
        .find(|v| v.name == name)?
        .default
        .trim();
    let digits: String = default.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The RSS budget of one instance in MiB, and the hashing workers it assumes: the hashing budget (workers ×
/// 19 MiB + the baseline) rounded up to the next 32 MiB, which is the chart's memory request (96Mi for 2
/// workers). An instance that stays under its request never presses on its node.
pub(crate) fn rss_budget_mib() -> (u64, u64) {
    let workers = app_default("PASSWORD_HASH_WORKERS").unwrap_or(DEFAULT_HASH_WORKERS);
    ((workers * HASH_MIB + RSS_BASELINE_MIB).div_ceil(32) * 32, workers)
}

/// The app's header-read timeout, if it has one.
fn app_header_timeout() -> Option<Duration> {
    app_default("HTTP_HEADER_READ_TIMEOUT_MS").map(Duration::from_millis)
}

pub(super) async fn inject(ctx: &Ctx<'_>) -> anyhow::Result<Injected> {
    let form = Form::new(ctx.short);
    let base = ctx.lab.url();
    let lb: SocketAddr = base.trim_start_matches("http://").parse()?;
    let apps: Vec<SocketAddr> = ctx.lab.layout().apps.iter().map(|a| a.http.into()).collect();
    let master = ctx.lab.redis_master().await?;
    let mut notes = Vec::new();
    let mut budgets = Vec::new();

    // Before the attack: the real users' accounts, the victim and the attacker of the cookie tossing.
    let run = format!(
        "{:x}",
        attack::Rng::new(std::process::id().into()).next() & 0xff_ffff
    );
    let password = format!("hostile-{run}-password");
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    // Four at a time: each registration is a password hash, and the probe's users are already busy.
    let registrations = futures_util::stream::iter(0..form.accounts)
        .map(|i| {
            let (base, password) = (base.clone(), password.clone());
            let email = format!("real-{run}-{i}@users.example");
            async move {
                let result = Browser::new(&base, None)?
                    .register(&email, &password, setup_deadline)
                    .await;
                anyhow::ensure!(
                    result.ok,
                    "registering {email} before the attack: {:?}",
                    result.failure
                );
                anyhow::Ok(email)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let registered = registrations.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let victim_email = format!("victim-{run}@users.example");
    let mut victim = Browser::new(&base, None)?;
    let r = victim.register(&victim_email, &password, setup_deadline).await;
    anyhow::ensure!(r.ok, "registering the victim: {:?}", r.failure);
    let attacker_email = format!("attacker-{run}@evil.example");
    let mut attacker = Browser::new(&base, Some(attack::sources(170, 1)[0]))?;
    let r = attacker
        .register(&attacker_email, &password, setup_deadline)
        .await;
    anyhow::ensure!(r.ok, "registering the attacker: {:?}", r.failure);

    let logs: Vec<_> = (0..ctx.apps).map(|i| ctx.lab.app_log(i)).collect();
    let panics_before: u64 = logs.iter().map(|l| measure::panics_in(l)).sum();
    let census_before = measure::census(&master).await?;
    let processes: Vec<(u32, String)> = ctx
        .lab
        .app_pids()
        .into_iter()
        .enumerate()
        .filter_map(|(i, pid)| Some((pid?, ctx.lab.app_name(i))))
        .collect();
    anyhow::ensure!(processes.len() == ctx.apps, "not every app instance is running");
    let sampler = measure::RssSampler::start(processes, Duration::from_millis(100));

    let fault_at = ctx.mark("attack begins");
    let started = Instant::now();
    let until = started + form.window;
    let header_timeout = app_header_timeout();
    let app_slow_limit = header_timeout.unwrap_or(ASSUMED_HEADER_TIMEOUT) + SLOW_SLACK;
    let lb_slow_limit = HAPROXY_HEADER_TIMEOUT + SLOW_SLACK;
    let observe = app_slow_limit.max(lb_slow_limit) + Duration::from_secs(3);

    let (flood_sources, anonymous_sources) =
        (attack::sources(100, form.flood_clients), attack::sources(150, 10));
    let flood = attack::login_flood(&base, &flood_sources, until);
    let anonymous = attack::anonymous_flood(&base, form.anonymous_views, &anonymous_sources, 16, until);
    let half = form.slow_sockets / 2;
    let slow_sources = attack::sources(160, 10);
    let lbs = [lb];
    let slow_lb = attack::slowloris(&lbs, half, &slow_sources, form.slow_interval, observe);
    let slow_apps = attack::slowloris(
        &apps,
        form.slow_sockets - half,
        &slow_sources,
        form.slow_interval,
        observe,
    );
    let sign_ins = sign_ins(&base, &registered, &password, &run, form.sign_in_every, until);
    let tossing = async {
        let every = form.window / (form.tossing_rounds as u32 + 1);
        let mut total = attack::TossingReport::default();
        for _ in 0..form.tossing_rounds {
            tokio::time::sleep(every).await;
            total.merge(attack::cookie_tossing(&victim, &victim_email, &attacker, &attacker_email, 1).await?);
        }
        anyhow::Ok(total)
    };
    let malformed = async {
        let source = attack::sources(171, 1)[0];
        let (mut at_lb, mut at_app) = (
            attack::MalformedReport::default(),
            attack::MalformedReport::default(),
        );
        for _ in 0..form.malformed_rounds {
            at_lb.merge(&attack::malformed_requests(lb, source).await);
            at_app.merge(&attack::malformed_requests(apps[0], source).await);
        }
        (at_lb, at_app)
    };
    let (flood, anonymous, slow_lb, slow_apps, sign_ins, tossing, (malformed_lb, malformed_app)) =
        tokio::join!(flood, anonymous, slow_lb, slow_apps, sign_ins, tossing, malformed);
    let (flood, anonymous, tossing) = (flood?, anonymous?, tossing?);
    ctx.mark("attack ends");
    let rss = sampler.stop().await;
    let census_after = measure::census(&master).await?;
    let panics: u64 = logs.iter().map(|l| measure::panics_in(l)).sum::<u64>() - panics_before;

    // Real users signing in during the flood.
    let failed: Vec<&SignIn> = sign_ins.iter().filter(|s| !s.ok).collect();
    budgets.push(Budget::at_most(
        "real sign-ins during the flood that failed",
        failed.len() as u64,
        0,
    ));
    let mut elapsed: Vec<Duration> = sign_ins.iter().map(|s| s.elapsed).collect();
    elapsed.sort();
    notes.push(format!(
        "real users: {} sign-ins and registrations from 127.0.0.1 during the flood, {} succeeded, {} retries after 503 + Retry-After; time to the dashboard p50 {:.2} s, max {:.2} s{}",
        sign_ins.len(),
        sign_ins.len() - failed.len(),
        sign_ins.iter().map(|s| u64::from(s.retries)).sum::<u64>(),
        elapsed.get(elapsed.len() / 2).map_or(0.0, Duration::as_secs_f64),
        elapsed.last().map_or(0.0, Duration::as_secs_f64),
        failed
            .first()
            .and_then(|s| s.failure.as_deref())
            .map(|f| format!("; first failure: {f}"))
            .unwrap_or_default(),
    ));

    // Memory of the apps.
    let (rss_budget, workers) = rss_budget_mib();
    let worst = rss.iter().map(measure::RssPeak::worst_mib).fold(0.0, f64::max);
    budgets.push(Budget {
        what: "peak app RSS, worst instance (MiB)".into(),
        limit: format!("≤ {rss_budget}"),
        actual: format!("{worst:.0}"),
        ok: worst <= rss_budget as f64,
    });
    notes.push(format!(
        "app RSS budget {rss_budget} MiB = {workers} hashing workers × {HASH_MIB} MiB + {RSS_BASELINE_MIB} MiB baseline, rounded up to 32 MiB (the chart's memory request); per instance (sampled peak / VmHWM / at the start, MiB): {}",
        rss.iter()
            .map(|p| format!(
                "{} {:.0}/{:.0}/{:.0}",
                p.name,
                p.peak_kib as f64 / 1024.0,
                p.hwm_kib as f64 / 1024.0,
                p.first_kib as f64 / 1024.0
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The session store.
    let created = census_after
        .anonymous_records
        .saturating_sub(census_before.anonymous_records);
    budgets.push(Budget::at_most(
        "session records created by anonymous traffic",
        created,
        0,
    ));
    let growth = census_after
        .data_memory()
        .saturating_sub(census_before.data_memory());
    let users_growth = census_after.user_bytes.saturating_sub(census_before.user_bytes);
    let beyond = growth.saturating_sub(users_growth);
    budgets.push(Budget {
        what: "Redis growth beyond real users' keys (KiB)".into(),
        limit: format!("≤ {}", REDIS_GROWTH_BOUND / 1024),
        actual: (beyond / 1024).to_string(),
        ok: beyond <= REDIS_GROWTH_BOUND,
    });
    budgets.push(Budget::at_most(
        "Redis keys without a TTL created",
        census_after
            .keys_without_ttl
            .saturating_sub(census_before.keys_without_ttl),
        0,
    ));
    notes.push(format!(
        "Redis {master}: used_memory less replication backlog and AOF buffer {} -> {} KiB (+{} KiB; real users' records and indexes +{} KiB); anonymous records {} -> {} ({} KiB); user records {} -> {}; other keys {} -> {} ({} KiB)",
        census_before.data_memory() / 1024,
        census_after.data_memory() / 1024,
        growth / 1024,
        users_growth / 1024,
        census_before.anonymous_records,
        census_after.anonymous_records,
        census_after.anonymous_bytes / 1024,
        census_before.user_records,
        census_after.user_records,
        census_before.other_keys,
        census_after.other_keys,
        census_after.other_bytes / 1024,
    ));

    // Slow sockets.
    budgets.push(slow_budget(
        "slow sockets at the apps: last closed",
        &slow_apps,
        app_slow_limit,
        observe,
    ));
    budgets.push(slow_budget(
        "slow sockets at HAProxy: last closed",
        &slow_lb,
        lb_slow_limit,
        observe,
    ));
    notes.push(format!(
        "slowloris: {} sockets at the apps ({}), {} at HAProxy ({}); header-read timeout of the app: {}",
        slow_apps.len(),
        describe_slow(&slow_apps),
        slow_lb.len(),
        describe_slow(&slow_lb),
        header_timeout.map_or_else(
            || format!("none documented (HTTP_HEADER_READ_TIMEOUT_MS is not a variable of the app; the budget assumes {} s)", ASSUMED_HEADER_TIMEOUT.as_secs()),
            |t| format!("{} ms (the app's default)", t.as_millis())
        ),
    ));

    // Cookie tossing.
    budgets.push(Budget::at_most(
        "tossed requests served as the attacker",
        tossing.as_attacker,
        0,
    ));
    budgets.push(Budget::at_most(
        "victim's good cookie dropped (garbage, non-ASCII)",
        tossing.victim_dropped,
        0,
    ));
    budgets.push(Budget::at_most(
        "tossing answers that cleared/replaced the cookie",
        tossing.cookie_changed + u64::from(!tossing.victim_intact),
        0,
    ));
    notes.push(format!(
        "cookie tossing: {} requests, {} errors, victim still signed in afterwards: {}; outcomes {:?}",
        tossing.requests, tossing.errors, tossing.victim_intact, tossing.outcomes
    ));

    // Everything else hostile: no server failure, no acknowledged non-JSON PUT, no panic.
    let mut hostile = Tally::default();
    for tally in [
        &flood.forms,
        &flood.attempts,
        &anonymous.pages,
        &anonymous.posts,
        &malformed_lb.total(),
        &malformed_app.total(),
    ] {
        hostile.merge(tally);
    }
    budgets.push(Budget::at_most(
        "hostile requests: 5xx (not 503+Retry-After) or hung",
        hostile.server_failures() + tossing.errors,
        0,
    ));
    let acked_non_json = [&malformed_lb, &malformed_app]
        .iter()
        .filter_map(|r| r.cases.get("PUT without JSON"))
        .map(|t| t.count(200))
        .sum();
    budgets.push(Budget::at_most(
        "PUT without JSON acknowledged",
        acked_non_json,
        0,
    ));
    budgets.push(Budget::at_most("panics in the app logs", panics, 0));
    notes.push(format!(
        "login flood: {} clients from 127.0.0.100+, {} attempts ({}); forms {}",
        form.flood_clients,
        flood.attempts.total(),
        flood.attempts,
        flood.forms
    ));
    notes.push(format!(
        "anonymous flood: {} cookieless page views ({}; {} not sent by the end of the window); failing form posts ({})",
        anonymous.pages.total(),
        anonymous.pages,
        anonymous.skipped,
        anonymous.posts
    ));
    for (at, report) in [("HAProxy", &malformed_lb), ("app-1 directly", &malformed_app)] {
        notes.push(format!(
            "malformed at {at}: {}",
            report
                .cases
                .iter()
                .map(|(case, tally)| format!("{case}: {tally}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(Injected {
        fault_at: Some(fault_at),
        notes,
        budgets,
    })
}

/// Real users from 127.0.0.1, one every `every` until `until`: even ones sign in with an account registered
/// before the flood (in turn), odd ones register a new account. Each has [`SIGN_IN_DEADLINE`] to reach its
/// dashboard.
async fn sign_ins(
    base: &str,
    registered: &[String],
    password: &str,
    run: &str,
    every: Duration,
    until: Instant,
) -> Vec<SignIn> {
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while Instant::now() < until {
        let base = base.to_owned();
        let password = password.to_owned();
        let (email, register) = if n.is_multiple_of(2) && !registered.is_empty() {
            (registered[(n / 2) % registered.len()].clone(), false)
        } else {
            (format!("new-{run}-{n}@users.example"), true)
        };
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + SIGN_IN_DEADLINE;
            match Browser::new(&base, None) {
                Ok(mut browser) if register => browser.register(&email, &password, deadline).await,
                Ok(mut browser) => browser.sign_in(&email, &password, deadline).await,
                Err(e) => SignIn {
                    ok: false,
                    retries: 0,
                    elapsed: Duration::ZERO,
                    failure: Some(format!("{e:#}")),
                },
            }
        }));
        n += 1;
        tokio::time::sleep(every).await;
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap_or(SignIn {
            ok: false,
            retries: 0,
            elapsed: Duration::ZERO,
            failure: Some("the sign-in task panicked".into()),
        }));
    }
    results
}

/// The budget on when the last of `sockets` was closed: at most `limit` after it connected; a socket still
/// open when the observation ended (`observe`) breaks it.
fn slow_budget(what: &str, sockets: &[SlowSocket], limit: Duration, observe: Duration) -> Budget {
    let open = sockets.iter().filter(|s| s.closed_after.is_none()).count();
    let last = sockets
        .iter()
        .filter_map(|s| s.closed_after)
        .max()
        .unwrap_or_default();
    Budget {
        what: what.into(),
        limit: format!("≤ {:.2} s", limit.as_secs_f64()),
        actual: if open > 0 {
            format!("{open} open at {:.0} s", observe.as_secs_f64())
        } else {
            format!("{:.2} s", last.as_secs_f64())
        },
        ok: open == 0 && last <= limit,
    }
}

/// How a group of slow sockets ended.
fn describe_slow(sockets: &[SlowSocket]) -> String {
    let mut closed: Vec<f64> = sockets
        .iter()
        .filter_map(|s| s.closed_after)
        .map(|d| d.as_secs_f64())
        .collect();
    closed.sort_by(f64::total_cmp);
    let open = sockets.len() - closed.len();
    let refused = sockets.iter().filter(|s| s.refused).count();
    let answered = sockets.iter().filter(|s| s.answered).count();
    match (closed.first(), closed.last()) {
        (Some(first), Some(last)) => format!(
            "closed after {first:.1}-{last:.1} s, {open} still open, {refused} refused, {answered} answered before closing"
        ),
        _ => format!("none closed, {open} still open"),
    }
}

pub(super) fn budgets(report: &ProbeReport, short: bool) -> Vec<Budget> {
    vec![
        Budget::at_most("logouts of real users", report.totals.logouts, 0),
        Budget::at_most("failed requests of real users", super::errors(report), 0),
        Budget::at_most("acknowledged writes lost", report.totals.lost_writes, 0),
        Budget::within(
            "real users' p99 latency",
            Duration::from_secs_f64(report.latency_ms.p99 / 1000.0),
            if short { P99_BOUND } else { P99_BOUND_FULL },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(closed_after: Option<u64>) -> SlowSocket {
        SlowSocket {
            target: "127.0.0.1:1".parse().unwrap(),
            closed_after: closed_after.map(Duration::from_secs),
            refused: false,
            answered: false,
        }
    }

    #[test]
    fn a_slow_socket_left_open_or_closed_late_breaks_the_budget() {
        let limit = Duration::from_secs(12);
        let observe = Duration::from_secs(15);
        assert!(slow_budget("x", &[socket(Some(10)), socket(Some(11))], limit, observe).ok);
        assert!(!slow_budget("x", &[socket(Some(10)), socket(Some(13))], limit, observe).ok);
        let open = slow_budget("x", &[socket(Some(10)), socket(None)], limit, observe);
        assert!(!open.ok);
        assert_eq!(open.actual, "1 open at 15 s");
    }

    #[test]
    fn the_rss_budget_follows_the_hashing_workers() {
        let (budget, workers) = rss_budget_mib();
        assert!(workers >= 1);
        assert!(budget >= workers * HASH_MIB + RSS_BASELINE_MIB && budget.is_multiple_of(32));
        assert!(budget < workers * HASH_MIB + RSS_BASELINE_MIB + 32);
    }
}
