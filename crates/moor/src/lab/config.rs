//! What a lab is made of: the session driver, the options of `moor lab up`, and the address plan derived
//! from them.
//!
//! Every address is a loopback alias (all of 127.0.0.0/8 answers on `lo` without setup), so each member has
//! an IP of its own, as a pod does: a partition can then cut one node off by address. Every port is derived
//! from [`LabConfig::base_port`], so two labs with different base ports never collide, even though they use
//! the same aliases:
//!
//! | member | address | port |
//! |---|---|---|
//! | HAProxy frontend | 127.0.0.1 | base |
//! | HAProxy stats page (`/;csv` too) | 127.0.0.1 | base + 1 |
//! | app *i* (1..=9) | 127.0.0.(10 + *i*) | base + 10 + *i* (`/metrics` on base + 20 + *i*) |
//! | Redis node *j* (1..=3) | 127.0.0.(20 + *j*) | base + 30 + *j* |
//! | Sentinel *k* (1..=3) | 127.0.0.(30 + *k*) | base + 40 + *k* |

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How many ports above [`LabConfig::base_port`] a lab may use: the whole range must be free.
pub const PORT_SPAN: u16 = 50;
/// The most app instances a lab runs: their aliases are 127.0.0.11 to 127.0.0.19.
pub const MAX_APPS: usize = 9;
/// The name the Sentinels monitor the master under (`REDIS_SENTINEL_MASTER` of the apps).
pub const MASTER_NAME: &str = "mymaster";
/// How many Redis data nodes the `redis-sentinel` driver runs (a master and 2 replicas).
pub(crate) const SENTINEL_DATA_NODES: usize = 3;
/// How many Sentinels the `redis-sentinel` driver runs (quorum 2).
pub(crate) const SENTINELS: usize = 3;

/// Where the apps keep their sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// A Redis master, 2 replicas and 3 Sentinels (quorum 2); the apps find the master through the
    /// Sentinels. The seeds' production topology, and the default.
    #[default]
    RedisSentinel,
    /// One standalone Redis node, no Sentinel.
    Redis,
    /// No Redis: sessions in the shared SQLite file, next to users and items.
    Sql,
}

impl Driver {
    /// Every driver, in the order `--help` lists them.
    pub const ALL: [Driver; 3] = [Driver::RedisSentinel, Driver::Redis, Driver::Sql];

    /// The name on the command line and in `state.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::RedisSentinel => "redis-sentinel",
            Driver::Redis => "redis",
            Driver::Sql => "sql",
        }
    }

    /// How many Redis data nodes this driver runs.
    pub(crate) fn data_nodes(self) -> usize {
        match self {
            Driver::RedisSentinel => SENTINEL_DATA_NODES,
            Driver::Redis => 1,
            Driver::Sql => 0,
        }
    }

    /// How many Sentinels this driver runs.
    pub(crate) fn sentinels(self) -> usize {
        match self {
            Driver::RedisSentinel => SENTINELS,
            Driver::Redis | Driver::Sql => 0,
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Driver {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Driver::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("'{s}' is not a lab driver; use redis-sentinel, redis or sql"))
    }
}

/// The options of `moor lab up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabConfig {
    /// The lab directory: `state.json`, config files, logs, pid files and every data directory. Default
    /// `./.lab`.
    pub dir: PathBuf,
    /// How many `inventory` instances run behind HAProxy (1 to 9). Default 3.
    pub apps: usize,
    /// Where sessions live. Default [`Driver::RedisSentinel`].
    pub driver: Driver,
    /// The first port of the lab; every other port is derived from it (see the module documentation), and
    /// `base_port .. base_port + PORT_SPAN` must be free. Default 7100.
    pub base_port: u16,
    /// Sentinel `down-after-milliseconds`: how long the master must be silent before a failover starts.
    /// Default 1000.
    pub down_after_ms: u64,
    /// The `inventory` binary. Default: the `inventory` next to the current executable (or one directory up,
    /// where a test binary in `target/<profile>/deps/` finds it), else the one on `PATH`.
    pub inventory_bin: Option<PathBuf>,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".lab"),
            apps: 3,
            driver: Driver::RedisSentinel,
            base_port: 7100,
            down_after_ms: 1000,
            inventory_bin: None,
        }
    }
}

impl LabConfig {
    /// Checks the values a lab cannot run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=MAX_APPS).contains(&self.apps) {
            anyhow::bail!(
                "--apps {}: a lab runs 1 to {MAX_APPS} app instances (their addresses are 127.0.0.11 to 127.0.0.19)",
                self.apps
            );
        }
        if self.base_port < 1024 || u32::from(self.base_port) + u32::from(PORT_SPAN) > 65_535 {
            anyhow::bail!(
                "--base-port {}: pick a port between 1024 and {} (the lab uses the {PORT_SPAN} ports from it)",
                self.base_port,
                65_535 - PORT_SPAN
            );
        }
        if !(100..=60_000).contains(&self.down_after_ms) {
            anyhow::bail!(
                "--down-after-ms {}: pick 100 to 60000 milliseconds",
                self.down_after_ms
            );
        }
        Ok(())
    }

    /// The addresses this configuration gives every member.
    pub fn layout(&self) -> Layout {
        Layout::new(self.base_port, self.apps, self.driver)
    }

    /// The `host:port` addresses of this lab's layout that something else listens on right now (empty when
    /// the lab can start there).
    pub fn ports_in_use(&self) -> Vec<String> {
        self.layout()
            .listeners()
            .into_iter()
            .filter(|addr| TcpListener::bind(addr).is_err())
            .map(|addr| addr.to_string())
            .collect()
    }
}

/// A base port in `range` whose whole lab layout (for `apps` apps with `driver`) is free right now, for tests
/// and for `moor lab up --base-port auto`. Tries ports in a pseudo-random order (so concurrent callers tend to
/// differ) and returns `None` when none is free. Free now is not reserved: start the lab soon.
pub fn find_free_base_port(range: std::ops::Range<u16>, apps: usize, driver: Driver) -> Option<u16> {
    let span = range.end.checked_sub(range.start)?;
    if span == 0 {
        return None;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    (0..u32::from(span).min(500))
        .map(|i| {
            let offset = seed.wrapping_add(i.wrapping_mul(7_919)) % u32::from(span);
            // Round to a multiple of 100: the derived ports read better.
            let port = range.start + u16::try_from(offset).unwrap_or(0);
            port - port % 100
        })
        .filter(|port| *port >= range.start && port.saturating_add(PORT_SPAN) <= range.end)
        .find(|port| {
            let cfg = LabConfig {
                base_port: *port,
                apps,
                driver,
                ..LabConfig::default()
            };
            cfg.validate().is_ok() && cfg.ports_in_use().is_empty()
        })
}

/// One app instance's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppAddrs {
    /// Where it serves HTTP.
    pub http: SocketAddrV4,
    /// Where it serves `/metrics`.
    pub metrics: SocketAddrV4,
}

/// Every member's address, derived from the base port (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The HAProxy frontend.
    pub lb: SocketAddrV4,
    /// The HAProxy stats page.
    pub stats: SocketAddrV4,
    /// The app instances, `app-1` first.
    pub apps: Vec<AppAddrs>,
    /// The Redis data nodes, `redis-1` (the first master) first.
    pub redis: Vec<SocketAddrV4>,
    /// The Sentinels.
    pub sentinels: Vec<SocketAddrV4>,
}

impl Layout {
    /// The layout of a lab on `base` with `apps` apps and `driver`.
    pub fn new(base: u16, apps: usize, driver: Driver) -> Self {
        let at = |last_octet: usize, offset: usize| {
            let octet = u8::try_from(last_octet).expect("validated: small member counts");
            let port = base + u16::try_from(offset).expect("validated: small member counts");
            SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, octet), port)
        };
        Self {
            lb: at(1, 0),
            stats: at(1, 1),
            apps: (1..=apps)
                .map(|i| AppAddrs {
                    http: at(10 + i, 10 + i),
                    metrics: at(10 + i, 20 + i),
                })
                .collect(),
            redis: (1..=driver.data_nodes()).map(|j| at(20 + j, 30 + j)).collect(),
            sentinels: (1..=driver.sentinels()).map(|k| at(30 + k, 40 + k)).collect(),
        }
    }

    /// Every address a member of the lab listens on.
    pub fn listeners(&self) -> Vec<SocketAddrV4> {
        let mut all = vec![self.lb, self.stats];
        for app in &self.apps {
            all.extend([app.http, app.metrics]);
        }
        all.extend(&self.redis);
        all.extend(&self.sentinels);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_parse_and_print() {
        for driver in Driver::ALL {
            assert_eq!(driver.as_str().parse::<Driver>(), Ok(driver));
            assert_eq!(driver.to_string(), driver.as_str());
        }
        assert_eq!("Redis-Sentinel".parse::<Driver>(), Ok(Driver::RedisSentinel));
        assert!(
            "cluster"
                .parse::<Driver>()
                .unwrap_err()
                .contains("redis-sentinel, redis or sql")
        );
        assert_eq!(Driver::default(), Driver::RedisSentinel);
        assert_eq!(
            serde_json::to_string(&Driver::RedisSentinel).unwrap(),
            "\"redis-sentinel\""
        );
    }

    #[test]
    fn the_layout_derives_every_port_from_the_base() {
        let layout = Layout::new(7100, 3, Driver::RedisSentinel);
        assert_eq!(layout.lb.to_string(), "127.0.0.1:7100");
        assert_eq!(layout.stats.to_string(), "127.0.0.1:7101");
        assert_eq!(layout.apps[0].http.to_string(), "127.0.0.11:7111");
        assert_eq!(layout.apps[2].metrics.to_string(), "127.0.0.13:7123");
        assert_eq!(
            layout.redis.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["127.0.0.21:7131", "127.0.0.22:7132", "127.0.0.23:7133"]
        );
        assert_eq!(layout.sentinels[2].to_string(), "127.0.0.33:7143");
        let ports: Vec<u16> = layout.listeners().iter().map(|a| a.port()).collect();
        assert!(ports.iter().all(|p| (7100..7100 + PORT_SPAN).contains(p)));
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "no two members share a port");

        let single = Layout::new(7100, 9, Driver::Redis);
        assert_eq!(single.redis.len(), 1);
        assert!(single.sentinels.is_empty());
        assert_eq!(single.apps[8].http.to_string(), "127.0.0.19:7119");
        assert!(Layout::new(7100, 1, Driver::Sql).redis.is_empty());
    }

    #[test]
    fn bad_values_are_refused_with_the_fix() {
        let ok = LabConfig::default();
        ok.validate().unwrap();
        let apps = LabConfig {
            apps: 10,
            ..ok.clone()
        };
        assert!(apps.validate().unwrap_err().to_string().contains("1 to 9"));
        let port = LabConfig {
            base_port: 65_500,
            ..ok.clone()
        };
        assert!(port.validate().is_err());
        let down = LabConfig {
            down_after_ms: 5,
            ..ok
        };
        assert!(down.validate().is_err());
    }
}
