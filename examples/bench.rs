//! The benchmark as a library call: the same engine as `pgbroker bench`.
//!
//! ```text
//! cargo run --release --example bench -- [MESSAGES] [DATABASE_URL]
//! ```
//!
//! Without a URL it starts a private throwaway PostgreSQL.

#[path = "../src/bin/pgbroker/bench/mod.rs"]
#[allow(dead_code)] // the command uses more of it than this example
mod bench;
#[path = "../src/bin/pgbroker/output.rs"]
#[allow(dead_code)]
mod output;

fn main() -> Result<(), bench::BoxError> {
    let mut args = std::env::args().skip(1);
    let messages = match args.next() {
        Some(n) => n.parse()?,
        None => 20_000,
    };
    let url = args.next().or_else(|| std::env::var("DATABASE_URL").ok());
    let options = bench::Options {
        messages,
        ..bench::Options::default()
    };
    let report = bench::run(url.as_deref(), &options)?;
    print!("{}", report.table());
    Ok(())
}
