//! How to reach Redis and how hard to insist on durability.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::RedisStoreError;

/// Where the Redis nodes are.
#[derive(Clone, Debug)]
pub enum Topology {
    /// One address (a standalone server, or a proxy in front of the master).
    Standalone {
        /// `redis://` or `rediss://` URL.
        url: String,
    },
    /// A master found through Sentinels, followed across failovers.
    Sentinel {
        /// The Sentinels, `host:port`.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// Username for the Sentinels (ACL), if any.
        sentinel_username: Option<String>,
        /// Password for the Sentinels, if any (often different from the data nodes').
        sentinel_password: Option<String>,
    },
    /// A Redis Cluster, from any of its nodes (`host:port`).
    Cluster {
        /// Seed nodes.
        nodes: Vec<String>,
    },
}

/// When a write counts as saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// As soon as the master answers (a failover may lose the last second of writes).
    Async,
    /// Only once `WAIT n` confirms that `n` replicas have it, in the same round trip as the write.
    Replicas(u32),
    /// `Replicas(1)` when the master has replicas at start-up, `Async` otherwise.
    Auto,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "async" => Ok(Self::Async),
            "auto" => Ok(Self::Auto),
            _ => s
                .strip_prefix("replicas:")
                .and_then(|n| n.parse().ok())
                .filter(|n| *n >= 1)
                .map(Self::Replicas)
                .ok_or_else(|| format!("'{s}' is not async, auto or replicas:N (N >= 1)")),
        }
    }
}

/// Everything the store needs to connect.
#[derive(Clone)]
pub struct RedisConfig {
    /// Where the nodes are.
    pub topology: Topology,
    /// Username for the data nodes (ACL), if any.
    pub username: Option<String>,
    /// Password for the data nodes, if any.
    pub password: Option<String>,
    /// Database number (not for Cluster).
    pub db: i64,
    /// Use TLS to the data nodes and Sentinels (also implied by a `rediss://` URL).
    pub tls: bool,
    /// Prefix of every key the store writes.
    pub prefix: String,
    /// When a write counts as saved.
    pub durability: Durability,
    /// Connection establishment timeout.
    pub connect_timeout: Duration,
    /// Timeout of one round trip.
    pub response_timeout: Duration,
    /// How long one store call keeps retrying through a failover before it gives up.
    pub deadline: Duration,
    /// How long `WAIT` waits for replicas before the write counts as unconfirmed.
    pub wait_timeout: Duration,
    /// How often the Sentinels are asked who the master is, besides listening for `+switch-master`.
    pub poll_interval: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &redact(&self.topology))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

fn redact(topology: &Topology) -> String {
    match topology {
        Topology::Standalone { url } => match url.rfind('@') {
            Some(at) => format!(
                "Standalone({}://<redacted>@{})",
                url.split("://").next().unwrap_or(""),
                &url[at + 1..]
            ),
            None => format!("Standalone({url})"),
        },
        Topology::Sentinel {
            sentinels, master, ..
        } => format!("Sentinel({master} via {})", sentinels.join(",")),
        Topology::Cluster { nodes } => format!("Cluster({})", nodes.join(",")),
    }
}

impl RedisConfig {
    /// A configuration for `topology` with the defaults: no auth, db 0, prefix empty, `Durability::Auto`,
    /// 500 ms connect and response timeouts, a 2 s retry deadline, 250 ms WAIT, 1 s Sentinel poll.
    pub fn new(topology: Topology) -> Self {
        Self {
            topology,
            username: None,
            password: None,
            db: 0,
            tls: false,
            prefix: String::new(),
            durability: Durability::Auto,
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(2),
            wait_timeout: Duration::from_millis(250),
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Connection info for a data node at `host:port` with this configuration's auth, db and TLS.
    pub(crate) fn node_info(&self, host: &str, port: u16) -> ConnectionInfo {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        into_info(addr).set_redis_settings(settings)
    }

    /// Connection info for the standalone URL, with auth and db from the configuration when the URL has none.
    pub(crate) fn standalone_info(&self, url: &str) -> Result<ConnectionInfo, RedisStoreError> {
        let info = url
            .into_connection_info()
            .map_err(|e| RedisStoreError::Config(format!("bad Redis URL: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if settings.username().is_none()
            && let Some(user) = &self.username
        {
            settings = settings.set_username(user);
        }
        if settings.password().is_none()
            && let Some(password) = &self.password
        {
            settings = settings.set_password(password);
        }
        if settings.db() == 0 && self.db != 0 {
            settings = settings.set_db(self.db);
        }
        let addr = match info.addr().clone() {
            ConnectionAddr::Tcp(host, port) if self.tls => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            other => other,
        };
        Ok(info.set_addr(addr).set_redis_settings(settings))
    }

    /// Connection info for a Sentinel.
    pub(crate) fn sentinel_info(&self, addr: &str) -> Result<ConnectionInfo, RedisStoreError> {
        let (host, port) = split_addr(addr)?;
        let Topology::Sentinel {
            sentinel_username,
            sentinel_password,
            ..
        } = &self.topology
        else {
            return Err(RedisStoreError::Config("not a Sentinel topology".into()));
        };
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let mut settings = RedisConnectionInfo::default();
        if let Some(user) = sentinel_username {
            settings = settings.set_username(user);
        }
        if let Some(password) = sentinel_password {
            settings = settings.set_password(password);
        }
        Ok(into_info(addr).set_redis_settings(settings))
    }
}

fn into_info(addr: ConnectionAddr) -> ConnectionInfo {
    // Infallible for an address: it only wraps it with default settings, which callers then replace.
    #[allow(clippy::expect_used)]
    addr.into_connection_info()
        .expect("an address always converts into connection info")
}

/// Splits `host:port` (or `[v6]:port`).
pub fn split_addr(addr: &str) -> Result<(String, u16), RedisStoreError> {
    let bad = || RedisStoreError::Config(format!("'{addr}' is not host:port"));
    let (host, port) = addr.trim().rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses() {
        assert_eq!("async".parse(), Ok(Durability::Async));
        assert_eq!("replicas:2".parse(), Ok(Durability::Replicas(2)));
        assert_eq!("AUTO".parse(), Ok(Durability::Auto));
        assert!("replicas:0".parse::<Durability>().is_err());
        assert!("sync".parse::<Durability>().is_err());
    }

    #[test]
    fn addresses_split() {
        assert_eq!(
            split_addr("10.0.0.1:26379").ok(),
            Some(("10.0.0.1".into(), 26379))
        );
        assert_eq!(split_addr("[::1]:6379").ok(), Some(("::1".into(), 6379)));
        assert!(split_addr("nohost").is_err());
        assert!(split_addr(":1").is_err());
        assert!(split_addr("h:port").is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        let mut config = RedisConfig::new(Topology::Standalone {
            url: "redis://user:hunter2@db:6379".into(),
        });
        config.password = Some("hunter3".into());
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2") && !text.contains("hunter3"), "{text}");
    }
}
