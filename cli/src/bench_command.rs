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
    #[command(flatten)]
    pub output: crate::output::JsonFlag,
}

/// Runs the benchmark on `url` (given with `--url` only: `$DATABASE_URL` alone does not send
/// a benchmark to the user's database), or on a private throwaway cluster without one.
/// Installs the pgbroker schema there and uses (then drops, also on error and Ctrl-C, which
/// exits 130) a `pgbroker_bench` schema.
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
        let lines = bench::list(&options)
            .into_iter()
            .map(|(name, about)| format!("{name:<24} {about}"));
        return Ok(crate::output::print_lines(lines)?);
    }
    bench::validate(&options).map_err(Failure::usage)?;
    ctrlc::set_handler(|| {
        bench::interrupt();
        crate::output::note(
            "interrupted: ending the current measurement and dropping what the benchmark created",
        );
    })
    .map_err(|e| Failure::failed(format!("cannot handle Ctrl-C: {e}")))?;
    // Text: each workload's row as soon as it is measured (a full run takes minutes).
    let mut header = false;
    let mut print_row = |row: &bench::Row| {
        let mut lines = Vec::new();
        if !std::mem::replace(&mut header, true) {
            lines.extend(bench::header_lines());
        }
        lines.push(bench::row_line(row));
        let _ = crate::output::print_lines(lines);
    };
    let result = if json {
        bench::run(url, &options, &mut |_| {})
    } else {
        bench::run(url, &options, &mut print_row)
    };
    if bench::interrupted() {
        return Err(Failure::interrupted());
    }
    let report = result?;
    Ok(crate::output::print_text(&if json {
        format!("{}\n", report.to_json())
    } else {
        report.footer()
    })?)
}
