//! The two floods: clients looping `GET /login` + a wrong-password `POST /login` (each costs the app a
//! password hash), and cookieless page views (each used to cost a store record).

use std::net::Ipv4Addr;
use std::time::Instant;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Browser, Page, Rng, Tally, client, read};
use crate::probe::parse_set_cookie;

/// A password no flood account has: every attempt is a wrong one.
const WRONG_PASSWORD: &str = "not-the-password-0000";
/// After a `429` or `503`, a flood client pauses this long before its next attempt. An attacker would not,
/// but on the lab's shared machine a client spinning on cheap refusals would measure the CPU this process
/// takes from the apps, not the app's own defences.
const PAUSE_AFTER_REFUSAL: std::time::Duration = std::time::Duration::from_millis(50);

/// What the login flood got.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoginFlood {
    /// Answers to `GET /login`.
    pub forms: Tally,
    /// Answers to the wrong-password `POST /login` (401: wrong password, 429: throttled, 503: busy).
    pub attempts: Tally,
}

/// One client per address in `sources`, each looping `GET /login` + `POST /login` with a wrong password
/// for a random, unknown account (keeping its cookies, as a scripted browser does) until `until`.
pub async fn login_flood(base: &str, sources: &[Ipv4Addr], until: Instant) -> anyhow::Result<LoginFlood> {
    let mut clients = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let mut browser = Browser::new(base, Some(*source))?;
        clients.push(async move {
            let mut rng = Rng::new(i as u64);
            let mut report = LoginFlood::default();
            while Instant::now() < until {
                let form = browser.get("/login").await;
                report.forms.outcome(&form);
                let Some(csrf) = form.as_ref().ok().and_then(Page::csrf) else {
                    tokio::time::sleep(PAUSE_AFTER_REFUSAL).await;
                    continue;
                };
                let email = format!("flood-{i}-{:x}@flood.example", rng.next());
                let fields = [
                    ("email", email.as_str()),
                    ("password", WRONG_PASSWORD),
                    ("_csrf", csrf.as_str()),
                ];
                let attempt = browser.post_form("/login", &fields).await;
                report.attempts.outcome(&attempt);
                if attempt.is_ok_and(|p| p.status == 429 || p.status == 503) {
                    tokio::time::sleep(PAUSE_AFTER_REFUSAL).await;
                }
            }
            report
        });
    }
    let mut total = LoginFlood::default();
    for report in futures_util::future::join_all(clients).await {
        total.forms.merge(&report.forms);
        total.attempts.merge(&report.attempts);
    }
    Ok(total)
}

/// What the anonymous flood got.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AnonymousFlood {
    /// Answers to the cookieless `GET /login` and `GET /register`.
    pub pages: Tally,
    /// Answers to the failing form posts: a registration whose passwords differ (422), and a sign-in with
    /// a forged token (403). Neither costs a password hash.
    pub posts: Tally,
    /// Views not sent because the deadline passed first.
    pub skipped: u64,
}

/// `views` cookieless page views, alternating `GET /login` and `GET /register`, `concurrency` at a time,
/// spread over `sources`. Every tenth view posts its registration form back with two different passwords,
/// and every tenth (offset by five) posts a sign-in with a forged token: failed forms, with the view's cookie.
/// Views not started by `until` are skipped (and counted).
pub async fn anonymous_flood(
    base: &str,
    views: usize,
    sources: &[Ipv4Addr],
    concurrency: usize,
    until: Instant,
) -> anyhow::Result<AnonymousFlood> {
    anyhow::ensure!(!sources.is_empty(), "the anonymous flood needs a source address");
    let clients = sources
        .iter()
        .map(|s| client(Some(*s)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = base.trim_end_matches('/');
    let outcomes: Vec<AnonymousFlood> = futures_util::stream::iter(0..views)
        .map(|n| {
            let http = clients[n % clients.len()].clone();
            async move {
                let mut report = AnonymousFlood::default();
                if Instant::now() >= until {
                    report.skipped = 1;
                    return report;
                }
                let path = if n % 2 == 0 { "/login" } else { "/register" };
                let page = read(http.get(format!("{base}{path}"))).await;
                report.pages.outcome(&page);
                let Ok(page) = page else { return report };
                let cookie = page
                    .set_cookies
                    .iter()
                    .filter_map(|h| parse_set_cookie(h))
                    .filter_map(|(name, value)| Some(format!("{name}={}", value?)))
                    .collect::<Vec<_>>()
                    .join("; ");
                let post = match (n % 10, page.csrf()) {
                    (0, Some(csrf)) => {
                        let fields = [
                            ("email", format!("anon-{n}@flood.example")),
                            ("password", "first-password-1".to_owned()),
                            ("password_confirm", "another-password-2".to_owned()),
                            ("_csrf", csrf),
                        ];
                        Some(http.post(format!("{base}/register")).form(&fields))
                    }
                    (5, _) => {
                        let fields = [
                            ("email", format!("anon-{n}@flood.example")),
                            ("password", WRONG_PASSWORD.to_owned()),
                            ("_csrf", "forged-token".to_owned()),
                        ];
                        Some(http.post(format!("{base}/login")).form(&fields))
                    }
                    _ => None,
                };
                if let Some(mut post) = post {
                    if !cookie.is_empty() {
                        post = post.header(reqwest::header::COOKIE, cookie);
                    }
                    report.posts.outcome(&read(post).await);
                }
                report
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut total = AnonymousFlood::default();
    for report in outcomes {
        total.pages.merge(&report.pages);
        total.posts.merge(&report.posts);
        total.skipped += report.skipped;
    }
    Ok(total)
}
