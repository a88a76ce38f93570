#!/usr/bin/env bash
# A pgbroker queue worker in plain SQL, with psql: the protocol needs no Rust.
#
#   DATABASE_URL=postgres://... examples/sql_worker.sh [queue] [jobs-to-enqueue]
#
# Installs the schema, enqueues a few jobs, then claims them in batches, "processes" each one,
# completes it (or fails it, to be retried with backoff), and stops when the queue is empty.
# A long-running worker would loop forever, LISTEN on channel 'pgbroker.jobs' (payload: the
# queue name) after calling pgbroker.wait_for_jobs(queue, worker), and run pgbroker.rescue()
# on a timer.
set -euo pipefail

: "${DATABASE_URL:?set DATABASE_URL}"
queue="${1:-emails}"
count="${2:-5}"
worker="sh-$(hostname)-$$"
here="$(cd "$(dirname "$0")" && pwd)"
psql_() { psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qAtX "$@"; }

# Install or upgrade the schema (idempotent).
(cd "$here/.." && psql_ -1 -f schema.sql >/dev/null)

# Producer: any SQL can enqueue, with named options.
for i in $(seq 1 "$count"); do
  psql_ -c "SELECT pgbroker.enqueue(queue => '$queue',
                                    payload => jsonb_build_object('to', 'user$i@example.com'),
                                    priority => $((i % 2)), max_attempts => 3)" >/dev/null
done
echo "enqueued $count jobs on $queue"

# Worker: claim up to 10 jobs with a 1-minute lease; one line per job: id|attempt|payload.
while :; do
  jobs="$(psql_ -F'|' -c "SELECT id, attempt, payload FROM pgbroker.claim('$queue', '$worker', 10, '1 minute')")"
  if [ -z "$jobs" ]; then
    echo "queue $queue is empty"
    break
  fi
  while IFS='|' read -r id attempt payload; do
    if [ "$id" = "3" ] && [ "$attempt" = "1" ]; then
      # A failure: retried after its backoff, dead after max_attempts.
      psql_ -c "SELECT pgbroker.fail($id, 'smtp timeout', retry_in => '0 seconds')" >/dev/null
      echo "job $id attempt $attempt failed: will retry"
    else
      echo "job $id attempt $attempt: sending $payload"
      psql_ -c "SELECT pgbroker.complete($id)" >/dev/null
    fi
  done <<<"$jobs"
done

psql_ -c "SELECT pgbroker.rescue()" >/dev/null
psql "$DATABASE_URL" -X -c "SELECT * FROM pgbroker.queue_stats"
