-- Dashboard webhooks page: deliveries given up (newest first), and whether one is marked for
-- another try.
SELECT endpoint_id, event_id, tx::text || '-' || event_id AS position, topic,
       left(payload::text, 300) AS payload, attempts, last_status, last_error, failed_at, redrive
  FROM pgbroker.webhook_dead_deliveries
 ORDER BY failed_at DESC
 LIMIT 100
