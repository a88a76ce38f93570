-- Dashboard: each partition of subscription $1 — its cursor, the events after it that the
-- subscription matches (counted up to $2, so a subscription far behind costs a bounded scan),
-- the age of the first of them in log order, how many of them wait only for the xid8 horizon,
-- and the member holding the partition.
SELECT c.partition,
       c.tx::text || '-' || c.id                                                AS cursor,
       b.behind,
       extract(epoch FROM now() - f.created_at)::float8                         AS oldest_secs,
       b.beyond_horizon,
       (SELECT m.name FROM pgbroker.subscription_members m
         WHERE m.subscription = s.name AND c.partition = ANY (m.partitions)
         LIMIT 1)                                                               AS holder
  FROM pgbroker.subscriptions s
  JOIN pgbroker.subscription_cursors c ON c.subscription = s.name
  LEFT JOIN LATERAL (
        SELECT count(*)                                                          AS behind,
               count(*) FILTER (WHERE x.tx >= pg_snapshot_xmin(pg_current_snapshot()))
                                                                                 AS beyond_horizon
          FROM (SELECT ev.tx
                  FROM pgbroker.events ev
                 WHERE (ev.tx, ev.id) > (c.tx, c.id)
                   AND CASE WHEN s.topic_like IS NULL THEN ev.topic ~ s.topic_regex
                            ELSE ev.topic LIKE ANY (s.topic_like) END
                   AND (s.partitions = 1
                        OR pgbroker.event_partition(ev.key, ev.id, s.partitions) = c.partition)
                 LIMIT $2) x) b ON true
  LEFT JOIN LATERAL (
        SELECT ev.created_at
          FROM pgbroker.events ev
         WHERE (ev.tx, ev.id) > (c.tx, c.id)
           AND CASE WHEN s.topic_like IS NULL THEN ev.topic ~ s.topic_regex
                    ELSE ev.topic LIKE ANY (s.topic_like) END
           AND (s.partitions = 1
                OR pgbroker.event_partition(ev.key, ev.id, s.partitions) = c.partition)
         ORDER BY ev.tx, ev.id
         LIMIT 1) f ON true
 WHERE s.name = $1
 ORDER BY c.partition
