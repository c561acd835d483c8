//! `<lab>/state.json`: what a lab is (its configuration), where every member is, and the pids last seen.
//!
//! The configuration part is written when the lab is first created and is what [`super::Lab::open`] rebuilds
//! the lab from. The members part is a record for people and other tools (addresses, pid files, logs, the
//! pid at the last change); the pid files themselves stay the truth about what runs. Writes go through a
//! temporary file and a rename, so a reader never sees half a file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::config::{Driver, LabConfig};

/// The file's name in the lab directory.
pub(crate) const FILE: &str = "state.json";
/// The format version; a lab from another version is refused with the fix.
const VERSION: u32 = 1;

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct State {
    /// [`VERSION`].
    pub(crate) version: u32,
    /// The configuration the lab was created with.
    pub(crate) config: StoredConfig,
    /// The HAProxy frontend URL.
    pub(crate) url: String,
    /// Every member, as last recorded.
    pub(crate) members: Vec<MemberRecord>,
    /// The data node cut off by a partition in place, if any.
    pub(crate) partition: Option<String>,
}

/// The configuration a lab was created with (paths absolute).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredConfig {
    /// See [`LabConfig::apps`].
    pub(crate) apps: usize,
    /// See [`LabConfig::driver`].
    pub(crate) driver: Driver,
    /// See [`LabConfig::base_port`].
    pub(crate) base_port: u16,
    /// See [`LabConfig::down_after_ms`].
    pub(crate) down_after_ms: u64,
    /// The `inventory` binary the apps run.
    pub(crate) inventory_bin: PathBuf,
}

impl StoredConfig {
    /// The differences that make `cfg` another lab than this one, as `--option: was → now` texts.
    pub(crate) fn conflicts(&self, cfg: &LabConfig) -> Vec<String> {
        let mut out = Vec::new();
        if self.apps != cfg.apps {
            out.push(format!("--apps: {} → {}", self.apps, cfg.apps));
        }
        if self.driver != cfg.driver {
            out.push(format!("--driver: {} → {}", self.driver, cfg.driver));
        }
        if self.base_port != cfg.base_port {
            out.push(format!("--base-port: {} → {}", self.base_port, cfg.base_port));
        }
        if self.down_after_ms != cfg.down_after_ms {
            out.push(format!(
                "--down-after-ms: {} → {}",
                self.down_after_ms, cfg.down_after_ms
            ));
        }
        out
    }
}

/// One member as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct MemberRecord {
    /// `haproxy`, `app-1`, `redis-1`, `sentinel-1`, ...
    pub(crate) name: String,
    /// `lb`, `app`, `redis` or `sentinel`.
    pub(crate) kind: String,
    /// Where it listens.
    pub(crate) addr: String,
    /// Its pid file.
    pub(crate) pidfile: PathBuf,
    /// Its log file.
    pub(crate) log: PathBuf,
    /// The pid in its pid file when the state was last written, if that process was alive.
    pub(crate) pid: Option<u32>,
}

/// Reads `<dir>/state.json`; `Ok(None)` when there is none.
pub(crate) fn load(dir: &Path) -> anyhow::Result<Option<State>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let state: State =
        serde_json::from_str(&text).with_context(|| format!("{} is not a lab state file", path.display()))?;
    if state.version != VERSION {
        anyhow::bail!(
            "{} is from another version of moor (format {}, this one reads {VERSION}): run `moor lab down --wipe` with that version, or delete the directory",
            path.display(),
            state.version
        );
    }
    Ok(Some(state))
}

/// Writes `<dir>/state.json` atomically.
pub(crate) fn save(dir: &Path, state: &State) -> anyhow::Result<()> {
    let path = dir.join(FILE);
    let temp = dir.join(format!(".{FILE}.{}", std::process::id()));
    let text = serde_json::to_string_pretty(state).expect("the state serializes");
    std::fs::write(&temp, text + "\n").with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))
}

/// A new state for `config`, with no members recorded yet.
pub(crate) fn new(config: StoredConfig, url: String) -> State {
    State {
        version: VERSION,
        config,
        url,
        members: Vec::new(),
        partition: None,
    }
}

/// Records (or clears) the partition in `<dir>/state.json`, if the file exists.
pub(crate) fn set_partition(dir: &Path, isolated: Option<String>) -> anyhow::Result<()> {
    if let Some(mut state) = load(dir)? {
        state.partition = isolated;
        save(dir, &state)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_versions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let stored = StoredConfig {
            apps: 3,
            driver: Driver::RedisSentinel,
            base_port: 7100,
            down_after_ms: 1000,
            inventory_bin: "/bin/inventory".into(),
        };
        let mut state = new(stored.clone(), "http://127.0.0.1:7100".into());
        state.members.push(MemberRecord {
            name: "app-1".into(),
            kind: "app".into(),
            addr: "127.0.0.11:7111".into(),
            pidfile: "/lab/apps/app-1/app.pid".into(),
            log: "/lab/apps/app-1/app.log".into(),
            pid: Some(42),
        });
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state.clone()));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"driver\": \"redis-sentinel\""), "{text}");

        set_partition(dir.path(), Some("127.0.0.21:7131".into())).unwrap();
        assert_eq!(
            load(dir.path()).unwrap().unwrap().partition.as_deref(),
            Some("127.0.0.21:7131")
        );

        let other = LabConfig {
            apps: 2,
            base_port: 7200,
            ..LabConfig::default()
        };
        assert_eq!(
            stored.conflicts(&other),
            ["--apps: 3 → 2", "--base-port: 7100 → 7200"]
        );

        state.version = 99;
        save(dir.path(), &state).unwrap();
        assert!(
            load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("another version")
        );
    }
}
