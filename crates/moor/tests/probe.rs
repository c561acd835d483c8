//! The session-survival probe against real `inventory` processes: a healthy app shows no logout and no lost
//! write, and an app that loses its sessions mid-run is caught (logouts and lost acknowledged writes). A probe
//! that could not see the second would prove nothing with the first.
//!
//! The app is the `inventory` binary of this workspace (built with `cargo build -p inventory` if it is missing),
//! started on a free loopback port with its own DATA_DIR. The SVG and JSON reports of each run are left in
//! `target/<profile>/probe-reports/` for a look.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use moor::probe::{Probe, ProbeConfig, ProbeReport, parse_duration};
use support::{APP_KEY, inventory_binary, target_dir};
use tokio::io::AsyncBufReadExt;

/// One running `inventory` process.
struct App {
    /// Base URL, without a trailing slash.
    url: String,
    port: u16,
    child: tokio::process::Child,
}

impl App {
    /// Starts `inventory` on 127.0.0.1 with DATA_DIR `data`, a fixed APP_KEY and `vars` (which may set PORT),
    /// and waits for its "inventory is serving" log line. The environment is cleared first, so only these
    /// variables shape the run. Warnings and errors from its log are echoed, so they show when a test fails.
    async fn spawn(data: &Path, vars: &[(&str, &str)]) -> App {
        let mut cmd = tokio::process::Command::new(inventory_binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("METRICS_PORT", "0"),
                ("APP_KEY", APP_KEY),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
                ("SHUTDOWN_GRACE_SECONDS", "2"),
                // The probe writes and reads session values.
                ("SESSION_TEST_ENDPOINTS", "true"),
            ])
            .env("DATA_DIR", data)
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the inventory binary starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read log") {
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("[inventory] {line}");
                    continue;
                };
                if json["message"] == "inventory is serving" {
                    return json["url"]
                        .as_str()
                        .expect("url")
                        .trim_end_matches('/')
                        .to_owned();
                }
                if json["level"] != "INFO" {
                    eprintln!("[inventory] {line}");
                }
            }
            panic!("inventory exited before serving (its log is above)");
        })
        .await
        .expect("inventory serves within 30 s");
        // Keep draining the log so the process never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.contains("\"level\":\"INFO\"") {
                    eprintln!("[inventory] {line}");
                }
            }
        });
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("url ends with the port");
        App { url, port, child }
    }

    /// `kill -9`, and wait for the process to be gone.
    async fn kill(mut self) {
        self.child.kill().await.expect("kill inventory");
    }
}

fn config(url: &str, users: usize, duration: Duration) -> ProbeConfig {
    ProbeConfig {
        base_url: url.to_owned(),
        users,
        duration: Some(duration),
        requests: None,
        think: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
        verify_every: 5,
    }
}

/// Writes the report's JSON and SVG under `target/<profile>/probe-reports/` and returns the SVG.
fn keep(report: &ProbeReport, name: &str, title: &str) -> String {
    let dir = target_dir().join("probe-reports");
    std::fs::create_dir_all(&dir).expect("create probe-reports");
    let svg = report.to_svg(title);
    std::fs::write(dir.join(format!("{name}.svg")), &svg).expect("write svg");
    report
        .write_json(&dir.join(format!("{name}.json")))
        .expect("write json");
    eprintln!("{}", report.to_table());
    svg
}

/// Checks that `svg` is well-formed enough: one `<svg>` root, every tag closed in order, no attribute twice in
/// a tag, no stray `<` or `&`.
fn assert_well_formed(svg: &str) {
    assert!(svg.starts_with("<svg "), "starts with <svg");
    assert!(svg.trim_end().ends_with("</svg>"), "ends with </svg>");
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let text = &rest[..start];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity),
                "bare & in text: {entity}"
            );
        }
        let end = start + rest[start..].find('>').expect("tag closes");
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "< inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name.trim()), "closing tag matches");
        } else {
            let mut names: Vec<&str> = tag
                .split('"')
                .step_by(2)
                .filter_map(|chunk| chunk.trim_end().strip_suffix('='))
                .map(|chunk| chunk.rsplit(char::is_whitespace).next().unwrap_or(chunk))
                .collect();
            let count = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), count, "an attribute twice in <{tag}>");
            if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next().expect("tag name"));
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "unclosed tags: {open:?}");
}

/// A healthy app (SQLite sessions, one process): 5 users for 3 s lose nothing and are never signed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_app_shows_no_logout_and_no_lost_write() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = App::spawn(data.path(), &[("INSTANCE_NAME", "probe-healthy")]).await;
    let probe = Probe::start(config(&app.url, 5, Duration::from_secs(3)))
        .await
        .expect("users sign in");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    probe.mark("halfway <mark> & check");
    // The users stop by themselves at 3 s; stop() then only runs the final verification.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let report = probe.stop().await;
    let svg = keep(&report, "healthy", "probe test: healthy inventory, 5 users × 3 s");
    let t = &report.totals;

    assert_eq!(t.logouts, 0, "logouts: {:?}", t.logouts_by_reason);
    assert_eq!(t.lost_writes, 0);
    assert_eq!(t.stale_reads, 0);
    assert_eq!(t.mismatched_reads, 0);
    assert_eq!(t.unverified_writes, 0);
    assert_eq!(t.errors(), 0, "errors: {:?}", t.errors_by_kind);
    assert_eq!(t.cookies_replaced, 0);
    assert!(t.acked_writes >= 5 * 5, "acked writes: {}", t.acked_writes);
    // Every request got the expected answer, and the timeline accounts for all of them.
    assert_eq!(t.ok, t.requests);
    assert_eq!(t.requests, t.ok + t.logouts + t.mismatched_reads + t.errors());
    assert_eq!(
        report.timeline.iter().map(|s| s.requests).sum::<u64>(),
        t.requests
    );
    assert_eq!(
        report.timeline.iter().map(|s| s.acked).sum::<u64>(),
        t.acked_writes
    );
    assert!(
        (3.0..30.0).contains(&report.duration),
        "duration {}",
        report.duration
    );
    assert!(report.timeline.len() >= 3, "timeline covers the run");
    // One write, one read-back per iteration, and every 5th a dashboard check and a sample.
    assert!(t.requests > 2 * t.acked_writes, "{} requests", t.requests);

    let l = report.latency_ms;
    assert!(
        l.p50 > 0.0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
        "{l:?}"
    );
    assert!(l.max < 5000.0, "no request near the timeout: {l:?}");
    for second in &report.timeline {
        assert!(
            second.p50_ms <= second.p99_ms && second.p99_ms <= second.max_ms,
            "{second:?}"
        );
    }

    let served: u64 = report.per_instance.values().sum();
    assert_eq!(report.per_instance.keys().collect::<Vec<_>>(), ["probe-healthy"]);
    assert!(
        served >= 2 * t.acked_writes,
        "writes and reads name the instance: {served}"
    );

    let marked: Vec<_> = report
        .events
        .iter()
        .filter(|e| e.label == "halfway <mark> & check")
        .collect();
    assert_eq!(marked.len(), 1, "{:?}", report.events);
    assert!(
        (1400..5000).contains(&marked[0].t_ms),
        "marked at {} ms",
        marked[0].t_ms
    );

    assert_well_formed(&svg);
    assert!(
        svg.contains("halfway &lt;mark&gt; &amp; check"),
        "the SVG shows the event"
    );
    assert!(
        svg.contains("requests / s") && svg.contains("milliseconds"),
        "the SVG has a legend and units"
    );

    let table = report.to_table();
    assert!(
        table.contains("logouts") && table.contains("halfway <mark> & check"),
        "{table}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("report.json");
    report.write_json(&path).expect("write json");
    let read: ProbeReport =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("parse");
    assert_eq!(read.totals.requests, t.requests);
    assert_eq!(read.timeline.len(), report.timeline.len());
    app.kill().await;
}

/// Sessions kept in process memory vanish when the process is killed and restarted: the probe must report
/// the users signed out and the values acknowledged before the restart as lost, and carry on afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_loses_sessions_is_caught() {
    // Users and items live in SQLite under DATA_DIR and survive the restart; sessions live in memory and do not.
    let data = tempfile::tempdir().expect("tempdir");
    let vars = [("SESSION_DRIVER", "memory"), ("INSTANCE_NAME", "probe-memory-1")];
    let first = App::spawn(data.path(), &vars).await;
    let url = first.url.clone();
    let port = first.port.to_string();
    let probe = Probe::start(config(&url, 5, Duration::from_secs(6)))
        .await
        .expect("users sign in");
    tokio::time::sleep(Duration::from_secs(2)).await;

    probe.mark("kill -9, restart with sessions in memory");
    first.kill().await;
    let second = App::spawn(
        data.path(),
        &[
            ("SESSION_DRIVER", "memory"),
            ("INSTANCE_NAME", "probe-memory-2"),
            ("PORT", &port),
        ],
    )
    .await;
    assert_eq!(second.url, url, "the restarted app serves on the same port");
    probe.mark("restarted");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let report = probe.stop().await;
    keep(
        &report,
        "sessions-lost",
        "probe test: inventory restarted with in-memory sessions",
    );
    let t = &report.totals;

    assert!(t.logouts >= 1, "the probe saw no logout: {t:?}");
    assert!(t.lost_writes >= 1, "the probe saw no lost write: {t:?}");
    assert_eq!(t.requests, t.ok + t.logouts + t.mismatched_reads + t.errors());
    assert_eq!(t.unverified_writes, 0);
    // Every value the first process acknowledged is gone with its memory, and the probe reports each one
    // (in the second it was written); what the users wrote after signing in again is not lost.
    let event_s = |label: &str| {
        report
            .events
            .iter()
            .find(|e| e.label == label)
            .expect("marked")
            .t_ms
            / 1000
    };
    let (kill_s, restart_s) = (
        event_s("kill -9, restart with sessions in memory"),
        event_s("restarted"),
    );
    let before: Vec<_> = report.timeline.iter().filter(|s| s.t < kill_s).collect();
    let acked_before: u64 = before.iter().map(|s| s.acked).sum();
    let lost_before: u64 = before.iter().map(|s| s.lost_writes).sum();
    assert!(acked_before > 0);
    assert_eq!(
        lost_before, acked_before,
        "every write acknowledged before the kill is reported lost"
    );
    let lost_later: u64 = report
        .timeline
        .iter()
        .filter(|s| s.t > restart_s + 1)
        .map(|s| s.lost_writes)
        .sum();
    assert_eq!(
        lost_later, 0,
        "writes made after signing in again survive: {:?}",
        report.timeline
    );
    // The users signed in again and the app acknowledged writes after the restart.
    let acked_after: u64 = report
        .timeline
        .iter()
        .filter(|s| s.t > restart_s)
        .map(|s| s.acked)
        .sum();
    assert!(
        acked_after > 0,
        "no write acknowledged after the restart: {:?}",
        report.timeline
    );
    assert!(!t.logouts_by_reason.is_empty());
    assert!(
        report.per_instance.contains_key("probe-memory-1")
            && report.per_instance.contains_key("probe-memory-2")
    );
    second.kill().await;
}

/// With only a request bound, each user stops by itself after that many requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_bound_stops_the_probe_by_itself() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = App::spawn(data.path(), &[("SESSION_DRIVER", "memory")]).await;
    let cfg = ProbeConfig {
        duration: None,
        requests: Some(30),
        think: Duration::ZERO,
        ..config(&app.url, 3, Duration::ZERO)
    };
    // Spawned, which also proves the probe can run on another task (its futures are Send).
    let report = tokio::time::timeout(Duration::from_secs(60), tokio::spawn(Probe::run(cfg)))
        .await
        .expect("the probe stops by itself")
        .expect("the probe task")
        .expect("the probe runs");
    let t = &report.totals;
    // Sign-in takes 3 requests per user, the loop exactly 30, the final verification one per acked write.
    assert_eq!(t.requests, 3 * 3 + 3 * 30 + t.acked_writes, "{t:?}");
    assert_eq!((t.logouts, t.lost_writes, t.errors()), (0, 0, 0), "{t:?}");
    app.kill().await;
}

/// An app that does not answer makes `start` fail, naming what failed; a config without a bound is refused.
#[tokio::test]
async fn start_fails_clearly() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let err = Probe::start(config(
        &format!("http://127.0.0.1:{closed}"),
        2,
        Duration::from_secs(1),
    ))
    .await
    .err()
    .expect("nothing listens there");
    let message = format!("{err:#}");
    assert!(
        message.contains("could not sign in") && message.contains("GET /register"),
        "{message}"
    );

    let unbounded = ProbeConfig {
        duration: None,
        requests: None,
        ..ProbeConfig::default()
    };
    let err = Probe::start(unbounded).await.err().expect("a bound is required");
    assert!(err.to_string().contains("bound"), "{err}");
}

/// The CLI's duration syntax.
#[test]
fn durations_parse_for_the_cli() {
    assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert!(parse_duration("30").is_err());
}
