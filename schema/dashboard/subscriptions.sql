-- Dashboard overview: every subscription with its live members, retrying and dead events (lag
-- comes per partition from subscription_partitions.sql, counted up to a cap).
SELECT s.name,
       array_to_string(s.patterns, ' ')                                        AS patterns,
       s.partitions,
       (SELECT count(*) FROM pgbroker.subscription_members m
         WHERE m.subscription = s.name)                                        AS members,
       (SELECT count(*) FROM pgbroker.event_retries r
         WHERE r.subscription = s.name AND r.dead)                             AS dead,
       (SELECT count(*) FROM pgbroker.event_retries r
         WHERE r.subscription = s.name AND NOT r.dead)                         AS retrying
  FROM pgbroker.subscriptions s
 ORDER BY s.name
