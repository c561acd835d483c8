//! One virtual user: its account, its cookies, the values the app acknowledged to it, and its loop.
//!
//! The user keeps cookies itself rather than through a cookie store, so it can tell when the app clears or
//! replaces the session cookie (a cookie store would silently follow), and so the final verification can read
//! with a fixed cookie from several tasks at once.
//!
//! A value goes through these states: `Unread` when acknowledged; `Confirmed` once a read returns it;
//! `Missed` when the first read after the acknowledgement returns something else; `Lost` when a read returns
//! something else after it was confirmed or missed, or when the final verification does. A `Missed` value that
//! a later read returns counts as a stale read. Each value is counted at most once either way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use tokio::sync::watch;

use super::ProbeConfig;
use super::recorder::{Outcome, Recorder};

/// Values re-read at each verification, on top of every `Missed` one.
const SAMPLE: usize = 5;
/// At most this many `Missed` values are re-read at one verification.
const MISSED_REREADS: usize = 10;
/// Reads of one user in flight at once during the final verification.
const VERIFY_CONCURRENCY: usize = 4;
/// Attempts per value in the final verification.
const VERIFY_ATTEMPTS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueState {
    Unread,
    Confirmed,
    /// The read right after the acknowledgement (at this time) returned something else.
    Missed(Instant),
    Lost,
}

struct Written {
    name: String,
    value: String,
    acked_at: Instant,
    state: ValueState,
}

/// What a response did to the session cookies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CookieChange {
    Kept,
    Cleared,
    Replaced,
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

/// A read's start, latency and result.
type TimedRead = (Instant, Duration, ReadResult);

/// What a value read returned.
enum ReadResult {
    /// The value (`None` for `null`).
    Value(Option<String>),
    /// The request failed or did not follow the contract (already recorded as an error).
    Failed,
    /// The app answered that there is no session (a redirect or 401).
    NoSession,
}

pub(crate) struct VirtualUser {
    email: String,
    password: String,
    name_prefix: String,
    base: String,
    http: reqwest::Client,
    timeout: Duration,
    think: Duration,
    verify_every: u64,
    request_limit: Option<u64>,
    recorder: Arc<Recorder>,
    /// Every cookie held, name to value.
    jar: BTreeMap<String, String>,
    /// Names of the cookies the last sign-in set.
    session_cookies: Vec<String>,
    signed_in: bool,
    values: Vec<Written>,
    next_name: u64,
    iterations: u64,
    /// Requests counted against `request_limit` (only inside the loop).
    sent: u64,
    counting: bool,
    exhausted: bool,
    /// The last failure, for sign-in error messages.
    last_failure: String,
    rng: u64,
}

impl VirtualUser {
    pub fn new(
        index: usize,
        run: &str,
        base: &str,
        cfg: &ProbeConfig,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("moor-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("build the HTTP client")?;
        let seed = run.bytes().fold(index as u64 + 1, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Ok(Self {
            email: format!("probe-{run}-{index}@probe.example"),
            password: format!("probe-{run}-{index}-password"),
            name_prefix: format!("{run}-{index}-"),
            base: base.to_owned(),
            http,
            timeout: cfg.timeout,
            think: cfg.think,
            verify_every: cfg.verify_every,
            request_limit: cfg.requests,
            recorder,
            jar: BTreeMap::new(),
            session_cookies: Vec::new(),
            signed_in: false,
            values: Vec::new(),
            next_name: 0,
            iterations: 0,
            sent: 0,
            counting: false,
            exhausted: false,
            last_failure: String::new(),
            rng: seed | 1,
        })
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: enough to pick samples; nothing here needs to be unpredictable.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.jar.is_empty()).then(|| {
            self.jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Sends one request with `cookie` and reads the whole answer. A transport failure is recorded here (as an
    /// error) and gives what happened; an answer is left for the caller to record.
    async fn fetch(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: RequestBody<'_>,
    ) -> (Instant, Duration, Result<Answer, &'static str>) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(self.timeout);
        if let Some(cookie) = cookie {
            req = req.header(COOKIE, cookie);
        }
        req = match body {
            RequestBody::None => req,
            // The value endpoints take a JSON string, and only as `application/json` (else 415).
            RequestBody::Json(text) => req.json(text),
            RequestBody::Form(fields) => req.form(fields),
        };
        let at = Instant::now();
        let result = async {
            let res = req.send().await?;
            let status = res.status();
            let location = res
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let set_cookies = res
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect();
            let body = res.text().await?;
            Ok::<_, reqwest::Error>(Answer {
                status,
                location,
                set_cookies,
                body,
            })
        }
        .await;
        let latency = at.elapsed();
        match result {
            Ok(answer) => (at, latency, Ok(answer)),
            Err(err) => {
                let (kind, latency, what) = if err.is_timeout() {
                    (
                        "timeout",
                        Some(latency),
                        "no whole answer within the timeout (timeout)",
                    )
                } else if err.is_connect() {
                    (
                        "connect_error",
                        None,
                        "nothing accepted the connection (connect_error)",
                    )
                } else {
                    ("transport_error", None, "the connection broke (transport_error)")
                };
                self.recorder
                    .request(at, latency, &Outcome::Error(kind.to_owned()));
                (at, latency.unwrap_or_default(), Err(what))
            }
        }
    }

    /// Sends one request with the user's cookies, counts it against the bound, and applies the cookies the
    /// answer sets. `None` when the request failed (recorded) or the bound is reached (nothing sent).
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: RequestBody<'_>,
    ) -> Option<(Instant, Duration, Answer, CookieChange)> {
        if self.counting {
            if self.request_limit.is_some_and(|limit| self.sent >= limit) {
                self.exhausted = true;
                return None;
            }
            self.sent += 1;
        }
        let cookie = self.cookie_header();
        let (at, latency, answer) = self.fetch(method.clone(), path, cookie.as_deref(), body).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(what) => {
                self.last_failure = format!("{method} {path}: {what}");
                return None;
            }
        };
        let change = self.apply_cookies(&answer.set_cookies);
        Some((at, latency, answer, change))
    }

    fn apply_cookies(&mut self, set_cookies: &[String]) -> CookieChange {
        let mut change = CookieChange::Kept;
        for header in set_cookies {
            let Some((name, value)) = parse_set_cookie(header) else {
                continue;
            };
            let is_session = self.session_cookies.contains(&name);
            match value {
                None => {
                    if self.jar.remove(&name).is_some() && is_session {
                        change = CookieChange::Cleared;
                    }
                }
                Some(value) => {
                    let old = self.jar.insert(name, value.clone());
                    if is_session && change == CookieChange::Kept && old.is_some_and(|old| old != value) {
                        change = CookieChange::Replaced;
                    }
                }
            }
        }
        change
    }

    fn record(&self, at: Instant, latency: Duration, outcome: Outcome) {
        self.recorder.request(at, Some(latency), &outcome);
    }

    fn record_status(&self, at: Instant, latency: Duration, status: StatusCode) {
        self.record(at, latency, Outcome::Error(format!("http_{}", status.as_u16())));
    }

    fn fail(&mut self, what: &str, answer: &Answer) -> anyhow::Error {
        let snippet: String = answer.body.chars().take(200).collect();
        self.last_failure = format!("{what} answered {}: {snippet}", answer.status);
        anyhow!("{}", self.last_failure)
    }

    // ---------------------------------------------------------------------------------------------------
    // Sign-in

    /// Registers the account through the form (signing in instead if the app refuses the registration), then
    /// checks that the dashboard shows the user signed in.
    pub async fn register(&mut self) -> anyhow::Result<()> {
        let csrf = self.form_csrf("/register").await?.ok_or_else(|| {
            anyhow!("GET /register redirected to /dashboard before any sign-in: the contract wants a form")
        })?;
        let email = self.email.clone();
        let password = self.password.clone();
        let fields = [
            ("email", email.as_str()),
            ("password", password.as_str()),
            ("password_confirm", password.as_str()),
            ("_csrf", csrf.as_str()),
        ];
        let Some((at, latency, answer, _)) = self
            .send(Method::POST, "/register", RequestBody::Form(&fields))
            .await
        else {
            bail!("{}", self.last_failure);
        };
        if answer.status.is_redirection() && points_to(answer.location.as_deref(), "/dashboard") {
            self.record(at, latency, Outcome::Ok);
            self.signed_in_by(&answer);
        } else if answer.status.is_server_error() {
            self.record_status(at, latency, answer.status);
            return Err(self.fail("POST /register", &answer));
        } else {
            // Taken address, or registration closed: an existing account may still sign in.
            self.record_status(at, latency, answer.status);
            self.login().await.with_context(|| {
                format!(
                    "POST /register answered {}, and then signing in failed",
                    answer.status
                )
            })?;
        }
        let Some((at, latency, answer, _)) = self.send(Method::GET, "/dashboard", RequestBody::None).await
        else {
            bail!("{}", self.last_failure);
        };
        if answer.status != StatusCode::OK {
            self.record_status(at, latency, answer.status);
            return Err(self.fail("GET /dashboard right after signing in", &answer));
        }
        self.record(at, latency, Outcome::Ok);
        Ok(())
    }

    /// Signs in through the login form.
    async fn login(&mut self) -> anyhow::Result<()> {
        let Some(csrf) = self.form_csrf("/login").await? else {
            // Still signed in: the login page sends the user to the dashboard.
            self.signed_in_by(&Answer {
                status: StatusCode::OK,
                location: None,
                set_cookies: Vec::new(),
                body: String::new(),
            });
            return Ok(());
        };
        let email = self.email.clone();
        let password = self.password.clone();
        let fields = [
            ("email", email.as_str()),
            ("password", password.as_str()),
            ("_csrf", csrf.as_str()),
        ];
        let Some((at, latency, answer, _)) = self
            .send(Method::POST, "/login", RequestBody::Form(&fields))
            .await
        else {
            bail!("{}", self.last_failure);
        };
        if answer.status.is_redirection() && points_to(answer.location.as_deref(), "/dashboard") {
            self.record(at, latency, Outcome::Ok);
            self.signed_in_by(&answer);
            Ok(())
        } else {
            self.record_status(at, latency, answer.status);
            Err(self.fail("POST /login", &answer))
        }
    }

    /// GETs a form page and returns its `_csrf` token, or `None` if the page redirects to the dashboard.
    async fn form_csrf(&mut self, path: &str) -> anyhow::Result<Option<String>> {
        let Some((at, latency, answer, _)) = self.send(Method::GET, path, RequestBody::None).await else {
            bail!("{}", self.last_failure);
        };
        if answer.status.is_redirection() && points_to(answer.location.as_deref(), "/dashboard") {
            self.record(at, latency, Outcome::Ok);
            return Ok(None);
        }
        if answer.status != StatusCode::OK {
            self.record_status(at, latency, answer.status);
            return Err(self.fail(&format!("GET {path}"), &answer));
        }
        match find_csrf(&answer.body) {
            Some(token) => {
                self.record(at, latency, Outcome::Ok);
                Ok(Some(token))
            }
            None => {
                self.record(at, latency, Outcome::Error("bad_response".into()));
                Err(self.fail(
                    &format!("GET {path} (no hidden _csrf input in the page)"),
                    &answer,
                ))
            }
        }
    }

    /// From now on, the session cookies are those the sign-in answer set (or every cookie held, if it set none).
    fn signed_in_by(&mut self, answer: &Answer) {
        let set: Vec<String> = answer
            .set_cookies
            .iter()
            .filter_map(|h| parse_set_cookie(h))
            .filter(|(_, value)| value.is_some())
            .map(|(name, _)| name)
            .collect();
        self.session_cookies = if set.is_empty() {
            self.jar.keys().cloned().collect()
        } else {
            set
        };
        self.signed_in = true;
    }

    fn logged_out(&mut self, at: Instant, reason: &str) {
        self.recorder.logout(at, reason);
        self.signed_in = false;
    }

    // ---------------------------------------------------------------------------------------------------
    // The loop

    /// Loops until stopped, past the deadline, or out of requests; returns itself for the final verification.
    pub async fn run(
        mut self,
        deadline: Option<tokio::time::Instant>,
        mut stopped: watch::Receiver<bool>,
    ) -> Self {
        self.counting = true;
        let past_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(past_deadline);
        while !self.exhausted {
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                () = &mut past_deadline => break,
                () = self.iterate() => {}
            }
            if self.exhausted {
                break;
            }
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break,
                () = &mut past_deadline => break,
                () = tokio::time::sleep(self.think) => {}
            }
        }
        self
    }

    async fn iterate(&mut self) {
        if !self.signed_in {
            // Signed out earlier: sign in again and carry on (failures are already recorded).
            let _ = self.login().await;
            return;
        }
        self.iterations += 1;
        let name = format!("{}{}", self.name_prefix, self.next_name);
        self.next_name += 1;
        let value = format!("v{:016x}", self.random());
        if let Some(acked_at) = self.write(&name, &value).await {
            self.values.push(Written {
                name,
                value,
                acked_at,
                state: ValueState::Unread,
            });
            if self.signed_in {
                let index = self.values.len() - 1;
                self.reread(index).await;
            }
        }
        if self.iterations.is_multiple_of(self.verify_every) && self.signed_in {
            self.check_dashboard().await;
            if self.signed_in {
                self.reread_sample().await;
            }
        }
    }

    /// The common part of every request that needs the session: failures, logouts (redirects, 401, cleared
    /// cookie) and error statuses are recorded here and give `None`; a 2xx answer is for the caller to record.
    async fn session_request(
        &mut self,
        method: Method,
        path: &str,
        body: RequestBody<'_>,
    ) -> Option<(Instant, Duration, Answer, CookieChange)> {
        let (at, latency, answer, change) = self.send(method, path, body).await?;
        let status = answer.status;
        if change == CookieChange::Cleared {
            // A 5xx stays an error; the cleared cookie signs the user out all the same.
            let outcome = if status.is_success() || status.is_redirection() {
                Outcome::Logout
            } else {
                Outcome::Error(format!("http_{}", status.as_u16()))
            };
            self.record(at, latency, outcome);
            self.logged_out(at, "cookie_cleared");
            return None;
        }
        if status.is_redirection() || status == StatusCode::UNAUTHORIZED {
            self.record(at, latency, Outcome::Logout);
            let reason = if status == StatusCode::UNAUTHORIZED {
                "unauthorized"
            } else if path == "/dashboard" {
                "dashboard_redirect"
            } else {
                "redirect"
            };
            self.logged_out(at, reason);
            return None;
        }
        if !status.is_success() {
            self.record_status(at, latency, status);
            return None;
        }
        if change == CookieChange::Replaced {
            self.recorder.cookie_replaced();
        }
        Some((at, latency, answer, change))
    }

    /// PUTs a value; `Some(time sent)` when the app acknowledged it.
    async fn write(&mut self, name: &str, value: &str) -> Option<Instant> {
        let path = format!("/session/values/{name}");
        let (at, latency, answer, change) = self
            .session_request(Method::PUT, &path, RequestBody::Json(value))
            .await?;
        self.record(at, latency, Outcome::Ok);
        self.recorder.acked(at);
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&answer.body)
            && let Some(instance) = json.get("served_by").and_then(|v| v.as_str())
        {
            self.recorder.served_by(instance);
        }
        if change == CookieChange::Replaced {
            // Another session now: find out at once whether the user is still signed in.
            self.check_dashboard().await;
        }
        Some(at)
    }

    async fn check_dashboard(&mut self) {
        if let Some((at, latency, answer, _)) = self
            .session_request(Method::GET, "/dashboard", RequestBody::None)
            .await
        {
            let outcome = if answer.status == StatusCode::OK {
                Outcome::Ok
            } else {
                Outcome::Error(format!("http_{}", answer.status.as_u16()))
            };
            self.record(at, latency, outcome);
        }
    }

    /// Reads value `index` back with the user's session and settles its state.
    async fn reread(&mut self, index: usize) {
        let path = format!("/session/values/{}", self.values[index].name);
        let Some((at, latency, answer, change)) =
            self.session_request(Method::GET, &path, RequestBody::None).await
        else {
            return;
        };
        match self.parse_read(index, &answer) {
            ReadResult::Value(found) => {
                let outcome = self.settle(index, found.as_deref(), at, false);
                self.record(at, latency, outcome);
            }
            ReadResult::Failed | ReadResult::NoSession => {
                self.record(at, latency, Outcome::Error("bad_response".into()));
            }
        }
        if change == CookieChange::Replaced {
            self.check_dashboard().await;
        }
    }

    /// Re-reads every missed value (a few at most) and a random sample of the others.
    async fn reread_sample(&mut self) {
        let mut picks: Vec<usize> = (0..self.values.len())
            .filter(|&i| matches!(self.values[i].state, ValueState::Missed(_)))
            .take(MISSED_REREADS)
            .collect();
        let others = self
            .values
            .iter()
            .filter(|w| matches!(w.state, ValueState::Unread | ValueState::Confirmed))
            .count();
        let wanted = picks.len() + others.min(SAMPLE);
        for _ in 0..8 * SAMPLE {
            if picks.len() >= wanted {
                break;
            }
            let index = (self.random() % self.values.len() as u64) as usize;
            if matches!(
                self.values[index].state,
                ValueState::Unread | ValueState::Confirmed
            ) && !picks.contains(&index)
            {
                picks.push(index);
            }
        }
        for index in picks {
            if !self.signed_in || self.exhausted {
                return;
            }
            self.reread(index).await;
        }
    }

    fn parse_read(&self, index: usize, answer: &Answer) -> ReadResult {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&answer.body) else {
            return ReadResult::Failed;
        };
        if json.get("name").and_then(|v| v.as_str()) != Some(self.values[index].name.as_str()) {
            return ReadResult::Failed;
        }
        if let Some(instance) = json.get("served_by").and_then(|v| v.as_str()) {
            self.recorder.served_by(instance);
        }
        match json.get("value") {
            Some(serde_json::Value::String(s)) => ReadResult::Value(Some(s.clone())),
            Some(serde_json::Value::Null) => ReadResult::Value(None),
            _ => ReadResult::Failed,
        }
    }

    /// Settles value `index` after a read at `at` returned `found`; `last` for the final verification, after
    /// which nothing can vindicate it. Returns the read's outcome.
    fn settle(&mut self, index: usize, found: Option<&str>, at: Instant, last: bool) -> Outcome {
        let written = &self.values[index];
        let matches = found == Some(written.value.as_str());
        let (state, acked_at) = (written.state, written.acked_at);
        let next = match (state, matches) {
            (ValueState::Lost, _) => ValueState::Lost,
            (ValueState::Missed(missed_at), true) => {
                self.recorder.stale(missed_at);
                ValueState::Confirmed
            }
            (_, true) => ValueState::Confirmed,
            (ValueState::Unread, false) if !last => ValueState::Missed(at),
            (_, false) => {
                self.recorder.lost(acked_at);
                ValueState::Lost
            }
        };
        self.values[index].state = next;
        if matches { Outcome::Ok } else { Outcome::Mismatch }
    }

    // ---------------------------------------------------------------------------------------------------
    // Final verification

    /// Reads every acknowledged value that is not already lost, with the user's current cookie, and settles it.
    pub async fn verify_all(&mut self, deadline: tokio::time::Instant) {
        self.counting = false;
        let cookie = self.cookie_header();
        let pending: Vec<usize> = (0..self.values.len())
            .filter(|&i| self.values[i].state != ValueState::Lost)
            .collect();
        let this = &*self;
        let results: Vec<(usize, Option<TimedRead>)> =
            futures_util::stream::iter(pending.into_iter().map(|index| {
                let cookie = cookie.clone();
                async move { (index, this.final_read(index, cookie.as_deref(), deadline).await) }
            }))
            .buffer_unordered(VERIFY_CONCURRENCY)
            .collect()
            .await;
        let mut unverified = 0;
        for (index, result) in results {
            match result {
                Some((at, latency, ReadResult::Value(found))) => {
                    let outcome = self.settle(index, found.as_deref(), at, true);
                    self.record(at, latency, outcome);
                }
                Some((at, latency, ReadResult::NoSession)) => {
                    // The app has no session for this user any more: whatever it acknowledged is gone.
                    self.record(at, latency, Outcome::Mismatch);
                    self.settle(index, None, at, true);
                }
                Some((_, _, ReadResult::Failed)) | None => unverified += 1,
            }
        }
        if unverified > 0 {
            self.recorder.unverified(unverified);
        }
    }

    /// Reads one value for the final verification, retrying failures until the deadline. Failed attempts are
    /// recorded here; the last answer is returned for the caller to settle and record.
    async fn final_read(
        &self,
        index: usize,
        cookie: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Option<TimedRead> {
        let path = format!("/session/values/{}", self.values[index].name);
        for attempt in 0..VERIFY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let (at, latency, answer) = self.fetch(Method::GET, &path, cookie, RequestBody::None).await;
            let Ok(answer) = answer else { continue };
            if answer.status.is_redirection() || answer.status == StatusCode::UNAUTHORIZED {
                return Some((at, latency, ReadResult::NoSession));
            }
            if !answer.status.is_success() {
                self.record_status(at, latency, answer.status);
                continue;
            }
            match self.parse_read(index, &answer) {
                ReadResult::Failed => self.record(at, latency, Outcome::Error("bad_response".into())),
                result => return Some((at, latency, result)),
            }
        }
        None
    }
}

/// A request body.
#[derive(Clone, Copy)]
enum RequestBody<'a> {
    None,
    /// A string, sent as JSON.
    Json(&'a str),
    Form(&'a [(&'a str, &'a str)]),
}

/// Reads a `Set-Cookie` header: the cookie's name, and its value, or `None` when the header deletes the cookie
/// (an empty value, `Max-Age` of zero or less, or an `Expires` before 2000: servers delete with the epoch).
pub(crate) fn parse_set_cookie(header: &str) -> Option<(String, Option<String>)> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let (name, value) = (name.trim(), value.trim().trim_matches('"'));
    if name.is_empty() {
        return None;
    }
    let mut deleted = value.is_empty();
    let mut max_age_seen = false;
    let mut expired = false;
    for attribute in parts {
        let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
        let (key, val) = (key.trim(), val.trim());
        if key.eq_ignore_ascii_case("max-age") {
            max_age_seen = true;
            if val.parse::<i64>().is_ok_and(|age| age <= 0) {
                deleted = true;
            }
        } else if key.eq_ignore_ascii_case("expires") {
            expired = val
                .split(|c: char| !c.is_ascii_digit())
                .filter(|part| part.len() == 4)
                .filter_map(|year| year.parse::<u32>().ok())
                .any(|year| year < 2000);
        }
    }
    // Max-Age wins over Expires when both are present (RFC 6265, 5.3).
    if expired && !max_age_seen {
        deleted = true;
    }
    Some((name.to_owned(), (!deleted).then(|| value.to_owned())))
}

/// Finds the `value` of the first `<input>` named `_csrf` in an HTML page.
pub(crate) fn find_csrf(html: &str) -> Option<String> {
    let mut rest = html;
    while let Some(start) = find_ignore_case(rest, "<input") {
        let tag_end = rest[start..].find('>').map_or(rest.len(), |e| start + e);
        let tag = &rest[start + "<input".len()..tag_end];
        if attribute(tag, "name").as_deref() == Some("_csrf") {
            return attribute(tag, "value");
        }
        rest = &rest[tag_end..];
    }
    None
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The value of attribute `name` inside a tag's text, quoted with `"` or `'` or unquoted, entities decoded.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let bytes = tag.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' && bytes[i] != b'/' {
            i += 1;
        }
        let key = &tag[key_start..i];
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = None;
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
                let quote = bytes[i];
                let start = i + 1;
                let end = tag[start..].find(quote as char).map_or(tag.len(), |e| start + e);
                value = Some(&tag[start..end]);
                i = end + 1;
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = Some(&tag[start..i]);
            }
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(decode_entities(value.unwrap_or("")));
        }
        if key.is_empty() {
            i += 1;
        }
    }
    None
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether a `Location` points to `path` (absolute or relative, query ignored).
pub(crate) fn points_to(location: Option<&str>, path: &str) -> bool {
    location.is_some_and(|location| {
        let location = location.split(['?', '#']).next().unwrap_or("");
        location.trim_end_matches('/').ends_with(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_headers_set_or_delete() {
        assert_eq!(
            parse_set_cookie("inventory_session=abc.def; HttpOnly; SameSite=Lax; Path=/; Max-Age=43200"),
            Some(("inventory_session".into(), Some("abc.def".into())))
        );
        assert_eq!(
            parse_set_cookie(
                "inventory_session=; HttpOnly; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
            ),
            Some(("inventory_session".into(), None))
        );
        assert_eq!(
            parse_set_cookie("s=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(("s".into(), None))
        );
        assert_eq!(
            parse_set_cookie("s=x; Expires=Thu, 01 Jan 2099 00:00:00 GMT"),
            Some(("s".into(), Some("x".into())))
        );
        assert_eq!(parse_set_cookie("s=x; Max-Age=-1"), Some(("s".into(), None)));
        assert_eq!(parse_set_cookie("garbage"), None);
    }

    #[test]
    fn the_csrf_token_is_found_in_any_attribute_order_and_quoting() {
        let page = r#"<form><input type="email" name="email"><input type="hidden" name="_csrf" value="a-b_c"></form>"#;
        assert_eq!(find_csrf(page).as_deref(), Some("a-b_c"));
        let page = "<INPUT value='x&amp;y&#43;z' type=hidden name='_csrf'/>";
        assert_eq!(find_csrf(page).as_deref(), Some("x&y+z"));
        let page = "<input name=_csrf value=tok>";
        assert_eq!(find_csrf(page).as_deref(), Some("tok"));
        assert_eq!(find_csrf("<input name=\"csrf\" value=\"no\">"), None);
        assert_eq!(find_csrf("<p>no form</p>"), None);
    }

    #[test]
    fn locations_are_matched_by_path() {
        assert!(points_to(Some("/dashboard"), "/dashboard"));
        assert!(points_to(
            Some("https://app.example/dashboard?welcome=1"),
            "/dashboard"
        ));
        assert!(!points_to(Some("/login"), "/dashboard"));
        assert!(!points_to(None, "/dashboard"));
    }
}
