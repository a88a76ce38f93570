-- Migration 2: pgbroker.take refuses to run outside a transaction block. Each call writes a row
-- here (the statement's start time) whose deferred constraint trigger, run at commit, refuses a
-- commit that ends the taking statement's own transaction (see pgbroker.take_guard_check in
-- schema/functions/queue.sql). Unlogged: the rows live only until their transaction ends.
CREATE UNLOGGED TABLE IF NOT EXISTS pgbroker.take_guards (
    taken_at timestamptz NOT NULL
);
