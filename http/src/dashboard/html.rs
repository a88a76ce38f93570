//! HTML building blocks: escaping (every value shown is escaped: payloads are user data), the
//! page shell, tables, times and forms.

use std::fmt::Write as _;

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes one path segment or query value.
pub(crate) fn url_part(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A page: the shell with the navigation, `title` and `body` (already HTML).
pub(crate) fn page(title: &str, active: &str, body: &str) -> String {
    let mut nav = String::new();
    for (href, label) in [
        ("/ui/", "Overview"),
        ("/ui/events", "Events"),
        ("/ui/webhooks", "Webhooks"),
    ] {
        let current = if label == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · pgbroker</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/dashboard.css\">\
         <script src=\"/ui/assets/dashboard.js\" defer></script></head>\
         <body><header><a class=\"brand\" href=\"/ui/\">pgbroker</a><nav>{nav}</nav></header>\
         <main><h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(title),
    )
}

/// A timestamp shown in the viewer's time zone (the script rewrites `<time>`; without
/// script the UTC value stays readable).
pub(crate) fn time(t: Option<std::time::SystemTime>) -> String {
    match t {
        None => "<span class=\"muted\">—</span>".into(),
        Some(t) => {
            let iso = iso8601(t);
            format!("<time datetime=\"{iso}\">{iso}</time>")
        }
    }
}

/// `2026-12-06T01:02:03.456Z`.
pub(crate) fn iso8601(t: std::time::SystemTime) -> String {
    let (secs, millis) = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        Err(e) => (-(e.duration().as_secs() as i64) - 1, 0),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds as a short human duration (`42 s`, `3.5 min`, `2.1 h`, `4.0 d`).
pub(crate) fn secs(s: Option<f64>) -> String {
    match s {
        None => "—".into(),
        Some(s) if s < 120.0 => format!("{s:.1} s"),
        Some(s) if s < 7_200.0 => format!("{:.1} min", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} d", s / 86_400.0),
    }
}

/// A POST form with one button: the CSRF token, hidden fields, and a confirmation question
/// (asked by the script before submitting).
pub(crate) fn action(
    path: &str,
    csrf: &str,
    fields: &[(&str, &str)],
    label: &str,
    confirm: &str,
) -> String {
    let mut hidden = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    );
    for (k, v) in fields {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    format!(
        "<form method=\"post\" action=\"{}\" class=\"action\" data-confirm=\"{}\">{hidden}\
         <button type=\"submit\">{}</button></form>",
        esc(path),
        esc(confirm),
        esc(label)
    )
}

/// A flash message from an action (carried in the `done` query parameter of the redirect).
pub(crate) fn flash(message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("<p class=\"flash\" role=\"status\">{}</p>", esc(m)),
        _ => String::new(),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\") & 'y'</script>"),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn formats_times_in_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_000_000_123);
        assert_eq!(iso8601(t), "2026-11-30T00:53:20.123Z");
        assert_eq!(iso8601(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
