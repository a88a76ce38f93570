-- Dashboard subscription page: its dead letters (and retrying events), newest failure first.
SELECT id, tx::text || '-' || id AS position, topic, key, left(payload::text, 300) AS payload,
       attempt, dead, last_error, failed_at, run_at
  FROM pgbroker.event_retries
 WHERE subscription = $1
 ORDER BY dead DESC, failed_at DESC
 LIMIT 100
