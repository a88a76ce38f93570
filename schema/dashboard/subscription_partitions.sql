-- Dashboard subscription page: each partition's cursor and lag, and who holds it.
SELECT l.part, l.cursor_tx::text || '-' || l.cursor_id AS cursor, l.events_behind,
       extract(epoch FROM l.oldest_age)::float8 AS oldest_secs, l.beyond_horizon,
       l.horizon_pid, extract(epoch FROM l.horizon_age)::float8 AS horizon_secs,
       (SELECT m.name FROM pgbroker.subscription_members m
         WHERE m.subscription = $1 AND l.part = ANY (m.partitions) LIMIT 1) AS holder
  FROM pgbroker.subscription_lag($1) l
 ORDER BY l.part
