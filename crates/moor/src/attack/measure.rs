//! What the `hostile` scenario measures besides HTTP answers: the resident memory of each app process
//! (sampled from `/proc/<pid>/status`, plus the kernel's own high-water mark), and a census of the Redis
//! keyspace that tells real users' session records from anonymous ones.

use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`, in KiB; `None` once the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// One process's memory over a sampling run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RssPeak {
    /// The process.
    pub pid: u32,
    /// What it is (`app-1`, ...).
    pub name: String,
    /// The largest `VmRSS` sampled, in KiB.
    pub peak_kib: u64,
    /// `VmRSS` at the first sample, in KiB.
    pub first_kib: u64,
    /// `VmHWM` (the kernel's high-water mark of the RSS since the process started) at the last sample, in
    /// KiB: catches a spike between two samples.
    pub hwm_kib: u64,
    /// Samples taken.
    pub samples: u64,
}

impl RssPeak {
    /// The larger of the sampled peak and the kernel's high-water mark, in MiB.
    pub fn worst_mib(&self) -> f64 {
        self.peak_kib.max(self.hwm_kib) as f64 / 1024.0
    }
}

/// Samples `VmRSS` of some processes in the background until [`RssSampler::stop`].
pub struct RssSampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<RssPeak>>,
}

impl RssSampler {
    /// Starts sampling `processes` (pid, name) every `every`.
    pub fn start(processes: Vec<(u32, String)>, every: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut peaks: Vec<RssPeak> = processes
                .into_iter()
                .map(|(pid, name)| RssPeak {
                    pid,
                    name,
                    peak_kib: 0,
                    first_kib: proc_status_kib(pid, "VmRSS").unwrap_or(0),
                    hwm_kib: 0,
                    samples: 0,
                })
                .collect();
            let mut tick = tokio::time::interval(every);
            loop {
                for peak in &mut peaks {
                    if let Some(rss) = proc_status_kib(peak.pid, "VmRSS") {
                        peak.peak_kib = peak.peak_kib.max(rss);
                        peak.samples += 1;
                    }
                    if let Some(hwm) = proc_status_kib(peak.pid, "VmHWM") {
                        peak.hwm_kib = hwm;
                    }
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => return peaks,
                }
            }
        });
        Self { stop, task }
    }

    /// Stops sampling (after one last sample) and returns each process's figures.
    pub async fn stop(self) -> Vec<RssPeak> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// The Redis keyspace, classified. A session record is a hash with the metadata field `""` (see
/// `mooring-redis`'s scripts); a signed-in one also has `@u`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    /// `INFO memory` `used_memory`, in bytes.
    pub used_memory: u64,
    /// `mem_replication_backlog` + `mem_aof_buffer`, in bytes: buffers that fill with any write (the
    /// backlog up to `repl-backlog-size`, 1 MiB by default) whatever the traffic is.
    pub write_buffers: u64,
    /// Session records with a user.
    pub user_records: u64,
    /// Session records without a user: what anonymous visitors cost.
    pub anonymous_records: u64,
    /// Every other key (user indexes, login throttle counters, ...).
    pub other_keys: u64,
    /// Keys with no TTL: nothing anonymous traffic creates may live forever.
    pub keys_without_ttl: u64,
    /// `MEMORY USAGE` of the session records with a user and of the user indexes (`u:` keys), in bytes:
    /// what real users' own sessions take.
    pub user_bytes: u64,
    /// `MEMORY USAGE` of the anonymous records, in bytes.
    pub anonymous_bytes: u64,
    /// `MEMORY USAGE` of the other keys, in bytes.
    pub other_bytes: u64,
}

impl Census {
    /// `used_memory` less the write buffers: what the keys and the clients take.
    pub fn data_memory(&self) -> u64 {
        self.used_memory.saturating_sub(self.write_buffers)
    }
}

/// The metadata field and the `@u` field of a hash (each absent or its bytes).
type SessionFields = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Counts the keys of the Redis at `addr` (`host:port`), with `SCAN`, in batches.
pub async fn census(addr: &str) -> anyhow::Result<Census> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to Redis at {addr}"))?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .context("INFO memory")?;
    let field = |name: &str| -> u64 {
        crate::lab::info_field(&info, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut census = Census {
        used_memory: field("used_memory"),
        write_buffers: field("mem_replication_backlog") + field("mem_aof_buffer"),
        ..Census::default()
    };
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .context("SCAN")?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("TYPE").arg(key);
                pipe.cmd("PTTL").arg(key);
                pipe.cmd("MEMORY").arg("USAGE").arg(key);
            }
            let facts: Vec<(String, i64, Option<u64>)> = pipe
                .query_async(&mut connection)
                .await
                .context("TYPE / PTTL / MEMORY USAGE")?;
            let hashes: Vec<&Vec<u8>> = keys
                .iter()
                .zip(&facts)
                .filter(|(_, (kind, _, _))| kind == "hash")
                .map(|(key, _)| key)
                .collect();
            let mut pipe = redis::pipe();
            for key in &hashes {
                pipe.cmd("HMGET").arg(*key).arg("").arg("@u");
            }
            let fields: Vec<SessionFields> = if hashes.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut connection).await.context("HMGET")?
            };
            let mut fields = fields.into_iter();
            for (key, (kind, ttl, bytes)) in keys.iter().zip(facts) {
                let bytes = bytes.unwrap_or(0);
                if ttl == -1 {
                    census.keys_without_ttl += 1;
                }
                let session = if kind == "hash" { fields.next() } else { None };
                match session {
                    Some((Some(_), Some(_))) => {
                        census.user_records += 1;
                        census.user_bytes += bytes;
                    }
                    Some((Some(_), None)) => {
                        census.anonymous_records += 1;
                        census.anonymous_bytes += bytes;
                    }
                    _ if key.starts_with(b"u:") && kind == "zset" => census.user_bytes += bytes,
                    _ => {
                        census.other_keys += 1;
                        census.other_bytes += bytes;
                    }
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(census)
}

/// Lines of a log file that record a panic (Rust's panic message starts with "panicked at"; the apps log
/// JSON, where the message is inside a string, so a plain substring search finds it either way).
pub fn panics_in(log: &std::path::Path) -> u64 {
    std::fs::read(log)
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| l.contains("panicked"))
                .count() as u64
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = proc_status_kib(std::process::id(), "VmRSS").expect("VmRSS");
        assert!(rss > 0);
        assert!(proc_status_kib(std::process::id(), "NoSuchField").is_none());
    }
}
