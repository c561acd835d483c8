//! Test harness: the app in-process on a free port with its own database, and a minimal browser-like client
//! whose cookie handling is explicit, so tests can replay old or forged cookies.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use inventory::app::Application;
use inventory::config::Config;
use inventory::state::AppState;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use tokio::sync::oneshot;

/// The key every test app signs cookies with.
pub const APP_KEY: &str = "base64:dGVzdCBrZXkgdGhhdCBpcyBleGFjdGx5IDMyIGJ5dGVz";

/// One running app instance.
pub struct TestApp {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// The app's shared state (session stats, database).
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _data: Arc<tempfile::TempDir>,
}

impl TestApp {
    /// Starts an instance on a free port. `vars` override the defaults (a fresh DATA_DIR, so a fresh SQLite
    /// database, a fixed APP_KEY shared by every instance, and the test endpoints on).
    pub async fn spawn(vars: &[(&str, &str)]) -> Self {
        let data = Arc::new(tempfile::tempdir().expect("tempdir"));
        Self::spawn_in(data, vars).await
    }

    /// Starts an instance whose DATA_DIR is `data` (shared with another instance, or reused after a restart).
    pub async fn spawn_in(data: Arc<tempfile::TempDir>, vars: &[(&str, &str)]) -> Self {
        let mut env: HashMap<String, String> = [
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("METRICS_PORT", "0"),
            ("APP_KEY", APP_KEY),
            ("LOG_FORMAT", "text"),
            ("SHUTDOWN_GRACE_SECONDS", "5"),
            // The tests write and read session values; a test of the default passes "false".
            ("SESSION_TEST_ENDPOINTS", "true"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.insert("DATA_DIR".into(), data.path().display().to_string());
        for (k, v) in vars {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_lookup(move |name| env.get(name).cloned()).expect("config");
        let app = Application::build(config).await.expect("app starts");
        let url = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Self {
            url,
            state,
            stop: Some(tx),
            server,
            _data: data,
        }
    }

    /// The DATA_DIR, to start another instance on the same files.
    pub fn data(&self) -> Arc<tempfile::TempDir> {
        Arc::clone(&self._data)
    }

    /// A new client (no cookies) for this instance.
    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// Shuts the instance down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.server)
            .await
            .expect("server task")
            .expect("server shut down cleanly");
    }
}

/// A response, read whole.
pub struct Page {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Page {
    /// The Set-Cookie header for `name`, if the response set one.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// Where a redirect points.
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// The CSRF token embedded in the page's forms.
    pub fn csrf(&self) -> String {
        let marker = "name=\"_csrf\" value=\"";
        let start = self.body.find(marker).expect("page has a CSRF field") + marker.len();
        let end = self.body[start..].find('"').expect("closing quote") + start;
        self.body[start..end].to_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A client that keeps one session cookie, set explicitly from responses, and follows no redirects.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL requests go to; change it to talk to another instance with the same cookie.
    pub base: String,
    /// The cookie name.
    pub cookie_name: String,
    /// The `name=value` pair sent, if any.
    pub cookie: Option<String>,
    /// Extra headers sent with every request (e.g. `X-Forwarded-For`, as a proxy adds it).
    pub headers: Vec<(String, String)>,
}

impl Client {
    /// A client for `base` with no cookie, expecting the default cookie name.
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            http,
            base: base.to_owned(),
            cookie_name: "inventory_session".into(),
            cookie: None,
            headers: Vec::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = self
            .headers
            .iter()
            .fold(req, |req, (name, value)| req.header(name, value));
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let res = req.send().await.expect("request");
        let page = Page {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.text().await.expect("body"),
        };
        if let Some(set) = page.set_cookie(&self.cookie_name) {
            let pair = set.split(';').next().expect("pair").to_owned();
            self.cookie = if set.contains("Max-Age=0") {
                None
            } else {
                Some(pair)
            };
        }
        page
    }

    /// GET a path.
    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// POST a form.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    /// PUT a value as the test endpoints take it: a JSON string.
    pub async fn put(&mut self, path: &str, value: &str) -> Page {
        let req = self.http.put(format!("{}{path}", self.base)).json(value);
        self.send(req).await
    }

    /// PUT a raw body with this Content-Type (none when `None`).
    pub async fn put_raw(&mut self, path: &str, content_type: Option<&str>, body: &str) -> Page {
        let mut req = self
            .http
            .put(format!("{}{path}", self.base))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        self.send(req).await
    }

    /// GET with extra raw headers (replacing the cookie handling for this request).
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            body: res.text().await.expect("body"),
        }
    }

    /// Registers a new account through the real form flow and stays signed in.
    pub async fn register(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/register").await.csrf();
        let page = self
            .post(
                "/register",
                &[
                    ("email", email),
                    ("password", password),
                    ("password_confirm", password),
                    ("_csrf", &csrf),
                ],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "registration redirects: {}",
            page.body
        );
        page
    }

    /// Signs in through the real form flow.
    pub async fn login(&mut self, email: &str, password: &str) -> Page {
        let csrf = self.get("/login").await.csrf();
        self.post(
            "/login",
            &[("email", email), ("password", password), ("_csrf", &csrf)],
        )
        .await
    }
}

/// A unique email for a test.
pub fn email(tag: &str) -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("random");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}@example.test")
}

/// The real `inventory` binary, as a separate process. Killed when dropped, so a failing test leaks nothing.
pub struct Process {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// The port it serves on.
    pub port: u16,
    child: tokio::process::Child,
    /// Every line of its log so far.
    log: Arc<std::sync::Mutex<Vec<String>>>,
    /// The task that reads the log; it ends when the process closes stderr.
    reader: tokio::task::JoinHandle<()>,
}

impl Process {
    /// Starts the binary with `HOST=127.0.0.1`, `PORT=0`, `METRICS_PORT=0`, JSON logs and the test endpoints on,
    /// plus `vars` (which may override them), and waits for its "inventory is serving" log line. Only these variables shape the run:
    /// every variable the app reads is cleared from the inherited environment first. The log is echoed
    /// (prefixed with the instance name) so it shows when a test fails.
    pub async fn spawn(vars: &[(&str, &str)]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_inventory"));
        for variable in inventory::config::VARIABLES {
            for name in variable.name.split(", ") {
                cmd.env_remove(name).env_remove(format!("{name}_FILE"));
            }
        }
        cmd.envs([
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("METRICS_PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("SESSION_TEST_ENDPOINTS", "true"),
        ])
        .envs(vars.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        let instance = vars
            .iter()
            .find(|(k, _)| *k == "INSTANCE_NAME")
            .map_or("inventory", |(_, v)| v)
            .to_owned();
        let mut child = cmd.spawn().expect("the inventory binary starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read log") {
                eprintln!("[{instance}] {line}");
                log.lock().expect("log").push(line.clone());
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["message"] == "inventory is serving"
                {
                    return json["url"]
                        .as_str()
                        .expect("url")
                        .trim_end_matches('/')
                        .to_owned();
                }
            }
            panic!("{instance} exited before serving (its log is above)");
        })
        .await
        .unwrap_or_else(|_| panic!("{instance} did not serve within 30 s"));
        // Keep draining the log so the process never blocks on a full pipe.
        let keep = Arc::clone(&log);
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{instance}] {line}");
                keep.lock().expect("log").push(line);
            }
        });
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("url ends with the port");
        Self {
            url,
            port,
            child,
            log,
            reader,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The log lines so far that are JSON objects (all of them, with the JSON format `spawn` sets).
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Like [`Process::terminate`], then returns the whole log as JSON lines, up to the process's last line.
    pub async fn terminate_and_log(mut self) -> (std::process::ExitStatus, Vec<serde_json::Value>) {
        let status = self.terminate_in_place().await;
        tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.reader)
            .await
            .expect("the log ends when the process exits")
            .expect("log reader");
        (status, self.log_json())
    }

    /// Sends SIGTERM, as an orchestrator does, and waits (at most 15 s) for the process to exit by itself.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.terminate_in_place().await
    }

    async fn terminate_in_place(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait())
            .await
            .expect("inventory exits within 15 s of SIGTERM: graceful shutdown must not hang")
            .expect("wait for inventory")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// With the session store down: `/readyz` first says 200 with the store `degraded` (requests ride out a
/// short outage in the app), then 503 with it `unavailable` once `tolerated` (`SESSION_STORE_TIMEOUT_MS`)
/// has passed since the first failed check, and not much later.
pub async fn assert_readiness_drops_after(client: &Client, tolerated: Duration) {
    let started = std::time::Instant::now();
    let first = client.get_with("/readyz", &[]).await;
    assert_eq!(
        (first.status, first.json()["checks"]["session_store"].clone()),
        (StatusCode::OK, serde_json::json!("degraded")),
        "a store outage shorter than the store timeout keeps the instance ready: {}",
        first.body
    );
    loop {
        let page = client.get_with("/readyz", &[]).await;
        let waited = started.elapsed();
        if page.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                page.json()["checks"]["session_store"],
                "unavailable",
                "{}",
                page.body
            );
            assert!(
                waited >= tolerated,
                "not ready after {waited:?}, before the tolerated {tolerated:?}"
            );
            return;
        }
        assert!(
            waited < tolerated + Duration::from_secs(5),
            "still ready {waited:?} into a store outage (tolerated: {tolerated:?}): {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
