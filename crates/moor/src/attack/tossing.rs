//! Cookie tossing: a sibling subdomain (or anyone who can set a cookie for the site) plants a second cookie
//! with the session cookie's name next to the victim's: a valid session of the attacker's own account
//! (login CSRF: the victim would then work in the attacker's account), or garbage, or a cookie with bytes
//! that are not ASCII (which must not make the server drop every cookie).
//!
//! Each round sends the victim's dashboard request with each variant of the `Cookie` header and classifies
//! the answer by whose address the page shows: the victim's, the attacker's, nobody's (a redirect to the
//! sign-in page), or an error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Browser;
use crate::probe::parse_set_cookie;

/// Who a tossing request was served as, by variant.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TossingReport {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered as the attacker's account: the attack worked.
    pub as_attacker: u64,
    /// Requests whose variant carries only the victim's valid cookie (plus garbage or non-ASCII ones) that
    /// were NOT answered as the victim: the server dropped the victim's good cookie.
    pub victim_dropped: u64,
    /// Answers that cleared the session cookie or replaced it with another value (a browser would then lose
    /// the victim's session).
    pub cookie_changed: u64,
    /// Answers with a 5xx or no answer.
    pub errors: u64,
    /// Whether the victim's own cookie alone still shows the victim's dashboard after the rounds.
    pub victim_intact: bool,
    /// Variant → outcome (`victim`, `attacker`, `anonymous`, `http_<status>`, `no_answer`) → count.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl TossingReport {
    /// Adds a later report (its `victim_intact` is the newer answer).
    pub fn merge(&mut self, other: TossingReport) {
        self.requests += other.requests;
        self.as_attacker += other.as_attacker;
        self.victim_dropped += other.victim_dropped;
        self.cookie_changed += other.cookie_changed;
        self.errors += other.errors;
        self.victim_intact = other.victim_intact;
        for (variant, outcomes) in other.outcomes {
            let entry = self.outcomes.entry(variant).or_default();
            for (outcome, n) in outcomes {
                *entry.entry(outcome).or_insert(0) += n;
            }
        }
    }
}

/// `rounds` rounds of the variants against `/dashboard`. `victim` and `attacker` are signed-in browsers
/// (their session cookies have the same name); `victim_email` and `attacker_email` tell the pages apart.
pub async fn cookie_tossing(
    victim: &Browser,
    victim_email: &str,
    attacker: &Browser,
    attacker_email: &str,
    rounds: usize,
) -> anyhow::Result<TossingReport> {
    let (name, mine) = victim
        .session_cookie()
        .ok_or_else(|| anyhow::anyhow!("the victim holds no session cookie"))?;
    let (attacker_name, theirs) = attacker
        .session_cookie()
        .ok_or_else(|| anyhow::anyhow!("the attacker holds no session cookie"))?;
    anyhow::ensure!(
        name == attacker_name,
        "the victim's cookie is {name}, the attacker's {attacker_name}"
    );
    let check = attacker
        .get_with_cookie("/dashboard", format!("{name}={theirs}").as_bytes())
        .await?;
    anyhow::ensure!(
        check.as_ref().ok().and_then(|p| p.user_email()).as_deref() == Some(attacker_email),
        "the attacker's own cookie does not show the attacker's dashboard"
    );
    // (variant, Cookie header, whether only the victim's cookie in it is valid)
    let mut non_ascii = b"theme=\xff\xfe; ".to_vec();
    non_ascii.extend_from_slice(format!("{name}={mine}").as_bytes());
    let variants: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "attacker's cookie first",
            format!("{name}={theirs}; {name}={mine}").into_bytes(),
            false,
        ),
        (
            "victim's cookie first",
            format!("{name}={mine}; {name}={theirs}").into_bytes(),
            false,
        ),
        (
            "garbage cookies first",
            format!("{name}=garbage; {name}=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA; {name}={mine}")
                .into_bytes(),
            true,
        ),
        ("a non-ASCII cookie first", non_ascii, true),
    ];
    let mut report = TossingReport::default();
    for _ in 0..rounds {
        for (variant, cookie, only_victim_valid) in &variants {
            report.requests += 1;
            let outcome = match victim.get_with_cookie("/dashboard", cookie).await? {
                Err(_) => {
                    report.errors += 1;
                    "no_answer".to_owned()
                }
                Ok(page) => {
                    for header in &page.set_cookies {
                        if let Some((set, value)) = parse_set_cookie(header)
                            && set == name
                            && value.as_deref() != Some(mine.as_str())
                        {
                            report.cookie_changed += 1;
                        }
                    }
                    let shown = page.user_email();
                    if page.status >= 500 {
                        report.errors += 1;
                    }
                    if page.status == 200 && shown.as_deref() == Some(attacker_email) {
                        report.as_attacker += 1;
                        "attacker".to_owned()
                    } else if page.status == 200 && shown.as_deref() == Some(victim_email) {
                        "victim".to_owned()
                    } else if page.redirects_to("/login") {
                        "anonymous".to_owned()
                    } else {
                        format!("http_{}", page.status)
                    }
                }
            };
            if *only_victim_valid && outcome != "victim" {
                report.victim_dropped += 1;
            }
            *report
                .outcomes
                .entry((*variant).to_owned())
                .or_default()
                .entry(outcome)
                .or_insert(0) += 1;
        }
    }
    let alone = victim
        .get_with_cookie("/dashboard", format!("{name}={mine}").as_bytes())
        .await?;
    report.victim_intact = alone.ok().and_then(|p| p.user_email()).as_deref() == Some(victim_email);
    Ok(report)
}
