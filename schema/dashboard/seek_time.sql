-- Dashboard action: the position just before the first event written at or after a time
-- (a seek there replays from that event on); NULL when none was.
SELECT tx::text, id - 1
  FROM pgbroker.events
 WHERE created_at >= $1
 ORDER BY tx, id
 LIMIT 1
