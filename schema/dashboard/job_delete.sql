-- Dashboard action: delete a job that is not running (cancel a running one first).
DELETE FROM pgbroker.jobs WHERE id = $1 AND state <> 'running' RETURNING queue
