//! `pgbroker enqueue`, `jobs`, `retry` and `cancel`: the job queue from the shell.

use std::time::{Duration, SystemTime};

use clap::Args;
use pgbroker::queue::{validate_queue, JobState};
use pgbroker::{Job, JobId};
use serde_json::{json, Value};

use crate::failure::Failure;
use crate::input::{json_arg, StdinBatches};
use crate::output::{print_lines, rfc3339, Table};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue (1 to 48 characters of A-Z a-z 0-9 _ . : -).
    pub queue: String,
    /// The payload, a JSON document (default `{}`); `-` enqueues one job per line of stdin,
    /// in batches (a line that is not JSON stops it with exit 2: the lines before it are
    /// enqueued and their ids printed, none after it).
    pub payload: Option<String>,
    /// Priority among the queue's ready jobs: smaller runs first.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub priority: i32,
    /// Not before this long from now (`30`, `500ms`, `30s`, `5m`, `2h`, `1d`), at most 100
    /// years (`36500d`).
    #[arg(long, value_name = "DURATION", value_parser = crate::input::delay)]
    pub delay: Option<Duration>,
    /// At most one available or running job with this key in the queue: enqueueing another
    /// prints the existing job's id.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// Runs before the job is dead: 1 to 2147483647 (default 25).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only this queue's jobs.
    pub queue: Option<String>,
    /// Only jobs in this state: available, running, completed, dead, cancelled.
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// At most this many jobs (oldest first).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u32,
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// The job's id (as `enqueue` printed it).
    pub id: i64,
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

pub fn enqueue(url: &str, args: &EnqueueArgs) -> Result<(), Failure> {
    validate_queue(&args.queue)?;
    let job = |payload: &Value| {
        let mut j = Job::new(&args.queue, payload).priority(args.priority);
        if let Some(n) = args.max_attempts {
            j = j.max_attempts(n);
        }
        if let Some(d) = args.delay {
            j = j.delay(d);
        }
        if let Some(k) = &args.unique_key {
            j = j.unique_key(k.as_str());
        }
        j
    };
    if args.payload.as_deref() != Some("-") {
        let payload = json_arg(args.payload.as_deref().unwrap_or("{}"), "the payload")?;
        let id = crate::connection::broker(url)?.enqueue_job(&job(&payload))?;
        return Ok(print_lines([id.to_string()])?);
    }
    let broker = crate::connection::broker(url)?;
    let mut input = StdinBatches::start();
    let mut enqueued = 0u64;
    let before = |n: u64| move |f: Failure| f.and(format!("{n} job(s) enqueued before it"));
    while let Some(batch) = input.next_batch().map_err(before(enqueued))? {
        if batch.is_empty() {
            continue;
        }
        // One transaction per batch, each job's id back.
        let ids = (|| -> pgbroker::Result<Vec<JobId>> {
            let mut conn = broker.conn()?;
            let mut tx = conn.transaction()?;
            let ids = batch
                .iter()
                .map(|(_, v)| broker.enqueue_in(&mut tx, &job(v)))
                .collect::<pgbroker::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(ids)
        })()
        .map_err(|e| before(enqueued)(Failure::from(e)))?;
        enqueued += ids.len() as u64;
        print_lines(ids.iter().map(JobId::to_string))?;
    }
    Ok(())
}

pub fn jobs(url: &str, args: &JobsArgs, json_out: bool) -> Result<(), Failure> {
    if let Some(q) = &args.queue {
        validate_queue(q)?;
    }
    let state = args
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>().map_err(|_| {
                Failure::usage(format!(
                    "--state must be available, running, completed, dead or cancelled; got {s:?}"
                ))
            })
        })
        .transpose()?;
    let broker = crate::connection::broker(url)?;
    let mut conn = broker.conn()?;
    let rows = conn.query(
        "SELECT id, queue, state::text, priority, attempt, max_attempts, run_at, created_at,
                unique_key, worker, last_error, payload, details -> 'progress'
           FROM pgbroker.jobs
          WHERE ($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR state::text = $2)
          ORDER BY id LIMIT $3",
        &[
            &args.queue,
            &state.map(|s| s.as_str()),
            &i64::from(args.limit),
        ],
    )?;
    if json_out {
        let lines: Vec<String> = rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.get::<_, i64>(0),
                    "queue": r.get::<_, String>(1),
                    "state": r.get::<_, String>(2),
                    "priority": r.get::<_, i32>(3),
                    "attempt": r.get::<_, i32>(4),
                    "max_attempts": r.get::<_, i32>(5),
                    "run_at": rfc3339(r.get(6)),
                    "created_at": rfc3339(r.get(7)),
                    "unique_key": r.get::<_, Option<String>>(8),
                    "worker": r.get::<_, Option<String>>(9),
                    "last_error": r.get::<_, Option<String>>(10),
                    "payload": r.get::<_, Value>(11),
                    "progress": r.get::<_, Option<Value>>(12),
                })
                .to_string()
            })
            .collect();
        return Ok(print_lines(lines)?);
    }
    let mut t = Table::new([
        "id", "queue", "state", "attempt", "priority", "run_at", "payload", "error", "progress",
    ]);
    for r in &rows {
        let run_at: SystemTime = r.get(6);
        t.row([
            r.get::<_, i64>(0).to_string(),
            r.get(1),
            r.get(2),
            format!("{}/{}", r.get::<_, i32>(4), r.get::<_, i32>(5)),
            r.get::<_, i32>(3).to_string(),
            waiting_or(run_at),
            clip(&r.get::<_, Value>(11).to_string(), 40),
            clip(r.get::<_, Option<&str>>(10).unwrap_or(""), 40),
            r.get::<_, Option<Value>>(12)
                .map(|p| clip(&p.to_string(), 30))
                .unwrap_or_default(),
        ]);
    }
    Ok(print_lines(t.render().lines().map(str::to_owned))?)
}

/// A job's run time for the table; a job waiting for its parents (`Job::after`) has it at
/// infinity.
fn waiting_or(run_at: SystemTime) -> String {
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(200_000 * 365 * 86_400);
    if run_at > far {
        "after parents".into()
    } else {
        rfc3339(run_at)[..19].to_string()
    }
}

/// `s` cut to `max` characters, with `…` when cut, on one line.
fn clip(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max - 1).collect();
    out.push('…');
    out
}

pub fn cancel(url: &str, args: &JobIdArgs, json_out: bool) -> Result<(), Failure> {
    let broker = crate::connection::broker(url)?;
    if !broker.cancel_job(JobId(args.id))? {
        return Err(refused(
            &broker,
            args.id,
            "only available or running jobs can be cancelled",
        ));
    }
    done(args.id, JobState::Cancelled, json_out)
}

pub fn redrive(url: &str, args: &JobIdArgs, json_out: bool) -> Result<(), Failure> {
    let broker = crate::connection::broker(url)?;
    if !broker.redrive_job(JobId(args.id))? {
        return Err(refused(
            &broker,
            args.id,
            "only dead or cancelled jobs can be re-driven",
        ));
    }
    done(args.id, JobState::Available, json_out)
}

/// Why a job could not be cancelled or re-driven: it does not exist, or its state forbids it.
fn refused(broker: &pgbroker::Broker, id: i64, rule: &str) -> Failure {
    match broker.job(JobId(id)) {
        Ok(None) => Failure::failed(format!("no job {id}")),
        Ok(Some(job)) => Failure::failed(format!("job {id} is {}: {rule}", job.state)),
        Err(e) => Failure::from(e),
    }
}

fn done(id: i64, state: JobState, json_out: bool) -> Result<(), Failure> {
    Ok(print_lines([if json_out {
        json!({"id": id, "state": state.as_str()}).to_string()
    } else {
        format!("job {id} is {state}")
    }])?)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn clips_to_one_short_line() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdefgh", 5), "abcd…");
        assert_eq!(clip("a\nb", 5), "a b");
    }
}
