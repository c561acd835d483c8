//! The attack clients of the `hostile` scenario, usable against any `inventory` (or any app that follows the
//! probe's contract): a login flood, an anonymous page flood, slowloris sockets, cookie tossing, and malformed
//! or oversized requests; plus the real users' side ([`Browser`]: sign-in and registration that honour
//! `503` + `Retry-After`) and what the scenario measures ([`measure`]: process RSS, the Redis keyspace).
//!
//! Every attack client binds its own loopback source address (all of 127.0.0.0/8 answers on `lo`), so an
//! app behind the lab's HAProxy sees each attacker as a distinct client in `X-Forwarded-For`, as it would see
//! a botnet: a per-address login throttle then cannot stop them all at once, and what holds is the app's
//! bounded password hashing. Real users stay on 127.0.0.1.
//!
//! Nothing here retries on the attacker's behalf, and nothing counts an answer as "good" or "bad": each
//! attack returns a tally of what the server answered, and the scenario turns those into budgets.

mod flood;
mod malformed;
pub mod measure;
mod slowloris;
mod tossing;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::{COOKIE, HeaderValue, LOCATION, RETRY_AFTER, SET_COOKIE};
use serde::{Deserialize, Serialize};

pub use flood::{AnonymousFlood, LoginFlood, anonymous_flood, login_flood};
pub use malformed::{MalformedReport, malformed_requests};
pub use slowloris::{SlowSocket, slowloris};
pub use tossing::{TossingReport, cookie_tossing};

use crate::probe::{find_csrf, parse_set_cookie, points_to};

/// Longest wait for one whole answer from the app; past it the request counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `Retry-After` a real user waits before trying again (a longer one is capped here, so a
/// mistaken header cannot stall a scenario).
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// `127.0.0.<first + i>` for `i` in `0..n`: the source addresses of `n` attack clients (wrapping inside
/// 127.0.0.100-254, which no lab member uses).
pub fn sources(first: u8, n: usize) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            let offset = (usize::from(first.saturating_sub(100)) + i) % 155;
            Ipv4Addr::new(127, 0, 0, 100 + offset as u8)
        })
        .collect()
}

/// What the server answered to one kind of hostile request: a count per status, and the requests that got
/// no answer. Status 0 means the server closed the connection without an answer (a refusal, not a failure).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without a whole answer within [`REQUEST_TIMEOUT`].
    pub timeouts: u64,
    /// Requests whose connection could not be made or broke (for raw sockets: see status 0).
    pub broken: u64,
    /// `503` answers without a `Retry-After` header (a client cannot tell when to come back).
    pub unavailable_without_retry_after: u64,
}

impl Tally {
    /// Counts one answer.
    pub fn status(&mut self, status: u16) {
        *self.statuses.entry(status).or_insert(0) += 1;
    }

    /// Counts one page (status, and a 503 without `Retry-After`).
    pub fn page(&mut self, page: &Page) {
        self.status(page.status);
        if page.status == 503 && page.retry_after.is_none() {
            self.unavailable_without_retry_after += 1;
        }
    }

    /// Counts one request that got no answer.
    pub fn failure(&mut self, err: &reqwest::Error) {
        if err.is_timeout() {
            self.timeouts += 1;
        } else {
            self.broken += 1;
        }
    }

    /// Counts the outcome of one request.
    pub fn outcome(&mut self, outcome: &reqwest::Result<Page>) {
        match outcome {
            Ok(page) => self.page(page),
            Err(err) => self.failure(err),
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += n;
        }
        self.timeouts += other.timeouts;
        self.broken += other.broken;
        self.unavailable_without_retry_after += other.unavailable_without_retry_after;
    }

    /// Requests counted.
    pub fn total(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.timeouts + self.broken
    }

    /// Answers with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// What no hostile request may get: a 5xx other than a `503` with `Retry-After` (a server error, a
    /// gateway error, an internal failure), or no answer at all within the timeout.
    pub fn server_failures(&self) -> u64 {
        let fivexx: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| (500..600).contains(*s) && **s != 503)
            .map(|(_, n)| n)
            .sum();
        fivexx + self.unavailable_without_retry_after + self.timeouts
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("closed×{n}"),
                s => format!("{s}×{n}"),
            })
            .collect();
        if self.timeouts > 0 {
            parts.push(format!("timeouts×{}", self.timeouts));
        }
        if self.broken > 0 {
            parts.push(format!("broken×{}", self.broken));
        }
        if self.unavailable_without_retry_after > 0 {
            parts.push(format!(
                "(503 without Retry-After×{})",
                self.unavailable_without_retry_after
            ));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One answer, read whole.
#[derive(Clone, Debug)]
pub struct Page {
    /// The status code.
    pub status: u16,
    /// `Location`, on a redirect.
    pub location: Option<String>,
    /// `Retry-After` in seconds, when present and numeric.
    pub retry_after: Option<u64>,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    /// The body.
    pub body: String,
}

impl Page {
    /// Whether the page redirects to a path ending with `path`.
    pub fn redirects_to(&self, path: &str) -> bool {
        (300..400).contains(&self.status) && points_to(self.location.as_deref(), path)
    }

    /// The signed-in user's address the page shows (`id="user-email"` in inventory's layout), if any.
    pub fn user_email(&self) -> Option<String> {
        let at = self.body.find("id=\"user-email\"")?;
        let rest = &self.body[at..];
        let start = rest.find('>')? + 1;
        let end = rest[start..].find('<')? + start;
        Some(rest[start..end].trim().to_owned())
    }

    /// The CSRF token of the page's form.
    pub fn csrf(&self) -> Option<String> {
        find_csrf(&self.body)
    }
}

/// How a real user's sign-in or registration went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignIn {
    /// Whether the user ended up signed in (the dashboard shows their address).
    pub ok: bool,
    /// `503` + `Retry-After` answers waited out before it succeeded (or gave up).
    pub retries: u32,
    /// From the first request to the dashboard showing the user (or to giving up).
    pub elapsed: Duration,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

/// A browser-like client: its own cookies (kept by hand, so a test can see when the server clears or
/// replaces one), no redirects followed, an optional source address.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    jar: BTreeMap<String, String>,
    /// The cookies the last successful sign-in set: the session cookie(s).
    session_cookies: Vec<String>,
}

impl Browser {
    /// A browser with no cookies that talks to `base` (`http://host:port`) from `source` (the OS picks when
    /// `None`).
    pub fn new(base: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Self> {
        Ok(Self {
            http: client(source)?,
            base: base.trim_end_matches('/').to_owned(),
            jar: BTreeMap::new(),
            session_cookies: Vec::new(),
        })
    }

    /// The `Cookie` header this browser sends, if it holds any cookie.
    pub fn cookie_header(&self) -> Option<String> {
        (!self.jar.is_empty()).then(|| {
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// The session cookie (name, value) the last sign-in set.
    pub fn session_cookie(&self) -> Option<(String, String)> {
        let name = self.session_cookies.first()?;
        Some((name.clone(), self.jar.get(name)?.clone()))
    }

    /// `GET path` with this browser's cookies.
    pub async fn get(&mut self, path: &str) -> reqwest::Result<Page> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = self.cookie_header() {
            request = request.header(COOKIE, cookie);
        }
        let page = read(request).await?;
        self.apply(&page);
        Ok(page)
    }

    /// `POST path` with a urlencoded form and this browser's cookies.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> reqwest::Result<Page> {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(cookie) = self.cookie_header() {
            request = request.header(COOKIE, cookie);
        }
        let page = read(request).await?;
        self.apply(&page);
        Ok(page)
    }

    /// `GET path` with exactly `cookie` as the `Cookie` header (bytes, so a test can send non-ASCII ones),
    /// leaving this browser's cookies as they are.
    pub async fn get_with_cookie(&self, path: &str, cookie: &[u8]) -> anyhow::Result<reqwest::Result<Page>> {
        let value = HeaderValue::from_bytes(cookie).context("a Cookie header value")?;
        Ok(read(
            self.http
                .get(format!("{}{path}", self.base))
                .header(COOKIE, value),
        )
        .await)
    }

    fn apply(&mut self, page: &Page) {
        for header in &page.set_cookies {
            match parse_set_cookie(header) {
                Some((name, Some(value))) => {
                    self.jar.insert(name, value);
                }
                Some((name, None)) => {
                    self.jar.remove(&name);
                }
                None => {}
            }
        }
    }

    /// Registers `email` through the form and checks the dashboard shows it, waiting out `503` +
    /// `Retry-After` until `deadline`.
    pub async fn register(&mut self, email: &str, password: &str, deadline: Instant) -> SignIn {
        let fields = [
            ("email", email),
            ("password", password),
            ("password_confirm", password),
        ];
        self.submit("/register", &fields, email, deadline).await
    }

    /// Signs `email` in through the form and checks the dashboard shows it, waiting out `503` +
    /// `Retry-After` until `deadline`.
    pub async fn sign_in(&mut self, email: &str, password: &str, deadline: Instant) -> SignIn {
        let fields = [("email", email), ("password", password)];
        self.submit("/login", &fields, email, deadline).await
    }

    /// GETs the form at `path`, POSTs `fields` with its token until the answer redirects to the dashboard
    /// (retrying a `503` that carries `Retry-After`), then checks the dashboard.
    async fn submit(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        email: &str,
        deadline: Instant,
    ) -> SignIn {
        let started = Instant::now();
        let mut retries = 0;
        let result = async {
            let csrf = loop {
                let page = self.get(path).await.with_context(|| format!("GET {path}"))?;
                match page.status {
                    200 => {
                        break page
                            .csrf()
                            .with_context(|| format!("GET {path}: no _csrf in the form"))?;
                    }
                    503 => retries += wait_out(&page, deadline, &format!("GET {path}")).await?,
                    s => anyhow::bail!("GET {path} answered {s}"),
                }
            };
            let mut with_token: Vec<(&str, &str)> = fields.to_vec();
            with_token.push(("_csrf", csrf.as_str()));
            loop {
                let page = self
                    .post_form(path, &with_token)
                    .await
                    .with_context(|| format!("POST {path}"))?;
                if page.redirects_to("/dashboard") {
                    self.session_cookies = page
                        .set_cookies
                        .iter()
                        .filter_map(|h| parse_set_cookie(h))
                        .filter(|(_, v)| v.is_some())
                        .map(|(name, _)| name)
                        .collect();
                    break;
                }
                match page.status {
                    503 => retries += wait_out(&page, deadline, &format!("POST {path}")).await?,
                    s => anyhow::bail!("POST {path} answered {s}: {}", snippet(&page.body)),
                }
            }
            loop {
                let page = self.get("/dashboard").await.context("GET /dashboard")?;
                match page.status {
                    200 if page.user_email().as_deref() == Some(email) => return Ok(()),
                    200 => anyhow::bail!("the dashboard shows {:?}, not {email}", page.user_email()),
                    503 => retries += wait_out(&page, deadline, "GET /dashboard").await?,
                    s => anyhow::bail!("GET /dashboard after signing in answered {s}"),
                }
            }
        }
        .await;
        SignIn {
            ok: result.is_ok(),
            retries,
            elapsed: started.elapsed(),
            failure: result.err().map(|e| format!("{e:#}")),
        }
    }
}

/// Waits out a `503`'s `Retry-After` (capped at [`MAX_RETRY_WAIT`]) and returns 1, or fails when the 503
/// has no `Retry-After` or the wait would pass `deadline`.
async fn wait_out(page: &Page, deadline: Instant, what: &str) -> anyhow::Result<u32> {
    let Some(seconds) = page.retry_after else {
        anyhow::bail!("{what} answered 503 without Retry-After");
    };
    let wait = Duration::from_secs(seconds)
        .min(MAX_RETRY_WAIT)
        .max(Duration::from_millis(100));
    if Instant::now() + wait > deadline {
        anyhow::bail!("{what} still answered 503 at the deadline");
    }
    tokio::time::sleep(wait).await;
    Ok(1)
}

/// The first characters of a body, for error messages.
fn snippet(body: &str) -> String {
    body.chars().take(160).collect::<String>().replace('\n', " ")
}

/// An HTTP client for attack or user traffic: no redirects, no proxy, [`REQUEST_TIMEOUT`], bound to
/// `source` when given.
pub(crate) fn client(source: Option<Ipv4Addr>) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .local_address(source.map(IpAddr::V4))
        .user_agent(concat!("moor-hostile/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building an HTTP client")
}

/// Sends a request and reads the whole answer.
pub(crate) async fn read(request: reqwest::RequestBuilder) -> reqwest::Result<Page> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = text(LOCATION);
    let retry_after = text(RETRY_AFTER).and_then(|v| v.trim().parse().ok());
    let set_cookies = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let body = response.text().await?;
    Ok(Page {
        status,
        location,
        retry_after,
        set_cookies,
        body,
    })
}

/// A small xorshift generator: attack traffic needs varied names, not unpredictable ones.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock and `salt`.
    pub(crate) fn new(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Self((nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_clear_of_the_lab_members() {
        let all = sources(100, 200);
        assert!(all.iter().all(|a| a.octets()[3] >= 100));
        assert_eq!(all[0], Ipv4Addr::new(127, 0, 0, 100));
        assert_eq!(sources(150, 2)[1], Ipv4Addr::new(127, 0, 0, 151));
    }

    #[test]
    fn a_tally_tells_server_failures_from_refusals() {
        let mut tally = Tally::default();
        for status in [200, 401, 429, 503, 0, 413] {
            tally.status(status);
        }
        assert_eq!(
            tally.server_failures(),
            0,
            "a 503 with Retry-After and a close are fine"
        );
        tally.status(500);
        tally.status(502);
        tally.unavailable_without_retry_after += 1;
        tally.timeouts += 1;
        assert_eq!(tally.server_failures(), 4);
        assert_eq!(tally.total(), 9);
        assert!(tally.to_string().contains("closed×1"), "{tally}");
    }

    #[test]
    fn the_dashboard_user_is_read_from_the_layout() {
        let page = Page {
            status: 200,
            location: None,
            retry_after: None,
            set_cookies: Vec::new(),
            body: r#"<li><span id="user-email" class="user-email" title="Signed in as a@b">a@b</span></li>"#
                .into(),
        };
        assert_eq!(page.user_email().as_deref(), Some("a@b"));
    }
}
