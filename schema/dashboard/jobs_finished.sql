-- Dashboard overview: how many jobs rows were ever deleted (completed jobs are deleted), from
-- the statistics collector; the page turns two samples into jobs finished per minute.
SELECT coalesce(sum(n_tup_del), 0)::bigint
  FROM pg_stat_user_tables
 WHERE relid = 'pgbroker.jobs'::regclass
