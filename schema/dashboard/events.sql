-- Dashboard events page: one page of the log, newest first by (tx, id) (the events_tx_id
-- index), optionally one topic pattern ($1), written before a time ($2), and before a
-- position ($3 tx as text, $4 id: keyset pagination).
SELECT tx::text || '-' || id AS position, topic, key, left(payload::text, 300) AS payload,
       NULL::text AS headers, created_at
  FROM pgbroker.events
 WHERE ($1::text IS NULL OR topic ~ pgbroker.topic_regex(ARRAY[$1]))
   AND ($2::timestamptz IS NULL OR created_at <= $2)
   AND ($3::text IS NULL OR (tx, id) < ($3::xid8, $4::bigint))
 ORDER BY tx DESC, id DESC
 LIMIT $5
