-- Dashboard job page: everything about one job.
SELECT id, queue, state::text, jsonb_pretty(payload) AS payload, priority, run_at, attempt,
       max_attempts, coalesce(unique_key, details->>'unique_key') AS unique_key, lease_until,
       worker, last_error, jsonb_pretty(details->'errors') AS errors,
       jsonb_pretty(details->'result') AS result, created_at, finished_at
  FROM pgbroker.jobs
 WHERE id = $1
