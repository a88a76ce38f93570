// pgbroker dashboard: times in the viewer's zone, confirmations, live overview, live tail.
// No build step, no dependencies; every value is written with textContent (never innerHTML).
"use strict";

function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.getAttribute("datetime"); }
  }
}

function confirmations() {
  for (const f of document.querySelectorAll("form[data-confirm]")) {
    f.addEventListener("submit", (e) => {
      const offset = f.querySelector("input[name=tz_offset_minutes]");
      if (offset) offset.value = String(-new Date().getTimezoneOffset());
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  }
}

function secs(s) {
  if (s === null || s === undefined) return "—";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

const STATES = ["available", "scheduled", "running", "completed", "dead", "cancelled"];

function queueRow(q) {
  const tr = document.createElement("tr");
  tr.dataset.queue = q.queue;
  const name = document.createElement("td");
  const a = document.createElement("a");
  a.href = "/ui/queues/" + encodeURIComponent(q.queue);
  a.textContent = q.queue;
  name.appendChild(a);
  tr.appendChild(name);
  for (const f of STATES.concat(["dead_last_minute", "oldest_secs"])) {
    const td = document.createElement("td");
    td.className = "num";
    td.dataset.field = f;
    tr.appendChild(td);
  }
  return tr;
}

function setCell(row, field, text) {
  const td = row.querySelector('[data-field="' + field + '"]');
  if (!td) return;
  const a = td.querySelector("a");
  (a || td).textContent = text;
}

function liveOverview() {
  const queues = document.getElementById("queues");
  if (!queues) return;
  const through = document.getElementById("throughput");
  let last = { n: Number(through.dataset.finished), at: Date.now() };
  async function tick() {
    try {
      const r = await fetch("/ui/api/overview", { credentials: "same-origin" });
      if (!r.ok) throw new Error(String(r.status));
      const o = await r.json();
      const body = queues.tBodies[0];
      const seen = new Set();
      for (const q of o.queues) {
        seen.add(q.queue);
        let row = body.querySelector('tr[data-queue="' + CSS.escape(q.queue) + '"]');
        if (!row) {
          const empty = body.querySelector("td.muted");
          if (empty) empty.parentElement.remove();
          row = queueRow(q);
          body.appendChild(row);
        }
        for (const s of STATES) setCell(row, s, String(q[s]));
        setCell(row, "dead_last_minute", String(q.dead_last_minute));
        setCell(row, "oldest_secs", secs(q.oldest_secs));
      }
      for (const row of body.querySelectorAll("tr[data-queue]")) {
        if (!seen.has(row.dataset.queue)) row.remove();
      }
      const subs = document.getElementById("subscriptions");
      for (const s of o.subscriptions) {
        const row = subs.querySelector('tr[data-subscription="' + CSS.escape(s.name) + '"]');
        if (!row) continue;
        setCell(row, "members", String(s.members));
        setCell(row, "events_behind", (s.behind_capped ? "≥ " : "") + s.events_behind);
        setCell(row, "oldest_secs", secs(s.oldest_secs));
        setCell(row, "retrying", String(s.retrying));
        setCell(row, "dead", String(s.dead));
        setCell(row, "horizon", s.beyond_horizon > 0
          ? s.beyond_horizon + " held back by pid " + s.horizon_pid + " (" + secs(s.horizon_secs) + ")"
          : "free");
      }
      const now = Date.now();
      const perMin = (o.jobs_finished - last.n) / ((now - last.at) / 60000);
      through.textContent = "jobs finished per minute (all queues): " + Math.max(0, Math.round(perMin));
      last = { n: o.jobs_finished, at: now };
      document.body.dataset.updated = String(now);
    } catch (e) {
      through.textContent = "live updates paused: " + e.message;
    }
    setTimeout(tick, 2000);
  }
  setTimeout(tick, 2000);
}

function liveTail() {
  const button = document.getElementById("tail-toggle");
  if (!button) return;
  const list = document.getElementById("tail");
  let stop = null;
  // The stream names each event by its topic (SSE "event:"), which EventSource only hands to
  // listeners registered per type; reading the stream with fetch shows every topic.
  async function run(url, signal) {
    const r = await fetch(url, { credentials: "same-origin", signal });
    if (!r.ok) throw new Error("the server answered " + r.status);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const ev = { id: "", event: "message", data: "" };
        for (const line of block.split("\n")) {
          const i = line.indexOf(":");
          if (i <= 0) continue;
          const k = line.slice(0, i), v = line.slice(i + 1).replace(/^ /, "");
          if (k === "id") ev.id = v; else if (k === "event") ev.event = v; else if (k === "data") ev.data += v;
        }
        if (!ev.data) continue;
        const li = document.createElement("li");
        li.textContent = ev.id + "  " + ev.event + "  " + ev.data;
        list.prepend(li);
        while (list.children.length > 200) list.lastChild.remove();
      }
    }
  }
  button.addEventListener("click", () => {
    if (stop) { stop.abort(); stop = null; button.textContent = "Start live tail"; return; }
    stop = new AbortController();
    button.textContent = "Stop live tail";
    run(button.dataset.tail, stop.signal).catch((e) => {
      if (e.name !== "AbortError") button.textContent = "Live tail stopped: " + e.message + " (click to restart)";
      stop = null;
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  confirmations();
  liveOverview();
  liveTail();
});
