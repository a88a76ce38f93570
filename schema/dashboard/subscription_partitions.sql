-- Dashboard: each partition of subscription $1 — its cursor, the events after it that the
-- subscription matches (counted up to $2, in log order by the events_tx_id index, so a
-- subscription far behind costs a bounded scan), the oldest of them, how many of them wait
-- only for the xid8 horizon, and the member holding the partition.
SELECT c.partition,
       c.tx::text || '-' || c.id                                                AS cursor,
       b.behind,
       extract(epoch FROM now() - b.oldest)::float8                             AS oldest_secs,
       b.beyond_horizon,
       (SELECT m.name FROM pgbroker.subscription_members m
         WHERE m.subscription = s.name AND c.partition = ANY (m.partitions)
         LIMIT 1)                                                               AS holder
  FROM pgbroker.subscriptions s
  JOIN pgbroker.subscription_cursors c ON c.subscription = s.name
  LEFT JOIN LATERAL (
        SELECT count(*)                                                          AS behind,
               min(x.created_at)                                                 AS oldest,
               count(*) FILTER (WHERE x.tx >= pg_snapshot_xmin(pg_current_snapshot()))
                                                                                 AS beyond_horizon
          FROM (SELECT ev.tx, ev.created_at
                  FROM pgbroker.events ev
                 WHERE (ev.tx, ev.id) > (c.tx, c.id)
                   AND CASE WHEN s.topic_like IS NULL THEN ev.topic ~ s.topic_regex
                            ELSE ev.topic LIKE ANY (s.topic_like) END
                   AND (s.partitions = 1
                        OR pgbroker.event_partition(ev.key, ev.id, s.partitions) = c.partition)
                 ORDER BY ev.tx, ev.id
                 LIMIT $2) x) b ON true
 WHERE s.name = $1
 ORDER BY c.partition
