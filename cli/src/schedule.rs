//! `pgbroker schedule add|list|remove`: periodic jobs from the shell.

use clap::{Args, Subcommand};
use pgbroker::queue::{validate_queue, Schedule};
use serde_json::json;

use crate::failure::Failure;
use crate::input::json_arg;
use crate::output::{print_lines, rfc3339, Table};

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create or replace a schedule: a job on QUEUE at every time CRON names; prints the
    /// next run time. Any running worker pool enqueues the jobs (one per tick).
    Add(AddArgs),
    /// List the schedules with their next run times, soonest first.
    List(crate::output::JsonFlag),
    /// Remove a schedule (jobs it already enqueued stay).
    Remove(NameArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The schedule's name (1 to 200 printable characters); adding it again replaces it.
    pub name: String,
    /// A cron expression: 5 fields (minute hour day month weekday), 6 with seconds first,
    /// or @hourly, @daily, @weekly, @monthly, @yearly. Quote it.
    pub cron: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The jobs' payload, a JSON document (default `{}`).
    pub payload: Option<String>,
    /// The time zone of the expression (default UTC), e.g. Europe/Paris.
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub tz: String,
    /// The jobs' priority: smaller runs first.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub priority: i32,
    /// Runs of each job before it is dead (default 25).
    #[arg(long, value_name = "N", default_value_t = 25)]
    pub max_attempts: u32,
    /// Skip ticks no scheduler ran for (default: enqueue them as one job).
    #[arg(long)]
    pub skip_missed: bool,
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The schedule's name.
    pub name: String,
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

pub fn schedule(url: &str, args: &ScheduleArgs) -> Result<(), Failure> {
    match &args.command {
        ScheduleCommand::Add(a) => add(url, a, a.output.json),
        ScheduleCommand::List(o) => list(url, o.json),
        ScheduleCommand::Remove(a) => remove(url, a, a.output.json),
    }
}

fn add(url: &str, args: &AddArgs, json_out: bool) -> Result<(), Failure> {
    validate_queue(&args.queue)?;
    let payload = json_arg(args.payload.as_deref().unwrap_or("{}"), "the payload")?;
    let broker = crate::connection::broker(url)?;
    let next = broker.schedule(
        &Schedule::new(&args.name, &args.cron, &args.queue, &payload)
            .time_zone(&args.tz)
            .priority(args.priority)
            .max_attempts(args.max_attempts)
            .skip_missed(args.skip_missed),
    )?;
    Ok(print_lines([if json_out {
        json!({"name": args.name, "next_run_at": rfc3339(next)}).to_string()
    } else {
        format!("schedule {} next runs at {}", args.name, rfc3339(next))
    }])?)
}

fn list(url: &str, json_out: bool) -> Result<(), Failure> {
    let broker = crate::connection::broker(url)?;
    let schedules = broker.schedules()?;
    if json_out {
        return Ok(print_lines(schedules.iter().map(|s| {
            json!({
                "name": s.name,
                "cron": s.cron,
                "time_zone": s.time_zone,
                "queue": s.queue,
                "payload": s.payload,
                "priority": s.priority,
                "max_attempts": s.max_attempts,
                "skip_missed": s.skip_missed,
                "next_run_at": rfc3339(s.next_run_at),
                "last_run_at": s.last_run_at.map(rfc3339),
                "last_job_id": s.last_job_id,
            })
            .to_string()
        }))?);
    }
    let mut t = Table::new([
        "name",
        "cron",
        "time_zone",
        "queue",
        "next_run_at",
        "last_run_at",
    ]);
    for s in &schedules {
        t.row([
            s.name.clone(),
            s.cron.clone(),
            s.time_zone.clone(),
            s.queue.clone(),
            rfc3339(s.next_run_at)[..19].to_string(),
            s.last_run_at
                .map(|t| rfc3339(t)[..19].to_string())
                .unwrap_or_default(),
        ]);
    }
    Ok(print_lines(t.render().lines().map(str::to_owned))?)
}

fn remove(url: &str, args: &NameArgs, json_out: bool) -> Result<(), Failure> {
    let broker = crate::connection::broker(url)?;
    if !broker.unschedule(&args.name)? {
        return Err(Failure::failed(format!("no schedule {:?}", args.name)));
    }
    Ok(print_lines([if json_out {
        json!({"name": args.name, "removed": true}).to_string()
    } else {
        format!("schedule {} removed", args.name)
    }])?)
}
