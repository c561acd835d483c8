//! The `moor` binary: `moor lab`, `moor probe`, `moor chaos`, `moor backup`, `moor restore`. Run `moor --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use moor::chaos::{self, ChaosOptions, Scenario, kubernetes};
use moor::lab::{Driver, Lab, LabConfig};
use moor::probe::{Probe, ProbeConfig, parse_duration};

/// The mooring operator CLI: a local lab of the whole topology, failure scenarios with budgets, and a
/// black-box session-survival probe.
#[derive(Parser)]
#[command(name = "moor", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local lab: app instances behind HAProxy, Redis master + replicas + Sentinels.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Virtual users against a base URL, checking that sessions and acknowledged writes survive.
    Probe(ProbeArgs),
    /// Runs a failure scenario (or `all`) and checks its budgets; exits 1 when a budget is broken.
    Chaos(ChaosArgs),
    /// Backs the sessions in Redis up: `DUMP` and absolute expiry of every key under the prefix, in one
    /// signed (and by default encrypted) backup, written to a directory, a file or S3. On Sentinel it reads an
    /// in-sync replica (see --from). Keys: BACKUP_KEY (or BACKUP_KEY_FILE), else APP_KEY as the app has it.
    Backup(BackupArgs),
    /// Restores the newest sessions backup of a directory or S3 prefix (or the file given) into the live
    /// master, with each key's original absolute expiry. The signature is checked first (a changed byte or
    /// another key: exit 2, nothing written); sessions the app's revocation log names (ended since the backup)
    /// and expired keys are skipped; keys that exist already (newer) are kept unless --replace.
    Restore(RestoreArgs),
    /// Backs the app's database up with the engine's own tool (pg_dump -Fc, or mysqldump with
    /// --single-transaction), signed with BACKUP_KEY (or APP_KEY) and encrypted unless --no-encrypt.
    /// PostgreSQL and MySQL/MariaDB only: SQLite is out of scope (its database is a file next to the app;
    /// copy it with sqlite3's .backup command).
    BackupDb(BackupDbArgs),
    /// Restores the newest database backup: checks its signature (a changed byte refuses, nothing is
    /// written), then writes the dump to a file (--out) or restores it into a database (--database-url)
    /// with pg_restore --clean --if-exists or mysql.
    RestoreDb(RestoreDbArgs),
    /// The restore drill: restores the newest sessions backup into a scratch Redis and the newest database
    /// backup into a scratch database, checks that every session decodes, compares the counts with the live
    /// ones and reports RPO, RTO and each check. Exits 0 only when every check passed, 1 otherwise.
    Drill(DrillArgs),
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    s3: S3Args,
    /// Where to write: a directory (existing, or a path ending in /) or s3://bucket/prefix/ (each backup
    /// gets the name sessions-<unix ms>.moorbak there), or a file path or s3://bucket/key (that one object).
    #[arg(long)]
    out: String,
    /// With a directory or S3 prefix as --out: keep only this many sessions backups there, deleting the
    /// oldest (other objects are never touched).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    keep: Option<u64>,
    /// Sign only, do not encrypt the body (BACKUP_ENCRYPT=false does the same; the default encrypts).
    #[arg(long)]
    no_encrypt: bool,
    /// On Sentinel, which node to read: auto (an in-sync replica, else the master), master, or replica (an
    /// in-sync replica or fail). A standalone URL is read as given; a Cluster from its masters.
    #[arg(long, env = "BACKUP_FROM", default_value = "auto")]
    from: moor::backup::ReadFrom,
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    redis: RedisArgs,
    #[command(flatten)]
    s3: S3Args,
    /// What to restore: a directory or s3://bucket/prefix/ (its newest sessions backup), or a file or
    /// s3://bucket/key.
    #[arg(long = "in")]
    input: String,
    /// Overwrite keys that exist already.
    #[arg(long)]
    replace: bool,
    /// The app's database, whose revocation log names the sessions ended since the backup (DATABASE_URL_FILE
    /// is read too). Required unless --ignore-revocations.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Restore without the revocation log: sessions ended since the backup come back.
    #[arg(long)]
    ignore_revocations: bool,
    /// Read an unsigned backup of an older moor (MOORBAK1), which cannot be checked for changes.
    #[arg(long)]
    accept_unsigned: bool,
}

/// Where S3 is and how objects are written, beyond the URL and the standard AWS variables
/// (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or their *_FILE forms, AWS_SESSION_TOKEN, AWS_ROLE_ARN with
/// AWS_WEB_IDENTITY_TOKEN_FILE, container and instance credentials).
#[derive(Args, Clone, Debug)]
pub struct S3Args {
    /// A custom S3 endpoint (an S3-compatible server); http:// endpoints are used without TLS.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    /// The bucket's region.
    #[arg(long, env = "AWS_REGION")]
    s3_region: Option<String>,
    /// Path-style requests (endpoint/bucket/key), as most S3-compatible servers want.
    #[arg(long, env = "BACKUP_S3_PATH_STYLE", value_parser = parse_flag, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    s3_path_style: bool,
    /// Server-side encryption of new objects: AES256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long, env = "BACKUP_S3_SSE", value_parser = ["AES256", "aws:kms"])]
    s3_sse: Option<String>,
    /// The KMS key id for aws:kms.
    #[arg(long, env = "BACKUP_S3_KMS_KEY_ID")]
    s3_kms_key_id: Option<String>,
    /// The storage class of new objects (STANDARD, STANDARD_IA, GLACIER_IR, ...).
    #[arg(long, env = "BACKUP_S3_STORAGE_CLASS")]
    s3_storage_class: Option<String>,
}

impl S3Args {
    /// The settings [`moor::repo::Repo::open`] takes.
    pub fn settings(&self) -> moor::repo::S3Settings {
        let some = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        moor::repo::S3Settings {
            endpoint: some(&self.s3_endpoint),
            region: some(&self.s3_region).or_else(|| std::env::var("AWS_DEFAULT_REGION").ok()),
            path_style: self.s3_path_style,
            sse: some(&self.s3_sse),
            kms_key_id: some(&self.s3_kms_key_id),
            storage_class: some(&self.s3_storage_class),
        }
    }
}

fn parse_flag(value: &str) -> Result<bool, String> {
    moor::repo::parse_bool(value).ok_or_else(|| format!("'{value}' is not true or false"))
}

/// Where Redis is, with the app's variable names as defaults.
#[derive(Args)]
struct RedisArgs {
    /// Redis URL; without it, REDIS_HOST and REDIS_PORT (default 127.0.0.1:6379). REDIS_USERNAME,
    /// REDIS_PASSWORD (or REDIS_PASSWORD_FILE), REDIS_DB and REDIS_TLS apply as in the app, and
    /// REDIS_CLUSTER_NODES selects a Redis Cluster. Not with --sentinel, which finds the master itself.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    url: Option<String>,
    /// Sentinels (host:port, comma-separated) to find the master through.
    #[arg(long = "sentinel", env = "REDIS_SENTINELS", value_delimiter = ',')]
    sentinels: Vec<String>,
    /// The Sentinel master name.
    #[arg(long, env = "REDIS_SENTINEL_MASTER", default_value = "mymaster")]
    master: String,
    /// The Sentinels' password, if they have one.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    sentinel_password: Option<String>,
    /// Only keys under this prefix (the app's REDIS_PREFIX).
    #[arg(long, env = "REDIS_PREFIX", default_value = "")]
    prefix: String,
}

impl RedisArgs {
    fn config(&self) -> anyhow::Result<mooring_redis::RedisConfig> {
        moor::backup::config(
            self.url.as_deref(),
            &self.sentinels,
            &self.master,
            |name| match name {
                "REDIS_SENTINEL_PASSWORD" => self.sentinel_password.clone(),
                _ => std::env::var(name).ok(),
            },
        )
    }

    async fn target(&self) -> anyhow::Result<moor::backup::Target> {
        moor::backup::target(&self.config()?).await
    }
}

#[derive(Subcommand)]
enum LabAction {
    /// Starts whatever is not running and waits until everything is healthy.
    Up(LabArgs),
    /// Shows every member, its role and health, and which Redis node is master.
    Status(DirArg),
    /// Stops everything; `--wipe` also deletes the data.
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// Delete the data directories too.
        #[arg(long)]
        wipe: bool,
    },
}

#[derive(Args, Clone)]
struct DirArg {
    /// Where the lab keeps its state, data and logs.
    #[arg(long, default_value = ".lab", env = "MOOR_LAB_DIR")]
    dir: PathBuf,
}

#[derive(Args, Clone)]
struct LabArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Number of app instances.
    #[arg(long, default_value_t = 3)]
    apps: usize,
    /// Session driver of the apps: redis-sentinel, redis or sql.
    #[arg(long, default_value = "redis-sentinel")]
    driver: Driver,
    /// First port of the lab; every other port is derived from it. 0: the port of the lab already in --dir,
    /// else a base whose whole range is free.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Sentinel `down-after-milliseconds`.
    #[arg(long, default_value_t = 1000)]
    down_after_ms: u64,
    /// The `inventory` binary (default: next to `moor`, then PATH).
    #[arg(long)]
    inventory_bin: Option<PathBuf>,
}

impl LabArgs {
    fn config(&self) -> LabConfig {
        let base_port = match self.base_port {
            0 => moor::lab::existing_base_port(&self.dir.dir)
                .or_else(|| moor::lab::find_free_base_port(20_000..30_000, self.apps, self.driver))
                .unwrap_or(7100),
            port => port,
        };
        LabConfig {
            dir: self.dir.dir.clone(),
            apps: self.apps,
            driver: self.driver,
            base_port,
            down_after_ms: self.down_after_ms,
            inventory_bin: self.inventory_bin.clone(),
        }
    }
}

#[derive(Args)]
struct ProbeArgs {
    /// Base URL of the app (the load balancer).
    #[arg(long)]
    url: String,
    /// Virtual users.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// How long to run (e.g. 30s, 2m).
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Stop each user after this many iterations instead (or as well).
    #[arg(long)]
    requests: Option<u64>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG timeline here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Platform {
    /// The local lab.
    Local,
    /// A Kubernetes cluster, through kubectl.
    Kubernetes,
}

#[derive(Args)]
struct ChaosArgs {
    /// The scenario, or `all`.
    scenario: String,
    /// The short form (tens of seconds each), as CI runs it.
    #[arg(long)]
    short: bool,
    /// Virtual users of the probe.
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Where the JSON and SVG reports go.
    #[arg(long, default_value = "chaos-reports")]
    report_dir: PathBuf,
    /// Where the scenario runs.
    #[arg(long, value_enum, default_value = "local")]
    platform: Platform,
    /// Kubernetes: the namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Kubernetes: the Helm release name.
    #[arg(long, default_value = "inventory")]
    release: String,
    /// Kubernetes: the Sentinel master name (the chart's `redis.sentinel.masterSet`).
    #[arg(long, default_value = "inventory")]
    master: String,
    /// Kubernetes: the app's public URL, for the probe.
    #[arg(long)]
    url: Option<String>,
    /// Kubernetes: print the kubectl plan instead of running it.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    lab: LabArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("moor: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Lab {
            action: LabAction::Up(args),
        } => {
            let lab = Lab::up(args.config()).await?;
            println!("{}", lab.status().await?);
            println!("The app is at {}", lab.url());
        }
        Command::Lab {
            action: LabAction::Status(dir),
        } => println!("{}", Lab::open(&dir.dir)?.status().await?),
        Command::Lab {
            action: LabAction::Down { dir, wipe },
        } => Lab::open(&dir.dir)?.down(wipe).await?,
        Command::Probe(args) => {
            let report = Probe::run(ProbeConfig {
                base_url: args.url.trim_end_matches('/').to_owned(),
                users: args.users,
                duration: Some(parse_duration(&args.duration)?),
                requests: args.requests,
                think: Duration::from_millis(20),
                timeout: Duration::from_secs(5),
                verify_every: 20,
            })
            .await?;
            println!("{}", report.to_table());
            if let Some(path) = args.json {
                report.write_json(&path)?;
            }
            if let Some(path) = args.svg {
                std::fs::write(path, report.to_svg(&format!("moor probe {}", args.url)))?;
            }
            let broken = report.totals.logouts + report.totals.lost_writes;
            return Ok(if broken == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Chaos(args) => return chaos_command(args).await,
        Command::Backup(args) => backup_command(args).await?,
        Command::Restore(args) => restore_command(args).await?,
        Command::BackupDb(args) => backup_db_command(args).await?,
        Command::RestoreDb(args) => restore_db_command(args).await?,
        Command::Drill(args) => return drill_command(args).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn env_var(name: &str) -> Option<String> {
    moor::env::process(name)
}

async fn backup_command(args: BackupArgs) -> anyhow::Result<()> {
    let repo = moor::repo::Repo::open(&args.out, &args.s3.settings())?;
    if args.keep.is_some() && repo.is_single() {
        anyhow::bail!("--keep needs a directory or an S3 prefix ending in / as --out, not one file");
    }
    let encrypt = match env_var("BACKUP_ENCRYPT").filter(|v| !v.trim().is_empty()) {
        _ if args.no_encrypt => false,
        None => true,
        Some(v) => moor::repo::parse_bool(&v)
            .ok_or_else(|| anyhow::anyhow!("BACKUP_ENCRYPT is true or false, not '{v}'"))?,
    };
    let keys = moor::archive::BackupKeys::from_env(env_var)?;
    let sources = moor::backup::sources(&args.redis.config()?, args.from).await?;
    let done = moor::backup::backup(sources, &args.redis.prefix, &repo, &keys, encrypt).await?;
    println!(
        "backed up {} keys ({} bytes, signed{}) from {} to {}; {} vanished while reading",
        done.keys,
        done.bytes,
        if done.encrypted { " and encrypted" } else { "" },
        done.source,
        done.location,
        done.vanished
    );
    if let Some(keep) = args.keep {
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        for old in repo.prune(moor::archive::Kind::Sessions, keep).await? {
            println!("deleted the old backup {old}");
        }
    }
    Ok(())
}

async fn restore_command(args: RestoreArgs) -> anyhow::Result<()> {
    let repo = moor::repo::Repo::open(&args.input, &args.s3.settings())?;
    let keys = moor::archive::BackupKeys::from_env(env_var)?;
    let database_url = match args.database_url.clone() {
        Some(url) => Some(url),
        None => moor::env::secret(env_var, "DATABASE_URL")?,
    };
    // Checked before anything is read: a restore that would have to stop later writes nothing either way,
    // but the operator learns at once.
    let log = moor::backup::revocation_log(database_url.as_deref(), args.ignore_revocations, env_var).await?;
    let fetched = moor::backup::fetch(&repo, &keys, args.accept_unsigned).await?;
    let target = args.redis.target().await?;
    let done = moor::backup::restore_entries(
        target,
        &fetched.entries,
        args.replace,
        log.as_ref().map(|l| l as &dyn mooring::RevocationLog),
    )
    .await?;
    println!("restoring {}", fetched.location);
    println!(
        "restored {} keys; skipped {} expired, {} that exist already, {} revoked since the backup",
        done.restored, done.expired, done.kept_existing, done.revoked
    );
    Ok(())
}

async fn chaos_command(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let scenarios: Vec<Scenario> = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        vec![args.scenario.parse().map_err(anyhow::Error::msg)?]
    };
    if args.platform == Platform::Kubernetes {
        let target = kubernetes::Target {
            namespace: args.namespace,
            release: args.release,
            master: args.master,
        };
        let mut code = ExitCode::SUCCESS;
        for scenario in scenarios {
            match kubernetes::plan(scenario, &target) {
                Err(why) => println!("# {}: not run on Kubernetes: {why}", scenario.name()),
                Ok(steps) if args.dry_run => {
                    println!("# {}\n{}", scenario.name(), kubernetes::render(&steps))
                }
                Ok(steps) => {
                    let url = args
                        .url
                        .clone()
                        .ok_or_else(|| anyhow::anyhow!("--url is required to probe the cluster"))?;
                    let probe = Probe::start(ProbeConfig {
                        base_url: url,
                        users: args.users,
                        duration: Some(Duration::from_secs(600)),
                        requests: None,
                        think: Duration::from_millis(20),
                        timeout: Duration::from_secs(10),
                        verify_every: 20,
                    })
                    .await?;
                    probe.mark(scenario.name());
                    let log = kubernetes::execute(&steps).await;
                    tokio::time::sleep(Duration::from_secs(15)).await;
                    let report = probe.stop().await;
                    for line in log? {
                        println!("ran: {line}");
                    }
                    println!("{}", report.to_table());
                    if report.totals.logouts + report.totals.lost_writes > 0 {
                        code = ExitCode::FAILURE;
                    }
                }
            }
        }
        return Ok(code);
    }
    let opts = ChaosOptions {
        lab: args.lab.config(),
        short: args.short,
        users: args.users,
        report_dir: args.report_dir,
    };
    let mut all_passed = true;
    for scenario in scenarios {
        match chaos::run(scenario, &opts).await {
            Ok(report) => {
                println!("{}", chaos::summary_table(&report));
                all_passed &= report.passed;
            }
            Err(err) => {
                println!("FAIL  {}: could not run: {err:#}", scenario.name());
                all_passed = false;
            }
        }
    }
    println!("reports in {}", opts.report_dir.display());
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether backups are encrypted: yes unless `--no-encrypt`, or BACKUP_ENCRYPT is false (as for `backup`).
fn encrypt_backups(no_encrypt: bool) -> anyhow::Result<bool> {
    Ok(match env_var("BACKUP_ENCRYPT").filter(|v| !v.trim().is_empty()) {
        _ if no_encrypt => false,
        None => true,
        Some(v) => moor::repo::parse_bool(&v)
            .ok_or_else(|| anyhow::anyhow!("BACKUP_ENCRYPT is true or false, not '{v}'"))?,
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum DbEngine {
    /// PostgreSQL: a pg_dump -Fc (custom format) file.
    Postgres,
    /// MySQL or MariaDB: a mysqldump SQL file.
    Mysql,
}

#[derive(Args)]
struct BackupDbArgs {
    /// The database to dump (postgres://, mysql:// or mariadb://). Prefer the DATABASE_URL variable: a
    /// password on the command line is visible to other processes. The password reaches pg_dump / mysqldump
    /// as PGPASSWORD / MYSQL_PWD, never as an argument.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Instead of dumping: seal the dump another process wrote (pg_dump -Fc or mysqldump output), with
    /// --engine. Wins over DATABASE_URL.
    #[arg(long, requires = "engine")]
    file: Option<PathBuf>,
    /// The engine of --file.
    #[arg(long, value_enum)]
    engine: Option<DbEngine>,
    /// Where to write: a directory (database-<unix ms>.moorbak in it), a file, or s3://bucket/prefix/.
    #[arg(long)]
    out: String,
    #[command(flatten)]
    s3: S3Args,
    /// Keep only this many database backups there, deleting the oldest (directories and S3 prefixes).
    #[arg(long)]
    keep: Option<usize>,
    /// Sign only, do not encrypt (also BACKUP_ENCRYPT=false).
    #[arg(long)]
    no_encrypt: bool,
}

#[derive(Args)]
struct RestoreDbArgs {
    /// The backup: a file, or a directory or s3://bucket/prefix/ (the newest database backup there).
    #[arg(long = "in")]
    input: String,
    #[command(flatten)]
    s3: S3Args,
    /// Restore into this database (pg_restore --clean --if-exists --no-owner --no-privileges, or mysql):
    /// objects of the dump are replaced. Also RESTORE_DATABASE_URL.
    #[arg(
        long,
        env = "RESTORE_DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "out"
    )]
    database_url: Option<String>,
    /// Write the checked dump to this file (mode 0600) instead, for the engine's own tool to restore.
    #[arg(long, conflicts_with = "database_url")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// A table for people.
    Table,
    /// The JSON report.
    Json,
}

#[derive(Args)]
struct DrillArgs {
    /// Where the backups are: a directory, or s3://bucket/prefix/ (the newest sessions and database
    /// backups there).
    #[arg(long)]
    from: String,
    #[command(flatten)]
    s3: S3Args,
    /// The live Redis, to compare with (read-only: an in-sync replica will do).
    #[command(flatten)]
    redis: RedisArgs,
    /// Leave the sessions out (the app keeps its sessions in SQL, inside the database backup): drill only
    /// the database backup.
    #[arg(long, conflicts_with = "scratch_redis")]
    no_sessions: bool,
    /// Restore the sessions into this Redis, which must be empty (default: the drill starts its own
    /// redis-server on a free loopback port, without persistence, and stops it at the end).
    #[arg(long)]
    scratch_redis: Option<String>,
    /// The redis-server binary the drill starts.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// The live database: the drill then also restores the newest database backup and compares the rows of
    /// every table.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// An admin URL (a user that may create databases) on a database server to restore into: the drill
    /// creates moor_drill_<unix ms>, restores, counts and drops it. Also DRILL_SCRATCH_DATABASE_URL.
    #[arg(long, env = "DRILL_SCRATCH_DATABASE_URL", hide_env_values = true)]
    scratch_database_url: Option<String>,
    /// A database another process already restored the newest backup into (moor restore-db --out, then
    /// the engine's tool): the drill only counts its rows. Also DRILL_RESTORED_DATABASE_URL.
    #[arg(
        long,
        env = "DRILL_RESTORED_DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "scratch_database_url"
    )]
    restored_database_url: Option<String>,
    /// Backups older than this fail the drill (e.g. 26h, 90m).
    #[arg(long, default_value = "26h")]
    max_age: String,
    /// The largest difference between a backup count and the live one, as a fraction of the live one.
    #[arg(long, default_value_t = 0.5)]
    max_drift: f64,
    /// Also write the JSON report to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// What to print on standard output.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
}

fn backup_keys() -> anyhow::Result<moor::archive::BackupKeys> {
    moor::archive::BackupKeys::from_env(|name| std::env::var(name).ok())
}

async fn backup_db_command(args: BackupDbArgs) -> anyhow::Result<()> {
    use moor::database::{DbUrl, DumpSource, Engine};
    let source = match (&args.file, args.engine, &args.database_url) {
        (Some(path), Some(engine), _) => DumpSource::File(
            path.clone(),
            match engine {
                DbEngine::Postgres => Engine::Postgres,
                DbEngine::Mysql => Engine::Mysql,
            },
        ),
        (Some(_), None, _) => anyhow::bail!("--file needs --engine postgres or --engine mysql"),
        (None, _, Some(url)) => DumpSource::Database(DbUrl::parse(url)?),
        (None, _, None) => {
            anyhow::bail!("give --database-url (or set DATABASE_URL), or --file with --engine")
        }
    };
    let keys = backup_keys()?;
    let repo = moor::repo::Repo::open(&args.out, &args.s3.settings())?;
    let done = moor::database::backup_db(
        &source,
        &repo,
        &keys,
        encrypt_backups(args.no_encrypt)?,
        args.keep,
    )
    .await?;
    println!(
        "backed up the database ({} dump, {} bytes; {} bytes sealed) to {}",
        done.engine, done.dump_bytes, done.bytes, done.location
    );
    for old in done.pruned {
        println!("deleted the old backup {old}");
    }
    Ok(())
}

async fn restore_db_command(args: RestoreDbArgs) -> anyhow::Result<()> {
    let keys = backup_keys()?;
    let repo = moor::repo::Repo::open(&args.input, &args.s3.settings())?;
    let target = match (&args.out, &args.database_url) {
        (Some(_), _) => None,
        (None, Some(url)) => Some(moor::database::DbUrl::parse(url)?),
        (None, None) => anyhow::bail!("give --database-url (the database to restore into) or --out FILE"),
    };
    let (location, header, dump) = moor::database::fetch_verified(&repo, &keys).await?;
    let format = header.engine.clone().unwrap_or_default();
    match (&args.out, target) {
        (Some(path), _) => {
            moor::database::write_private(path, &dump)?;
            println!(
                "wrote the checked {format} dump of {location} ({} bytes, taken {}) to {}",
                dump.len(),
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(header.created_at_ms)
                ),
                path.display()
            );
        }
        (None, Some(db)) => {
            moor::database::restore_dump(&db, &format, &dump).await?;
            println!("restored {location} ({format}, {} bytes) into {db}", dump.len());
        }
        (None, None) => unreachable!("checked above"),
    }
    Ok(())
}

async fn drill_command(args: DrillArgs) -> anyhow::Result<ExitCode> {
    use moor::database::DbUrl;
    use moor::drill::{DrillOptions, ScratchDatabase, ScratchRedis};
    anyhow::ensure!(
        args.max_drift.is_finite() && args.max_drift >= 0.0,
        "--max-drift is a fraction of the live count, such as 0.5"
    );
    anyhow::ensure!(
        !args.no_sessions || args.database_url.is_some(),
        "--no-sessions leaves only the database to drill: give --database-url (or set DATABASE_URL)"
    );
    let live = args.redis.config()?;
    let database = args.database_url.as_deref().map(DbUrl::parse).transpose()?;
    let scratch_database = match (&args.scratch_database_url, &args.restored_database_url) {
        (Some(admin), _) => ScratchDatabase::Admin(DbUrl::parse(admin)?),
        (None, Some(url)) => ScratchDatabase::Restored(DbUrl::parse(url)?),
        (None, None) => ScratchDatabase::None,
    };
    let opts = DrillOptions {
        from: args.from,
        s3: args.s3.settings(),
        keys: backup_keys()?,
        live,
        prefix: args.redis.prefix.clone(),
        sessions: !args.no_sessions,
        scratch_redis: match args.scratch_redis {
            Some(url) => ScratchRedis::Url(url),
            None => ScratchRedis::Spawn(args.redis_server),
        },
        database,
        scratch_database,
        max_age: parse_duration(&args.max_age)?,
        max_drift: args.max_drift,
    };
    let report = moor::drill::run(&opts).await;
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", path.display()))?;
    }
    match args.format {
        ReportFormat::Table => println!("{}", report.to_table()),
        ReportFormat::Json => {
            println!("{}", report.to_json());
            let failed: Vec<String> = report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            if !report.passed {
                eprintln!("moor drill failed: {}", failed.join("; "));
            }
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
