-- Dashboard overview: every queue's jobs by state and its oldest runnable job's wait (the
-- pgbroker.queue_stats view, what `pgbroker stats` reads too), and the jobs that died in the
-- last minute (by jobs_state_time_idx: state, coalesce(lease_until, finished_at)).
SELECT s.queue, s.available, s.scheduled, s.running, s.completed, s.dead, s.cancelled,
       (SELECT count(*) FROM pgbroker.jobs j
         WHERE j.state = 'dead' AND j.queue = s.queue
           AND coalesce(j.lease_until, j.finished_at) > now() - interval '1 minute')
                                                                    AS dead_last_minute,
       s.oldest_available_secs
  FROM pgbroker.queue_stats s
 ORDER BY s.queue
