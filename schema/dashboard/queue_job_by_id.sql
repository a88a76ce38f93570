-- Dashboard queue page: the job found by its id (the primary key), in the listing's columns.
SELECT id, state::text, priority, run_at, attempt, max_attempts,
       coalesce(unique_key, details->>'unique_key')                 AS unique_key,
       left(payload::text, 160)                                     AS payload,
       last_error, created_at, finished_at
  FROM pgbroker.jobs
 WHERE id = $2 AND queue = $1
