//! `pgbroker bench`: the command-line face of the benchmark engine in `bench/`.

use std::io::IsTerminal;

use clap::Args;

use crate::bench::{self, Options};
use crate::failure::Failure;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Units of work per measured run of each side.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    messages: u64,
    /// Run each side for this many seconds instead of --messages.
    #[arg(long, value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Measure each side this many times, alternating, and keep each side's best (steadier
    /// ratios on a busy machine).
    #[arg(long, default_value_t = 1, value_name = "N")]
    rounds: u32,
    /// Threads of the multi-threaded workloads (the `*_t4` ones).
    #[arg(long, default_value_t = 4, value_name = "N")]
    threads: usize,
    /// Run only these workloads (repeat, or comma-separate; `prefix*` matches a prefix).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    only: Vec<String>,
    /// Full sizes: the 10M-row table watch, and the fixed sizes uncapped.
    #[arg(long)]
    full: bool,
    /// Notifications per second in the latency workload.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    rate: u32,
    /// With the private cluster: keep fsync and synchronous_commit on.
    #[arg(long)]
    durable: bool,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
}

/// Runs the benchmark on `url`, or on a private throwaway cluster without one. Installs the
/// pgbroker schema there and uses (then drops) a `pgbroker_bench` schema.
pub fn bench(url: Option<&str>, args: &BenchArgs, json: bool) -> Result<(), Failure> {
    let options = Options {
        messages: args.messages,
        seconds: args.seconds,
        rounds: args.rounds,
        threads: args.threads,
        only: args.only.clone(),
        full: args.full,
        rate: args.rate,
        durable: args.durable,
        progress: !json && std::io::stderr().is_terminal(),
    };
    if args.list {
        for (name, about) in bench::list(&options) {
            println!("{name:<24} {about}");
        }
        return Ok(());
    }
    bench::validate(&options).map_err(Failure::usage)?;
    let report = bench::run(url, &options)?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
