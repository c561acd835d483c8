//! The failure scenarios: each brings the lab up (or uses a running one), starts the probe, injects its
//! fault, lets the system recover, and checks its budgets. One file per scenario; this module runs them and
//! writes the reports (terminal table, JSON, SVG timeline).
//!
//! | scenario | fault | budget |
//! |---|---|---|
//! | `app-kill` | `kill -9` one app instance, restart it | 0 logouts, 0 acked writes lost, errors ≤ requests in flight on that instance |
//! | `app-rolling-restart` | SIGTERM each instance in turn, restart, wait ready | 0 errors, 0 logouts |
//! | `redis-master-kill` | `kill -9` the master; restart it later on its data dir | 0 logouts, 0 acked writes lost, writes back ≤ down-after + 2 s (Sentinel's own promotion delay: see the scenario) |
//! | `redis-planned-failover` | `SENTINEL FAILOVER` | 0 acked writes lost |
//! | `redis-restart-all` | graceful restart of every Redis node | 0 sessions lost |
//! | `redis-crash-all` | `kill -9` of every Redis node at once, restart | loss ≤ 1 s of writes |
//! | `redis-partition` | cut the master off from replicas and Sentinels, heal after 10 s | 0 acked writes lost, nothing acknowledged by the isolated master |
//! | `bad-input` | forged and garbled cookies, oversized headers, a cookie flood at the LB | 0 5xx, 0 logouts of real users |
//! | `hostile` | login flood, anonymous flood, slowloris, cookie tossing, malformed requests, while users sign in | 0 logouts and 0 failed requests of real users, p99 bound, every sign-in succeeds, RSS ≤ hashing budget (the chart's request), 0 anonymous records, Redis growth bound, slow sockets closed by the header timeout |

mod app_kill;
mod app_rolling_restart;
mod bad_input;
mod hostile;
pub mod kubernetes;
mod redis_crash_all;
mod redis_master_kill;
mod redis_partition;
mod redis_planned_failover;
mod redis_restart_all;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::lab::{Driver, Lab, LabConfig};
use crate::probe::{Probe, ProbeConfig, ProbeReport};

/// Every scenario, in the order `moor chaos all` runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// `kill -9` of one app instance, then a restart.
    AppKill,
    /// SIGTERM of each instance in turn.
    AppRollingRestart,
    /// `kill -9` of the Redis master.
    RedisMasterKill,
    /// `SENTINEL FAILOVER`.
    RedisPlannedFailover,
    /// Graceful restart of every Redis node.
    RedisRestartAll,
    /// `kill -9` of every Redis node at once.
    RedisCrashAll,
    /// The master cut off from its replicas and the Sentinels.
    RedisPartition,
    /// Hostile requests at the load balancer.
    BadInput,
    /// An anonymous attacker (floods, slowloris, cookie tossing, malformed requests) while users sign in.
    Hostile,
}

impl Scenario {
    /// All scenarios, in order.
    pub const ALL: [Scenario; 9] = [
        Scenario::AppKill,
        Scenario::AppRollingRestart,
        Scenario::RedisMasterKill,
        Scenario::RedisPlannedFailover,
        Scenario::RedisRestartAll,
        Scenario::RedisCrashAll,
        Scenario::RedisPartition,
        Scenario::BadInput,
        Scenario::Hostile,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::AppKill => "app-kill",
            Scenario::AppRollingRestart => "app-rolling-restart",
            Scenario::RedisMasterKill => "redis-master-kill",
            Scenario::RedisPlannedFailover => "redis-planned-failover",
            Scenario::RedisRestartAll => "redis-restart-all",
            Scenario::RedisCrashAll => "redis-crash-all",
            Scenario::RedisPartition => "redis-partition",
            Scenario::BadInput => "bad-input",
            Scenario::Hostile => "hostile",
        }
    }

    /// What the scenario does, in a line.
    pub fn fault(self) -> &'static str {
        match self {
            Scenario::AppKill => "kill -9 one app instance, restart it",
            Scenario::AppRollingRestart => "SIGTERM each app instance in turn, restart, wait ready",
            Scenario::RedisMasterKill => "kill -9 the Redis master; restart it later on its data dir",
            Scenario::RedisPlannedFailover => "SENTINEL FAILOVER",
            Scenario::RedisRestartAll => "graceful restart of every Redis node",
            Scenario::RedisCrashAll => "kill -9 of every Redis node at once, restart",
            Scenario::RedisPartition => "cut the master off from replicas and Sentinels, heal",
            Scenario::BadInput => "forged and garbled cookies, oversized headers, a cookie flood at the LB",
            Scenario::Hostile => {
                "login flood, anonymous flood, slowloris, cookie tossing, malformed requests, while users sign in"
            }
        }
    }

    /// Whether the scenario needs Redis with Sentinel in the lab.
    fn needs_sentinel(self) -> bool {
        matches!(
            self,
            Scenario::RedisMasterKill | Scenario::RedisPlannedFailover | Scenario::RedisPartition
        )
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario '{s}'; one of: all, {}", names.join(", "))
            })
    }
}

/// How scenarios run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The lab to use (brought up if it is not running).
    pub lab: LabConfig,
    /// Short form (tens of seconds each), as CI runs them.
    pub short: bool,
    /// Virtual users of the probe.
    pub users: usize,
    /// Where reports go.
    pub report_dir: PathBuf,
}

/// One budget and whether it held.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Budget {
    /// What is measured.
    pub what: String,
    /// The limit.
    pub limit: String,
    /// The measured value.
    pub actual: String,
    /// Whether the measurement is within the limit.
    pub ok: bool,
}

impl Budget {
    /// A budget on a count: `actual <= limit`.
    pub fn at_most(what: &str, actual: u64, limit: u64) -> Self {
        Self {
            what: what.into(),
            limit: format!("≤ {limit}"),
            actual: actual.to_string(),
            ok: actual <= limit,
        }
    }

    /// A budget on a duration: `actual <= limit`.
    pub fn within(what: &str, actual: Duration, limit: Duration) -> Self {
        Self {
            what: what.into(),
            limit: format!("≤ {:.2} s", limit.as_secs_f64()),
            actual: format!("{:.2} s", actual.as_secs_f64()),
            ok: actual <= limit,
        }
    }
}

/// Everything a scenario run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// The fault injected.
    pub fault: String,
    /// Whether every budget held.
    pub passed: bool,
    /// The budgets.
    pub budgets: Vec<Budget>,
    /// Facts measured along the way (failover time, which node was master, ...).
    pub notes: Vec<String>,
    /// The probe's report.
    pub probe: ProbeReport,
}

/// What a scenario's fault injection measured, for its budgets.
#[derive(Debug, Default)]
pub(crate) struct Injected {
    /// Facts for the report.
    pub notes: Vec<String>,
    /// When the fault started, relative to the probe's start.
    pub fault_at: Option<Duration>,
    /// Budgets measured by the injection itself (for example, the attack traffic of bad-input).
    pub budgets: Vec<Budget>,
}

/// What a scenario sees while it runs.
pub(crate) struct Ctx<'a> {
    pub lab: &'a Lab,
    pub probe: &'a Probe,
    pub short: bool,
    pub users: usize,
    pub apps: usize,
    pub down_after: Duration,
    pub started: Instant,
}

impl Ctx<'_> {
    /// Marks an event on the probe's timeline and returns its offset from the start.
    pub fn mark(&self, label: &str) -> Duration {
        self.probe.mark(label);
        tracing::info!(event = label, "chaos");
        self.started.elapsed()
    }

    /// Lets the probe run: shorter in the short form.
    pub async fn settle(&self, long: Duration, short: Duration) {
        tokio::time::sleep(if self.short { short } else { long }).await;
    }
}

/// Runs one scenario against a local lab and writes its JSON and SVG reports.
pub async fn run(scenario: Scenario, opts: &ChaosOptions) -> anyhow::Result<ScenarioReport> {
    let mut lab_config = opts.lab.clone();
    if scenario.needs_sentinel() && lab_config.driver != Driver::RedisSentinel {
        anyhow::bail!("{} needs the lab on the redis-sentinel driver", scenario.name());
    }
    if matches!(
        scenario,
        Scenario::RedisRestartAll | Scenario::RedisCrashAll | Scenario::Hostile
    ) && lab_config.driver == Driver::Sql
    {
        anyhow::bail!("{} needs Redis in the lab", scenario.name());
    }
    lab_config.apps = lab_config.apps.max(2);
    let lab = Lab::up(lab_config.clone()).await?;
    let duration = match (scenario, opts.short) {
        (Scenario::Hostile, true) => hostile::PROBE_DURATION.0,
        (Scenario::Hostile, false) => hostile::PROBE_DURATION.1,
        (_, true) => Duration::from_secs(40),
        (_, false) => Duration::from_secs(120),
    };
    let probe = Probe::start(ProbeConfig {
        base_url: lab.url(),
        users: opts.users,
        duration: Some(duration),
        requests: None,
        think: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        verify_every: 20,
    })
    .await?;
    let ctx = Ctx {
        lab: &lab,
        probe: &probe,
        short: opts.short,
        users: opts.users,
        apps: lab_config.apps,
        down_after: Duration::from_millis(lab_config.down_after_ms),
        started: Instant::now(),
    };
    ctx.settle(Duration::from_secs(5), Duration::from_secs(2)).await;
    let injected = match scenario {
        Scenario::AppKill => app_kill::inject(&ctx).await,
        Scenario::AppRollingRestart => app_rolling_restart::inject(&ctx).await,
        Scenario::RedisMasterKill => redis_master_kill::inject(&ctx).await,
        Scenario::RedisPlannedFailover => redis_planned_failover::inject(&ctx).await,
        Scenario::RedisRestartAll => redis_restart_all::inject(&ctx).await,
        Scenario::RedisCrashAll => redis_crash_all::inject(&ctx).await,
        Scenario::RedisPartition => redis_partition::inject(&ctx).await,
        Scenario::BadInput => bad_input::inject(&ctx).await,
        Scenario::Hostile => hostile::inject(&ctx).await,
    };
    // Recovery time with traffic, then the probe's final verification of every acknowledged write.
    ctx.settle(Duration::from_secs(10), Duration::from_secs(4)).await;
    let (users, apps, short) = (ctx.users, ctx.apps, ctx.short);
    let report = probe.stop().await;
    let injected = injected?;
    let mut budgets = match scenario {
        Scenario::AppKill => app_kill::budgets(users, apps, &report),
        Scenario::AppRollingRestart => app_rolling_restart::budgets(&report),
        Scenario::RedisMasterKill => redis_master_kill::budgets(&report),
        Scenario::RedisPlannedFailover => redis_planned_failover::budgets(&report),
        Scenario::RedisRestartAll => redis_restart_all::budgets(&report),
        Scenario::RedisCrashAll => redis_crash_all::budgets(&report, &injected),
        Scenario::RedisPartition => redis_partition::budgets(&report),
        Scenario::BadInput => bad_input::budgets(&report),
        Scenario::Hostile => hostile::budgets(&report, short),
    };
    budgets.extend(injected.budgets);
    let result = ScenarioReport {
        scenario: scenario.name().into(),
        fault: scenario.fault().into(),
        passed: budgets.iter().all(|b| b.ok),
        budgets,
        notes: injected.notes,
        probe: report,
    };
    write_reports(&result, &opts.report_dir)?;
    Ok(result)
}

/// Writes `<dir>/<scenario>.json` and `<dir>/<scenario>.svg`.
pub fn write_reports(report: &ScenarioReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(dir.join(format!("{}.json", report.scenario)), json)?;
    let title = format!("{}: {}", report.scenario, report.fault);
    std::fs::write(
        dir.join(format!("{}.svg", report.scenario)),
        report.probe.to_svg(&title),
    )?;
    Ok(())
}

/// The terminal summary of one scenario.
pub fn summary_table(report: &ScenarioReport) -> String {
    let mut out = String::new();
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "{verdict}  {} ({})", report.scenario, report.fault);
    let _ = writeln!(out, "  {:<44} {:>12} {:>12}  ok", "budget", "limit", "measured");
    for b in &report.budgets {
        let _ = writeln!(
            out,
            "  {:<44} {:>12} {:>12}  {}",
            b.what,
            b.limit,
            b.actual,
            if b.ok { "yes" } else { "NO" }
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "  - {note}");
    }
    out.push_str(&report.probe.to_table());
    out
}

/// Requests that failed (any kind of error).
pub(crate) fn errors(report: &ProbeReport) -> u64 {
    report.totals.errors_by_kind.values().sum()
}

/// Requests answered with a 5xx.
pub(crate) fn server_errors(report: &ProbeReport) -> u64 {
    report
        .totals
        .errors_by_kind
        .iter()
        .filter(|(kind, _)| kind.starts_with("http_5"))
        .map(|(_, n)| n)
        .sum()
}

/// Acknowledged writes per second over the seconds before `fault` (the probe's timeline).
pub(crate) fn acked_rate_before(report: &ProbeReport, fault: Duration) -> f64 {
    let before: Vec<_> = report.timeline.iter().filter(|s| s.t < fault.as_secs()).collect();
    if before.is_empty() {
        return 0.0;
    }
    before.iter().map(|s| s.acked as f64).sum::<f64>() / before.len() as f64
}

/// A single anonymous session that writes through the load balancer, to time when writes come back.
pub(crate) struct Writer {
    http: reqwest::Client,
    url: String,
    cookie: String,
}

impl Writer {
    /// Creates the session (the store must be writable now).
    pub async fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        let url = format!("{base}/session/values/moor-writer");
        let response = http.put(&url).json("before").send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the writer's first write got {}",
            response.status()
        );
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .ok_or_else(|| anyhow::anyhow!("the writer's first write set no cookie"))?
            .to_owned();
        Ok(Self { http, url, cookie })
    }

    /// How long until a write is acknowledged again, trying continuously from now.
    pub async fn first_ok_within(self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < limit {
            n += 1;
            let sent = self
                .http
                .put(&self.url)
                .header("cookie", &self.cookie)
                .json(&format!("w{n}"))
                .send()
                .await;
            if sent.is_ok_and(|r| r.status().is_success()) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("no write acknowledged within {limit:?}")
    }
}

/// Stops every Redis node with `signal`, waits, starts them all on their data dirs and waits until the lab is
/// healthy: the injection of `redis-restart-all` (SIGTERM) and `redis-crash-all` (SIGKILL).
pub(crate) async fn restart_every_redis(
    ctx: &Ctx<'_>,
    signal: crate::lab::Signal,
    what: &str,
) -> anyhow::Result<Injected> {
    let nodes = ctx.lab.redis_nodes().await;
    let fault_at = ctx.mark(what);
    for node in &nodes {
        ctx.lab.signal_redis(node, signal).await?;
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

/// The common budgets every session scenario shares.
pub(crate) fn session_budgets(report: &ProbeReport) -> Vec<Budget> {
    vec![
        Budget::at_most("logouts", report.totals.logouts, 0),
        Budget::at_most("acknowledged writes lost", report.totals.lost_writes, 0),
    ]
}

/// A note when the node that rejoined follows a newer master than the one the scenario saw promoted: the
/// Sentinels failed over again meanwhile (on a busy machine a master that misses `down-after-milliseconds`
/// of pings looks down to them). The session budgets still hold across both failovers. The note carries the
/// last lines of every Redis node's and Sentinel's log, which say why the second failover happened (the lab
/// directory may be wiped before anyone reads it).
pub(crate) fn another_failover(lab: &crate::lab::Lab, promoted: &str, following: &str) -> Option<String> {
    use crate::lab::MemberKind;
    (promoted != following).then(|| {
        format!(
            "the Sentinels failed over again during the scenario: {promoted} -> {following}; the logs:\n{}",
            lab.log_tails(&[MemberKind::Redis, MemberKind::Sentinel], 25)
        )
    })
}
