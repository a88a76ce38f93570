//! `pgbroker`: install the schema, send and receive notifications, publish and tail durable
//! events, enqueue and manage jobs, watch the broker's health, and measure pgbroker against
//! the raw PostgreSQL limit on the same database.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error.
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, clippy::all)]

mod bench;
mod bench_command;
mod connection;
mod controls;
mod demo;
mod failure;
mod input;
mod output;
mod pubsub;
mod queue;
mod schedule;
mod setup;
mod stats;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connection::Target;
use crate::failure::Failure;

/// PostgreSQL as a message broker: pub/sub, a durable event log and a job queue.
#[derive(Debug, Parser)]
#[command(
    name = "pgbroker",
    version,
    about,
    propagate_version = true,
    after_help = "The database comes from --url or $DATABASE_URL. \
                  Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error."
)]
struct Cli {
    /// Connection URL (postgres://user@host/db); defaults to $DATABASE_URL.
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,

    /// Machine-readable JSON output instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the pgbroker schema (tables, functions) and print its version.
    Setup,
    /// Upgrade the pgbroker schema to this version (same as setup; says what changed).
    Migrate,
    /// Send a notification: PAYLOAD as given, or one notification per line of stdin with `-`.
    Notify(pubsub::NotifyArgs),
    /// Print notifications as JSON lines until killed, --count or --timeout.
    Listen(pubsub::ListenArgs),
    /// Publish a durable event on TOPIC: PAYLOAD as given, or one per line of stdin with `-`;
    /// prints each event's id.
    Publish(topic::PublishArgs),
    /// Print a subscription's events as JSON lines, acknowledging them as they are printed,
    /// until killed, --count or --timeout.
    Tail(topic::TailArgs),
    /// Enqueue a job on QUEUE: PAYLOAD as given, or one per line of stdin with `-`; prints
    /// each job's id.
    Enqueue(queue::EnqueueArgs),
    /// List jobs, oldest first.
    Jobs(queue::JobsArgs),
    /// Run a dead or cancelled job again.
    Retry(queue::JobIdArgs),
    /// Cancel an available or running job.
    Cancel(queue::JobIdArgs),
    /// Pause a queue: no worker claims its jobs until `resume`; enqueues go on, running jobs
    /// finish.
    Pause(controls::QueueArgs),
    /// Resume a paused queue; its idle workers start at once.
    Resume(controls::QueueArgs),
    /// Periodic jobs: add, list or remove schedules (cron expressions with time zones).
    Schedule(schedule::ScheduleArgs),
    /// Broker health: notification queue, schema, connections, horizon hold-back.
    Stats(stats::StatsArgs),
    /// Measure pgbroker against the raw PostgreSQL limit for the same work.
    ///
    /// On the database of --url / $DATABASE_URL when given (it installs the pgbroker schema
    /// there and uses, then drops, a `pgbroker_bench` schema), else on a private throwaway
    /// PostgreSQL. Each workload runs raw and through pgbroker on fresh tables, after a
    /// warm-up; `-` marks a pgbroker side whose module has not landed yet.
    Bench(bench_command::BenchArgs),
    /// Start a private throwaway PostgreSQL and show pub/sub at work.
    Demo,
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print();
            ExitCode::from(failure.code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let target = Target::from_args(cli.url.as_deref());
    let json = cli.json;
    match cli.command {
        Command::Setup => setup::setup(target.require()?, json),
        Command::Migrate => setup::migrate(target.require()?, json),
        Command::Notify(args) => pubsub::notify(target.require()?, &args),
        Command::Listen(args) => pubsub::listen(target.require()?, &args),
        Command::Publish(args) => topic::publish(target.require()?, &args),
        Command::Tail(args) => topic::tail(target.require()?, &args),
        Command::Enqueue(args) => queue::enqueue(target.require()?, &args),
        Command::Jobs(args) => queue::jobs(target.require()?, &args, json),
        Command::Retry(args) => queue::retry(target.require()?, &args, json),
        Command::Cancel(args) => queue::cancel(target.require()?, &args, json),
        Command::Pause(args) => controls::pause(target.require()?, &args, json),
        Command::Resume(args) => controls::resume(target.require()?, &args, json),
        Command::Schedule(args) => schedule::schedule(target.require()?, &args, json),
        Command::Stats(args) => stats::stats(target.require()?, &args, json),
        Command::Bench(args) => bench_command::bench(target.url(), &args, json),
        Command::Demo => demo::demo(json),
    }
}
