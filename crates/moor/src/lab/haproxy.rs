//! HAProxy in front of the apps: its config, starting it, and reading its view of the servers.
//!
//! The config is what keeps a dying instance invisible to users:
//!
//! - `option httpchk GET /readyz` every 500 ms, `fall 1 rise 1`: an instance that starts shutting down (its
//!   `/readyz` turns 503 first, for `SHUTDOWN_DELAY_SECONDS`) leaves the rotation within a check, and a
//!   restarted one joins at its first good answer.
//! - `retries 3`, `option redispatch 1` and `retry-on conn-failure empty-response response-timeout`: a
//!   request sent to a killed instance (connection refused, or closed without an answer) is sent again to
//!   another one instead of failing.
//! - `timeout connect 1s`, and a server timeout above the apps' `SESSION_STORE_TIMEOUT_MS`, so the apps
//!   answer (503 with `Retry-After` at worst) before HAProxy gives up on them.
//! - `option forwardfor`: the apps see the client in `X-Forwarded-For` (`TRUST_PROXY_HEADERS=true`).
//!
//! HAProxy has no log here (in daemon mode it would need a syslog server); the apps' JSON logs record every
//! request. The stats page (`http://127.0.0.1:<base+1>/`, CSV at `/;csv`) shows each server's state.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use super::process;

/// The process name.
pub(crate) const COMM: &str = "haproxy";
/// The backend the apps are servers of.
const BACKEND: &str = "apps";

/// The files of HAProxy in the lab directory.
#[derive(Clone, Debug)]
pub(crate) struct Files {
    /// `<lab>/haproxy`.
    pub(crate) dir: PathBuf,
}

impl Files {
    /// The config file.
    pub(crate) fn cfg(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    /// The pid file (`-p`).
    pub(crate) fn pidfile(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }

    /// What HAProxy prints before it daemonizes (warnings, config errors).
    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }
}

/// The config for a frontend on `lb`, a stats page on `stats`, and `apps` (name, address) as servers;
/// `server_timeout` must exceed the apps' own store timeout.
pub(crate) fn config(
    lb: SocketAddrV4,
    stats: SocketAddrV4,
    apps: &[(String, SocketAddrV4)],
    server_timeout: Duration,
) -> String {
    let server_ms = server_timeout.as_millis();
    let mut cfg = format!(
        "# Written by `moor lab up`.
global
    maxconn 4096

defaults
    mode http
    option dontlognull
    timeout connect 1s
    timeout client 30s
    timeout server {server_ms}ms
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 5s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend web
    bind {lb}
    option forwardfor
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fastinter 500ms downinter 500ms fall 1 rise 1
"
    );
    for (name, addr) in apps {
        writeln!(cfg, "    server {name} {addr}").expect("String");
    }
    write!(
        cfg,
        "
listen stats
    bind {stats}
    stats enable
    stats uri /
    stats refresh 2s
"
    )
    .expect("String");
    cfg
}

/// Checks the config with `haproxy -c`, then starts HAProxy as a daemon and returns its pid.
pub(crate) async fn start(haproxy: &Path, files: &Files, lb: SocketAddrV4) -> anyhow::Result<u32> {
    if std::net::TcpListener::bind(lb).is_err() {
        anyhow::bail!("haproxy: {lb} is taken by another process; stop it or pick another --base-port");
    }
    let check = tokio::process::Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(files.cfg())
        .output()
        .await
        .with_context(|| format!("running {}", haproxy.display()))?;
    if !check.status.success() {
        anyhow::bail!(
            "haproxy refuses {}:\n{}{}",
            files.cfg().display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.log())
        .context("opening haproxy.log")?;
    let status = tokio::process::Command::new(haproxy)
        .arg("-f")
        .arg(files.cfg())
        .arg("-D")
        .arg("-p")
        .arg(files.pidfile())
        .current_dir(&files.dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .await
        .with_context(|| format!("running {}", haproxy.display()))?;
    if !status.success() {
        anyhow::bail!(
            "haproxy exited with {status}\n{}",
            process::log_tail(&files.log(), 20)
        );
    }
    process::wait_pidfile(
        &files.pidfile(),
        COMM,
        Duration::from_secs(10),
        "haproxy",
        &files.log(),
    )
    .await
}

/// Each app server's state as HAProxy's health checks see it (`UP`, `DOWN`, `MAINT`, ...), by server name,
/// read from the stats CSV.
pub(crate) async fn server_states(
    http: &reqwest::Client,
    stats: SocketAddrV4,
) -> anyhow::Result<Vec<(String, String)>> {
    let csv = http
        .get(format!("http://{stats}/;csv"))
        .send()
        .await
        .context("HAProxy stats page")?
        .error_for_status()
        .context("HAProxy stats page")?
        .text()
        .await
        .context("HAProxy stats page")?;
    parse_states(&csv).context("reading HAProxy's stats CSV")
}

/// The (server, status) pairs of the app backend in a stats CSV.
fn parse_states(csv: &str) -> Option<Vec<(String, String)>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (px, sv, status) = (column("pxname")?, column("svname")?, column("status")?);
    Some(
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.get(px) == Some(&BACKEND) && !matches!(f.get(sv), Some(&"BACKEND") | None))
            .map(|f| (f[sv].to_owned(), f.get(status).copied().unwrap_or("").to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_retries_elsewhere_and_checks_readiness() {
        let cfg = config(
            "127.0.0.1:7100".parse().unwrap(),
            "127.0.0.1:7101".parse().unwrap(),
            &[
                ("app-1".into(), "127.0.0.11:7111".parse().unwrap()),
                ("app-2".into(), "127.0.0.12:7112".parse().unwrap()),
            ],
            Duration::from_secs(12),
        );
        for line in [
            "    bind 127.0.0.1:7100",
            "    option httpchk GET /readyz",
            "    http-check expect status 200",
            "    retries 3",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response response-timeout",
            "    option forwardfor",
            "    timeout connect 1s",
            "    timeout server 12000ms",
            "    server app-2 127.0.0.12:7112",
            "    bind 127.0.0.1:7101",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line:?} in\n{cfg}");
        }
    }

    #[test]
    fn server_states_come_from_the_csv() {
        let csv = "# pxname,svname,qcur,status,weight\n\
                   web,FRONTEND,,OPEN,\n\
                   apps,app-1,0,UP,1\n\
                   apps,app-2,0,DOWN,1\n\
                   apps,BACKEND,0,UP,1\n\
                   stats,FRONTEND,,OPEN,\n";
        assert_eq!(
            parse_states(csv).unwrap(),
            [
                ("app-1".to_owned(), "UP".to_owned()),
                ("app-2".to_owned(), "DOWN".to_owned())
            ]
        );
    }
}
