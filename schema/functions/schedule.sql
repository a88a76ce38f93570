-- Periodic jobs (src/queue/schedule.rs): cron expressions parsed and stepped in SQL, so that
-- any client can schedule (and have its expression checked at once), and any process can run
-- the scheduler:
--   SELECT pgbroker.schedule('nightly-report', '0 3 * * *', 'reports', '{}',
--                            time_zone => 'Europe/Paris');
--   SELECT pgbroker.run_schedules();   -- worker pools call it every second
--   SELECT pgbroker.unschedule('nightly-report');
--
-- Cron: 5 fields (minute hour day-of-month month day-of-week) or 6 (second first). Each field
-- is a list of `*`, `?` (as `*`), `n`, `a-b`, with an optional step `/s` (`*/15`, `10-50/5`,
-- `7/10` = from 7 on); months and weekdays also by name (JAN-DEC, SUN-SAT); weekday 0 or 7 is
-- Sunday. As in Vixie cron, when both day fields are restricted (neither starts with `*` or
-- `?`) a day matches either; otherwise both must match. Macros: @yearly (@annually),
-- @monthly, @weekly, @daily (@midnight), @hourly. Times are computed in the schedule's time
-- zone: a local time skipped by a daylight-saving change runs at the same wall-clock offset
-- after the change (02:30 becomes 03:30), one repeated by it runs once.

-- One value of a cron field: a number, or a name from `names` (the spellings of lo, lo+1, ...).
CREATE OR REPLACE FUNCTION pgbroker.cron_value(token text, what text, lo integer, hi integer,
                                               names text[])
RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v integer;
BEGIN
    IF token ~ '^[0-9]{1,4}$' THEN
        v := token::integer;
    ELSIF names IS NOT NULL AND array_position(names, upper(token)) IS NOT NULL THEN
        v := lo + array_position(names, upper(token)) - 1;
    ELSE
        RAISE EXCEPTION 'pgbroker: cron %: % is not a number%', what, quote_literal(token),
            CASE WHEN names IS NOT NULL THEN ' or a name' ELSE '' END USING ERRCODE = '22023';
    END IF;
    IF v < lo OR v > hi THEN
        RAISE EXCEPTION 'pgbroker: cron %: % is outside % to %', what, v, lo, hi
            USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;

-- The values a cron field allows, sorted and distinct.
CREATE OR REPLACE FUNCTION pgbroker.cron_field(field text, what text, lo integer, hi integer,
                                               names text[] DEFAULT NULL)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    item  text;
    range text;
    step  integer;
    a     integer;
    b     integer;
    vals  integer[] := '{}';
BEGIN
    IF field IS NULL OR field = '' THEN
        RAISE EXCEPTION 'pgbroker: cron %: empty field', what USING ERRCODE = '22023';
    END IF;
    FOREACH item IN ARRAY string_to_array(field, ',') LOOP
        range := split_part(item, '/', 1);
        step := 1;
        IF item LIKE '%/%' THEN
            IF split_part(item, '/', 2) !~ '^[0-9]{1,4}$' OR split_part(item, '/', 3) <> ''
               OR split_part(item, '/', 2)::integer = 0 THEN
                RAISE EXCEPTION 'pgbroker: cron %: bad step in %', what, quote_literal(item)
                    USING ERRCODE = '22023';
            END IF;
            step := split_part(item, '/', 2)::integer;
        END IF;
        IF range IN ('*', '?') THEN
            a := lo;
            b := hi;
        ELSIF range LIKE '%-%' THEN
            a := pgbroker.cron_value(split_part(range, '-', 1), what, lo, hi, names);
            b := pgbroker.cron_value(split_part(range, '-', 2), what, lo, hi, names);
            IF split_part(range, '-', 3) <> '' OR a > b THEN
                RAISE EXCEPTION 'pgbroker: cron %: bad range %', what, quote_literal(range)
                    USING ERRCODE = '22023';
            END IF;
        ELSE
            a := pgbroker.cron_value(range, what, lo, hi, names);
            b := CASE WHEN item LIKE '%/%' THEN hi ELSE a END; -- `7/10`: from 7 on
        END IF;
        vals := vals || ARRAY(SELECT generate_series(a, b, step));
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT v FROM unnest(vals) v ORDER BY v);
END
$$;

-- A cron expression taken apart; fails with SQLSTATE 22023 naming what is wrong.
CREATE OR REPLACE FUNCTION pgbroker.cron_parse(
    expr         text,
    OUT seconds  integer[],
    OUT minutes  integer[],
    OUT hours    integer[],
    OUT days     integer[],
    OUT months   integer[],
    OUT weekdays integer[],
    OUT any_day  boolean  -- the day-of-month or the weekday field starts with * or ?
)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    f text[];
BEGIN
    IF expr IS NULL THEN
        RAISE EXCEPTION 'pgbroker: cron expression must not be NULL' USING ERRCODE = '22023';
    END IF;
    f := regexp_split_to_array(btrim(CASE lower(btrim(expr))
        WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
        WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *' ELSE expr END), '\s+');
    IF array_length(f, 1) = 5 THEN
        f := '0'::text || f;
    ELSIF array_length(f, 1) IS DISTINCT FROM 6 THEN
        RAISE EXCEPTION 'pgbroker: cron expression % has % fields; expected 5 (minute hour day month weekday) or 6 (second first)',
            quote_literal(expr), coalesce(array_length(f, 1), 0) USING ERRCODE = '22023';
    END IF;
    seconds := pgbroker.cron_field(f[1], 'second', 0, 59);
    minutes := pgbroker.cron_field(f[2], 'minute', 0, 59);
    hours := pgbroker.cron_field(f[3], 'hour', 0, 23);
    days := pgbroker.cron_field(f[4], 'day of month', 1, 31);
    months := pgbroker.cron_field(f[5], 'month', 1, 12,
        '{JAN,FEB,MAR,APR,MAY,JUN,JUL,AUG,SEP,OCT,NOV,DEC}');
    weekdays := ARRAY(SELECT DISTINCT v % 7 FROM unnest(pgbroker.cron_field(f[6], 'weekday', 0, 7,
        '{SUN,MON,TUE,WED,THU,FRI,SAT}')) v ORDER BY 1);
    any_day := f[4] LIKE '*%' OR f[4] LIKE '?%' OR f[6] LIKE '*%' OR f[6] LIKE '?%';
END
$$;

-- The first time strictly after `after` that `expr` names, in `time_zone` (any name or
-- offset PostgreSQL knows). Fails with SQLSTATE 22023 for a bad expression or time zone, or
-- one that names no time in the next five years (`0 0 30 2 *`).
CREATE OR REPLACE FUNCTION pgbroker.cron_next(expr text, after timestamptz,
                                              time_zone text DEFAULT 'UTC')
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c     record;
    t     timestamp;
    until timestamp;
    v     integer;
    nxt   integer;
    res   timestamptz;
    day_ok boolean;
BEGIN
    c := pgbroker.cron_parse(expr);
    IF time_zone IS NULL THEN
        RAISE EXCEPTION 'pgbroker: time zone must not be NULL' USING ERRCODE = '22023';
    END IF;
    BEGIN
        t := date_trunc('second', coalesce(after, now()) AT TIME ZONE time_zone)
             + interval '1 second';
    EXCEPTION WHEN invalid_parameter_value OR feature_not_supported THEN
        RAISE EXCEPTION 'pgbroker: unknown time zone %', quote_literal(time_zone)
            USING ERRCODE = '22023';
    END;
    until := t + interval '5 years';
    LOOP
        IF t > until THEN
            RAISE EXCEPTION 'pgbroker: cron expression % names no time in the next five years',
                quote_literal(expr) USING ERRCODE = '22023';
        END IF;
        IF NOT extract(month FROM t)::integer = ANY (c.months) THEN
            t := date_trunc('month', t) + interval '1 month';
            CONTINUE;
        END IF;
        day_ok := CASE WHEN c.any_day
                       THEN extract(day FROM t)::integer = ANY (c.days)
                            AND extract(dow FROM t)::integer = ANY (c.weekdays)
                       ELSE extract(day FROM t)::integer = ANY (c.days)
                            OR extract(dow FROM t)::integer = ANY (c.weekdays) END;
        IF NOT day_ok THEN
            t := date_trunc('day', t) + interval '1 day';
            CONTINUE;
        END IF;
        v := extract(hour FROM t)::integer;
        IF NOT v = ANY (c.hours) THEN
            SELECT min(h) INTO nxt FROM unnest(c.hours) h WHERE h > v;
            t := date_trunc('day', t) + CASE WHEN nxt IS NULL THEN interval '1 day'
                                             ELSE make_interval(hours => nxt) END;
            CONTINUE;
        END IF;
        v := extract(minute FROM t)::integer;
        IF NOT v = ANY (c.minutes) THEN
            SELECT min(m) INTO nxt FROM unnest(c.minutes) m WHERE m > v;
            t := date_trunc('hour', t) + CASE WHEN nxt IS NULL THEN interval '1 hour'
                                              ELSE make_interval(mins => nxt) END;
            CONTINUE;
        END IF;
        v := extract(second FROM t)::integer;
        IF NOT v = ANY (c.seconds) THEN
            SELECT min(s) INTO nxt FROM unnest(c.seconds) s WHERE s > v;
            t := date_trunc('minute', t) + CASE WHEN nxt IS NULL THEN interval '1 minute'
                                                ELSE make_interval(secs => nxt) END;
            CONTINUE;
        END IF;
        res := t AT TIME ZONE time_zone;
        IF res > after THEN
            RETURN res;
        END IF;
        t := t + interval '1 second'; -- a wall-clock time repeated by a DST change
    END LOOP;
END
$$;

-- Creates or replaces the schedule `name`: a job on `queue` with `payload` at every time
-- `cron` names in `time_zone`. A tick the scheduler reaches more than a minute late (nothing
-- ran the scheduler then) is missed: all missed ticks of a schedule are enqueued as one job,
-- or none with `skip_missed`. Each job has the unique key 'schedule:<name>:<tick, UTC>'.
-- Returns the next run time. Replacing a schedule starts it afresh from now.
CREATE OR REPLACE FUNCTION pgbroker.schedule(
    name         text,
    cron         text,
    queue        text,
    payload      jsonb   DEFAULT '{}',
    time_zone    text    DEFAULT 'UTC',
    priority     integer DEFAULT 0,
    max_attempts integer DEFAULT 25,
    skip_missed  boolean DEFAULT false
) RETURNS timestamptz
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    next_at timestamptz;
BEGIN
    IF name IS NULL OR name !~ '^[[:print:]]{1,200}$' THEN
        RAISE EXCEPTION 'pgbroker: schedule name must be 1 to 200 printable characters, got %',
            quote_nullable(name) USING ERRCODE = '22023';
    END IF;
    PERFORM pgbroker.check_queue_name(queue);
    IF payload IS NULL THEN
        RAISE EXCEPTION 'pgbroker: payload must not be NULL' USING ERRCODE = '22023';
    END IF;
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'pgbroker: max_attempts must be at least 1, got %', max_attempts
            USING ERRCODE = '22023';
    END IF;
    next_at := pgbroker.cron_next(cron, now(), time_zone);
    INSERT INTO pgbroker.schedules AS s (name, cron, time_zone, queue, payload, priority,
                                         max_attempts, skip_missed, next_run_at)
    VALUES (name, cron, time_zone, queue, payload, coalesce(priority, 0), max_attempts,
            coalesce(skip_missed, false), next_at)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE
       SET cron = EXCLUDED.cron, time_zone = EXCLUDED.time_zone, queue = EXCLUDED.queue,
           payload = EXCLUDED.payload, priority = EXCLUDED.priority,
           max_attempts = EXCLUDED.max_attempts, skip_missed = EXCLUDED.skip_missed,
           next_run_at = EXCLUDED.next_run_at, updated_at = now();
    RETURN next_at;
END
$$;

-- Removes a schedule (its jobs already enqueued stay). Returns false when there was none.
CREATE OR REPLACE FUNCTION pgbroker.unschedule(name text) RETURNS boolean
LANGUAGE sql AS $$
    WITH d AS (DELETE FROM pgbroker.schedules s WHERE s.name = $1 RETURNING 1)
    SELECT count(*) = 1 FROM d
$$;

-- Enqueues the due ticks of every schedule; returns how many jobs it enqueued. Safe to run
-- from any number of processes at once: each due schedule is locked (SKIP LOCKED) by one of
-- them, which enqueues its job and moves next_run_at past now() in the same transaction.
CREATE OR REPLACE FUNCTION pgbroker.run_schedules() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    s      pgbroker.schedules;
    n      integer := 0;
    job_id bigint;
BEGIN
    FOR s IN SELECT * FROM pgbroker.schedules
              WHERE next_run_at <= now()
              ORDER BY next_run_at
                FOR UPDATE SKIP LOCKED LOOP
        job_id := NULL;
        IF NOT (s.skip_missed AND s.next_run_at < now() - interval '1 minute') THEN
            job_id := pgbroker.enqueue(
                s.queue, s.payload, s.priority, now(), s.max_attempts,
                unique_key => 'schedule:' || s.name || ':'
                              || to_char(s.next_run_at AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
            n := n + 1;
        END IF;
        UPDATE pgbroker.schedules
           SET next_run_at = pgbroker.cron_next(s.cron, greatest(s.next_run_at, now()),
                                                s.time_zone),
               last_run_at = s.next_run_at,
               last_job_id = coalesce(job_id, last_job_id),
               updated_at  = now()
         WHERE schedules.name = s.name;
    END LOOP;
    RETURN n;
END
$$;
