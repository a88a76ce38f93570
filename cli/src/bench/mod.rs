//! The benchmark engine behind `pgbroker bench`: every workload is done on the same database
//! in the same run the raw PostgreSQL way (the limit) and the pgbroker way, and some also the
//! way a peer's SQL does it (`peer_models`); reported side by side with their ratios.
//!
//! It needs only `crate::output` besides the pgbroker crate. Adding a workload: a `Workload`
//! in the area's module (`notify`, `log`, `queue`, `peers`); a peer side: a `Peer` in
//! `peer_models`.

mod backlog;
mod consume;
mod cpu;
mod harness;
mod log;
mod notify;
mod peer_models;
mod peers;
mod queue;
mod raw;
mod tables;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgbroker::Broker;
use pgbroker_testing::TempPostgres;
use serde_json::{json, Map, Value};

use self::harness::{Ctx, Outcome, Ratio, Workload};
use crate::output::thousands;

/// Any error of a benchmark run.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Set by Ctrl-C (see [`interrupt`]).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Stops the run: the measured run in progress ends at its next unit of work (as when its
/// `--seconds` are up), no further workload starts, and [`run`] drops what it created and
/// returns an error.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What to run and how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// Units of work per measured run (default 100 000).
    pub messages: u64,
    /// Run each side for this long instead (workloads with a fixed input stop earlier).
    pub seconds: Option<f64>,
    /// Measured runs of each side, alternating; each side reports its best (default 1).
    pub rounds: u32,
    /// Threads of the multi-threaded variants (`*_t4`; default 4).
    pub threads: usize,
    /// Workload names to run (exact, or a prefix ending in `*`); empty = all.
    pub only: Vec<String>,
    /// Run the full sizes (the table watch's 10M rows), ignoring the --messages cap.
    pub full: bool,
    /// Notifications per second of the latency workload (default 1000).
    pub rate: u32,
    /// With a private cluster: keep fsync and synchronous_commit on.
    pub durable: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            messages: 100_000,
            seconds: None,
            rounds: 1,
            threads: 4,
            only: Vec::new(),
            full: false,
            rate: 1_000,
            durable: false,
            progress: false,
        }
    }
}

/// Every workload, in report order.
fn all_workloads(o: &Options) -> Vec<Workload> {
    let mut w = notify::workloads(o);
    w.extend(log::workloads(o));
    w.extend(consume::workloads(o));
    w.extend(queue::workloads(o));
    w.extend(backlog::workloads(o));
    w.extend(peers::workloads(o));
    w
}

/// The names and descriptions of every workload.
pub fn list(o: &Options) -> Vec<(&'static str, &'static str)> {
    all_workloads(o).iter().map(|w| (w.name, w.about)).collect()
}

fn selected(o: &Options) -> Result<Vec<Workload>> {
    let all = all_workloads(o);
    for pat in &o.only {
        if !all.iter().any(|w| matches(pat, w.name)) {
            let names: Vec<&str> = all.iter().map(|w| w.name).collect();
            return Err(format!(
                "no workload named {pat:?}; the workloads are: {}",
                names.join(", ")
            )
            .into());
        }
    }
    Ok(all
        .into_iter()
        .filter(|w| o.only.is_empty() || o.only.iter().any(|p| matches(p, w.name)))
        .collect())
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Checks the options before anything starts; the message is for the user.
pub fn validate(o: &Options) -> Result<(), String> {
    if o.messages == 0 {
        return Err("--messages must be at least 1".into());
    }
    if o.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if o.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if o.rate == 0 {
        return Err("--rate must be at least 1".into());
    }
    if let Some(s) = o.seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("--seconds must be a positive number, got {s}"));
        }
    }
    selected(o).map(|_| ()).map_err(|e| e.to_string())
}

/// One workload's line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub threads: usize,
    /// Units the raw side did (messages written, rows read, jobs claimed).
    pub messages: u64,
    /// Units the pgbroker side did (differs from `messages` only with `--seconds`).
    pub pgbroker_messages: u64,
    pub raw_per_s: f64,
    pub pgbroker_per_s: f64,
    pub ratio_basis: Ratio,
    pub raw_extra: Vec<(&'static str, f64)>,
    pub pgbroker_extra: Vec<(&'static str, f64)>,
    /// CPU microseconds per unit (this process plus the server), each side's lowest over the
    /// rounds; `None` when the server is not local.
    pub raw_cpu_us: Option<f64>,
    pub pgbroker_cpu_us: Option<f64>,
    /// The peer side, for workloads that have one.
    pub peer: Option<PeerRow>,
}

/// A peer's side of a workload's row (see `harness::Peer`).
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// The peer (`pgmq`).
    pub name: &'static str,
    /// Units the peer side did.
    pub messages: u64,
    pub per_s: f64,
    pub extra: Vec<(&'static str, f64)>,
    /// CPU microseconds per unit (this process plus the server), its lowest over the rounds
    /// as for the other sides.
    pub cpu_us: Option<f64>,
}

fn p50(extra: &[(&str, f64)]) -> Option<f64> {
    extra.iter().find(|(k, _)| *k == "p50_ms").map(|x| x.1)
}

impl Row {
    /// Raw CPU time per unit divided by pgbroker's: above 1 means pgbroker used less. On a
    /// machine with fewer cores than busy threads this is what the throughput ratio measures,
    /// without the time lost to other programs; only for throughput workloads.
    pub fn cpu_ratio(&self) -> Option<f64> {
        match (self.ratio_basis, self.raw_cpu_us, self.pgbroker_cpu_us) {
            (Ratio::Throughput, Some(raw), Some(ours)) if ours > 0.0 => Some(raw / ours),
            _ => None,
        }
    }

    /// pgbroker's rate as a fraction of the raw limit.
    pub fn ratio(&self) -> Option<f64> {
        self.against(self.raw_per_s, &self.raw_extra)
    }

    /// pgbroker against the peer, measured the same way as [`ratio`](Self::ratio) against
    /// raw: above 1 means pgbroker did better. `None` without a peer side.
    pub fn peer_ratio(&self) -> Option<f64> {
        let peer = self.peer.as_ref()?;
        self.against(peer.per_s, &peer.extra)
    }

    /// pgbroker against another side with this rate and these numbers: rates divided, or for
    /// latency the other side's p50 over pgbroker's; above 1 means pgbroker did better.
    fn against(&self, per_s: f64, extra: &[(&str, f64)]) -> Option<f64> {
        match self.ratio_basis {
            Ratio::Throughput => Some(self.pgbroker_per_s / per_s).filter(|_| per_s > 0.0),
            Ratio::Latency => match (p50(extra), p50(&self.pgbroker_extra)) {
                (Some(other), Some(ours)) if ours > 0.0 => Some(other / ours),
                _ => None,
            },
        }
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
    pub peak_rss_kb: Option<u64>,
    pub server_version: String,
    pub private_cluster: bool,
    pub durable: Option<bool>,
    /// Measured runs per side (each side's best is reported).
    pub rounds: u32,
}

/// Runs the selected workloads on `url`, or on a private throwaway cluster without one;
/// `on_row` sees each workload's row as soon as it is measured. Whatever it created is dropped
/// at the end, also after an error or an [`interrupt`].
pub fn run(url: Option<&str>, o: &Options, on_row: &mut dyn FnMut(&Row)) -> Result<Report> {
    validate(o)?;
    let workloads = selected(o)?;
    let temp = match url {
        Some(_) => None,
        None => {
            if o.progress {
                crate::output::note("starting a private PostgreSQL for the benchmark...");
            }
            Some(
                TempPostgres::builder()
                    .setting("max_connections", "200")
                    .durable(o.durable)
                    .start()?,
            )
        }
    };
    let url = match (&temp, url) {
        (Some(t), _) => t.url(),
        (None, Some(u)) => u.to_owned(),
        (None, None) => unreachable!("a private cluster was started"),
    };
    // A pooled connection for every thread of the widest workload, as the raw side has.
    let widest = workloads.iter().map(|w| w.threads).max().unwrap_or(1);
    let broker = Broker::builder()
        .url(&url)
        .pool_size((widest.max(o.threads) as u32 + 4).max(10))
        .listener_poll(Duration::from_millis(50))
        .application_name("pgbroker-bench")
        .build()?;
    broker.install()?;
    let mut probe = broker.new_client()?;
    let server_version: String = probe.query_one("SHOW server_version", &[])?.get(0);
    let ctx = Ctx {
        broker,
        progress: o.progress,
        cpu: cpu::CpuMeter::for_server(&mut probe),
    };
    drop(probe);

    let mut rows = Vec::new();
    let result = workloads.iter().try_for_each(|w| {
        if interrupted() {
            return Err(BoxError::from("interrupted"));
        }
        let Outcome {
            raw,
            pgbroker,
            peer,
            raw_cpu_us,
            pgbroker_cpu_us,
            peer_cpu_us,
        } = harness::run(&ctx, w, o.seconds, o.rounds)?;
        rows.push(Row {
            name: w.name,
            threads: w.threads,
            messages: raw.units,
            pgbroker_messages: pgbroker.units,
            raw_per_s: raw.per_s(),
            pgbroker_per_s: pgbroker.per_s(),
            ratio_basis: w.ratio,
            raw_extra: raw.extra,
            pgbroker_extra: pgbroker.extra,
            raw_cpu_us,
            pgbroker_cpu_us,
            peer: w.peer.as_ref().zip(peer).map(|(p, sample)| PeerRow {
                name: p.name,
                messages: sample.units,
                per_s: sample.per_s(),
                cpu_us: peer_cpu_us,
                extra: sample.extra,
            }),
        });
        if let Some(row) = rows.last() {
            on_row(row);
        }
        Ok::<_, BoxError>(())
    });
    let cleanup = harness_cleanup(&ctx);
    result?;
    cleanup?;
    Ok(Report {
        rows,
        peak_rss_kb: peak_rss_kb(),
        server_version,
        private_cluster: temp.is_some(),
        durable: temp.as_ref().map(|_| o.durable),
        rounds: o.rounds,
    })
}

fn harness_cleanup(ctx: &Ctx) -> Result<()> {
    tables::drop_all(ctx)
}

/// This process's peak resident set size (`VmHWM`), on Linux.
pub fn peak_rss_kb() -> Option<u64> {
    rss_kb("VmHWM:")
}

/// A memory figure of this process in kB, on Linux: `field` is a `/proc/self/status` label
/// such as `"VmRSS:"` (now) or `"VmHWM:"` (peak).
pub fn rss_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// A side's CPU time per unit and further numbers as `<side>_cpu_us` and `<side>_<key>`.
fn side_json(m: &mut Map<String, Value>, side: &str, cpu_us: Option<f64>, extra: &[(&str, f64)]) {
    m.insert(format!("{side}_cpu_us"), json!(cpu_us.map(|v| round(v, 2))));
    for (k, v) in extra {
        m.insert(format!("{side}_{k}"), json!(round(*v, 3)));
    }
}

impl Report {
    /// `{"workloads":[{"name","raw_per_s","pgbroker_per_s","ratio",...}],"peak_rss_kb":..}`;
    /// each side's further numbers appear as `raw_<key>` / `pgbroker_<key>`.
    pub fn to_json(&self) -> Value {
        let workloads: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("name".into(), json!(r.name));
                m.insert("threads".into(), json!(r.threads));
                m.insert("messages".into(), json!(r.messages));
                m.insert("pgbroker_messages".into(), json!(r.pgbroker_messages));
                m.insert("raw_per_s".into(), json!(round(r.raw_per_s, 1)));
                m.insert("pgbroker_per_s".into(), json!(round(r.pgbroker_per_s, 1)));
                m.insert("ratio".into(), json!(r.ratio().map(|v| round(v, 3))));
                m.insert(
                    "cpu_ratio".into(),
                    json!(r.cpu_ratio().map(|v| round(v, 3))),
                );
                side_json(&mut m, "raw", r.raw_cpu_us, &r.raw_extra);
                side_json(&mut m, "pgbroker", r.pgbroker_cpu_us, &r.pgbroker_extra);
                if let Some(peer) = &r.peer {
                    m.insert("peer".into(), json!(peer.name));
                    m.insert("peer_messages".into(), json!(peer.messages));
                    m.insert("peer_per_s".into(), json!(round(peer.per_s, 1)));
                    m.insert(
                        "peer_ratio".into(),
                        json!(r.peer_ratio().map(|v| round(v, 3))),
                    );
                    side_json(&mut m, "peer", peer.cpu_us, &peer.extra);
                }
                Value::Object(m)
            })
            .collect();
        json!({
            "workloads": workloads,
            "peak_rss_kb": self.peak_rss_kb,
            "server_version": self.server_version,
            "private_cluster": self.private_cluster,
            "durable": self.durable,
            "rounds": self.rounds,
        })
    }
    /// What the numbers mean and where they were measured: the lines under the table.
    pub fn footer(&self) -> String {
        let where_ = if self.private_cluster {
            format!(
                "private cluster, PostgreSQL {}, {}",
                self.server_version,
                if self.durable == Some(true) {
                    "durable"
                } else {
                    "fsync off"
                }
            )
        } else {
            format!("PostgreSQL {} at --url", self.server_version)
        };
        let rounds = if self.rounds > 1 {
            format!("; best of {} alternating rounds per side", self.rounds)
        } else {
            String::new()
        };
        format!(
            "\n{where_}; peak RSS {} kB; ratio = pgbroker/s / raw/s (latency: raw p50 / pgbroker p50); \
             cpu ratio = raw CPU per unit / pgbroker CPU per unit (this process + the server); \
             vs peer = pgbroker against the peer named, by the same rule as ratio (the peer's \
             own SQL on the same database, in the same run){rounds}\n",
            self.peak_rss_kb.map_or("?".into(), |v| thousands(v as f64))
        )
    }
}

/// The columns of [`row_line`], as a header and its rule: rows printed one by one as their
/// workloads finish line up under it.
pub fn header_lines() -> [String; 2] {
    let cells = [
        "workload",
        "threads",
        "messages",
        "raw/s",
        "pgbroker/s",
        "ratio",
        "cpu ratio",
        "vs peer",
        "notes",
    ];
    let head = fixed_columns(cells.map(String::from));
    let rule = fixed_columns(
        WIDTHS
            .map(|w| "-".repeat(w))
            .into_iter()
            .chain(["-----".into()]),
    );
    [head, rule]
}

/// One workload's row in fixed-width columns (see [`header_lines`]).
pub fn row_line(r: &Row) -> String {
    fixed_columns([
        r.name.to_string(),
        r.threads.to_string(),
        thousands(r.messages as f64),
        thousands(r.raw_per_s),
        thousands(r.pgbroker_per_s),
        r.ratio().map_or("-".into(), |v| format!("{v:.2}x")),
        r.cpu_ratio().map_or("-".into(), |v| format!("{v:.2}x")),
        match (&r.peer, r.peer_ratio()) {
            (Some(p), Some(v)) => format!("{v:.2}x {}", p.name),
            _ => "-".into(),
        },
        notes(r),
    ])
}

/// Widths of the fixed columns before the notes; the first is left-aligned, the others right.
const WIDTHS: [usize; 8] = [24, 7, 11, 11, 11, 7, 9, 14];

fn fixed_columns(cells: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        match WIDTHS.get(i) {
            Some(&w) if i == 0 => out.push_str(&format!("{c:<w$}")),
            Some(&w) => out.push_str(&format!("{c:>w$}")),
            None => out.push_str(&c),
        }
    }
    out.trim_end().to_string()
}

fn notes(r: &Row) -> String {
    let mut keys: Vec<&str> = r.raw_extra.iter().map(|(k, _)| *k).collect();
    for (k, _) in &r.pgbroker_extra {
        if !keys.contains(k) {
            keys.push(k);
        }
    }
    let get = |v: &[(&str, f64)], k: &str| {
        v.iter()
            .find(|(x, _)| *x == k)
            .map_or("-".to_string(), |(_, v)| fmt_num(*v))
    };
    let sides = keys
        .iter()
        .map(|k| format!("{k} {}/{}", get(&r.raw_extra, k), get(&r.pgbroker_extra, k)))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(peer) = &r.peer else {
        return sides;
    };
    // The peer's own numbers after its rate: `pgmq 40,969/s, wal_bytes 310.00`.
    let mut own = vec![format!("{} {}/s", peer.name, thousands(peer.per_s))];
    own.extend(
        peer.extra
            .iter()
            .map(|(k, v)| format!("{k} {}", fmt_num(*v))),
    );
    if let (Some(ours), Some(theirs)) = (r.pgbroker_cpu_us, peer.cpu_us) {
        own.push(format!("cpu_us {}/{}", fmt_num(ours), fmt_num(theirs)));
    }
    match sides.is_empty() {
        true => own.join(", "),
        false => format!("{sides}; {}", own.join(", ")),
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        thousands(v)
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_fixed_names_exist() {
        let names: Vec<&str> = list(&Options::default()).iter().map(|(n, _)| *n).collect();
        for n in [
            "publish_single_t4",
            "publish_single_t4_sub10",
            "enqueue_single_t4",
            "publish_batch_10000",
            "claim_complete_b100_t4",
            "publish_single_t1",
            "enqueue_single_t1",
            "publish_batch_100",
            "enqueue_batch_100",
            "claim_complete_b1_t1",
            "log_read_sub1",
            "log_read_sub10",
            "pgmb_1kb_b100_p5_c10",
            "watch_table_1k",
            "watch_table_100k",
            "notify_latency",
        ] {
            assert!(names.contains(&n), "{n} missing");
        }
        assert!(!names.contains(&"watch_table_10m"));
        let full = Options {
            full: true,
            ..Options::default()
        };
        assert!(list(&full).iter().any(|(n, _)| *n == "watch_table_10m"));
    }

    #[test]
    fn only_selects_by_name_or_prefix() {
        let o = Options {
            only: vec!["claim_complete_b1_*".into(), "notify_latency".into()],
            ..Options::default()
        };
        let names: Vec<&str> = selected(&o).unwrap().iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "notify_latency",
                "claim_complete_b1_t1",
                "claim_complete_b1_t4"
            ]
        );
        let bad = Options {
            only: vec!["nope".into()],
            ..Options::default()
        };
        assert!(validate(&bad)
            .unwrap_err()
            .contains("no workload named \"nope\""));
    }

    #[test]
    fn json_and_table_of_a_row() {
        let report = Report {
            rows: vec![Row {
                name: "publish_single_t4",
                threads: 4,
                messages: 10,
                pgbroker_messages: 10,
                raw_per_s: 1000.0,
                pgbroker_per_s: 900.0,
                ratio_basis: Ratio::Throughput,
                raw_extra: vec![("copy_per_s", 5.0)],
                pgbroker_extra: vec![],
                raw_cpu_us: Some(40.0),
                pgbroker_cpu_us: Some(50.0),
                peer: None,
            }],
            peak_rss_kb: Some(1),
            server_version: "17".into(),
            private_cluster: true,
            durable: Some(false),
            rounds: 1,
        };
        let j = report.to_json();
        let w = &j["workloads"][0];
        assert_eq!(w["pgbroker_per_s"], 900.0);
        assert_eq!(w["ratio"], 0.9);
        assert_eq!(w["raw_copy_per_s"], 5.0);
        assert_eq!(w["cpu_ratio"], 0.8);
        assert_eq!(w["pgbroker_cpu_us"], 50.0);
        let [head, rule] = header_lines();
        let row = row_line(&report.rows[0]);
        assert!(head.starts_with("workload "), "{head}");
        assert!(rule.starts_with(&"-".repeat(24)), "{rule}");
        // Right-aligned under its header: the threads column ends where "threads" ends.
        assert_eq!(
            row.find(" 4 ").unwrap() + 2,
            head.find("threads").unwrap() + 7
        );
        assert!(report.footer().contains("private cluster, PostgreSQL 17"));
        let table = row;
        assert!(table.contains("publish_single_t4"), "{table}");
        assert!(table.contains("0.90x"), "{table}");
        assert!(table.contains("0.80x"), "{table}");
        assert!(table.contains("copy_per_s 5.00/-"), "{table}");
        // No peer side: no peer column value, no peer keys.
        assert!(w.get("peer").is_none());
    }

    #[test]
    fn a_peer_side_in_json_and_table() {
        let row = |basis, pgbroker_extra: Vec<(&'static str, f64)>, peer_extra| Row {
            name: "lease_batched_t1",
            threads: 1,
            messages: 100,
            pgbroker_messages: 100,
            raw_per_s: 2000.0,
            pgbroker_per_s: 1200.0,
            ratio_basis: basis,
            raw_extra: vec![("wal_bytes", 100.0)],
            pgbroker_extra,
            raw_cpu_us: Some(10.0),
            pgbroker_cpu_us: Some(20.0),
            peer: Some(PeerRow {
                name: "pgmq",
                messages: 100,
                per_s: 1000.0,
                extra: peer_extra,
                cpu_us: Some(16.0),
            }),
        };
        let r = row(
            Ratio::Throughput,
            vec![("wal_bytes", 500.0)],
            vec![("wal_bytes", 400.0)],
        );
        assert_eq!(r.peer_ratio(), Some(1.2));
        let report = Report {
            rows: vec![r],
            peak_rss_kb: None,
            server_version: "15".into(),
            private_cluster: false,
            durable: None,
            rounds: 1,
        };
        let j = report.to_json();
        let w = &j["workloads"][0];
        assert_eq!(w["peer"], "pgmq");
        assert_eq!(w["peer_per_s"], 1000.0);
        assert_eq!(w["peer_ratio"], 1.2);
        assert_eq!(w["peer_wal_bytes"], 400.0);
        assert_eq!(w["peer_cpu_us"], 16.0);
        assert_eq!(w["peer_messages"], 100);
        let line = row_line(&report.rows[0]);
        let [head, _] = header_lines();
        // Right-aligned under "vs peer".
        assert_eq!(
            line.find("1.20x pgmq").unwrap() + "1.20x pgmq".len(),
            head.find("vs peer").unwrap() + "vs peer".len()
        );
        assert!(
            line.ends_with("wal_bytes 100/500; pgmq 1,000/s, wal_bytes 400, cpu_us 20.00/16.00"),
            "{line}"
        );
        assert!(report
            .footer()
            .contains("vs peer = pgbroker against the peer"));
        // Latency: the peer's p50 over pgbroker's.
        let r = row(Ratio::Latency, vec![("p50_ms", 0.5)], vec![("p50_ms", 1.0)]);
        assert_eq!(r.peer_ratio(), Some(2.0));
        // A peer side without a p50 has no ratio, and the column says so.
        let r = row(Ratio::Latency, vec![("p50_ms", 0.5)], vec![]);
        assert_eq!(r.peer_ratio(), None);
        assert!(row_line(&r).contains("     -  "), "{}", row_line(&r));
    }
}
