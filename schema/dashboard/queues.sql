-- Dashboard overview: every queue's jobs by state, the oldest runnable job's wait, and the
-- jobs that died in the last minute. One pass over pgbroker.jobs.
SELECT queue,
       count(*) FILTER (WHERE state = 'available' AND run_at <= now())            AS available,
       count(*) FILTER (WHERE state = 'available' AND run_at > now())             AS scheduled,
       count(*) FILTER (WHERE state = 'running')                                  AS running,
       count(*) FILTER (WHERE state = 'completed')                                AS completed,
       count(*) FILTER (WHERE state = 'dead')                                     AS dead,
       count(*) FILTER (WHERE state = 'cancelled')                                AS cancelled,
       count(*) FILTER (WHERE state = 'dead' AND finished_at > now() - interval '1 minute')
                                                                                  AS dead_last_minute,
       extract(epoch FROM now() - min(run_at) FILTER (
           WHERE state = 'available' AND run_at <= now()))::float8                AS oldest_secs
  FROM pgbroker.jobs
 GROUP BY queue
 ORDER BY queue
