//! Peers modelled by their own SQL, run as a third side of the workloads they compete in, on
//! the same database in the same run: so a ratio to the best peer is measured the way the
//! ratio to raw PostgreSQL is, not carried over from another day's run. Each peer's tables
//! live in the bench's schema, created and emptied with its other tables.
//!
//! - [`pgmq`]: the best peer of the batched lease-mode comparison in issue #14.
//! - [`graphile`]: graphile-worker, the best peer of the one-at-a-time comparisons.

mod graphile;
mod pgmq;

use pgbroker::postgres::binary_copy::BinaryCopyInWriter;
use pgbroker::postgres::types::{ToSql, Type};

use super::harness::Ctx;
use super::Result;

pub use graphile::graphile;
pub use pgmq::pgmq;

/// Every peer's tables and functions, created with the bench's other tables.
pub const CREATE: [&str; 2] = [pgmq::CREATE, graphile::CREATE];

/// The peers' tables, emptied between the warm-up and the measured run.
pub const TABLES: &str =
    "pgbroker_bench.q_pgmq, pgbroker_bench.gw_jobs, pgbroker_bench.gw_job_queues";

/// Writes `n` copies of `row` into `table_columns` (`schema.table (columns)`) in COPYs of at
/// most 10 000, as the other sides are seeded, then analyzes the table.
fn copy_seed(
    ctx: &Ctx,
    table_columns: &str,
    types: &[Type],
    row: &[&(dyn ToSql + Sync)],
    n: u64,
) -> Result<()> {
    let mut c = ctx.client()?;
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        let sink = c.copy_in(&format!("COPY {table_columns} FROM STDIN (FORMAT binary)"))?;
        let mut w = BinaryCopyInWriter::new(sink, types);
        for _ in 0..k {
            w.write(row)?;
        }
        w.finish()?;
        left -= k;
    }
    let table = table_columns.split(' ').next().unwrap_or(table_columns);
    c.batch_execute(&format!("ANALYZE {table}"))?;
    Ok(())
}
