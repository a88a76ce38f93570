-- Dashboard queue page: one page of a queue's jobs, newest first, by the primary key
-- (keyset pagination: $3 is the last id of the previous page). $2 filters by state; $4
-- finds jobs by unique key or by text in their payload (a substring, case-sensitive; this
-- scans the queue's jobs newest first until a page is full). A search by id is
-- queue_job_by_id.sql.
SELECT id, state::text, priority, run_at, attempt, max_attempts,
       coalesce(unique_key, details->>'unique_key')                 AS unique_key,
       left(payload::text, 160)                                     AS payload,
       last_error, created_at, finished_at
  FROM pgbroker.jobs
 WHERE queue = $1
   AND ($2::text IS NULL OR state::text = $2)
   AND ($3::bigint IS NULL OR id < $3)
   AND ($4::text IS NULL
        OR unique_key = $4
        OR details->>'unique_key' = $4
        OR strpos(payload::text, $4) > 0)
 ORDER BY id DESC
 LIMIT $5
