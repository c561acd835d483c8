//! The black-box session-survival probe: virtual users against any base URL.
//!
//! Each virtual user signs in through the app's real form flow, then loops: it writes a unique value into its
//! session, reads it back (through the load balancer, so often from another instance), checks now and then that
//! it is still signed in, and re-reads a random sample of everything the app ever acknowledged. When the probe
//! stops, it reads back every acknowledged value once more. It measures what a user of the app would notice
//! during a failure: being signed out, a saved value gone, a page that failed, and how slow pages were.
//!
//! It only speaks HTTP to the base URL, so it works against the local lab behind HAProxy, a single `inventory`
//! process, a real deployment, or any other app that follows the contract below.
//!
//! # The contract an app must follow
//!
//! Paths are relative to the base URL. The probe sends no `Origin`, follows no redirects and keeps cookies
//! itself (every cookie it is given, sent on every request, like a browser on one site).
//!
//! 1. **`GET /register`** answers 200 with an HTML form holding a hidden input `name="_csrf"` whose `value` is
//!    the CSRF token of the session the response's cookie names. Attribute order and quote style are free.
//! 2. **`POST /register`** with the form fields `email`, `password`, `password_confirm` and `_csrf`
//!    (`application/x-www-form-urlencoded`) creates the account, signs the user in and answers a redirect
//!    (301, 302, 303 or 307) whose `Location` ends with `/dashboard`, with a `Set-Cookie` for the signed-in
//!    session. The cookies it sets are what the probe calls the *session cookies* from then on (if it sets none,
//!    every cookie held at that point is). Any other answer with a status below 500 (the address is taken, for
//!    instance) makes the probe sign in instead:
//! 3. **`GET /login`** answers 200 with a form holding `_csrf` as above (or a redirect to `/dashboard` when the
//!    session is still signed in), and **`POST /login`** with `email`, `password` and `_csrf` answers a redirect
//!    to `/dashboard`. The probe also uses this after a logout, to carry on.
//! 4. **`GET /dashboard`** answers 200 while the session is signed in, and a redirect to a path containing
//!    `/login` (or a 401) when it is not.
//! 5. **`PUT /session/values/{name}`** stores the request body, a JSON string (a short ASCII string, under 100
//!    bytes, sent as JSON with `Content-Type: application/json`), as the
//!    session value `name` and answers 200 only once it is durably stored: **a 200 is an acknowledged write**.
//!    Names are 1-64 characters of `[A-Za-z0-9_-]`; the probe never writes the same name twice.
//! 6. **`GET /session/values/{name}`** answers 200 with the JSON object `{"name": NAME, "value": VALUE}`, where
//!    `VALUE` is the stored string or `null` when the session has no such value. Both endpoints may add
//!    `"served_by": INSTANCE`: the report then counts the requests each instance served.
//!
//! A 3xx to a login page or a 401 from the value endpoints means "no session" (a logout), as does a response
//! that clears a session cookie (`Max-Age=0`, an empty value, or an `Expires` in the past). A 5xx is an error,
//! never a logout: a 503 that keeps the cookie is how an app says "try again" without signing anyone out.
//!
//! `inventory` follows this contract (`crates/inventory/src/routes/account.rs` and `routes/probe.rs`).
//!
//! # What it counts
//!
//! Every request is recorded with its status, its latency (from sending until the whole body arrived) and one
//! outcome:
//!
//! - **ok**: the expected answer.
//! - **logout**: the user was signed out: the dashboard redirected to the login page, a value endpoint answered
//!   a redirect or 401, or a response cleared a session cookie. A response that *replaces* a session cookie with
//!   a different one (a key rotation re-signs it, for instance) is followed at once by a dashboard check, and is
//!   a logout only if that check finds the user signed out. After a logout the user signs in again and goes on.
//! - **mismatched read**: a read returned another value than the acknowledged one (usually `null`). Each such
//!   value later settles as one of:
//!   - **lost write**: an acknowledged value read back `null` or different on a read other than the first one
//!     after its acknowledgement (a sampled re-read or the final verification). Counted once per value.
//!   - **stale read**: the read right after the acknowledgement did not see the value, but a later read did.
//!     Counted once per value; a stale read is a consistency problem, not a loss.
//! - **errors**, by kind: `http_<status>` for any other 4xx or 5xx (`http_503`, ...), `connect_error` (nothing
//!   accepted the connection), `timeout` (no full answer within [`ProbeConfig::timeout`]), `transport_error`
//!   (the connection broke mid-request) and `bad_response` (a 2xx that does not follow the contract, such as a
//!   value read that is not the JSON above).
//!
//! So `requests = ok + logouts + mismatched reads + errors`, except that a 5xx that also clears the session
//! cookie counts both as an error and as a logout.
//!
//! # Bounds
//!
//! A run is bounded by [`ProbeConfig::duration`], by [`ProbeConfig::requests`] per user, or by both, whichever
//! comes first; every request is bounded by [`ProbeConfig::timeout`]. The final verification retries a failed
//! read twice and gives up after [`FINAL_VERIFICATION_LIMIT`]; values it could not read are reported as
//! `unverified_writes`, never as lost.

mod recorder;
mod report;
mod svg;
mod user;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use recorder::Recorder;
pub use report::{Event, Percentiles, ProbeReport, Second, Totals};
use user::VirtualUser;
pub(crate) use user::{find_csrf, parse_set_cookie, points_to};

/// The longest the final verification of [`Probe::stop`] may take; values left unread are `unverified_writes`.
pub const FINAL_VERIFICATION_LIMIT: Duration = Duration::from_secs(60);

/// What to probe and for how long.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Base URL of the app, such as `http://127.0.0.1:8080` (a trailing slash is ignored).
    pub base_url: String,
    /// Number of virtual users, each with its own account, session and connections (default 20).
    pub users: usize,
    /// Stop after this long, counted from when every user is signed in (second 0 of the timeline).
    pub duration: Option<Duration>,
    /// Stop each user after this many requests (sign-in and the final verification not counted). At least one
    /// of `duration` and `requests` must be set.
    pub requests: Option<u64>,
    /// Pause of each user between two iterations (default 20 ms).
    pub think: Duration,
    /// Longest wait for one whole response (default 5 s); past it the request counts as a `timeout`.
    pub timeout: Duration,
    /// Every this many iterations, a user checks the dashboard and re-reads a random sample of its
    /// acknowledged values (default 10, at least 1).
    pub verify_every: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080".into(),
            users: 20,
            duration: Some(Duration::from_secs(30)),
            requests: None,
            think: Duration::from_millis(20),
            timeout: Duration::from_secs(5),
            verify_every: 10,
        }
    }
}

/// A running probe: the virtual users loop in background tasks until [`Probe::stop`], their bound, or the probe
/// is dropped.
pub struct Probe {
    recorder: Arc<Recorder>,
    config: ProbeConfig,
    stop: watch::Sender<bool>,
    users: Vec<JoinHandle<VirtualUser>>,
    progress: Option<JoinHandle<()>>,
}

impl Probe {
    /// Signs every user in (failing if any of them cannot), then starts their loops in background tasks and
    /// returns. On a terminal, a live progress line goes to stderr every second.
    pub async fn start(cfg: ProbeConfig) -> anyhow::Result<Probe> {
        let base = cfg.base_url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!(
                "the probe speaks plain HTTP only: give a base URL starting with http:// (got {:?})",
                cfg.base_url
            );
        }
        if cfg.users == 0 {
            bail!("the probe needs at least one user");
        }
        if cfg.duration.is_none() && cfg.requests.is_none() {
            bail!("the probe needs a bound: set a duration, a number of requests per user, or both");
        }
        if cfg.verify_every == 0 {
            bail!("verify_every must be at least 1");
        }
        let recorder = Arc::new(Recorder::new());
        let run = run_id();
        let mut users = Vec::with_capacity(cfg.users);
        for index in 0..cfg.users {
            users.push(VirtualUser::new(index, &run, &base, &cfg, Arc::clone(&recorder))?);
        }
        let signed_in = join_all(users.iter_mut().map(|u| u.register())).await;
        for (index, result) in signed_in.into_iter().enumerate() {
            result.with_context(|| format!("virtual user {index} could not sign in at {base}"))?;
        }
        recorder.start_clock();

        let (stop, stopped) = watch::channel(false);
        let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
        let users = users
            .into_iter()
            .map(|user| tokio::spawn(user.run(deadline, stopped.clone())))
            .collect();
        let progress = std::io::stderr()
            .is_terminal()
            .then(|| tokio::spawn(progress(Arc::clone(&recorder), stopped)));
        Ok(Probe {
            recorder,
            config: ProbeConfig {
                base_url: base,
                ..cfg
            },
            stop,
            users,
            progress,
        })
    }

    /// Records a named event (such as "kill -9 master") at the current time. Events show in the report's
    /// table and as marked vertical lines in the SVG.
    pub fn mark(&self, label: &str) {
        self.recorder.event(label);
    }

    /// Stops the loops (a request in flight is abandoned and not counted), reads back every acknowledged value
    /// once more, and returns the report.
    pub async fn stop(self) -> ProbeReport {
        let _ = self.stop.send(true);
        self.finish().await
    }

    /// Starts the probe, waits until every user has reached its bound, and returns the report.
    pub async fn run(cfg: ProbeConfig) -> anyhow::Result<ProbeReport> {
        let probe = Probe::start(cfg).await?;
        Ok(probe.finish().await)
    }

    async fn finish(mut self) -> ProbeReport {
        let mut users = Vec::with_capacity(self.users.len());
        for handle in self.users.drain(..) {
            match handle.await {
                Ok(user) => users.push(user),
                // A panicking user is a bug in the probe: surface it rather than report a partial run.
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            }
        }
        let _ = self.stop.send(true);
        if let Some(progress) = self.progress.take() {
            let _ = progress.await;
            eprintln!();
        }
        self.recorder.event("final verification");
        let deadline = tokio::time::Instant::now() + FINAL_VERIFICATION_LIMIT;
        join_all(users.iter_mut().map(|u| u.verify_all(deadline))).await;
        self.recorder.report(&self.config)
    }
}

impl Drop for Probe {
    /// A probe dropped without [`Probe::stop`] stops its users at once (and skips the final verification), so
    /// an early return or a panic in a scenario leaves no load running against the app.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Prints one live line to stderr every second until stopped.
async fn progress(recorder: Arc<Recorder>, mut stopped: watch::Receiver<bool>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let now = recorder.progress();
        eprint!(
            "\r\x1b[2K[{:>4}s] {} requests, {}/s, {} acked, {} errors, {} logouts, {} lost",
            started.elapsed().as_secs(),
            now.requests,
            now.requests - last,
            now.acked_writes,
            now.errors,
            now.logouts,
            now.lost_writes,
        );
        last = now.requests;
    }
}

/// A random id for this run, so account emails and value names never collide with an earlier run's.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    format!("{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

/// A duration written with units that [`parse_duration`] could not read.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read {input:?} as a duration: write a number with a unit, such as 500ms, 30s, 2m, 1h or 1m30s"
)]
pub struct ParseDurationError {
    input: String,
}

/// Reads a duration such as `500ms`, `30s`, `1.5s`, `2m`, `1h` or `1m30s` (units `ms`, `s`, `m`, `h`).
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = || ParseDurationError {
        input: input.to_owned(),
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| err())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" | "min" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(seconds).map_err(|_| err())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration(" 10s ").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for bad in ["", "30", "s", "10x", "1..2s", "-1s", "ms30"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains("30s"), "{err}");
        }
    }

    #[test]
    fn run_ids_differ_and_fit_value_names() {
        let (a, b) = (run_id(), run_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
