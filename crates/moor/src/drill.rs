//! `moor drill`: the restore drill. A backup proves nothing until it has been restored; the drill restores
//! the newest backups somewhere harmless and checks that what came back is what the app would load.
//!
//! 1. **Sessions.** The newest sessions backup is fetched and opened (signature checked), its entries are
//!    restored into a scratch Redis (started by the drill on a free loopback port with no persistence and
//!    killed at the end, or one given by URL that must be empty) with the same `restore_entries` a real
//!    restore uses, and the scratch Redis is audited with the store's own codec
//!    ([`mooring_redis::audit`]): every session must decode. The live Redis is audited too (read-only, a
//!    replica will do) and the counts of sessions, signed-in sessions and users are compared. Left out with
//!    `--no-sessions`, for an app that keeps its sessions in SQL (they are in the database backup then).
//! 2. **Database** (with `--database-url`): the newest database backup is fetched and opened, restored with
//!    the engine's tool into a scratch database `moor_drill_<ms>` created through an admin URL (and dropped
//!    after), or counted where another container restored it already (`--restored-database-url`); the rows
//!    of every table are counted there and in the live database.
//! 3. **Report.** The backups, when they were taken, the RPO (each backup's age), the RTO (fetch + verify +
//!    restore), the counts (backup against live) and each check with pass or fail and why, as a table and as
//!    JSON. The drill passes only if every check passed.
//!
//! A step that cannot be done is a failed check naming why, not an error: the report is always written, so
//! the job that runs the drill has something to show and alert on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use mooring::now_ms;
use mooring_redis::{Audit, RedisConfig};
use redis::IntoConnectionInfo;
use serde::Serialize;

use crate::archive::{self, BackupKeys, Kind};
use crate::backup::{self, Target};
use crate::database::{self, DbUrl};
use crate::repo::{Repo, S3Settings};

/// How many undecodable keys a failed check names.
const NAMED_KEYS: usize = 10;

/// Where the drill restores the sessions.
#[derive(Clone, Debug)]
pub enum ScratchRedis {
    /// Start this `redis-server` binary on a free loopback port (killed at the end).
    Spawn(PathBuf),
    /// Use the Redis at this URL, which must be empty.
    Url(String),
}

/// Where the drill restores (or finds) the database.
#[derive(Clone, Debug)]
pub enum ScratchDatabase {
    /// No place given: a database drill fails saying so.
    None,
    /// Create `moor_drill_<ms>` through this admin URL, restore into it, drop it after.
    Admin(DbUrl),
    /// Another process restored the backup into this database already: only count.
    Restored(DbUrl),
}

/// What the drill checks and against what.
pub struct DrillOptions {
    /// The backup location (`--from`): a directory, a file, `s3://bucket/prefix/`.
    pub from: String,
    /// S3 settings for `from`.
    pub s3: S3Settings,
    /// The keys backups are opened with.
    pub keys: BackupKeys,
    /// Whether to drill the sessions backup (false when the app keeps its sessions in SQL).
    pub sessions: bool,
    /// The live Redis (the app's configuration).
    pub live: RedisConfig,
    /// The live key prefix (the backup's own prefix is used for the scratch Redis).
    pub prefix: String,
    /// Where to restore the sessions.
    pub scratch_redis: ScratchRedis,
    /// The live database, if the drill covers it.
    pub database: Option<DbUrl>,
    /// Where to restore the database.
    pub scratch_database: ScratchDatabase,
    /// Backups older than this fail.
    pub max_age: Duration,
    /// The largest difference between a backup's count and the live one, as a fraction of the live one.
    pub max_drift: f64,
}

/// One check of the drill.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

/// The counts of an audit, as the report shows them.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Sessions that decode and have not reached their deadline.
    pub sessions: u64,
    /// Of those, signed in.
    pub signed_in: u64,
    /// Distinct signed-in users.
    pub users: u64,
    /// User index keys.
    pub user_indexes: u64,
    /// Login-throttle keys.
    pub throttle_keys: u64,
    /// Sessions past their deadline.
    pub expired: u64,
    /// Keys of the store's layout that do not decode.
    pub undecodable: u64,
}

impl From<&Audit> for Counts {
    fn from(a: &Audit) -> Self {
        Self {
            sessions: a.sessions,
            signed_in: a.signed_in,
            users: a.users,
            user_indexes: a.user_indexes,
            throttle_keys: a.throttle_keys,
            expired: a.expired,
            undecodable: a.undecodable_count,
        }
    }
}

/// A backup the drill read, and how long each step took.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BackupTimes {
    /// Where it was read.
    pub backup: String,
    /// When it was taken (unix ms, from its signed header).
    pub taken_at_ms: u64,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Its age when the drill read it (the RPO), in seconds.
    pub rpo_s: f64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Fetching it, ms.
    pub fetch_ms: f64,
    /// Checking its signature and decrypting it, ms.
    pub verify_ms: f64,
    /// Restoring it, ms (absent when not restored by the drill).
    pub restore_ms: Option<f64>,
    /// Fetch + verify + restore, ms: the RTO.
    pub rto_ms: f64,
}

/// The sessions part of the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct SessionsReport {
    /// The backup and its times.
    #[serde(flatten)]
    pub times: BackupTimes,
    /// Whether its body was encrypted.
    pub encrypted: bool,
    /// Keys in the backup.
    pub entries: u64,
    /// Keys restored into the scratch Redis.
    pub restored: u64,
    /// Keys skipped because their expiry had passed.
    pub skipped_expired: u64,
    /// The scratch Redis after the restore.
    pub backup_counts: Option<Counts>,
    /// The live Redis.
    pub live_counts: Option<Counts>,
}

/// Rows of one table, in the restored backup and live.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TableRows {
    /// `schema.table` (PostgreSQL) or `table` (MySQL).
    pub table: String,
    /// Rows in the restored backup (absent: no such table there).
    pub backup: Option<u64>,
    /// Rows live (absent: no such table there).
    pub live: Option<u64>,
}

/// The database part of the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DatabaseReport {
    /// The backup and its times.
    #[serde(flatten)]
    pub times: BackupTimes,
    /// The dump's engine and format.
    pub engine: String,
    /// The database the rows were counted in (URL without password).
    pub scratch: String,
    /// Rows per table.
    pub tables: Vec<TableRows>,
}

/// What a drill found.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DrillReport {
    /// Every check passed.
    pub passed: bool,
    /// When the drill started (RFC 3339).
    pub started_at: String,
    /// The backup location.
    pub from: String,
    /// The `--max-age` in force, in seconds.
    pub max_age_s: f64,
    /// The `--max-drift` in force.
    pub max_drift: f64,
    /// The sessions part (absent when no backup could be read).
    pub sessions: Option<SessionsReport>,
    /// The database part (absent without `--database-url`, or when no backup could be read).
    pub database: Option<DatabaseReport>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Rounds to 0.1 (the report's milliseconds).
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn age(taken_at_ms: u64) -> Duration {
    Duration::from_millis(now_ms().saturating_sub(taken_at_ms))
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// `|backup - live|` as a fraction of `live` (of 1 when live is 0).
pub fn drift(backup: u64, live: u64) -> f64 {
    backup.abs_diff(live) as f64 / live.max(1) as f64
}

struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, name: &str, passed: bool, detail: impl Into<String>) -> bool {
        self.0.push(Check {
            name: name.to_owned(),
            passed,
            detail: detail.into(),
        });
        passed
    }

    fn fail(&mut self, name: &str, err: &anyhow::Error) {
        self.push(name, false, format!("{err:#}"));
    }
}

/// A `redis-server` the drill started; killed when dropped.
struct ScratchServer {
    child: tokio::process::Child,
    dir: PathBuf,
    url: String,
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn spawn_redis(binary: &PathBuf) -> anyhow::Result<ScratchServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port();
    let dir = std::env::temp_dir().join(format!("moor-drill-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let child = tokio::process::Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args([
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--sanitize-dump-payload",
            "yes",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "cannot start {} for the scratch Redis (install it: apt-get install -y redis-server, or give \
                 --redis-server PATH or --scratch-redis URL)",
                binary.display()
            )
        })?;
    let mut server = ScratchServer {
        child,
        dir,
        url: format!("redis://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!("the scratch redis-server exited at start ({status})");
        }
        if let Ok(mut conn) = connect(&server.url).await
            && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
        {
            return Ok(server);
        }
        ensure!(
            Instant::now() < deadline,
            "the scratch redis-server did not answer within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

/// Runs the drill. Errors are only for what stops it from reporting at all; everything else is a check.
pub async fn run(opts: &DrillOptions) -> DrillReport {
    let started_at = rfc3339(now_ms());
    let mut checks = Checks(Vec::new());
    let mut report = DrillReport {
        passed: false,
        started_at,
        from: opts.from.clone(),
        max_age_s: opts.max_age.as_secs_f64(),
        max_drift: opts.max_drift,
        sessions: None,
        database: None,
        checks: Vec::new(),
    };
    match Repo::open(&opts.from, &opts.s3) {
        Err(err) => checks.fail("backup location", &err),
        Ok(repo) => {
            if opts.sessions {
                report.sessions = sessions(opts, &repo, &mut checks).await;
            }
            if let Some(live) = &opts.database {
                report.database = database(opts, &repo, live, &mut checks).await;
            }
        }
    }
    report.passed = !checks.0.is_empty() && checks.0.iter().all(|c| c.passed);
    report.checks = checks.0;
    report
}

/// Fetches and opens the newest backup of `kind`: its times so far and its body.
async fn fetch_open(
    repo: &Repo,
    kind: Kind,
    keys: &BackupKeys,
    max_age: Duration,
    checks: &mut Checks,
) -> Option<(BackupTimes, archive::Header, Vec<u8>)> {
    let what = kind.as_str();
    let start = Instant::now();
    let (location, bytes) = match repo.fetch(kind).await {
        Ok(found) => found,
        Err(err) => {
            checks.fail(&format!("{what} backup fetched"), &err);
            return None;
        }
    };
    let fetch = start.elapsed();
    checks.push(
        &format!("{what} backup fetched"),
        true,
        format!("{location}: {} bytes in {:.1} ms", bytes.len(), ms(fetch)),
    );
    let start = Instant::now();
    let opened = archive::open(&bytes, keys).and_then(|(header, body)| {
        ensure!(
            header.kind == kind,
            "it is a {} backup, not a {what} backup",
            header.kind.as_str()
        );
        Ok((header, body))
    });
    let verify = start.elapsed();
    let (header, body) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            checks.fail(&format!("{what} backup verified"), &err);
            return None;
        }
    };
    checks.push(
        &format!("{what} backup verified"),
        true,
        format!(
            "signature of key {} matches{}, {} bytes of body, in {:.1} ms",
            header.key_id,
            if header.encrypted() { ", decrypted" } else { "" },
            body.len(),
            ms(verify)
        ),
    );
    let taken = age(header.created_at_ms);
    checks.push(
        &format!("{what} backup age"),
        taken <= max_age,
        format!(
            "taken at {} ({} ago); the limit is {}{}",
            rfc3339(header.created_at_ms),
            human(taken),
            human(max_age),
            if taken <= max_age {
                ""
            } else {
                ": the backup is too old (is the backup job running?)"
            }
        ),
    );
    let times = BackupTimes {
        backup: location,
        taken_at_ms: header.created_at_ms,
        taken_at: rfc3339(header.created_at_ms),
        rpo_s: (taken.as_secs_f64() * 10.0).round() / 10.0,
        bytes: bytes.len() as u64,
        fetch_ms: ms(fetch),
        verify_ms: ms(verify),
        restore_ms: None,
        rto_ms: ms(fetch + verify),
    };
    Some((times, header, body))
}

async fn sessions(opts: &DrillOptions, repo: &Repo, checks: &mut Checks) -> Option<SessionsReport> {
    let (times, header, body) = fetch_open(repo, Kind::Sessions, &opts.keys, opts.max_age, checks).await?;
    let mut report = SessionsReport {
        times,
        encrypted: header.encrypted(),
        ..SessionsReport::default()
    };
    let entries = match backup::decode(&body) {
        Ok((_, entries)) => entries,
        Err(err) => {
            checks.fail("sessions backup decoded", &err);
            return Some(report);
        }
    };
    report.entries = entries.len() as u64;
    if !checks.push(
        "sessions backup decoded",
        header.items == report.entries,
        format!("{} keys; the signed header says {}", report.entries, header.items),
    ) {
        return Some(report);
    }

    // The scratch Redis: started here, or given and empty.
    let mut spawned = None;
    let scratch_url = match &opts.scratch_redis {
        ScratchRedis::Spawn(binary) => match spawn_redis(binary).await {
            Ok(server) => spawned.insert(server).url.clone(),
            Err(err) => {
                checks.fail("scratch Redis", &err);
                return Some(report);
            }
        },
        ScratchRedis::Url(url) => url.clone(),
    };
    let scratch = match scratch_ready(&scratch_url).await {
        Ok(info) => info,
        Err(err) => {
            checks.fail("scratch Redis", &err);
            return Some(report);
        }
    };
    let start = Instant::now();
    let restored =
        backup::restore_entries(Target::Node(Box::new(scratch.clone())), &entries, false, None).await;
    let restore = start.elapsed();
    match restored {
        Ok(done) => {
            report.restored = done.restored;
            report.skipped_expired = done.expired;
            report.times.restore_ms = Some(ms(restore));
            report.times.rto_ms = round1(report.times.fetch_ms + report.times.verify_ms + ms(restore));
            checks.push(
                "sessions restored into scratch Redis",
                true,
                format!(
                    "{} of {} keys restored in {:.1} ms ({} skipped as expired)",
                    done.restored,
                    entries.len(),
                    ms(restore),
                    done.expired
                ),
            );
        }
        Err(err) => {
            checks.fail("sessions restored into scratch Redis", &err);
            return Some(report);
        }
    }
    let prefix = header.prefix.clone().unwrap_or_else(|| opts.prefix.clone());
    let backup_audit = match mooring_redis::audit(scratch, &prefix).await {
        Ok(audit) => audit,
        Err(err) => {
            checks.fail("restored sessions decode", &err.into());
            return Some(report);
        }
    };
    drop(spawned);
    report.backup_counts = Some(Counts::from(&backup_audit));
    if backup_audit.undecodable_count == 0 {
        checks.push(
            "restored sessions decode",
            true,
            format!(
                "{} sessions ({} signed in, {} users), {} user indexes, {} throttle keys, {} past their deadline",
                backup_audit.sessions,
                backup_audit.signed_in,
                backup_audit.users,
                backup_audit.user_indexes,
                backup_audit.throttle_keys,
                backup_audit.expired
            ),
        );
    } else {
        let named: Vec<String> = backup_audit
            .undecodable
            .iter()
            .take(NAMED_KEYS)
            .map(|(key, why)| format!("{key} ({why})"))
            .collect();
        checks.push(
            "restored sessions decode",
            false,
            format!(
                "{} keys do not decode as the store's: {}{}",
                backup_audit.undecodable_count,
                named.join("; "),
                if backup_audit.undecodable_count as usize > named.len() {
                    "; ..."
                } else {
                    ""
                }
            ),
        );
    }

    // The live Redis, read-only.
    let live_prefix = if opts.prefix.is_empty() {
        prefix.clone()
    } else {
        opts.prefix.clone()
    };
    let live = async {
        // As the backup reads it: an in-sync replica on Sentinel (else the master), every master of a Cluster.
        let nodes = backup::sources(&opts.live, backup::ReadFrom::Auto).await?;
        Ok::<_, anyhow::Error>(mooring_redis::audit_nodes(nodes, &live_prefix).await?)
    }
    .await;
    let live = match live {
        Ok(live) => live,
        Err(err) => {
            checks.fail("live Redis audited", &err);
            return Some(report);
        }
    };
    report.live_counts = Some(Counts::from(&live));
    for (name, b, l) in [
        ("sessions match live", backup_audit.sessions, live.sessions),
        (
            "signed-in sessions match live",
            backup_audit.signed_in,
            live.signed_in,
        ),
        ("signed-in users match live", backup_audit.users, live.users),
    ] {
        let d = drift(b, l);
        checks.push(
            name,
            d <= opts.max_drift,
            format!(
                "backup {b}, live {l}: drift {:.1}% (limit {:.1}%)",
                d * 100.0,
                opts.max_drift * 100.0
            ),
        );
    }
    Some(report)
}

/// Connects to the scratch Redis and checks that it is empty (a restore there must harm nothing).
async fn scratch_ready(url: &str) -> anyhow::Result<redis::ConnectionInfo> {
    let info = url
        .into_connection_info()
        .with_context(|| "the scratch Redis URL is not valid".to_owned())?;
    let mut conn = connect(url)
        .await
        .with_context(|| format!("cannot connect to the scratch Redis at {}", info.addr()))?;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    ensure!(
        keys == 0,
        "the scratch Redis at {} holds {keys} keys: the drill restores only into an empty Redis (give an empty \
         one, or leave out --scratch-redis to let the drill start its own)",
        info.addr()
    );
    Ok(info)
}

async fn database(
    opts: &DrillOptions,
    repo: &Repo,
    live: &DbUrl,
    checks: &mut Checks,
) -> Option<DatabaseReport> {
    let (times, header, dump) = fetch_open(repo, Kind::Database, &opts.keys, opts.max_age, checks).await?;
    let engine = header.engine.clone().unwrap_or_default();
    let mut report = DatabaseReport {
        times,
        engine: engine.clone(),
        ..DatabaseReport::default()
    };
    let (scratch_counts, drop_after) = match &opts.scratch_database {
        ScratchDatabase::None => {
            checks.push(
                "database restored",
                false,
                "give --scratch-database-url (an admin URL to create a scratch database with) or \
                 --restored-database-url (a database another container restored the backup into)",
            );
            return Some(report);
        }
        ScratchDatabase::Restored(url) => {
            report.scratch = url.redacted();
            checks.push(
                "database restored",
                true,
                format!("restored by another process into {url}"),
            );
            (Some(database::row_counts(url).await), None)
        }
        ScratchDatabase::Admin(admin) => {
            let name = format!("moor_drill_{}", now_ms());
            let scratch = match database::create_database(admin, &name).await {
                Ok(url) => url,
                Err(err) => {
                    checks.fail("database restored", &err);
                    return Some(report);
                }
            };
            report.scratch = scratch.redacted();
            let start = Instant::now();
            let restored = database::restore_dump(&scratch, &engine, &dump).await;
            let restore = start.elapsed();
            let counts = match restored {
                Ok(()) => {
                    report.times.restore_ms = Some(ms(restore));
                    report.times.rto_ms =
                        round1(report.times.fetch_ms + report.times.verify_ms + ms(restore));
                    checks.push(
                        "database restored",
                        true,
                        format!("{engine} dump restored into {scratch} in {:.1} ms", ms(restore)),
                    );
                    Some(database::row_counts(&scratch).await)
                }
                Err(err) => {
                    checks.fail("database restored", &err);
                    None
                }
            };
            (counts, Some((admin, name)))
        }
    };
    let live_counts = database::row_counts(live).await;
    if let Some((admin, name)) = drop_after {
        match database::drop_database(admin, &name).await {
            Ok(()) => checks.push("scratch database dropped", true, name),
            Err(err) => {
                checks.fail("scratch database dropped", &err);
                false
            }
        };
    }
    let (backup, live_rows) = match (scratch_counts, live_counts) {
        (Some(Ok(b)), Ok(l)) => (b, l),
        (None, _) => return Some(report),
        (Some(Err(err)), _) => {
            checks.fail("database rows counted", &err);
            return Some(report);
        }
        (_, Err(err)) => {
            checks.fail("live database rows counted", &err);
            return Some(report);
        }
    };
    let mut tables: BTreeMap<String, TableRows> = BTreeMap::new();
    for (in_backup, counts) in [(true, &backup), (false, &live_rows)] {
        for (table, n) in counts {
            let row = tables.entry(table.clone()).or_insert_with(|| TableRows {
                table: table.clone(),
                backup: None,
                live: None,
            });
            *if in_backup { &mut row.backup } else { &mut row.live } = Some(*n);
        }
    }
    report.tables = tables.into_values().collect();
    let mut off = Vec::new();
    for t in &report.tables {
        match (t.backup, t.live) {
            (Some(b), Some(l)) if drift(b, l) > opts.max_drift => off.push(format!(
                "{}: backup {b}, live {l} ({:.1}%)",
                t.table,
                drift(b, l) * 100.0
            )),
            (None, _) => off.push(format!("{}: not in the backup", t.table)),
            (_, None) => off.push(format!("{}: not in the live database", t.table)),
            _ => {}
        }
    }
    let total = |pick: fn(&TableRows) -> Option<u64>| report.tables.iter().filter_map(pick).sum::<u64>();
    let (b, l) = (total(|t| t.backup), total(|t| t.live));
    if report.tables.is_empty() {
        checks.push(
            "database rows match live",
            false,
            "neither the restored backup nor the live database has a table",
        );
    } else if off.is_empty() {
        checks.push(
            "database rows match live",
            true,
            format!(
                "{} tables, {b} rows in the backup, {l} live (limit {:.1}% per table)",
                report.tables.len(),
                opts.max_drift * 100.0
            ),
        );
    } else {
        checks.push(
            "database rows match live",
            false,
            format!("beyond {:.1}%: {}", opts.max_drift * 100.0, off.join("; ")),
        );
    }
    Some(report)
}

impl DrillReport {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "moor drill of {} at {}", self.from, self.started_at);
        let _ = writeln!(out);
        if self.sessions.is_some() || self.database.is_some() {
            let _ = writeln!(
                out,
                "{:<9} {:<34} {:<21} {:>12} {:>10} {:>10} {:>11} {:>11}",
                "backup", "name", "taken at", "RPO (age)", "fetch", "verify", "restore", "RTO"
            );
        }
        let mut row = |what: &str, t: &BackupTimes| {
            let name = t.backup.rsplit('/').next().unwrap_or(&t.backup);
            let _ = writeln!(
                out,
                "{:<9} {:<34} {:<21} {:>12} {:>7.1} ms {:>7.1} ms {:>11} {:>8.1} ms",
                what,
                name,
                t.taken_at,
                human(Duration::from_secs_f64(t.rpo_s)),
                t.fetch_ms,
                t.verify_ms,
                t.restore_ms.map_or("-".to_owned(), |r| format!("{r:.1} ms")),
                t.rto_ms
            );
        };
        if let Some(s) = &self.sessions {
            row("sessions", &s.times);
        }
        if let Some(d) = &self.database {
            row("database", &d.times);
        }
        let mut counts: Vec<(String, String, String)> = Vec::new();
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        if let Some(s) = &self.sessions {
            counts.push(("keys in the backup".into(), s.entries.to_string(), String::new()));
            let b = s.backup_counts.as_ref();
            let l = s.live_counts.as_ref();
            for (name, pick) in [
                ("sessions", (|c: &Counts| c.sessions) as fn(&Counts) -> u64),
                ("signed-in sessions", |c| c.signed_in),
                ("signed-in users", |c| c.users),
                ("user indexes", |c| c.user_indexes),
                ("throttle keys", |c| c.throttle_keys),
                ("undecodable keys", |c| c.undecodable),
            ] {
                counts.push((name.into(), opt(b.map(pick)), opt(l.map(pick))));
            }
        }
        if let Some(d) = &self.database {
            for t in &d.tables {
                counts.push((format!("rows of {}", t.table), opt(t.backup), opt(t.live)));
            }
        }
        if !counts.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "{:<40} {:>10} {:>10}", "count", "backup", "live");
            for (name, b, l) in counts {
                let _ = writeln!(out, "{name:<40} {b:>10} {l:>10}");
            }
        }
        let _ = writeln!(out);
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{}  {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        let _ = writeln!(out);
        if self.passed {
            let _ = write!(out, "drill passed: all {} checks passed", self.checks.len());
        } else if failed.is_empty() {
            let _ = write!(out, "drill failed: nothing was checked");
        } else {
            let _ = write!(
                out,
                "drill failed: {} of {} checks failed ({})",
                failed.len(),
                self.checks.len(),
                failed.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_a_fraction_of_live() {
        assert_eq!(drift(10, 10), 0.0);
        assert_eq!(drift(5, 10), 0.5);
        assert_eq!(drift(15, 10), 0.5);
        assert_eq!(drift(0, 0), 0.0);
        assert_eq!(drift(3, 0), 3.0);
    }

    #[test]
    fn a_report_without_checks_does_not_pass() {
        let report = DrillReport {
            passed: false,
            started_at: rfc3339(1_795_000_000_000),
            from: "/backups".into(),
            max_age_s: 3600.0,
            max_drift: 0.5,
            sessions: None,
            database: None,
            checks: Vec::new(),
        };
        assert!(report.to_table().contains("nothing was checked"));
        assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40Z");
    }
}
