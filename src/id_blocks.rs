//! `IdBlocks`: ids of a sequence that a broker reserved in blocks, so that a single publish or
//! enqueue in its own transaction sends its row's id and its INSERT returns nothing.
//!
//! `RETURNING id` cost each single-row INSERT about 11 000 server instructions (callgrind,
//! PostgreSQL 15: the portal stores the returned row before sending it, and the column
//! default's `nextval` runs in the statement). A reserved id costs about 4 500 instead (its
//! `nextval`, plus a round trip per block).
//!
//! Ids stay unique. One broker hands them out in increasing order (except while threads reserve
//! blocks at once), but rows of different brokers, and rows written in SQL or in a caller's
//! transaction (which draw from the sequence), are no longer numbered in the order they were
//! written. Events are read in `(tx, id)` order, so ids only order the events of one
//! transaction; jobs are claimed in `(priority, run_at, id)` order, so ids only order jobs
//! enqueued at the same microsecond.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use postgres::GenericClient;

use crate::pool::CachedClient;
use crate::statement::Stmt;
use crate::{Error, ErrorKind, Result};

/// Reserves `$1` ids of the log's sequence, in increasing order (batches use it too).
pub(crate) const NEXT_EVENT_IDS_SQL: &str = "SELECT array_agg(nextval('pgbroker.events_id_seq')) \
     FROM generate_series(1, $1::integer)";

/// Reserves `$1` ids of the jobs' identity sequence, in increasing order.
pub(crate) const NEXT_JOB_IDS_SQL: &str = "SELECT array_agg(nextval('pgbroker.jobs_id_seq')) \
     FROM generate_series(1, $1::integer)";

/// The most ids reserved per round trip.
pub(crate) const MAX_BLOCK: i32 = 128;

/// The ids a broker reserved from one sequence and has not handed out yet, smallest first.
#[derive(Debug)]
pub(crate) struct IdBlocks {
    /// [`NEXT_EVENT_IDS_SQL`] or [`NEXT_JOB_IDS_SQL`].
    sql: &'static str,
    /// What the ids number, for errors ("event", "job").
    what: &'static str,
    /// The first block's size; blocks double up to [`MAX_BLOCK`].
    first_block: i32,
    reserved: Mutex<Reserved>,
}

#[derive(Debug)]
struct Reserved {
    ids: VecDeque<i64>,
    /// How many to reserve when `ids` runs out; 0: none, take this id from the sequence.
    next_block: i32,
}

/// What [`IdBlocks::take`] found.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A reserved id.
    Id(i64),
    /// None reserved yet: take this one from the sequence.
    FromSequence,
    /// None left: reserve this many.
    Reserve(i32),
}

impl IdBlocks {
    /// Event ids: a block of [`MAX_BLOCK`] from the first publish (publishers publish many).
    pub(crate) fn events() -> IdBlocks {
        IdBlocks::new(NEXT_EVENT_IDS_SQL, "event", MAX_BLOCK, MAX_BLOCK)
    }

    /// Job ids: the first enqueue's id comes from the sequence, then blocks grow from 16, so a
    /// short-lived broker (the `pgbroker enqueue` command) wastes few ids.
    pub(crate) fn jobs() -> IdBlocks {
        IdBlocks::new(NEXT_JOB_IDS_SQL, "job", 0, 16)
    }

    /// `next_block` 0 makes the first id come from the sequence, `first_block` the size of the
    /// block after that.
    fn new(sql: &'static str, what: &'static str, next_block: i32, first_block: i32) -> IdBlocks {
        IdBlocks {
            sql,
            what,
            first_block,
            reserved: Mutex::new(Reserved {
                ids: VecDeque::new(),
                next_block,
            }),
        }
    }

    fn reserved(&self) -> MutexGuard<'_, Reserved> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Next {
        let mut r = self.reserved();
        if let Some(id) = r.ids.pop_front() {
            return Next::Id(id);
        }
        let n = r.next_block;
        r.next_block = (n * 2).clamp(self.first_block, MAX_BLOCK);
        if n == 0 {
            Next::FromSequence
        } else {
            Next::Reserve(n)
        }
    }

    /// An id for one row, or `None` when the caller should take it from the sequence (the
    /// first of [`IdBlocks::jobs`]); reserves a block on `conn` when none is left. The round
    /// trip is made without the lock, so threads that find ids are not held up by it.
    pub(crate) fn next(&self, conn: &mut CachedClient) -> Result<Option<i64>> {
        let n = match self.take() {
            Next::Id(id) => return Ok(Some(id)),
            Next::FromSequence => return Ok(None),
            Next::Reserve(n) => n,
        };
        let stmt = conn.statement(self.sql)?;
        let mut block: VecDeque<i64> = reserve_ids(&mut **conn, &stmt, n, self.what)?.into();
        let id = block.pop_front().ok_or_else(|| no_ids(self.what, n, 0))?;
        self.reserved().ids.append(&mut block);
        Ok(Some(id))
    }
}

/// `n` new ids of a sequence, increasing; `stmt` is [`NEXT_EVENT_IDS_SQL`] or
/// [`NEXT_JOB_IDS_SQL`], `what` names the rows for the error.
pub(crate) fn reserve_ids(
    client: &mut impl GenericClient,
    stmt: &Stmt,
    n: i32,
    what: &str,
) -> Result<Vec<i64>> {
    let row = stmt.query_one(client, &[&n])?;
    let mut ids: Vec<i64> = row.try_get::<_, Option<Vec<i64>>>(0)?.unwrap_or_default();
    ids.sort_unstable();
    if ids.len() != n.max(0) as usize {
        return Err(no_ids(what, n, ids.len()));
    }
    Ok(ids)
}

fn no_ids(what: &str, asked: i32, got: usize) -> Error {
    Error::new(
        ErrorKind::Db,
        format!("reserving {asked} {what} ids returned {got}"),
    )
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn job_ids_come_first_from_the_sequence_then_in_growing_blocks() {
        let ids = IdBlocks::jobs();
        assert_eq!(ids.take(), Next::FromSequence);
        for n in [16, 32, 64, 128, 128] {
            assert_eq!(ids.take(), Next::Reserve(n));
        }
        ids.reserved().ids.extend([7, 8]);
        assert_eq!(ids.take(), Next::Id(7));
        assert_eq!(ids.take(), Next::Id(8));
        assert_eq!(ids.take(), Next::Reserve(128));
    }

    #[test]
    fn event_ids_come_in_full_blocks_from_the_first() {
        let ids = IdBlocks::events();
        assert_eq!(ids.take(), Next::Reserve(MAX_BLOCK));
        assert_eq!(ids.take(), Next::Reserve(MAX_BLOCK));
        ids.reserved().ids.extend([3]);
        assert_eq!(ids.take(), Next::Id(3));
    }
}
