-- Dashboard action: every dead job of a queue runs again (pgbroker.retry on each).
SELECT count(*) FILTER (WHERE pgbroker.retry(id))
  FROM pgbroker.jobs
 WHERE queue = $1 AND state = 'dead'
