-- Dashboard: the transaction holding the xid8 horizon back (the oldest one with a
-- transaction id, other than ours): its pid and age in seconds; no row when none does.
SELECT a.pid, extract(epoch FROM now() - a.xact_start)::float8
  FROM pg_stat_activity a
 WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
 ORDER BY age(a.backend_xid) DESC
 LIMIT 1
