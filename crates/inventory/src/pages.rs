//! The server-rendered pages (askama templates in `templates/`), and the shared layout they need.

use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use mooring::Session;

use crate::error::AppError;
use crate::state::AppState;

/// What every page's layout shows.
pub struct Layout {
    /// The signed-in user's email.
    pub user_email: Option<String>,
    /// The session's CSRF token, for the forms on the page.
    pub csrf: String,
    /// Flash messages from the previous request.
    pub flashes: Vec<String>,
    /// This instance's name.
    pub instance: String,
}

impl Layout {
    /// The layout for a request. A CSRF token is made only for signed-in users or pages with forms
    /// (`forms`). Neither the token nor flash messages store anything for an anonymous visitor: the engine
    /// derives the token from a signed pre-session cookie, which also carries the messages.
    pub async fn new(state: &AppState, session: &Session, forms: bool) -> Result<Self, AppError> {
        let user_email = match session.user().await? {
            Some(_) => session.get::<String>(crate::auth::EMAIL).await?,
            None => None,
        };
        let csrf = if forms || user_email.is_some() {
            session.csrf_token().await?
        } else {
            String::new()
        };
        Ok(Self {
            user_email,
            csrf,
            flashes: session.take_flashes().await?,
            instance: state.instance.to_string(),
        })
    }

    /// A layout for error pages, which must render without touching the session.
    pub fn bare(instance: &str) -> Self {
        Self {
            user_email: None,
            csrf: String::new(),
            flashes: Vec::new(),
            instance: instance.to_owned(),
        }
    }
}

/// Renders a template into an HTML response.
pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => AppError::Internal(format!("template failed to render: {err}")).into_response(),
    }
}

/// Formats unix milliseconds as `YYYY-MM-DD HH:MM UTC`.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The home page.
#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    /// Layout.
    pub layout: Layout,
}

/// The registration form.
#[derive(Template)]
#[template(path = "register.html")]
pub struct RegisterPage {
    /// Layout.
    pub layout: Layout,
    /// The email entered.
    pub email: String,
    /// What was wrong with the submission.
    pub errors: Vec<String>,
}

/// The sign-in form.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Layout.
    pub layout: Layout,
    /// The email entered.
    pub email: String,
    /// What was wrong with the submission.
    pub errors: Vec<String>,
}

/// The dashboard.
#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    /// Layout.
    pub layout: Layout,
    /// Number of items.
    pub item_count: i64,
    /// Sum of quantities.
    pub total_quantity: i64,
    /// The user's live sessions.
    pub session_count: usize,
    /// This session's public digest.
    pub fingerprint: String,
}

/// The item list and form.
#[derive(Template)]
#[template(path = "items.html")]
pub struct ItemsPage {
    /// Layout.
    pub layout: Layout,
    /// The items.
    pub items: Vec<ItemView>,
    /// What was wrong with the submission.
    pub errors: Vec<String>,
    /// The name entered.
    pub name: String,
    /// The quantity entered.
    pub quantity: String,
}

/// One item row.
pub struct ItemView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Quantity.
    pub quantity: i64,
    /// When it was added.
    pub created: String,
}

/// The user's sessions.
#[derive(Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage {
    /// Layout.
    pub layout: Layout,
    /// The sessions.
    pub sessions: Vec<SessionView>,
}

/// One session row.
pub struct SessionView {
    /// Public digest.
    pub fingerprint: String,
    /// Browser and OS.
    pub device: String,
    /// Client IP at sign-in.
    pub ip: String,
    /// Signed in at.
    pub created: String,
    /// Last used at.
    pub last_seen: String,
    /// The session of this request.
    pub current: bool,
}

/// An error page.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Layout.
    pub layout: Layout,
    /// HTTP status.
    pub status: u16,
    /// Short title.
    pub title: String,
    /// What to do.
    pub message: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(super::timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::timestamp(1_795_000_000_000), "2026-11-18 11:06 UTC");
        assert_eq!(super::timestamp(951_782_400_000), "2000-02-29 00:00 UTC");
    }
}
