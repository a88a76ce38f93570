-- Dashboard webhooks page: every endpoint (pgbroker.webhook_list), header names only (their
-- values may be credentials).
SELECT id, url, array_to_string(patterns, ' ') AS patterns, enabled, disabled_reason,
       (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(headers) k) AS header_names,
       attempt, next_attempt_at, last_status, last_error, delivered, failed, dead, created_at
  FROM pgbroker.webhook_list()
 ORDER BY id
