//! The report as a self-contained SVG picture: three panels over one time axis (requests per second, failures
//! per second, latency), the events as numbered dashed vertical lines, and a legend and explanation written for
//! someone who has never seen the code. No scripts, no external fonts or styles.

use std::fmt::Write as _;

use super::report::ProbeReport;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 24.0;
const PLOT_WIDTH: f64 = WIDTH - LEFT - RIGHT;
const LABEL_ROWS: usize = 3;
const ROW_HEIGHT: f64 = 15.0;
const MAX_LISTED_EVENTS: usize = 12;

const GREEN: &str = "#2b8a3e";
const BLUE: &str = "#1864ab";
const LIGHT_BLUE: &str = "#74c0fc";
const RED: &str = "#e03131";
const PURPLE: &str = "#9c36b5";
const BLACK: &str = "#000000";
const ORANGE: &str = "#f08c00";
const EVENT: &str = "#495057";
const GRID: &str = "#e9ecef";
const TEXT: &str = "#212529";
const MUTED: &str = "#6c757d";

/// A rough width of `text` at `size` px in a sans-serif font, to keep labels from overlapping.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.62
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

/// A round axis maximum and tick step for values up to `max` (at least `min_step` apart).
fn nice_scale(max: f64, min_step: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(min_step);
    ((max / step).ceil() * step, step)
}

/// A step for the time axis that gives at most about a dozen ticks.
fn time_step(span: f64) -> f64 {
    [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|s| span / s <= 12.0)
    .unwrap_or(7200.0)
}

fn number(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        let s = format!("{value:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// `started_at_unix_ms` as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct Panel {
    top: f64,
    height: f64,
}

impl Panel {
    fn bottom(&self) -> f64 {
        self.top + self.height
    }
}

/// Shapes go to `out`; text goes to `texts`, written last with a white halo so that event lines and data
/// never cover a word.
struct Canvas {
    out: String,
    texts: String,
    span: f64,
}

impl Canvas {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.span).clamp(0.0, 1.0) * PLOT_WIDTH
    }

    /// A text element; `attrs` may set its own `fill` (the default is the body text colour).
    fn text(&mut self, x: f64, y: f64, size: f64, attrs: &str, text: &str) {
        let fill = if attrs.contains("fill=") {
            String::new()
        } else {
            format!(r#" fill="{TEXT}""#)
        };
        let _ = writeln!(
            self.texts,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}"{fill} {attrs}>{}</text>"#,
            escape(text)
        );
    }

    /// A panel's frame, title, y axis (ticks from `ticks`) and legend.
    fn frame(
        &mut self,
        panel: &Panel,
        title: &str,
        axis: &str,
        ticks: &[(f64, String)],
        legend: &[(&str, String)],
    ) {
        let (top, bottom) = (panel.top, panel.bottom());
        self.text(LEFT, top - 9.0, 13.0, r#"font-weight="bold""#, title);
        for (y, label) in ticks {
            let _ = writeln!(
                self.out,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{GRID}"/>"#,
                LEFT + PLOT_WIDTH
            );
            self.text(LEFT - 6.0, y + 4.0, 11.0, r#"text-anchor="end""#, label);
        }
        let _ = writeln!(
            self.out,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{PLOT_WIDTH}" height="{:.1}" fill="none" stroke="#adb5bd"/>"##,
            panel.height
        );
        let mid = (top + bottom) / 2.0;
        let _ = writeln!(
            self.texts,
            r#"<text x="16" y="{mid:.1}" font-size="11" fill="{MUTED}" text-anchor="middle" transform="rotate(-90 16 {mid:.1})">{}</text>"#,
            escape(axis)
        );
        // Legend, right-aligned on the title's line.
        let mut x = LEFT + PLOT_WIDTH;
        for (color, label) in legend.iter().rev() {
            let width = text_width(label, 11.0);
            x -= width;
            self.text(x, top - 9.0, 11.0, "", label);
            let _ = writeln!(
                self.out,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{color}"/>"#,
                x - 14.0,
                top - 18.0
            );
            x -= 28.0;
        }
    }

    /// A line through `(t, value)` points, broken where a point is missing.
    fn line(&mut self, points: &[Option<(f64, f64)>], color: &str, width: f64, dash: &str) {
        let mut d = String::new();
        let mut pen_down = false;
        for point in points {
            match point {
                Some((x, y)) => {
                    let _ = write!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = writeln!(
                self.out,
                r#"<path d="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-linejoin="round" {dash}/>"#,
                d.trim_end()
            );
        }
    }
}

pub(super) fn render(report: &ProbeReport, title: &str) -> String {
    let timeline = &report.timeline;
    let span = report.duration.max(timeline.len() as f64).max(1.0).ceil();
    let mut c = Canvas {
        out: String::new(),
        texts: String::new(),
        span,
    };
    let totals = &report.totals;

    // Event labels: numbered, placed on up to LABEL_ROWS rows so they do not overlap.
    let mut rows_end = [f64::NEG_INFINITY; LABEL_ROWS];
    let mut placed = Vec::new();
    for (i, event) in report.events.iter().enumerate() {
        let x = c.x(event.t_ms as f64 / 1000.0);
        let full = format!("{} {}", i + 1, truncate(&event.label, 36));
        let mut spot = None;
        for text in [full, (i + 1).to_string()] {
            let width = text_width(&text, 11.0);
            let (start, anchor_end) = if x + 3.0 + width > WIDTH - 4.0 {
                (x - 3.0 - width, true)
            } else {
                (x + 3.0, false)
            };
            if let Some(row) = (0..LABEL_ROWS).find(|&r| rows_end[r] + 6.0 < start) {
                rows_end[row] = start + width;
                spot = Some((row, text, anchor_end));
                break;
            }
        }
        let (row, text, anchor_end) = spot.unwrap_or_else(|| (0, (i + 1).to_string(), false));
        placed.push((x, row, text, anchor_end));
    }
    let rows_used = placed.iter().map(|(_, row, _, _)| row + 1).max().unwrap_or(0);

    let band_top = 66.0;
    let mut y = band_top + rows_used as f64 * ROW_HEIGHT + 30.0;
    let requests_panel = Panel {
        top: y,
        height: 140.0,
    };
    y += 140.0 + 42.0;
    let failures_panel = Panel {
        top: y,
        height: 110.0,
    };
    y += 110.0 + 42.0;
    let latency_panel = Panel {
        top: y,
        height: 130.0,
    };
    let axis_bottom = latency_panel.bottom();
    let listed = report.events.len().min(MAX_LISTED_EVENTS);
    let events_top = axis_bottom + 64.0;
    let notes_top = events_top
        + if listed > 0 {
            18.0 + listed as f64 * 16.0
        } else {
            0.0
        }
        + 8.0;
    let height = notes_top + 4.0 * 15.0 + 10.0;

    let _ = writeln!(
        c.out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(c.out, "<title>{}</title>", escape(title));
    let _ = writeln!(c.out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let svg_open = std::mem::take(&mut c.out);
    c.text(LEFT, 28.0, 18.0, r#"font-weight="bold""#, title);
    c.text(
        LEFT,
        47.0,
        12.0,
        &format!(r#"fill="{MUTED}""#),
        &format!(
            "{} virtual users against {} for {:.1} s, from {}",
            report.users,
            report.base_url,
            report.duration,
            utc(report.started_at_unix_ms)
        ),
    );
    let summary = format!(
        "{} requests · {} acknowledged writes · {} logouts · {} lost writes · {} stale reads · {} errors",
        totals.requests,
        totals.acked_writes,
        totals.logouts,
        totals.lost_writes,
        totals.stale_reads,
        totals.errors(),
    );
    c.text(LEFT, 63.0, 12.0, "", &summary);

    let center = |s: &super::report::Second| s.t as f64 + 0.5;

    // Panel 1: requests and acknowledged writes per second.
    {
        let p = &requests_panel;
        let top_value = timeline.iter().map(|s| s.requests).max().unwrap_or(0) as f64;
        let (max, step) = nice_scale(top_value, 1.0);
        let yv = |v: f64| p.bottom() - v / max * p.height;
        let ticks: Vec<(f64, String)> = (0..=((max / step).round() as usize))
            .map(|i| (yv(i as f64 * step), number(i as f64 * step)))
            .collect();
        c.frame(
            p,
            "Throughput",
            "per second",
            &ticks,
            &[
                (GREEN, "requests / s".to_owned()),
                (BLUE, "acknowledged writes / s".to_owned()),
            ],
        );
        if !timeline.is_empty() {
            let mut area = format!("M{:.1},{:.1} ", c.x(center(&timeline[0])), p.bottom());
            for s in timeline {
                let _ = write!(area, "L{:.1},{:.1} ", c.x(center(s)), yv(s.requests as f64));
            }
            let _ = write!(
                area,
                "L{:.1},{:.1} Z",
                c.x(center(&timeline[timeline.len() - 1])),
                p.bottom()
            );
            let _ = writeln!(
                c.out,
                r#"<path d="{area}" fill="{GREEN}" fill-opacity="0.15" stroke="{GREEN}" stroke-width="1.5" stroke-linejoin="round"/>"#
            );
            let acked: Vec<_> = timeline
                .iter()
                .map(|s| Some((c.x(center(s)), yv(s.acked as f64))))
                .collect();
            c.line(&acked, BLUE, 1.5, "");
        }
    }

    // Panel 2: failures per second, stacked.
    {
        let p = &failures_panel;
        let stack = |s: &super::report::Second| s.errors + s.logouts + s.lost_writes + s.stale_reads;
        let top_value = timeline.iter().map(stack).max().unwrap_or(0) as f64;
        let (max, step) = nice_scale(top_value, 1.0);
        let yv = |v: f64| p.bottom() - v / max * p.height;
        let ticks: Vec<(f64, String)> = (0..=((max / step).round() as usize))
            .map(|i| (yv(i as f64 * step), number(i as f64 * step)))
            .collect();
        c.frame(
            p,
            "Failures per second (stacked)",
            "per second",
            &ticks,
            &[
                (RED, format!("errors ({})", totals.errors())),
                (PURPLE, format!("logouts ({})", totals.logouts)),
                (BLACK, format!("lost writes ({})", totals.lost_writes)),
                (ORANGE, format!("stale reads ({})", totals.stale_reads)),
            ],
        );
        let bar = (PLOT_WIDTH / span * 0.8).max(1.0);
        for s in timeline {
            let mut base = 0.0;
            for (count, color) in [
                (s.errors, RED),
                (s.logouts, PURPLE),
                (s.lost_writes, BLACK),
                (s.stale_reads, ORANGE),
            ] {
                if count == 0 {
                    continue;
                }
                let (y0, y1) = (yv(base), yv(base + count as f64));
                let _ = writeln!(
                    c.out,
                    r#"<rect x="{:.1}" y="{y1:.1}" width="{bar:.1}" height="{:.1}" fill="{color}"><title>{} s: {count}</title></rect>"#,
                    c.x(center(s)) - bar / 2.0,
                    (y0 - y1).max(0.5),
                    s.t
                );
                base += count as f64;
            }
        }
        if top_value == 0.0 {
            c.text(
                LEFT + PLOT_WIDTH / 2.0,
                p.top + p.height / 2.0,
                12.0,
                &format!(r#"text-anchor="middle" fill="{GREEN}""#),
                "no errors, no logouts, no lost writes, no stale reads",
            );
        }
    }

    // Panel 3: latency, logarithmic.
    {
        let p = &latency_panel;
        let answered: Vec<_> = timeline.iter().filter(|s| s.p99_ms > 0.0).collect();
        let low = answered
            .iter()
            .map(|s| s.p50_ms)
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let high = answered.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
        let (lo_exp, hi_exp) = if answered.is_empty() {
            (0, 1)
        } else {
            let lo = (low.log10().floor() as i32).max(-2);
            let hi = (high.log10().ceil() as i32).max(lo + 1);
            (lo, hi)
        };
        let yv = |ms: f64| {
            let v = ms.max(10f64.powi(lo_exp)).log10();
            p.bottom() - (v - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp) * p.height
        };
        let ticks: Vec<(f64, String)> = (lo_exp..=hi_exp)
            .map(|e| (yv(10f64.powi(e)), number(10f64.powi(e))))
            .collect();
        let l = report.latency_ms;
        c.frame(
            p,
            &format!(
                "Latency, log scale (whole run: median {} ms, p99 {} ms, max {} ms)",
                number(l.p50),
                number(l.p99),
                number(l.max)
            ),
            "milliseconds",
            &ticks,
            &[
                (BLUE, "99th percentile".to_owned()),
                (LIGHT_BLUE, "median".to_owned()),
            ],
        );
        let series = |value: fn(&super::report::Second) -> f64| -> Vec<Option<(f64, f64)>> {
            timeline
                .iter()
                .map(|s| (s.p99_ms > 0.0).then(|| (c.x(center(s)), yv(value(s)))))
                .collect()
        };
        let p50 = series(|s| s.p50_ms);
        let p99 = series(|s| s.p99_ms);
        c.line(&p50, LIGHT_BLUE, 1.5, "");
        c.line(&p99, BLUE, 1.8, "");
        if answered.is_empty() {
            c.text(
                LEFT + PLOT_WIDTH / 2.0,
                p.top + p.height / 2.0,
                12.0,
                r#"text-anchor="middle""#,
                "no answered requests",
            );
        }
    }

    // Time axis.
    let step = time_step(span);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let x = c.x(t);
        let _ = writeln!(
            c.out,
            r##"<line x1="{x:.1}" y1="{axis_bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#adb5bd"/>"##,
            axis_bottom + 5.0
        );
        c.text(x, axis_bottom + 18.0, 11.0, r#"text-anchor="middle""#, &number(t));
        t += step;
    }
    c.text(
        LEFT + PLOT_WIDTH / 2.0,
        axis_bottom + 36.0,
        12.0,
        r#"text-anchor="middle""#,
        "time since the probe started (seconds); each point is one second",
    );

    // Events: dashed lines through every panel, numbered labels above.
    for (x, row, text, anchor_end) in &placed {
        let label_y = band_top + 10.0 + *row as f64 * ROW_HEIGHT + 12.0;
        let _ = writeln!(
            c.out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{axis_bottom:.1}" stroke="{EVENT}" stroke-width="1.2" stroke-dasharray="5 3"/>"#,
            label_y + 3.0
        );
        let anchor = if *anchor_end {
            format!(r#"text-anchor="end" fill="{EVENT}" font-weight="bold""#)
        } else {
            format!(r#"fill="{EVENT}" font-weight="bold""#)
        };
        let tx = if *anchor_end { x - 3.0 } else { x + 3.0 };
        c.text(tx, label_y, 11.0, &anchor, text);
    }
    if listed > 0 {
        c.text(
            LEFT,
            events_top,
            12.0,
            r#"font-weight="bold""#,
            "Events (dashed lines)",
        );
        for (i, event) in report.events.iter().take(listed).enumerate() {
            c.text(
                LEFT,
                events_top + 16.0 * (i + 1) as f64,
                11.0,
                "",
                &format!(
                    "{}. at {:.1} s: {}",
                    i + 1,
                    event.t_ms as f64 / 1000.0,
                    truncate(&event.label, 120)
                ),
            );
        }
        if report.events.len() > listed {
            c.text(
                LEFT + 400.0,
                events_top,
                11.0,
                &format!(r#"fill="{MUTED}""#),
                &format!("(and {} more in the JSON report)", report.events.len() - listed),
            );
        }
    }

    // What the words mean.
    let notes = [
        "Errors: HTTP 4xx/5xx answers, refused connections, broken connections and timeouts. A 503 is an error, not a logout.",
        "Logout: a virtual user found itself signed out (dashboard sent it to the login page, or its session cookie was cleared).",
        "Lost write: a value the app acknowledged (200) later read back missing, shown in the second it was written.",
        "Stale read: the read right after the write missed the value, a later read found it.",
    ];
    for (i, note) in notes.iter().enumerate() {
        c.text(
            LEFT,
            notes_top + 15.0 * i as f64,
            11.0,
            &format!(r#"fill="{MUTED}""#),
            note,
        );
    }
    let mut svg = svg_open;
    svg.push_str(&c.out);
    svg.push_str(r#"<g stroke="white" stroke-width="3" stroke-linejoin="round" paint-order="stroke">"#);
    svg.push('\n');
    svg.push_str(&c.texts);
    svg.push_str("</g>\n</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round() {
        assert_eq!(nice_scale(0.0, 1.0), (1.0, 1.0));
        assert_eq!(nice_scale(3.0, 1.0), (3.0, 1.0));
        assert_eq!(nice_scale(37.0, 1.0), (40.0, 10.0));
        assert_eq!(nice_scale(412.0, 1.0), (600.0, 200.0));
        assert_eq!(time_step(30.0), 5.0);
        assert_eq!(time_step(3.0), 1.0);
        assert_eq!(time_step(600.0), 60.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"kill -9 <master> & "x""#),
            "kill -9 &lt;master&gt; &amp; &quot;x&quot;"
        );
    }

    #[test]
    fn unix_times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
    }
}
