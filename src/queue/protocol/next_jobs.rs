//! The choice of jobs shared by the claim (lease mode) and the take (transactional mode):
//! which available jobs, in which order, locked how, and the statements' size classes.

/// The condition choosing the jobs of a claim or a take: `j.id = ANY (ARRAY(...))` of at
/// most `$limit` (a parameter, as `"$2"`) available jobs of queue `$1`, in claim order, locked
/// with `SKIP LOCKED`, unless the queue is gated (paused or limited: it has a row in
/// `pgbroker.queue_controls`, see src/queue/controls.rs; uncorrelated, so one index probe per
/// statement). `$extra`: a further condition, evaluated once (`""` for none).
///
/// `id = ANY (ARRAY(...))`, not a join: see `pgbroker.claim` in schema/functions/queue.sql. Two LIMITs
/// because a prepared statement gets a generic plan (planned once per connection) only when
/// that plan looks no dearer than the plans made for its parameters' values, and `LIMIT $n`
/// alone is costed at 10% of the queue's rows: PostgreSQL planned every claim and take again
/// (callgrind: 0.4 million of the server's 3.7 million instructions per take of 100). A
/// literal inner limit `$candidates`, ten times the batch's size class, brings the generic
/// estimate down to that class (10% of it), so the plan is reused after five calls. The inner
/// limit never binds: the outer one stops pulling rows, and so locking them, first.
macro_rules! next_jobs_sql {
    ($candidates:literal, $limit:literal, $extra:literal) => {
        concat!(
            "j.id = ANY (ARRAY(
               SELECT c.id FROM (
                   SELECT p.id FROM pgbroker.jobs p
                    WHERE p.queue = $1 AND p.state = 'available' AND p.run_at <= now()
                      AND NOT EXISTS (SELECT FROM pgbroker.queue_controls c WHERE c.queue = $1)",
            $extra,
            "
                    ORDER BY p.priority, p.run_at, p.id
                    LIMIT ",
            $candidates,
            "
                    FOR UPDATE SKIP LOCKED) c
                LIMIT ",
            $limit,
            "::integer))"
        )
    };
}
pub(crate) use next_jobs_sql;

/// `[$m!(candidates, args...); 12]`: a statement per size class of a batch, see
/// [`size_class`].
macro_rules! by_size_class {
    ($m:ident!($($args:tt)*)) => {
        [
            $m!("10", $($args)*),
            $m!("20", $($args)*),
            $m!("40", $($args)*),
            $m!("80", $($args)*),
            $m!("160", $($args)*),
            $m!("320", $($args)*),
            $m!("640", $($args)*),
            $m!("1280", $($args)*),
            $m!("2560", $($args)*),
            $m!("5120", $($args)*),
            $m!("10240", $($args)*),
            $m!("ALL", $($args)*),
        ]
    };
}
pub(crate) use by_size_class;

/// The index in [`by_size_class`]'s array of a batch of at most `max` jobs: the smallest class
/// (1, 2, 4, ... 1024 jobs, then unbounded) that holds it.
pub(crate) fn size_class(max: i32) -> usize {
    let class = (max.max(1) as u32).next_power_of_two().trailing_zeros() as usize;
    class.min(11)
}
