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
mod serve;
mod setup;
mod stats;
mod topic;
mod webhooks;

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
    after_help = "The database comes from --url, $DATABASE_URL, or libpq's PG* variables \
                  (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, ...) and ~/.pgpass. \
                  Exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error."
)]
struct Cli {
    /// Connection URL (postgres://user@host/db?sslmode=verify-full) or libpq key=value string;
    /// defaults to $DATABASE_URL, then the PG* variables (not for bench, which runs on a
    /// private cluster unless --url is given; not for demo).
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,

    /// The URL leads to a transaction-mode pooler (PgBouncer pool_mode=transaction): no
    /// named prepared statements, no session state; listening needs --session-url.
    /// Also PGBROKER_TRANSACTION_POOLING=1.
    #[arg(long, global = true)]
    transaction_pooling: bool,

    /// With --transaction-pooling: a direct (session) connection URL for what needs a
    /// session (LISTEN, advisory locks). Also $PGBROKER_SESSION_URL.
    #[arg(long, global = true, value_name = "URL")]
    session_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the pgbroker schema (tables, functions) and print its version.
    Setup(output::JsonFlag),
    /// Upgrade the pgbroker schema to this version (same as setup; says what changed).
    Migrate(output::JsonFlag),
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
    /// Run a dead or cancelled job again (re-drive it; `retry` is the old name).
    #[command(alias = "retry")]
    Redrive(queue::JobIdArgs),
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
    /// On a private throwaway PostgreSQL, or on the database of an explicit --url ($DATABASE_URL
    /// alone is not used): it installs the pgbroker schema there and uses, then drops (also on
    /// error and Ctrl-C), a `pgbroker_bench` schema. Each workload runs raw and through
    /// pgbroker on fresh tables, after a warm-up; its row is printed as it finishes; `-` marks
    /// a workload pgbroker has no counterpart for.
    Bench(bench_command::BenchArgs),
    /// Start a private throwaway PostgreSQL and show pub/sub at work (takes no --url).
    Demo(output::JsonFlag),
    /// Serve pgbroker over HTTP until Ctrl-C: Server-Sent Events (GET /events?topic=...),
    /// ingest (POST /topics/TOPIC, POST /queues/QUEUE/jobs), webhook delivery, GET /metrics,
    /// GET /healthz and the dashboard (/ui/).
    Serve(serve::ServeArgs),
    /// Manage webhook endpoints (delivered by `pgbroker serve`): add, list, disable, enable,
    /// remove, redrive, dead.
    Webhooks(webhooks::WebhooksArgs),
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
    connection::Pooling::init(cli.transaction_pooling, cli.session_url.clone());
    match cli.command {
        Command::Setup(o) => setup::setup(target.require()?, o.json),
        Command::Migrate(o) => setup::migrate(target.require()?, o.json),
        Command::Notify(args) => pubsub::notify(target.require()?, &args),
        Command::Listen(args) => pubsub::listen(target.require()?, &args),
        Command::Publish(args) => topic::publish(target.require()?, &args),
        Command::Tail(args) => topic::tail(target.require()?, &args),
        Command::Enqueue(args) => queue::enqueue(target.require()?, &args),
        Command::Jobs(args) => queue::jobs(target.require()?, &args, args.output.json),
        Command::Redrive(args) => queue::redrive(target.require()?, &args, args.output.json),
        Command::Cancel(args) => queue::cancel(target.require()?, &args, args.output.json),
        Command::Pause(args) => controls::pause(target.require()?, &args, args.output.json),
        Command::Resume(args) => controls::resume(target.require()?, &args, args.output.json),
        Command::Schedule(args) => schedule::schedule(target.require()?, &args),
        Command::Stats(args) => stats::stats(target.require()?, &args, args.output.json),
        Command::Bench(args) => {
            // Only an explicit --url sends the benchmark (minutes of load, a million rows) to a
            // database; $DATABASE_URL is for the commands people run against their own.
            let url = cli.url.as_deref().filter(|u| !u.trim().is_empty());
            if url.is_none() && target.url().is_some() && !args.output.json {
                output::note("$DATABASE_URL is not used by bench: pass --url to measure there");
            }
            bench_command::bench(url, &args, args.output.json)
        }
        Command::Demo(o) => {
            if cli.url.is_some() {
                return Err(Failure::usage(
                    "demo runs on a private throwaway PostgreSQL of its own and takes no --url \
                     (try `pgbroker notify` and `pgbroker listen` on your database)",
                ));
            }
            demo::demo(o.json)
        }
        Command::Serve(args) => serve::serve(target.require()?, &args),
        Command::Webhooks(args) => webhooks::webhooks(target.require()?, &args),
    }
}
