//! Must-show #2, in a real browser: register, log in, add an item, restart the app *process*, reload, and
//! still be signed in with the item listed.
//!
//! The harness runs the real `inventory` binary rather than the router in-process, because the claim is
//! that sessions outlive the process; it drives headless Chromium through chromedriver with fantoccini.
//! Every child process lives in a guard that kills it on drop, so a failing step leaks nothing. Steps
//! report failures as errors (not panics) so the browser session is always closed before the test fails.
//! Chromium and chromedriver come from `scripts/services.sh`: when they are missing the test fails and
//! says so, it never skips.

mod support;

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use support::Process;

/// Where `scripts/services.sh` installs the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Where `scripts/services.sh` installs the driver (same major version as the browser).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest any single explicit wait may take; generous because the machine is shared.
const WAIT: Duration = Duration::from_secs(10);
/// Upper bound for the whole journey, so a wedged browser fails the test instead of hanging CI.
const JOURNEY_TIMEOUT: Duration = Duration::from_secs(180);
/// The password the test user registers and logs in with (passes the 8-character rule).
const PASSWORD: &str = "correct horse battery staple";
/// The item whose survival across the restart is the point of the test.
const ITEM: &str = "Brass anchor";

/// The must-show #2, end to end in headless Chromium against the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_and_items_survive_an_app_restart_in_a_real_browser() {
    let started = Instant::now();
    // Declared before the driver so it is removed only after chromedriver (and Chromium) are gone.
    let profile = tempfile::tempdir().expect("create a Chromium profile directory");
    let driver = Chromedriver::start()
        .await
        .unwrap_or_else(|err| panic!("{err:?}"));
    let browser = open_browser(&driver, profile.path())
        .await
        .unwrap_or_else(|err| panic!("{err:?}"));

    let outcome = tokio::time::timeout(JOURNEY_TIMEOUT, journey(&browser)).await;
    let closed = browser.close().await;
    match outcome {
        Err(_) => panic!("the browser journey took longer than {JOURNEY_TIMEOUT:?}"),
        Ok(Err(err)) => panic!("browser journey failed: {err:?}"),
        Ok(Ok(())) => {}
    }
    closed.expect("close the WebDriver session");
    eprintln!("browser journey passed in {:.1?}", started.elapsed());
}

/// The user's story, step by step; each step waits explicitly for what the user would see.
async fn journey(browser: &Client) -> anyhow::Result<()> {
    // Declared before the app so the database outlives every process that uses it.
    let data_dir = tempfile::tempdir().context("create DATA_DIR")?;
    let dir = data_dir.path().to_str().context("DATA_DIR is not UTF-8")?;
    let app = Process::spawn(&[("DATA_DIR", dir), ("INSTANCE_NAME", "browser-test-first")]).await;
    let port = app.port;
    let base = format!("http://127.0.0.1:{port}");
    let email = unique_email();

    // Register: lands signed in on the dashboard.
    browser.goto(&format!("{base}/register")).await?;
    fill(browser, "#email", &email).await?;
    fill(browser, "#password", PASSWORD).await?;
    fill(browser, "#password_confirm", PASSWORD).await?;
    click(browser, "#register-submit").await?;
    wait_for_path(browser, "/dashboard").await?;
    expect_signed_in_as(browser, &email).await?;

    // Log out, then log in through the form, so the test proves login and not only registration.
    click(browser, "#logout").await?;
    wait_for_path(browser, "/").await?;
    wait_until(
        browser,
        "the signed-out navigation (a Log in link, no #user-email)",
        || async {
            let signed_out = !browser.find_all(Locator::Css(".nav-login")).await?.is_empty()
                && browser.find_all(Locator::Css("#user-email")).await?.is_empty();
            Ok(signed_out.then_some(()))
        },
    )
    .await?;
    browser.goto(&format!("{base}/login")).await?;
    fill(browser, "#email", &email).await?;
    fill(browser, "#password", PASSWORD).await?;
    click(browser, "#login-submit").await?;
    wait_for_path(browser, "/dashboard").await?;
    expect_signed_in_as(browser, &email).await?;
    let fingerprint = text_of(browser, "#fingerprint").await?;

    // Add an item: the list shows it with its quantity.
    browser.goto(&format!("{base}/items")).await?;
    fill(browser, "#name", ITEM).await?;
    fill(browser, "#quantity", "3").await?;
    click(browser, "#add-item").await?;
    wait_for_path(browser, "/items").await?;
    expect_item(browser, ITEM, "3").await?;

    // Restart the process: SIGTERM, a clean exit on its own, then the same DATA_DIR and the same port.
    let status = app.terminate().await;
    ensure!(
        status.success(),
        "inventory exited with {status} after SIGTERM; a graceful shutdown exits 0"
    );
    let same_port = port.to_string();
    let vars = [
        ("DATA_DIR", dir),
        ("PORT", same_port.as_str()),
        ("INSTANCE_NAME", "browser-test-second"),
    ];
    let app = Process::spawn(&vars).await;
    ensure!(
        app.port == port,
        "the restarted app serves on {} instead of {port}",
        app.port
    );

    // Reload in the same browser: still on /items (no bounce to /login), still signed in, item still there.
    browser.refresh().await?;
    let url = browser.current_url().await?;
    ensure!(
        url.path() == "/items",
        "after the restart, reloading /items ended at {url} (signed out?)"
    );
    expect_signed_in_as(browser, &email).await?;
    expect_item(browser, ITEM, "3").await?;
    let footer = text_of(browser, "footer").await?;
    ensure!(
        footer.contains("browser-test-second"),
        "the reloaded page must come from the restarted process, but its footer says {footer:?}"
    );
    let styled: bool = serde_json::from_value(
        browser
            .execute(
                "return [...document.styleSheets].some(sheet => sheet.href && sheet.cssRules.length > 0);",
                vec![],
            )
            .await?,
    )?;
    ensure!(
        styled,
        "the items page has no stylesheet with rules: /static/app.css did not load"
    );
    save_screenshot(browser).await?;

    // The dashboard shows the same session fingerprint: the very same session, not a new one.
    browser.goto(&format!("{base}/dashboard")).await?;
    wait_for_path(browser, "/dashboard").await?;
    let after = text_of(browser, "#fingerprint").await?;
    ensure!(
        after == fingerprint,
        "the session fingerprint changed across the restart: {fingerprint} -> {after}"
    );
    drop(app);
    Ok(())
}

/// Issue 9, item 1, in a real browser: an anonymous visitor fails a sign-in and then registers, through the
/// CSRF-protected forms, and the session store holds no record until registration signs them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_visitor_uses_csrf_forms_without_a_stored_session() {
    let profile = tempfile::tempdir().expect("create a Chromium profile directory");
    let driver = Chromedriver::start()
        .await
        .unwrap_or_else(|err| panic!("{err:?}"));
    let browser = open_browser(&driver, profile.path())
        .await
        .unwrap_or_else(|err| panic!("{err:?}"));
    let outcome = tokio::time::timeout(JOURNEY_TIMEOUT, anonymous_journey(&browser)).await;
    let closed = browser.close().await;
    match outcome {
        Err(_) => panic!("the browser journey took longer than {JOURNEY_TIMEOUT:?}"),
        Ok(Err(err)) => panic!("browser journey failed: {err:?}"),
        Ok(Ok(())) => {}
    }
    closed.expect("close the WebDriver session");
}

/// Rows in the session table.
async fn stored_sessions(url: &str) -> anyhow::Result<i64> {
    use sqlx::Row as _;
    let pool = mooring_sql::connect(url).await?;
    let row = sqlx::query("SELECT COUNT(*) AS n FROM mooring_sessions")
        .fetch_one(&pool)
        .await?;
    Ok(row.try_get::<i64, _>("n")?)
}

async fn anonymous_journey(browser: &Client) -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir().context("create DATA_DIR")?;
    let dir = data_dir.path().to_str().context("DATA_DIR is not UTF-8")?;
    let db = mooring_conformance::provision::sqlite().await;
    let app = Process::spawn(&[
        ("DATA_DIR", dir),
        ("DATABASE_URL", &db.url),
        ("INSTANCE_NAME", "browser-anonymous"),
    ])
    .await;
    let base = format!("http://127.0.0.1:{}", app.port);
    let email = unique_email();

    // A failed sign-in: the form's token is accepted (the page says the password is wrong, not 403).
    browser.goto(&format!("{base}/login")).await?;
    fill(browser, "#email", &email).await?;
    fill(browser, "#password", "not the password").await?;
    click(browser, "#login-submit").await?;
    wait_until(browser, "the wrong-password message", || async {
        let errors = browser.find_all(Locator::Css(".errors")).await?;
        for e in errors {
            if e.text().await?.contains("Email or password is incorrect.") {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await?;
    let cookies = browser.get_all_cookies().await?;
    let session = cookies
        .iter()
        .find(|c| c.name() == "inventory_session")
        .context("the login form gave the browser a session cookie")?;
    ensure!(
        session.value().starts_with("p."),
        "the anonymous visitor's cookie is a pre-session, not a stored session: {}",
        session.value()
    );
    let rows = stored_sessions(&db.url).await?;
    ensure!(
        rows == 0,
        "{rows} session records after an anonymous failed sign-in; expected none"
    );

    // Registration through the same pre-session: the first record, signed in.
    browser.goto(&format!("{base}/register")).await?;
    fill(browser, "#email", &email).await?;
    fill(browser, "#password", PASSWORD).await?;
    fill(browser, "#password_confirm", PASSWORD).await?;
    let rows = stored_sessions(&db.url).await?;
    ensure!(
        rows == 0,
        "{rows} session records before registering; expected none"
    );
    click(browser, "#register-submit").await?;
    wait_for_path(browser, "/dashboard").await?;
    expect_signed_in_as(browser, &email).await?;
    let rows = stored_sessions(&db.url).await?;
    ensure!(
        rows == 1,
        "{rows} session records after registering; expected exactly one"
    );
    drop(app);
    Ok(())
}

/// A chromedriver process in its own process group, killed with every browser it started on drop.
struct Chromedriver {
    /// The driver, leader of its own process group.
    child: Child,
    /// The free port its WebDriver endpoint listens on.
    port: u16,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until its /status says it is ready.
    async fn start() -> anyhow::Result<Self> {
        for (path, what) in [(CHROMIUM, "Chromium"), (CHROMEDRIVER, "chromedriver")] {
            ensure!(
                Path::new(path).is_file(),
                "{what} is not installed at {path}: run scripts/services.sh to install Chromium and chromedriver"
            );
        }
        let port = free_port()?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {CHROMEDRIVER} (run scripts/services.sh if it is broken)"))?;
        let mut driver = Chromedriver { child, port };

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = driver.child.try_wait()? {
                bail!(
                    "chromedriver exited at start-up with {status}: run scripts/services.sh to reinstall it"
                );
            }
            let status = http.get(format!("http://127.0.0.1:{port}/status")).send().await;
            if let Ok(response) = status {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body.pointer("/value/ready") == Some(&json!(true)) {
                    return Ok(driver);
                }
            }
            if Instant::now() >= deadline {
                bail!("chromedriver on port {port} was not ready within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromedriver {
    /// Kills the driver's process group (the driver and any Chromium it launched), then reaps the driver.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the OS for a free loopback port and releases it for chromedriver to take.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Opens a headless Chromium session with a fresh profile; plain HTTP, since chromedriver is on loopback.
async fn open_browser(driver: &Chromedriver, profile: &Path) -> anyhow::Result<Client> {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let browser = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .context(
            "open a headless Chromium session through chromedriver (run scripts/services.sh if it fails)",
        )?;
    // A desktop-sized window, so the screenshot shows the layout users see.
    browser.set_window_size(1280, 900).await?;
    Ok(browser)
}

/// An email no earlier run has used, so the test never depends on leftover state.
fn unique_email() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("browser-{}-{nanos}@example.test", std::process::id())
}

/// Retries `check` until it yields a value or [`WAIT`] passes: an explicit wait instead of a guessed sleep.
async fn wait_until<T, F, Fut>(browser: &Client, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            let url = browser
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_else(|e| e.to_string());
            bail!("waited {WAIT:?} for {what}; the browser is at {url}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the element, then replaces its content with `value`, as a user typing would.
async fn fill(browser: &Client, selector: &str, value: &str) -> anyhow::Result<()> {
    let input = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .with_context(|| format!("find the input {selector}"))?;
    input.clear().await?;
    input.send_keys(value).await?;
    Ok(())
}

/// Waits for the element, then clicks it.
async fn click(browser: &Client, selector: &str) -> anyhow::Result<()> {
    let element = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .with_context(|| format!("find {selector} to click it"))?;
    element
        .click()
        .await
        .with_context(|| format!("click {selector}"))?;
    Ok(())
}

/// Waits for the element and returns its visible text, trimmed.
async fn text_of(browser: &Client, selector: &str) -> anyhow::Result<String> {
    let element = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
        .with_context(|| format!("find {selector}"))?;
    Ok(element.text().await?.trim().to_owned())
}

/// Waits until the browser is on `path` (after a form post and its redirect).
async fn wait_for_path(browser: &Client, path: &str) -> anyhow::Result<()> {
    wait_until(browser, &format!("the browser to reach {path}"), || async {
        Ok((browser.current_url().await?.path() == path).then_some(()))
    })
    .await
}

/// Waits until the navigation names `email` as the signed-in user.
async fn expect_signed_in_as(browser: &Client, email: &str) -> anyhow::Result<()> {
    wait_until(browser, &format!("#user-email to show {email}"), || async {
        Ok(
            match browser.find_all(Locator::Css("#user-email")).await?.first() {
                Some(element) => (element.text().await?.trim() == email).then_some(()),
                None => None,
            },
        )
    })
    .await
}

/// Waits until `table#items` lists `name` (in `td.item-name`) with `quantity`.
async fn expect_item(browser: &Client, name: &str, quantity: &str) -> anyhow::Result<()> {
    wait_until(
        browser,
        &format!("table#items to list {name:?} with quantity {quantity}"),
        || async {
            for row in browser.find_all(Locator::Css("table#items tbody tr")).await? {
                let Some(cell) = row
                    .find_all(Locator::Css("td.item-name"))
                    .await?
                    .into_iter()
                    .next()
                else {
                    continue;
                };
                if cell.text().await?.trim() == name {
                    let shown = row.find(Locator::Css("td.item-quantity")).await?.text().await?;
                    ensure!(
                        shown.trim() == quantity,
                        "{name:?} is listed with quantity {shown:?}, not {quantity}"
                    );
                    return Ok(Some(()));
                }
            }
            Ok(None)
        },
    )
    .await
}

/// Saves a PNG of the current page under target/ (never the source tree) for a human to look at.
async fn save_screenshot(browser: &Client) -> anyhow::Result<PathBuf> {
    let png = browser.screenshot().await.context("take a screenshot")?;
    ensure!(
        png.len() > 8 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a non-empty PNG ({} bytes)",
        png.len()
    );
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-items.png");
    std::fs::write(&path, &png).with_context(|| format!("write {}", path.display()))?;
    eprintln!("screenshot of /items after the restart: {}", path.display());
    Ok(path)
}
