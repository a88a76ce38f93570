-- Dashboard events page: one event whole.
SELECT tx::text || '-' || id AS position, topic, key, jsonb_pretty(payload) AS payload,
       jsonb_pretty(headers) AS headers, created_at
  FROM pgbroker.events
 WHERE tx = $1::text::xid8 AND id = $2
