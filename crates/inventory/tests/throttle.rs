//! Login throttling across replicas: two real `inventory` processes on one shared store behind a real HAProxy
//! (roundrobin). Failed sign-ins alternate between the instances (each response's footer names the instance
//! that served it) and the limit still holds: the attempt after the fifth failure is 429 with `Retry-After`,
//! even with the right password, and once the lockout has passed the right password signs in and resets the
//! account's counter. Run with the throttle in the SQL database (the default, one SQLite file shared by both
//! processes) and in Redis (`CACHE_DRIVER=redis`).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use support::{APP_KEY, Client, Page, Process};

const HAPROXY: &str = "/usr/sbin/haproxy";
/// The first lockout, longer than the default 1 s so a slow machine still sees it before it ends.
const LOCKOUT_SECONDS: u64 = 3;

/// A free port on loopback (bound, then released for the process that will listen on it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// HAProxy in the foreground, round-robin over `servers`, with the lab's health check on `/readyz`.
struct Haproxy {
    url: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(servers: &[(&str, u16)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cfg = format!(
            "global
    maxconn 256

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s

frontend web
    bind 127.0.0.1:{port}
    option forwardfor
    default_backend apps

backend apps
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 500ms fall 1 rise 1
"
        );
        for (name, port) in servers {
            cfg.push_str(&format!("    server {name} 127.0.0.1:{port}\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let child = tokio::process::Command::new(HAPROXY)
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts");
        let url = format!("http://127.0.0.1:{port}");
        // Ready when both servers answer through it (the health checks have passed).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = BTreeSet::new();
        while seen.len() < servers.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "HAProxy did not route to every instance within 20 s (saw {seen:?})"
            );
            if let Ok(res) = reqwest::get(format!("{url}/login")).await
                && res.status() == StatusCode::OK
            {
                let body = res.text().await.unwrap_or_default();
                seen.insert(served_by(&body));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self {
            url,
            _child: child,
            _dir: dir,
        }
    }
}

/// The instance named in a page's footer ("served by NAME").
fn served_by(body: &str) -> String {
    let marker = "served by ";
    let start = body.find(marker).map(|i| i + marker.len()).unwrap_or(0);
    body[start..].split('<').next().unwrap_or("").trim().to_owned()
}

/// One wrong or right sign-in through the balancer, re-reading the CSRF token from the last page.
async fn attempt(client: &mut Client, csrf: &mut String, email: &str, password: &str) -> Page {
    let page = client
        .post(
            "/login",
            &[("email", email), ("password", password), ("_csrf", csrf)],
        )
        .await;
    if page.body.contains("name=\"_csrf\"") {
        *csrf = page.csrf();
    }
    page
}

async fn the_limit_holds_across_two_instances(extra: &[(&str, &str)]) {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().display().to_string();
    let lockout = LOCKOUT_SECONDS.to_string();
    let mut base = vec![
        ("APP_KEY", APP_KEY),
        ("DATA_DIR", data_dir.as_str()),
        ("LOGIN_LOCKOUT_SECONDS", lockout.as_str()),
    ];
    base.extend_from_slice(extra);
    let mut a_vars = base.clone();
    a_vars.push(("INSTANCE_NAME", "app-a"));
    let mut b_vars = base.clone();
    b_vars.push(("INSTANCE_NAME", "app-b"));
    let a = Process::spawn(&a_vars).await;
    let b = Process::spawn(&b_vars).await;
    let lb = Haproxy::start(&[("app-a", a.port), ("app-b", b.port)]).await;

    let email = support::email("throttled");
    let password = "correct horse battery";
    let mut owner = Client::new(&lb.url);
    owner.register(&email, password).await;

    let mut attacker = Client::new(&lb.url);
    let mut csrf = attacker.get("/login").await.csrf();
    let mut served = Vec::new();
    for n in 1..=5 {
        let page = attempt(&mut attacker, &mut csrf, &email, "wrong password").await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "failure {n} is an ordinary wrong password: {}",
            page.body
        );
        served.push(served_by(&page.body));
    }
    let instances: BTreeSet<&str> = served.iter().map(String::as_str).collect();
    assert_eq!(
        instances,
        BTreeSet::from(["app-a", "app-b"]),
        "the five failures alternated between the instances: {served:?}"
    );

    let started = std::time::Instant::now();
    let locked = attempt(&mut attacker, &mut csrf, &email, "wrong password").await;
    eprintln!("6th attempt served by {}", served_by(&locked.body));
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the 6th attempt is refused whichever instance serves it: {}",
        locked.body
    );
    let retry_after: u64 = locked
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("429 carries Retry-After in seconds");
    assert!(
        (1..=LOCKOUT_SECONDS).contains(&retry_after),
        "the first lockout is {LOCKOUT_SECONDS} s: Retry-After {retry_after}"
    );
    assert!(
        locked
            .body
            .contains(&format!("Too many attempts. Try again in {retry_after} second")),
        "the page says when to try again: {}",
        locked.body
    );
    let also_locked = attempt(&mut attacker, &mut csrf, &email, password).await;
    assert_eq!(
        also_locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "while locked, even the right password is refused (and costs no hash), on the other instance too"
    );
    assert_ne!(
        served_by(&locked.body),
        served_by(&also_locked.body),
        "the two locked answers came from both instances"
    );

    // After the lockout, the right password signs in and resets the account's counter.
    let wait = Duration::from_secs(retry_after) + Duration::from_millis(300);
    tokio::time::sleep(wait.saturating_sub(started.elapsed())).await;
    let signed_in = attempt(&mut attacker, &mut csrf, &email, password).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "the right password after the lockout signs in: {}",
        signed_in.body
    );
    assert_eq!(signed_in.location(), Some("/dashboard"));

    // Without the reset, the next failure (the 6th in the window) would lock again and the one after be 429.
    let mut again = Client::new(&lb.url);
    let mut csrf = again.get("/login").await.csrf();
    for n in 1..=4 {
        let page = attempt(&mut again, &mut csrf, &email, "wrong again").await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "after a successful sign-in the count starts over (failure {n})"
        );
    }
    drop(lb);
    drop((a, b));
}

/// The throttle in the SQL database both instances share (the default CACHE_DRIVER with SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_two_instances_with_the_database_driver() {
    the_limit_holds_across_two_instances(&[]).await;
}

/// The throttle in Redis (sessions stay in the shared SQLite database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_across_two_instances_with_the_redis_driver() {
    let redis = mooring_conformance::redis::standalone(mooring_conformance::redis::Options::default()).await;
    let url = redis.url();
    the_limit_holds_across_two_instances(&[("CACHE_DRIVER", "redis"), ("REDIS_URL", url.as_str())]).await;
}
