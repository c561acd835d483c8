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
    /// Backs the sessions in Redis up to a file: `DUMP` and absolute expiry of every key under the prefix.
    /// Reading from a replica is fine.
    Backup {
        #[command(flatten)]
        redis: RedisArgs,
        /// The backup file to write (written whole, then renamed into place); or an existing directory, to
        /// write `sessions-<unix ms>.moorbak` in it.
        #[arg(long)]
        out: PathBuf,
        /// With a directory as --out: keep only this many backups there, deleting the oldest.
        #[arg(long)]
        keep: Option<usize>,
    },
    /// Restores a backup into the live master, with each key's original absolute expiry. Expired keys are
    /// skipped; keys that exist already (newer) are kept unless --replace.
    Restore {
        #[command(flatten)]
        redis: RedisArgs,
        /// The backup file to read (checked whole before anything is written).
        #[arg(long = "in")]
        input: PathBuf,
        /// Overwrite keys that exist already.
        #[arg(long)]
        replace: bool,
    },
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
    async fn target(&self) -> anyhow::Result<moor::backup::Target> {
        let config =
            moor::backup::config(
                self.url.as_deref(),
                &self.sentinels,
                &self.master,
                |name| match name {
                    "REDIS_SENTINEL_PASSWORD" => self.sentinel_password.clone(),
                    _ => std::env::var(name).ok(),
                },
            )?;
        moor::backup::target(&config).await
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
        Command::Backup { redis, out, keep } => {
            if keep.is_some() && !out.is_dir() {
                anyhow::bail!("--keep needs an existing directory as --out");
            }
            let done = moor::backup::backup(redis.target().await?.sources(), &redis.prefix, &out).await?;
            println!(
                "backed up {} keys ({} bytes) to {}; {} vanished while reading",
                done.keys,
                done.bytes,
                done.path.display(),
                done.vanished
            );
            if let Some(keep) = keep {
                for path in moor::backup::prune(&out, keep.max(1))? {
                    println!("deleted the old backup {}", path.display());
                }
            }
        }
        Command::Restore {
            redis,
            input,
            replace,
        } => {
            let done = moor::backup::restore(redis.target().await?, &input, replace).await?;
            println!(
                "restored {} keys; skipped {} expired and {} that exist already",
                done.restored, done.expired, done.kept_existing
            );
        }
    }
    Ok(ExitCode::SUCCESS)
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
