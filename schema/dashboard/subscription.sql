-- Dashboard subscription page: the subscription itself.
SELECT name, array_to_string(patterns, ' ') AS patterns, partitions,
       extract(epoch FROM expire_after)::float8 AS expire_secs, created_at, updated_at
  FROM pgbroker.subscriptions
 WHERE name = $1
