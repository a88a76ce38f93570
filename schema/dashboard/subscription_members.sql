-- Dashboard subscription page: the processes consuming it and their partitions.
SELECT pid, name, array_to_string(partitions, ', ') AS partitions, joined_at, seen_at
  FROM pgbroker.live_members($1)
 ORDER BY joined_at
