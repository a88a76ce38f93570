-- Dashboard overview: every subscription with its lag summed over partitions (events behind,
-- the oldest one's age, how many wait only for the xid8 horizon and the transaction holding
-- it), its live members and its dead letters.
SELECT s.name,
       array_to_string(s.patterns, ' ')                                        AS patterns,
       s.partitions,
       (SELECT count(*) FROM pgbroker.subscription_members m
         WHERE m.subscription = s.name)                                        AS members,
       coalesce(l.events_behind, 0)                                            AS events_behind,
       extract(epoch FROM l.oldest_age)::float8                                AS oldest_secs,
       coalesce(l.beyond_horizon, 0)                                           AS beyond_horizon,
       l.horizon_pid,
       extract(epoch FROM l.horizon_age)::float8                               AS horizon_secs,
       (SELECT count(*) FROM pgbroker.event_retries r
         WHERE r.subscription = s.name AND r.dead)                             AS dead,
       (SELECT count(*) FROM pgbroker.event_retries r
         WHERE r.subscription = s.name AND NOT r.dead)                         AS retrying
  FROM pgbroker.subscriptions s
  LEFT JOIN LATERAL (
        SELECT sum(events_behind)::bigint  AS events_behind,
               max(oldest_age)             AS oldest_age,
               sum(beyond_horizon)::bigint AS beyond_horizon,
               max(horizon_pid)            AS horizon_pid,
               max(horizon_age)            AS horizon_age
          FROM pgbroker.subscription_lag(s.name)) l ON true
 ORDER BY s.name
