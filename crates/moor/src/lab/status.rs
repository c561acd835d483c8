//! What `moor lab status` shows: every member with its process, health and role, and the current master.

use std::fmt;

use serde::Serialize;

use super::config::Driver;

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberKind {
    /// HAProxy, the load balancer.
    Lb,
    /// An `inventory` instance.
    App,
    /// A Redis data node.
    Redis,
    /// A Redis Sentinel.
    Sentinel,
}

impl MemberKind {
    /// The name in `state.json` and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberKind::Lb => "lb",
            MemberKind::App => "app",
            MemberKind::Redis => "redis",
            MemberKind::Sentinel => "sentinel",
        }
    }
}

/// The role a member plays right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The load balancer.
    Lb,
    /// An app instance.
    App,
    /// The Redis node that takes writes (as the node itself reports it).
    Master,
    /// A Redis node replicating a master.
    Replica,
    /// A Sentinel.
    Sentinel,
    /// A Redis node that does not answer, so its role is not known.
    Unknown,
}

impl Role {
    /// The name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Lb => "lb",
            Role::App => "app",
            Role::Master => "master",
            Role::Replica => "replica",
            Role::Sentinel => "sentinel",
            Role::Unknown => "?",
        }
    }
}

/// One member of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// What it is.
    pub kind: MemberKind,
    /// `haproxy`, `app-1`, `redis-1`, `sentinel-1`, ...
    pub name: String,
    /// Where it listens (`host:port`).
    pub addr: String,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Whether its process is alive.
    pub running: bool,
    /// Whether it does its job: HAProxy serves with every app server up; an app answers `/readyz` with 200;
    /// a master has a replica in sync (so it takes writes; any master with the `redis` driver); a replica's
    /// link to its master is up; a Sentinel sees the master up.
    pub healthy: bool,
    /// Its role now.
    pub role: Role,
    /// One line of detail: `3/3 servers up`, `replica of 127.0.0.21:7131, link up`, `cut off`, ...
    pub detail: String,
}

/// The whole lab, as seen at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Where the users go: the HAProxy frontend.
    pub url: String,
    /// The session driver.
    pub driver: Driver,
    /// The Redis master as the Sentinels (or the single node) report it; `None` with the `sql` driver or when
    /// nobody answers.
    pub master: Option<String>,
    /// The data node a partition cuts off, if one is in place.
    pub partition: Option<String>,
    /// Every member: the load balancer, the apps, the data nodes, the Sentinels.
    pub members: Vec<Member>,
}

impl Status {
    /// Whether every member runs and is healthy.
    pub fn all_healthy(&self) -> bool {
        self.members.iter().all(|m| m.running && m.healthy)
    }

    /// The members of `kind`.
    pub fn of_kind(&self, kind: MemberKind) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.kind == kind)
    }

    /// How many members currently play `role`.
    pub fn count(&self, role: Role) -> usize {
        self.members.iter().filter(|m| m.role == role).count()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "url     {} (driver {})", self.url, self.driver)?;
        if let Some(master) = &self.master {
            writeln!(f, "master  {master}")?;
        }
        if let Some(isolated) = &self.partition {
            writeln!(
                f,
                "cut     {isolated} is partitioned from the other data nodes and the Sentinels"
            )?;
        }
        let rows: Vec<[String; 7]> = self
            .members
            .iter()
            .map(|m| {
                [
                    m.kind.as_str().to_owned(),
                    m.name.clone(),
                    m.addr.clone(),
                    m.pid.map_or("-".into(), |p| p.to_string()),
                    match (m.running, m.healthy) {
                        (false, _) => "stopped".into(),
                        (true, true) => "healthy".into(),
                        (true, false) => "UNHEALTHY".into(),
                    },
                    m.role.as_str().to_owned(),
                    m.detail.clone(),
                ]
            })
            .collect();
        let header = ["KIND", "NAME", "ADDRESS", "PID", "STATE", "ROLE", "DETAIL"].map(str::to_owned);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up() {
        let status = Status {
            url: "http://127.0.0.1:7100".into(),
            driver: Driver::RedisSentinel,
            master: Some("127.0.0.21:7131".into()),
            partition: None,
            members: vec![
                Member {
                    kind: MemberKind::Lb,
                    name: "haproxy".into(),
                    addr: "127.0.0.1:7100".into(),
                    pid: Some(10),
                    running: true,
                    healthy: true,
                    role: Role::Lb,
                    detail: "3/3 servers up".into(),
                },
                Member {
                    kind: MemberKind::Redis,
                    name: "redis-2".into(),
                    addr: "127.0.0.22:7132".into(),
                    pid: None,
                    running: false,
                    healthy: false,
                    role: Role::Unknown,
                    detail: String::new(),
                },
            ],
        };
        let text = status.to_string();
        assert!(text.contains("master  127.0.0.21:7131"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].starts_with("KIND   NAME     ADDRESS          PID  STATE    ROLE  DETAIL"),
            "{text}"
        );
        assert!(
            lines[3].contains("healthy") && lines[3].ends_with("3/3 servers up"),
            "{text}"
        );
        assert!(lines[4].contains("stopped"), "{text}");
        assert!(!status.all_healthy());
        assert_eq!(status.count(Role::Lb), 1);
        assert_eq!(status.of_kind(MemberKind::Redis).count(), 1);
    }
}
