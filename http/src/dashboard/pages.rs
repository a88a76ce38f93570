//! The pages: overview, queue, job, subscription, events, webhooks. Each takes the data it
//! shows and returns HTML; every value goes through [`esc`].

use std::fmt::Write as _;

use super::data::{
    Data, DataResult, EventFilter, EventRow, JobFilter, QueueRow, SubscriptionRow, STATES,
};
use super::html::{action, esc, flash, page, secs, time, url_part};

/// Rows per page of a listing.
pub(crate) const PAGE_ROWS: i64 = 50;

/// What every page needs besides its data.
pub(crate) struct View<'a> {
    pub(crate) csrf: &'a str,
    pub(crate) read_only: bool,
    pub(crate) flash: Option<&'a str>,
}

impl View<'_> {
    pub(crate) fn action(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        label: &str,
        confirm: &str,
    ) -> String {
        if self.read_only {
            String::new()
        } else {
            action(path, self.csrf, fields, label, confirm)
        }
    }
}

pub(crate) fn overview(data: &mut Data, view: &View<'_>) -> DataResult<String> {
    let queues = data.queues()?;
    let subscriptions = data.subscriptions()?;
    let finished = data.jobs_finished()?;
    let mut body = flash(view.flash);
    body.push_str(
        "<section><h2>Queues</h2><p class=\"muted\">Live: refreshed every 2 s. \
         <span id=\"throughput\" data-finished=\"",
    );
    let _ = write!(
        body,
        "{finished}\">jobs finished per minute: measuring…</span></p>"
    );
    body.push_str("<div class=\"scroll\"><table id=\"queues\"><thead><tr><th>queue</th>");
    for s in STATES {
        let _ = write!(body, "<th class=\"num\">{s}</th>");
    }
    body.push_str(
        "<th class=\"num\">died last min</th><th class=\"num\">oldest waiting</th></tr></thead><tbody>",
    );
    if queues.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"muted\">no jobs in any queue</td></tr>");
    }
    for q in &queues {
        body.push_str(&queue_row(q));
    }
    body.push_str("</tbody></table></div></section>");
    body.push_str(
        "<section><h2>Subscriptions</h2><div class=\"scroll\"><table id=\"subscriptions\">\
         <thead><tr><th>subscription</th><th>patterns</th><th class=\"num\">partitions</th>\
         <th class=\"num\">members</th><th class=\"num\">events behind</th>\
         <th class=\"num\">oldest behind</th><th>horizon</th><th class=\"num\">retrying</th>\
         <th class=\"num\">dead</th></tr></thead><tbody>",
    );
    if subscriptions.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"muted\">no subscriptions</td></tr>");
    }
    for s in &subscriptions {
        body.push_str(&subscription_row(s));
    }
    body.push_str("</tbody></table></div></section>");
    Ok(page("Overview", "Overview", &body))
}

fn queue_row(q: &QueueRow) -> String {
    let mut row = format!(
        "<tr data-queue=\"{}\"><td><a href=\"/ui/queues/{}\">{}</a></td>",
        esc(&q.queue),
        url_part(&q.queue),
        esc(&q.queue)
    );
    for (state, n) in STATES.iter().zip(q.counts) {
        let _ = write!(
            row,
            "<td class=\"num\" data-field=\"{state}\"><a href=\"/ui/queues/{}?state={state}\">{n}</a></td>",
            url_part(&q.queue)
        );
    }
    let _ = write!(
        row,
        "<td class=\"num\" data-field=\"dead_last_minute\">{}</td>\
         <td class=\"num\" data-field=\"oldest_secs\">{}</td></tr>",
        q.dead_last_minute,
        secs(q.oldest_secs)
    );
    row
}

fn horizon(beyond: i64, pid: Option<i32>, age: Option<f64>) -> String {
    if beyond > 0 {
        format!(
            "<span class=\"warn\">{beyond} held back by pid {} ({})</span>",
            pid.map_or("?".into(), |p| p.to_string()),
            secs(age)
        )
    } else {
        "<span class=\"muted\">free</span>".into()
    }
}

/// Events behind, as "at least N" when a partition's count reached the cap.
fn behind(n: i64, capped: bool) -> String {
    if capped {
        format!("≥ {n}")
    } else {
        n.to_string()
    }
}

fn subscription_row(s: &SubscriptionRow) -> String {
    format!(
        "<tr data-subscription=\"{name}\"><td><a href=\"/ui/subscriptions/{url}\">{name}</a></td>\
         <td><code>{patterns}</code></td><td class=\"num\">{parts}</td>\
         <td class=\"num\" data-field=\"members\">{members}</td>\
         <td class=\"num\" data-field=\"events_behind\">{behind}</td>\
         <td class=\"num\" data-field=\"oldest_secs\">{oldest}</td>\
         <td data-field=\"horizon\">{horizon}</td>\
         <td class=\"num\" data-field=\"retrying\">{retrying}</td>\
         <td class=\"num\" data-field=\"dead\">{dead}</td></tr>",
        name = esc(&s.name),
        url = url_part(&s.name),
        patterns = esc(&s.patterns),
        parts = s.partitions,
        members = s.members,
        behind = behind(s.events_behind, s.behind_capped),
        oldest = secs(s.oldest_secs),
        horizon = horizon(s.beyond_horizon, s.horizon_pid, s.horizon_secs),
        retrying = s.retrying,
        dead = s.dead,
    )
}

pub(crate) fn queue(
    data: &mut Data,
    view: &View<'_>,
    queue: &str,
    filter: &JobFilter<'_>,
) -> DataResult<String> {
    let jobs = data.queue_jobs(queue, filter)?;
    let mut body = flash(view.flash);
    let q = url_part(queue);
    body.push_str("<form method=\"get\" class=\"filters\"><label>state <select name=\"state\">");
    let _ = write!(body, "<option value=\"\">any</option>");
    for s in ["available", "running", "completed", "dead", "cancelled"] {
        let selected = if filter.state == Some(s) {
            " selected"
        } else {
            ""
        };
        let _ = write!(body, "<option{selected}>{s}</option>");
    }
    let _ = write!(
        body,
        "</select></label> <label>find <input name=\"q\" value=\"{}\" \
         placeholder=\"id, unique key or payload text\"></label> <button>Show</button></form>",
        esc(filter.search.unwrap_or(""))
    );
    body.push_str(&view.action(
        &format!("/ui/queues/{q}/retry-dead"),
        &[],
        "Retry every dead job",
        &format!("Retry every dead job of queue {queue}?"),
    ));
    body.push_str(
        "<div class=\"scroll\"><table id=\"jobs\"><thead><tr><th class=\"num\">id</th><th>state</th>\
         <th class=\"num\">priority</th><th>run at</th><th class=\"num\">attempt</th>\
         <th>unique key</th><th>payload</th><th>last error</th><th>created</th></tr></thead><tbody>",
    );
    if jobs.is_empty() {
        body.push_str("<tr><td colspan=\"9\" class=\"muted\">no jobs match</td></tr>");
    }
    for j in &jobs {
        let _ = write!(
            body,
            "<tr data-job=\"{id}\"><td class=\"num\"><a href=\"/ui/jobs/{id}\">{id}</a></td>\
             <td><span class=\"state {state}\">{state}</span></td><td class=\"num\">{prio}</td>\
             <td>{run_at}</td><td class=\"num\">{attempt}/{max}</td><td>{key}</td>\
             <td><code class=\"payload\">{payload}</code></td><td class=\"error\">{error}</td>\
             <td>{created}</td></tr>",
            id = j.id,
            state = esc(&j.state),
            prio = j.priority,
            run_at = time(j.run_at),
            attempt = j.attempt,
            max = j.max_attempts,
            key = esc(j.unique_key.as_deref().unwrap_or("")),
            payload = esc(&j.payload),
            error = esc(j.last_error.as_deref().unwrap_or("")),
            created = time(j.created_at),
        );
    }
    body.push_str("</tbody></table></div>");
    if jobs.len() as i64 == filter.limit {
        if let Some(last) = jobs.last() {
            let mut next = format!("/ui/queues/{q}?before={}", last.id);
            if let Some(s) = filter.state {
                let _ = write!(next, "&state={}", url_part(s));
            }
            if let Some(s) = filter.search {
                let _ = write!(next, "&q={}", url_part(s));
            }
            let _ = write!(body, "<p><a href=\"{}\">Older jobs →</a></p>", esc(&next));
        }
    }
    Ok(page(&format!("Queue {queue}"), "", &body))
}

pub(crate) fn job(data: &mut Data, view: &View<'_>, id: i64) -> DataResult<Option<String>> {
    let Some(j) = data.job(id)? else {
        return Ok(None);
    };
    let mut body = flash(view.flash);
    let idt = id.to_string();
    let fields: [(&str, &str); 1] = [("id", &idt)];
    body.push_str("<div class=\"actions\">");
    if j.state == "dead" || j.state == "cancelled" || j.state == "completed" {
        body.push_str(&view.action(
            &format!("/ui/jobs/{id}/retry"),
            &fields,
            "Retry",
            &format!("Retry job {id}?"),
        ));
    }
    if j.state == "available" || j.state == "running" {
        body.push_str(&view.action(
            &format!("/ui/jobs/{id}/cancel"),
            &fields,
            "Cancel",
            &format!("Cancel job {id}?"),
        ));
    }
    if j.state == "available" {
        body.push_str(&view.action(
            &format!("/ui/jobs/{id}/run-now"),
            &fields,
            "Run now",
            &format!("Run job {id} now?"),
        ));
    }
    if j.state != "running" {
        body.push_str(&view.action(
            &format!("/ui/jobs/{id}/delete"),
            &fields,
            "Delete",
            &format!("Delete job {id} for good?"),
        ));
    }
    body.push_str("</div><dl class=\"facts\">");
    let facts: Vec<(&str, String)> = vec![
        (
            "queue",
            format!(
                "<a href=\"/ui/queues/{}\">{}</a>",
                url_part(&j.queue),
                esc(&j.queue)
            ),
        ),
        (
            "state",
            format!("<span class=\"state {0}\">{0}</span>", esc(&j.state)),
        ),
        ("attempt", format!("{} of {}", j.attempt, j.max_attempts)),
        ("priority", j.priority.to_string()),
        ("run at", time(j.run_at)),
        ("lease until", time(j.lease_until)),
        (
            "worker (lease holder)",
            esc(j.worker.as_deref().unwrap_or("—")),
        ),
        ("unique key", esc(j.unique_key.as_deref().unwrap_or("—"))),
        ("created", time(j.created_at)),
        ("finished", time(j.finished_at)),
        ("last error", esc(j.last_error.as_deref().unwrap_or("—"))),
    ];
    for (k, v) in facts {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    }
    body.push_str("</dl><h2>Payload</h2>");
    let _ = write!(body, "<pre class=\"payload\">{}</pre>", esc(&j.payload));
    if let Some(errors) = &j.errors {
        let _ = write!(
            body,
            "<h2>Error history</h2><pre class=\"payload\">{}</pre>",
            esc(errors)
        );
    }
    if let Some(result) = &j.result {
        let _ = write!(
            body,
            "<h2>Result</h2><pre class=\"payload\">{}</pre>",
            esc(result)
        );
    }
    Ok(Some(page(&format!("Job {}", j.id), "", &body)))
}

pub(crate) fn subscription(
    data: &mut Data,
    view: &View<'_>,
    name: &str,
) -> DataResult<Option<String>> {
    let Some(s) = data.subscription(name)? else {
        return Ok(None);
    };
    let parts = data.partitions(name)?;
    let holder = data.horizon_holder()?;
    let members = data.members(name)?;
    let dead = data.dead_letters(name)?;
    let url = format!("/ui/subscriptions/{}", url_part(name));
    let mut body = flash(view.flash);
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>patterns</dt><dd><code>{}</code></dd><dt>partitions</dt><dd>{}</dd>\
         <dt>expires after</dt><dd>{}</dd><dt>created</dt><dd>{}</dd></dl>",
        esc(&s.patterns),
        s.partitions,
        s.expire_secs.map_or("never (durable)".into(), |e| secs(Some(e))),
        time(s.created_at)
    );
    body.push_str(
        "<h2>Partitions</h2><div class=\"scroll\"><table id=\"partitions\"><thead><tr>\
         <th class=\"num\">partition</th><th>cursor</th><th>held by</th><th class=\"num\">events behind</th>\
         <th class=\"num\">oldest behind</th><th>horizon</th></tr></thead><tbody>",
    );
    for p in &parts {
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            p.part,
            esc(&p.cursor),
            esc(p.holder.as_deref().unwrap_or("—")),
            behind(p.events_behind, p.events_behind >= super::data::LAG_CAP),
            secs(p.oldest_secs),
            horizon(p.beyond_horizon, holder.map(|h| h.0), holder.map(|h| h.1))
        );
    }
    body.push_str("</tbody></table></div><h2>Members</h2>");
    if members.is_empty() {
        body.push_str("<p class=\"muted\">no process consumes it now</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>member</th><th class=\"num\">pid</th>\
             <th>partitions</th><th>joined</th><th>seen</th></tr></thead><tbody>",
        );
        for m in &members {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.name),
                m.pid,
                esc(&m.partitions),
                time(m.joined_at),
                time(m.seen_at)
            );
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("<h2>Seek</h2>");
    if !view.read_only {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"{url}/seek\" class=\"action\" \
             data-confirm=\"Move every partition's cursor of {name}?\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>to position <input name=\"position\" placeholder=\"tx-id, or 0-0 for the beginning\"></label> \
             <label>or to a time <input name=\"time\" type=\"datetime-local\" step=\"1\"></label>\
             <input type=\"hidden\" name=\"tz_offset_minutes\" value=\"0\">\
             <button type=\"submit\">Seek</button></form>",
            name = esc(name),
            csrf = esc(view.csrf)
        );
    }
    let dead_count = dead.iter().filter(|d| d.dead).count();
    let _ = write!(
        body,
        "<h2>Dead letters and retries</h2><p>{dead_count} dead, {} retrying.</p>",
        dead.len() - dead_count
    );
    if dead_count > 0 {
        body.push_str(&view.action(
            &format!("{url}/redrive"),
            &[],
            "Re-drive every dead letter",
            &format!("Re-drive every dead letter of {name}?"),
        ));
    }
    body.push_str(
        "<div class=\"scroll\"><table id=\"dead\"><thead><tr><th>position</th><th>topic</th><th>key</th>\
         <th>payload</th><th class=\"num\">attempts</th><th>error</th><th>failed</th><th></th></tr></thead><tbody>",
    );
    for d in &dead {
        let idt = d.id.to_string();
        let redrive = if d.dead {
            view.action(
                &format!("{url}/redrive"),
                &[("id", &idt)],
                "Re-drive",
                &format!("Re-drive event {}?", d.position),
            )
        } else {
            "<span class=\"muted\">retrying</span>".into()
        };
        let _ = write!(
            body,
            "<tr data-event=\"{id}\"><td><code>{pos}</code></td><td>{topic}</td><td>{key}</td>\
             <td><code class=\"payload\">{payload}</code></td><td class=\"num\">{attempt}</td>\
             <td class=\"error\">{error}</td><td>{failed}</td><td>{redrive}</td></tr>",
            id = d.id,
            pos = esc(&d.position),
            topic = esc(&d.topic),
            key = esc(d.key.as_deref().unwrap_or("")),
            payload = esc(&d.payload),
            attempt = d.attempt,
            error = esc(d.last_error.as_deref().unwrap_or("")),
            failed = time(d.failed_at),
        );
    }
    body.push_str("</tbody></table></div>");
    Ok(Some(page(&format!("Subscription {}", s.name), "", &body)))
}

pub(crate) fn events(
    data: &mut Data,
    view: &View<'_>,
    filter: &EventFilter<'_>,
    raw_before_time: &str,
) -> DataResult<String> {
    let rows = data.events(filter)?;
    let mut body = flash(view.flash);
    let pattern = filter.pattern.unwrap_or("");
    let _ = write!(
        body,
        "<form method=\"get\" class=\"filters\"><label>topic pattern <input name=\"topic\" \
         value=\"{}\" placeholder=\"orders.# (empty: all)\"></label> <label>written before \
         <input name=\"before_time\" value=\"{}\" placeholder=\"2026-12-06T10:00:00Z\"></label> \
         <button>Show</button></form>",
        esc(pattern),
        esc(raw_before_time)
    );
    let tail_pattern = if pattern.is_empty() { "#" } else { pattern };
    let _ = write!(
        body,
        "<section><h2>Live tail</h2><p><button type=\"button\" id=\"tail-toggle\" \
         data-tail=\"/ui/tail?topic={}\">Start live tail</button></p>\
         <ol id=\"tail\" class=\"tail\" aria-live=\"polite\"></ol></section>",
        esc(&url_part(tail_pattern))
    );
    body.push_str(
        "<h2>Log</h2><div class=\"scroll\"><table id=\"events\"><thead><tr><th>position</th><th>topic</th>\
         <th>key</th><th>payload</th><th>written</th></tr></thead><tbody>",
    );
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"5\" class=\"muted\">no events match</td></tr>");
    }
    for e in &rows {
        body.push_str(&event_row(e));
    }
    body.push_str("</tbody></table></div>");
    if rows.len() as i64 == filter.limit {
        if let Some(last) = rows.last() {
            let mut next = format!("/ui/events?before={}", url_part(&last.position));
            if !pattern.is_empty() {
                let _ = write!(next, "&topic={}", url_part(pattern));
            }
            if !raw_before_time.is_empty() {
                let _ = write!(next, "&before_time={}", url_part(raw_before_time));
            }
            let _ = write!(body, "<p><a href=\"{}\">Older events →</a></p>", esc(&next));
        }
    }
    Ok(page("Events", "Events", &body))
}

fn event_row(e: &EventRow) -> String {
    format!(
        "<tr><td><a href=\"/ui/events/{pos_url}\"><code>{pos}</code></a></td><td>{topic}</td>\
         <td>{key}</td><td><code class=\"payload\">{payload}</code></td><td>{at}</td></tr>",
        pos_url = url_part(&e.position),
        pos = esc(&e.position),
        topic = esc(&e.topic),
        key = esc(e.key.as_deref().unwrap_or("")),
        payload = esc(&e.payload),
        at = time(e.created_at),
    )
}

pub(crate) fn event(data: &mut Data, tx: &str, id: i64) -> DataResult<Option<String>> {
    let Some(e) = data.event(tx, id)? else {
        return Ok(None);
    };
    let body = format!(
        "<dl class=\"facts\"><dt>position</dt><dd><code>{}</code></dd><dt>topic</dt><dd>{}</dd>\
         <dt>key</dt><dd>{}</dd><dt>written</dt><dd>{}</dd></dl><h2>Payload</h2>\
         <pre class=\"payload\">{}</pre><h2>Headers</h2><pre class=\"payload\">{}</pre>",
        esc(&e.position),
        esc(&e.topic),
        esc(e.key.as_deref().unwrap_or("—")),
        time(e.created_at),
        esc(&e.payload),
        esc(e.headers.as_deref().unwrap_or("—")),
    );
    Ok(Some(page(
        &format!("Event {}", e.position),
        "Events",
        &body,
    )))
}

/// A page saying what went wrong (a database error, a bad parameter).
pub(crate) fn problem(title: &str, message: &str) -> String {
    page(
        title,
        "",
        &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(message)),
    )
}

/// The sign-in page: a token field, sent once as `access_token` and kept in a cookie.
pub(crate) fn sign_in(message: &str, path: &str) -> String {
    page(
        "Sign in",
        "",
        &format!(
            "<p>{}</p><form method=\"get\" action=\"{}\"><label>token \
             <input name=\"access_token\" type=\"password\" autocomplete=\"current-password\"></label> \
             <button>Sign in</button></form>",
            esc(message),
            esc(path)
        ),
    )
}
