-- Dashboard action: a waiting (delayed or retrying) job becomes runnable now; wakes workers.
WITH u AS (UPDATE pgbroker.jobs SET run_at = now()
            WHERE id = $1 AND state = 'available' RETURNING queue)
SELECT queue, pgbroker.wake(queue) FROM u
