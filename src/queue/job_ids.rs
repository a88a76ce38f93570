//! `JobIds`: job ids a broker reserved, so that a single enqueue's INSERT returns nothing.
//!
//! `RETURNING id` cost each single enqueue 11 000 server instructions (callgrind, PostgreSQL
//! 15: the portal stores the returned row before sending it, and the identity's `nextval`
//! runs in the statement). Reserving the ids costs ~4 500 per id instead (a `nextval` each,
//! 2 500, and a round trip per block): a single enqueue went from 139 000 to 132 700.
//!
//! Ids stay unique. One broker hands them out in increasing order (except while threads
//! reserve blocks at once), but jobs of different brokers, and jobs enqueued in SQL or in a
//! transaction (`enqueue_in`, which draw from the sequence), are no longer numbered in the
//! order they were enqueued. Claims are ordered by `(priority, run_at, id)`, and `run_at` is
//! the enqueueing transaction's time, so the id only orders jobs enqueued at the same
//! microsecond.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::pool::CachedClient;
use crate::topic::reserve_ids;
use crate::{Error, ErrorKind, Result};

/// The most job ids reserved per round trip. A broker's first enqueue takes its id from the
/// sequence; then blocks grow from [`FIRST_BLOCK`] to this, so that a short-lived broker (the
/// `pgbroker enqueue` command) wastes few ids.
pub(crate) const ID_BLOCK: i32 = 128;

/// The first block a broker reserves.
const FIRST_BLOCK: i32 = 16;

/// Reserves `$1` ids of the jobs' identity sequence, in increasing order.
const NEXT_JOB_IDS_SQL: &str = "SELECT array_agg(nextval('pgbroker.jobs_id_seq')) \
     FROM generate_series(1, $1::integer)";

/// The ids a broker reserved and has not handed out yet, smallest first.
#[derive(Debug, Default)]
pub(crate) struct JobIds {
    reserved: Mutex<Reserved>,
}

#[derive(Debug, Default)]
struct Reserved {
    ids: VecDeque<i64>,
    /// How many to reserve when `ids` runs out; 0: none, take this id from the sequence.
    next_block: i32,
}

/// What [`JobIds::take`] found.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A reserved id.
    Id(i64),
    /// None reserved yet: take this one from the sequence.
    FromSequence,
    /// None left: reserve this many.
    Reserve(i32),
}

impl JobIds {
    fn reserved(&self) -> MutexGuard<'_, Reserved> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Next {
        let mut r = self.reserved();
        if let Some(id) = r.ids.pop_front() {
            return Next::Id(id);
        }
        let n = r.next_block;
        r.next_block = (n * 2).clamp(FIRST_BLOCK, ID_BLOCK);
        if n == 0 {
            Next::FromSequence
        } else {
            Next::Reserve(n)
        }
    }

    /// An id for one job, or `None` when the enqueue should take it from the sequence (the
    /// broker's first); reserves a block on `conn` when none is left. The round trip is made
    /// without the lock, so threads that find ids are not held up by it.
    pub(crate) fn next(&self, conn: &mut CachedClient) -> Result<Option<i64>> {
        let n = match self.take() {
            Next::Id(id) => return Ok(Some(id)),
            Next::FromSequence => return Ok(None),
            Next::Reserve(n) => n,
        };
        let stmt = conn.statement(NEXT_JOB_IDS_SQL)?;
        let mut block: VecDeque<i64> = reserve_ids(&mut **conn, &stmt, n)
            .map_err(|e| e.context("reserving job ids"))?
            .into();
        let id = block
            .pop_front()
            .ok_or_else(|| Error::new(ErrorKind::Db, "reserving job ids returned none"))?;
        self.reserved().ids.append(&mut block);
        Ok(Some(id))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_first_id_comes_from_the_sequence_then_blocks_grow_to_the_most() {
        let ids = JobIds::default();
        assert_eq!(ids.take(), Next::FromSequence);
        for n in [16, 32, 64, 128, 128] {
            assert_eq!(ids.take(), Next::Reserve(n));
        }
        ids.reserved().ids.extend([7, 8]);
        assert_eq!(ids.take(), Next::Id(7));
        assert_eq!(ids.take(), Next::Id(8));
        assert_eq!(ids.take(), Next::Reserve(128));
    }
}
