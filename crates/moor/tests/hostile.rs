//! The pieces of `moor chaos hostile` against real processes: the attack clients and the real users' sign-in
//! against a real `inventory` process, the slow-socket measurement against a real TCP server with a known
//! header timeout, and the keyspace census against a real `redis-server`. The whole scenario runs in the lab
//! (`moor chaos hostile --short`), which CI runs; these check that each measurement is right on its own.
//!
//! The app is the `inventory` binary of this workspace (built with `cargo build -p inventory` if it is
//! missing), started on a free loopback port with its own DATA_DIR and SQLite sessions.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use moor::attack::{self, Browser, measure};
use support::{APP_KEY, inventory_binary};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// One running `inventory` process, killed when dropped.
struct App {
    url: String,
    addr: SocketAddr,
    pid: u32,
    _child: tokio::process::Child,
}

impl App {
    /// Starts `inventory` on 127.0.0.1 with its defaults (and DATA_DIR `data`), and waits for its "inventory is
    /// serving" log line.
    async fn spawn(data: &Path) -> App {
        let mut cmd = tokio::process::Command::new(inventory_binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs([
                ("HOST", "127.0.0.1"),
                ("PORT", "0"),
                ("METRICS_PORT", "0"),
                ("APP_KEY", APP_KEY),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "warn,inventory=info"),
                ("SHUTDOWN_GRACE_SECONDS", "1"),
            ])
            .env("DATA_DIR", data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("the inventory binary starts");
        let pid = child.id().expect("a pid");
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
            }
            panic!("inventory exited before serving");
        })
        .await
        .expect("inventory serves within 30 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = url.trim_start_matches("http://").parse().expect("host:port");
        App {
            url,
            addr,
            pid,
            _child: child,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_users_register_and_sign_in_and_floods_get_clean_answers() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = App::spawn(data.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);

    let mut user = Browser::new(&app.url, None).expect("browser");
    let registered = user
        .register("ada@users.example", "correct horse battery", deadline)
        .await;
    assert!(registered.ok, "{registered:?}");
    let (name, value) = user.session_cookie().expect("the sign-in set a session cookie");
    assert!(!name.is_empty() && !value.is_empty());
    let mut again = Browser::new(&app.url, Some(Ipv4Addr::new(127, 0, 0, 120))).expect("browser");
    let signed_in = again
        .sign_in("ada@users.example", "correct horse battery", deadline)
        .await;
    assert!(signed_in.ok, "{signed_in:?}");
    let wrong = Browser::new(&app.url, None)
        .expect("browser")
        .sign_in("ada@users.example", "wrong password", deadline)
        .await;
    assert!(!wrong.ok, "a wrong password must not sign in");
    assert!(
        wrong
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("POST /login answered")),
        "{wrong:?}"
    );

    // Two flood clients, each from its own address, for two seconds: every attempt is refused cleanly.
    let flood = attack::login_flood(
        &app.url,
        &attack::sources(100, 2),
        Instant::now() + Duration::from_secs(2),
    )
    .await
    .expect("flood");
    assert!(flood.attempts.total() > 0, "{flood:?}");
    assert_eq!(
        flood.attempts.count(302) + flood.attempts.count(303),
        0,
        "a wrong password signed in"
    );
    assert_eq!(flood.attempts.server_failures(), 0, "{flood:?}");
    assert_eq!(flood.forms.count(200), flood.forms.total(), "{flood:?}");

    let anonymous = attack::anonymous_flood(
        &app.url,
        40,
        &attack::sources(150, 2),
        4,
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .expect("flood");
    assert_eq!(anonymous.pages.total(), 40);
    assert_eq!(anonymous.pages.count(200), 40, "{anonymous:?}");
    // Views 0, 10, 20, 30 post a registration with two passwords; 5, 15, 25, 35 a forged token.
    assert_eq!(anonymous.posts.total(), 8, "{anonymous:?}");
    assert!(
        anonymous.posts.statuses.keys().all(|s| (400..500).contains(s)),
        "failing forms get 4xx: {anonymous:?}"
    );

    // The sampler sees the app's resident memory.
    let sampler = measure::RssSampler::start(vec![(app.pid, "app".into())], Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let peaks = sampler.stop().await;
    assert!(peaks[0].samples >= 2 && peaks[0].peak_kib > 1024, "{peaks:?}");
    assert!(peaks[0].hwm_kib >= peaks[0].peak_kib, "{peaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_tossing_tells_whose_dashboard_was_served() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = App::spawn(data.path()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut victim = Browser::new(&app.url, None).expect("browser");
    assert!(
        victim
            .register("victim@users.example", "victim password", deadline)
            .await
            .ok
    );
    let mut attacker = Browser::new(&app.url, Some(Ipv4Addr::new(127, 0, 0, 170))).expect("browser");
    assert!(
        attacker
            .register("attacker@evil.example", "attacker password", deadline)
            .await
            .ok
    );

    let report = attack::cookie_tossing(
        &victim,
        "victim@users.example",
        &attacker,
        "attacker@evil.example",
        2,
    )
    .await
    .expect("tossing");
    assert_eq!(report.requests, 8, "{report:?}");
    assert_eq!(report.outcomes.len(), 4, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(
        report.victim_intact,
        "the victim's own cookie still works: {report:?}"
    );
    // Garbage duplicates carry no valid MAC: the victim's good cookie is the one used, before and after the
    // tossing rules changed.
    assert_eq!(
        report.outcomes["garbage cookies first"].get("victim"),
        Some(&2),
        "{report:?}"
    );
    // Each variant's answers are classified, never left as "other".
    for (variant, outcomes) in &report.outcomes {
        for outcome in outcomes.keys() {
            assert!(
                ["victim", "attacker", "anonymous"].contains(&outcome.as_str()),
                "{variant}: {outcome}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_answered_or_refused_never_left_hanging() {
    let data = tempfile::tempdir().expect("tempdir");
    let app = App::spawn(data.path()).await;
    let report = attack::malformed_requests(app.addr, Ipv4Addr::new(127, 0, 0, 171)).await;
    assert_eq!(report.cases.len(), 13, "{report:?}");
    let total = report.total();
    assert_eq!(total.timeouts, 0, "{report:?}");
    assert_eq!(total.server_failures(), 0, "{report:?}");
    for case in ["huge form body", "huge session value"] {
        assert_eq!(report.cases[case].count(413), 1, "{case}: {report:?}");
    }
    for case in [
        "unknown method",
        "invalid method",
        "non-ASCII path",
        "bad Content-Length",
    ] {
        assert!(
            report.cases[case]
                .statuses
                .keys()
                .all(|s| (400..500).contains(s) || *s == 0),
            "{case}: {report:?}"
        );
    }
}

/// A server that reads request bytes and closes each connection `after` it was accepted, as a header-read
/// timeout does; or never, with `None`.
async fn closing_server(after: Option<Duration>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                let reading = async { while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
                match after {
                    Some(after) => {
                        let _ = tokio::time::timeout(after, reading).await;
                    }
                    None => reading.await,
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn slow_sockets_are_timed_until_the_server_closes_them() {
    let closes = closing_server(Some(Duration::from_millis(800))).await;
    let keeps = closing_server(None).await;
    let sources = attack::sources(160, 2);
    let interval = Duration::from_millis(200);
    let closed = attack::slowloris(&[closes], 4, &sources, interval, Duration::from_secs(3)).await;
    assert_eq!(closed.len(), 4);
    for socket in &closed {
        let after = socket.closed_after.expect("closed by the server");
        assert!(
            after >= Duration::from_millis(700) && after < Duration::from_millis(2000),
            "{socket:?}"
        );
        assert!(!socket.refused);
    }
    let open = attack::slowloris(&[keeps], 2, &sources, interval, Duration::from_millis(1200)).await;
    assert!(open.iter().all(|s| s.closed_after.is_none()), "{open:?}");
}

#[tokio::test]
async fn the_census_tells_user_records_from_anonymous_ones() {
    use redis::AsyncCommands as _;
    let server = mooring_conformance::redis::standalone(Default::default()).await;
    let mut redis = server.connect().await;
    let _: () = redis
        .hset_multiple("signedin000001", &[("", "meta"), ("@u", "7"), ("a", "1")])
        .await
        .expect("hset");
    let _: () = redis.pexpire("signedin000001", 60_000).await.expect("pexpire");
    for key in ["anonymous00001", "anonymous00002"] {
        let _: () = redis
            .hset_multiple(key, &[("", "meta"), ("_csrf", "x")])
            .await
            .expect("hset");
        let _: () = redis.pexpire(key, 60_000).await.expect("pexpire");
    }
    let _: () = redis.zadd("u:7", "signedin000001", 1).await.expect("zadd");
    let _: () = redis.pexpire("u:7", 60_000).await.expect("pexpire");
    let _: () = redis.set("forever", "x").await.expect("set");
    let census = measure::census(&server.addr()).await.expect("census");
    assert_eq!(census.user_records, 1, "{census:?}");
    assert_eq!(census.anonymous_records, 2, "{census:?}");
    assert_eq!(census.other_keys, 1, "{census:?}");
    assert_eq!(census.keys_without_ttl, 1, "{census:?}");
    assert!(census.user_bytes > 0 && census.anonymous_bytes > 0, "{census:?}");
    assert!(census.used_memory > census.data_memory() || census.write_buffers == 0);
}
