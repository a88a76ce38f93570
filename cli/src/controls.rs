//! `pgbroker pause` and `resume`: stop and restart the claims of a queue.

use clap::Args;
use pgbroker::queue::validate_queue;
use serde_json::json;

use crate::failure::Failure;
use crate::output::print_lines;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The queue (1 to 48 characters of A-Z a-z 0-9 _ . : -).
    pub queue: String,
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

pub fn pause(url: &str, args: &QueueArgs, json_out: bool) -> Result<(), Failure> {
    validate_queue(&args.queue)?;
    let broker = crate::connection::broker(url)?;
    let changed = broker.pause_queue(&args.queue)?;
    report(&args.queue, "paused", changed, json_out)
}

pub fn resume(url: &str, args: &QueueArgs, json_out: bool) -> Result<(), Failure> {
    validate_queue(&args.queue)?;
    let broker = crate::connection::broker(url)?;
    let changed = broker.resume_queue(&args.queue)?;
    let state = if changed { "resumed" } else { "not paused" };
    report(&args.queue, state, changed, json_out)
}

fn report(queue: &str, state: &str, changed: bool, json_out: bool) -> Result<(), Failure> {
    Ok(print_lines([if json_out {
        json!({"queue": queue, "state": state, "changed": changed}).to_string()
    } else if changed {
        format!("queue {queue} {state}")
    } else if state == "paused" {
        format!("queue {queue} was paused already")
    } else {
        format!("queue {queue} was {state}")
    }])?)
}
