-- Migration 4: webhook endpoints, their delivery state and dead deliveries (pgbroker-http).

-- An endpoint receives every event matching its patterns, in log order: its cursor is the
-- position (tx, id) of the last event delivered (or given up). The event after the cursor is
-- the one in flight: `attempt` failures so far, next try not before `next_attempt_at`.
CREATE TABLE IF NOT EXISTS pgbroker.webhook_endpoints (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text        NOT NULL,
    patterns        text[]      NOT NULL,
    secret          text        NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    retry_schedule  interval[]  NOT NULL,
    enabled         boolean     NOT NULL DEFAULT true,
    disabled_reason text,
    cursor_tx       xid8        NOT NULL,
    cursor_id       bigint      NOT NULL DEFAULT 0,
    attempt         integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered       bigint      NOT NULL DEFAULT 0,
    failed          bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Deliveries given up after the retry schedule: a copy of the event (retention cannot take
-- it away) and the last failure. Re-driving marks them for one more delivery.
CREATE TABLE IF NOT EXISTS pgbroker.webhook_dead_deliveries (
    endpoint_id bigint      NOT NULL REFERENCES pgbroker.webhook_endpoints (id) ON DELETE CASCADE,
    event_id    bigint      NOT NULL,
    tx          xid8        NOT NULL,
    topic       text        NOT NULL,
    payload     jsonb       NOT NULL,
    headers     jsonb,
    key         text,
    created_at  timestamptz NOT NULL,
    attempts    integer     NOT NULL,
    last_status integer,
    last_error  text,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    redrive     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_dead_deliveries_redrive
    ON pgbroker.webhook_dead_deliveries (endpoint_id) WHERE redrive;
