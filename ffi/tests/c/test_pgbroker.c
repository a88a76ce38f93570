/*
 * Tests every function of pgbroker.h against a real server, including the error paths (bad
 * URL, unreachable server, bad JSON, NULL arguments). Run by ffi/tests/c_programs.rs, under
 * valgrind when it is installed:
 *
 *     test_pgbroker <database url> <url of a port nobody listens on> <url of a database
 *                   that does not exist on the server>
 *
 * Every object is freed, so valgrind's leak check has nothing to report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pgbroker.h"

static int failures = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                               \
        }                                                                             \
    } while (0)

/* Succeeds or stops the test: later steps need what this call makes. */
#define MUST(call)                                                                        \
    do {                                                                                  \
        pgbroker_error *must_err = NULL;                                                  \
        int must_rc = (call);                                                             \
        if (must_rc != 0) {                                                               \
            fprintf(stderr, "%s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #call,     \
                    must_rc, pgbroker_error_message(must_err));                           \
            pgbroker_error_free(must_err);                                                \
            exit(2);                                                                      \
        }                                                                                 \
    } while (0)

/* Expects `rc`/`err` to be an error of `kind` whose message contains `needle`; frees err. */
static void expect_error(int line, int rc, pgbroker_error *err, pgbroker_kind kind,
                         const char *needle) {
    if (rc != (int)kind || err == NULL || pgbroker_error_kind(err) != kind ||
        strstr(pgbroker_error_message(err), needle) == NULL) {
        fprintf(stderr, "line %d: expected %s error with \"%s\", got rc %d (%s): %s\n", line,
                pgbroker_kind_name((int)kind), needle, rc,
                err ? pgbroker_kind_name((int)pgbroker_error_kind(err)) : "no error",
                err ? pgbroker_error_message(err) : "");
        failures++;
    }
    pgbroker_error_free(err);
}
#define EXPECT_ERROR(rc, err, kind, needle) expect_error(__LINE__, rc, err, kind, needle)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_static_and_null(void) {
    CHECK(strlen(pgbroker_version()) > 0);
    CHECK(strcmp(pgbroker_kind_name(PGBROKER_KIND_DB), "db") == 0);
    CHECK(strcmp(pgbroker_kind_name(PGBROKER_KIND_INVALID_INPUT), "invalid_input") == 0);
    CHECK(strcmp(pgbroker_kind_name(12345), "other") == 0);
    char *sql = pgbroker_schema_sql();
    CHECK(sql != NULL && strstr(sql, "CREATE SCHEMA IF NOT EXISTS pgbroker") != NULL);
    pgbroker_string_free(sql);

    /* Every _free accepts NULL; every accessor tolerates NULL. */
    pgbroker_string_free(NULL);
    pgbroker_error_free(NULL);
    pgbroker_free(NULL);
    pgbroker_listener_free(NULL);
    pgbroker_event_free(NULL);
    pgbroker_batch_free(NULL);
    pgbroker_jobs_free(NULL);
    pgbroker_pool_free(NULL);
    CHECK(pgbroker_error_kind(NULL) == PGBROKER_KIND_OK);
    CHECK(strcmp(pgbroker_error_message(NULL), "") == 0);
    CHECK(pgbroker_error_sqlstate(NULL) == NULL);
    CHECK(pgbroker_batch_len(NULL) == 0);
    CHECK(pgbroker_batch_topic(NULL, 0) == NULL);
    CHECK(pgbroker_jobs_len(NULL) == 0);
    CHECK(pgbroker_jobs_get(NULL, 0) == NULL);
    CHECK(pgbroker_job_id(NULL) == 0);
    CHECK(strcmp(pgbroker_job_payload(NULL), "") == 0);
    CHECK(pgbroker_event_payload(NULL) == NULL);
    pgbroker_outcome_set_error(NULL, "ignored");

    /* NULL arguments are errors, with or without an error object. */
    pgbroker_broker *broker = NULL;
    pgbroker_error *err = NULL;
    int rc = pgbroker_connect(NULL, &broker, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`url` is NULL");
    CHECK(broker == NULL);
    err = NULL;
    rc = pgbroker_connect("postgres://localhost/x", NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`broker` is NULL");
    CHECK(pgbroker_connect(NULL, &broker, NULL) == PGBROKER_KIND_INVALID_INPUT);
    err = NULL;
    rc = pgbroker_notify(NULL, "c", "p", &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`broker` is NULL");
    err = NULL;
    rc = pgbroker_listener_recv(NULL, 0, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`listener` is NULL");
    err = NULL;
    rc = pgbroker_pool_start(NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`pool` is NULL");

    /* Text that is not UTF-8. */
    err = NULL;
    rc = pgbroker_connect("postgres://\xff\xfe/x", &broker, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`url` is not UTF-8");
}

static void test_connect_errors(const char *unreachable) {
    pgbroker_broker *broker = NULL;
    pgbroker_error *err = NULL;
    int rc = pgbroker_connect("postgres://localhost:notaport/db", &broker, &err);
    CHECK(rc != 0 && broker == NULL);
    CHECK(err != NULL && strlen(pgbroker_error_message(err)) > 0);
    CHECK(pgbroker_error_kind(err) == PGBROKER_KIND_CONFIG);
    CHECK(pgbroker_error_sqlstate(err) == NULL);
    pgbroker_error_free(err);

    err = NULL;
    rc = pgbroker_connect(unreachable, &broker, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_CONNECT, "connect");
    CHECK(broker == NULL);
}

static void test_notify(pgbroker_broker *broker) {
    pgbroker_listener *listener = NULL;
    MUST(pgbroker_listen(broker, "c_test", &listener, &must_err));

    pgbroker_event *event = NULL;
    MUST(pgbroker_listener_recv(listener, 0, &event, &must_err));
    CHECK(event == NULL); /* nothing yet: a timeout is not an error */

    MUST(pgbroker_notify(broker, "c_test", "{\"hello\": 1}", &must_err));
    MUST(pgbroker_listener_recv(listener, 10000, &event, &must_err));
    CHECK(event != NULL);
    CHECK(pgbroker_event_kind(event) == PGBROKER_EVENT_TYPE_NOTIFICATION);
    CHECK(strcmp(pgbroker_event_channel(event), "c_test") == 0);
    CHECK(strcmp(pgbroker_event_payload(event), "{\"hello\": 1}") == 0);
    pgbroker_event_free(event);

    /* Payloads are any text, delivered as is; NOTIFY's limit is checked before sending. */
    MUST(pgbroker_notify(broker, "c_test", "not json", &must_err));
    MUST(pgbroker_listener_recv(listener, -1, &event, &must_err));
    CHECK(event != NULL && strcmp(pgbroker_event_payload(event), "not json") == 0);
    pgbroker_event_free(event);

    char *big = malloc(9000);
    memset(big, 'x', 8999);
    big[8999] = 0;
    pgbroker_error *err = NULL;
    int rc = pgbroker_notify(broker, "c_test", big, &err);
    free(big);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_PAYLOAD_TOO_LARGE, "");
    err = NULL;
    rc = pgbroker_notify(broker, "", "x", &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_NAME, "");
    err = NULL;
    rc = pgbroker_listen(broker, "c_test", NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`listener` is NULL");
    err = NULL;
    rc = pgbroker_listener_recv(listener, 0, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`event` is NULL");

    pgbroker_listener_free(listener);
}

static void test_log(pgbroker_broker *broker) {
    MUST(pgbroker_subscribe(broker, "c_orders", "orders.*", &must_err));

    int64_t first = 0;
    MUST(pgbroker_publish(broker, "orders.created", "{\"id\": 1}", NULL, &first, &must_err));
    CHECK(first > 0);
    MUST(pgbroker_publish(broker, "users.created", "{\"id\": 2}", NULL, NULL, &must_err));

    pgbroker_new_event events[3] = {
        {"orders.paid", "{\"id\": 1, \"amount\": 5}", "customer-7"},
        {"orders.shipped", "[1, 2]", NULL},
        {"orders.closed", "null", "customer-7"},
    };
    int64_t ids[3] = {0, 0, 0};
    MUST(pgbroker_publish_batch(broker, events, 3, ids, &must_err));
    CHECK(ids[0] > first && ids[1] > ids[0] && ids[2] > ids[1]);
    MUST(pgbroker_publish_batch(broker, NULL, 0, NULL, &must_err));

    /* Bad input fails before anything is written. */
    pgbroker_error *err = NULL;
    int rc = pgbroker_publish(broker, "orders.created", "{not json", NULL, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_SERIALIZE, "`json` is not valid JSON");
    err = NULL;
    pgbroker_new_event bad[2] = {{"orders.x", "1", NULL}, {"orders.y", "{", NULL}};
    rc = pgbroker_publish_batch(broker, bad, 2, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_SERIALIZE, "`events[1].json` is not valid JSON");
    err = NULL;
    pgbroker_new_event null_topic[1] = {{NULL, "1", NULL}};
    rc = pgbroker_publish_batch(broker, null_topic, 1, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`events[0].topic` is NULL");
    err = NULL;
    rc = pgbroker_publish_batch(broker, NULL, 1, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`events` is NULL");
    err = NULL;
    rc = pgbroker_publish(broker, "bad topic!", "1", NULL, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_NAME, "");

    pgbroker_batch *batch = NULL;
    MUST(pgbroker_read(broker, "c_orders", 100, &batch, &must_err));
    CHECK(pgbroker_batch_len(batch) == 4);
    CHECK(strcmp(pgbroker_batch_subscription(batch), "c_orders") == 0);
    CHECK(pgbroker_batch_attempt(batch) == 0);
    CHECK(pgbroker_batch_event_id(batch, 0) == first);
    CHECK(strcmp(pgbroker_batch_topic(batch, 0), "orders.created") == 0);
    CHECK(strcmp(pgbroker_batch_payload(batch, 0), "{\"id\": 1}") == 0);
    CHECK(pgbroker_batch_key(batch, 0) == NULL);
    CHECK(pgbroker_batch_event_id(batch, 1) == ids[0]);
    CHECK(strcmp(pgbroker_batch_payload(batch, 1), "{\"id\": 1, \"amount\": 5}") == 0);
    CHECK(strcmp(pgbroker_batch_key(batch, 1), "customer-7") == 0);
    CHECK(strcmp(pgbroker_batch_topic(batch, 2), "orders.shipped") == 0);
    CHECK(strcmp(pgbroker_batch_payload(batch, 2), "[1, 2]") == 0);
    CHECK(strcmp(pgbroker_batch_payload(batch, 3), "null") == 0);
    CHECK(pgbroker_batch_topic(batch, 4) == NULL);
    CHECK(pgbroker_batch_event_id(batch, 4) == 0);

    /* Reading does not move the cursor; acknowledging does. */
    pgbroker_batch *again = NULL;
    MUST(pgbroker_read(broker, "c_orders", 2, &again, &must_err));
    CHECK(pgbroker_batch_len(again) == 2 && pgbroker_batch_event_id(again, 0) == first);
    pgbroker_batch_free(again);
    MUST(pgbroker_ack(broker, batch, &must_err));
    pgbroker_batch_free(batch);
    MUST(pgbroker_read(broker, "c_orders", 100, &batch, &must_err));
    CHECK(pgbroker_batch_len(batch) == 0);
    MUST(pgbroker_ack(broker, batch, &must_err));
    pgbroker_batch_free(batch);

    err = NULL;
    batch = NULL;
    rc = pgbroker_read(broker, "c_no_such_subscription", 10, &batch, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_NOT_FOUND, "c_no_such_subscription");
    CHECK(batch == NULL);
    err = NULL;
    rc = pgbroker_ack(broker, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`batch` is NULL");
}

static void test_queue(pgbroker_broker *broker) {
    int64_t plain = 0, urgent = 0, later = 0;
    MUST(pgbroker_enqueue(broker, "c_jobs", "{\"n\": 1}", NULL, &plain, &must_err));
    pgbroker_job_options opts = {0};
    opts.priority = -5;
    opts.max_attempts = 3;
    opts.unique_key = "urgent-1";
    MUST(pgbroker_enqueue(broker, "c_jobs", "{\"n\": 2}", &opts, &urgent, &must_err));
    int64_t same = 0;
    MUST(pgbroker_enqueue(broker, "c_jobs", "{\"n\": 3}", &opts, &same, &must_err));
    CHECK(same == urgent); /* unique key: the pending job's id */
    pgbroker_job_options delayed = {0};
    delayed.delay_ms = 60000;
    MUST(pgbroker_enqueue(broker, "c_jobs", "{}", &delayed, &later, &must_err));
    CHECK(plain > 0 && urgent > 0 && later > 0 && plain != urgent);

    pgbroker_jobs *jobs = NULL;
    MUST(pgbroker_claim(broker, "c_jobs", 10, 30000, &jobs, &must_err));
    CHECK(pgbroker_jobs_len(jobs) == 2); /* the delayed job is not due */
    const pgbroker_job *first = pgbroker_jobs_get(jobs, 0);
    const pgbroker_job *second = pgbroker_jobs_get(jobs, 1);
    CHECK(pgbroker_jobs_get(jobs, 2) == NULL);
    CHECK(pgbroker_job_id(first) == urgent); /* smaller priority first */
    CHECK(strcmp(pgbroker_job_queue(first), "c_jobs") == 0);
    CHECK(strcmp(pgbroker_job_payload(first), "{\"n\":2}") == 0);
    CHECK(pgbroker_job_attempt(first) == 1);
    CHECK(pgbroker_job_max_attempts(first) == 3);
    CHECK(pgbroker_job_priority(first) == -5);
    CHECK(strcmp(pgbroker_job_unique_key(first), "urgent-1") == 0);
    CHECK(pgbroker_job_id(second) == plain);
    CHECK(pgbroker_job_unique_key(second) == NULL);
    CHECK(pgbroker_job_max_attempts(second) == 25);

    MUST(pgbroker_complete(broker, first, &must_err));
    pgbroker_error *err = NULL;
    int rc = pgbroker_complete(broker, first, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_NOT_FOUND, "no longer held");
    MUST(pgbroker_fail(broker, second, "smtp timeout", &must_err));
    err = NULL;
    rc = pgbroker_fail(broker, second, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_NOT_FOUND, "no longer held");
    pgbroker_jobs_free(jobs);

    /* The failed job is back after its backoff (1 s by default), as attempt 2. */
    jobs = NULL;
    MUST(pgbroker_claim(broker, "c_jobs", 10, 30000, &jobs, &must_err));
    CHECK(pgbroker_jobs_len(jobs) == 0);
    pgbroker_jobs_free(jobs);

    /* Bad input. */
    err = NULL;
    rc = pgbroker_enqueue(broker, "c_jobs", "{\"n\":", NULL, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_SERIALIZE, "`json` is not valid JSON");
    err = NULL;
    rc = pgbroker_enqueue(broker, "bad queue!", "{}", NULL, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_NAME, "");
    err = NULL;
    rc = pgbroker_enqueue(broker, "c_jobs", NULL, NULL, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`json` is NULL");
    err = NULL;
    jobs = NULL;
    rc = pgbroker_claim(broker, "c_jobs", 1, 0, &jobs, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "");
    CHECK(jobs == NULL);
    err = NULL;
    rc = pgbroker_complete(broker, NULL, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`job` is NULL");
}

/* What the pool's callbacks count; updated from several threads. */
typedef struct {
    int jobs_ok;
    int jobs_failed;
    int events;
} counters;

static int on_job(void *user_data, const pgbroker_job *job, pgbroker_outcome *outcome) {
    counters *c = user_data;
    if (strstr(pgbroker_job_payload(job), "\"fail\":true") != NULL &&
        pgbroker_job_attempt(job) == 1) {
        __atomic_add_fetch(&c->jobs_failed, 1, __ATOMIC_SEQ_CST);
        pgbroker_outcome_set_error(outcome, "asked to fail once");
        return 1;
    }
    __atomic_add_fetch(&c->jobs_ok, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int on_batch(void *user_data, const pgbroker_batch *batch, pgbroker_outcome *outcome) {
    (void)outcome;
    counters *c = user_data;
    __atomic_add_fetch(&c->events, (int)pgbroker_batch_len(batch), __ATOMIC_SEQ_CST);
    return 0;
}

static int load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }

static void test_pool(pgbroker_broker *broker) {
    MUST(pgbroker_subscribe(broker, "c_pool_events", "pool.#", &must_err));
    pgbroker_job_options quick = {0};
    quick.backoff_base_ms = 50;
    for (int i = 0; i < 20; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "{\"i\":%d,\"fail\":%s}", i, i == 7 ? "true" : "false");
        MUST(pgbroker_enqueue(broker, "c_pool", payload, &quick, NULL, &must_err));
    }
    for (int i = 0; i < 5; i++) {
        MUST(pgbroker_publish(broker, "pool.tick", "{}", NULL, NULL, &must_err));
    }

    counters c = {0, 0, 0};
    pgbroker_pool *pool = NULL;
    MUST(pgbroker_pool_new(broker, 4, 5000, &pool, &must_err));
    MUST(pgbroker_pool_queue(pool, "c_pool", 3, on_job, &c, &must_err));
    MUST(pgbroker_pool_subscription(pool, "c_pool_events", on_batch, &c, &must_err));
    pgbroker_error *err = NULL;
    int rc = pgbroker_pool_queue(pool, "c_pool", 3, NULL, &c, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "`callback` is NULL");
    MUST(pgbroker_pool_start(pool, &must_err));
    err = NULL;
    rc = pgbroker_pool_start(pool, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_SHUTDOWN, "already started");
    err = NULL;
    rc = pgbroker_pool_queue(pool, "other", 1, on_job, &c, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_SHUTDOWN, "already started");

    for (int i = 0; i < 200 && (load(&c.jobs_ok) < 20 || load(&c.events) < 5); i++) {
        sleep_ms(50);
    }
    pgbroker_pool_stats stats;
    MUST(pgbroker_pool_shutdown(pool, &stats, &must_err));
    CHECK(load(&c.jobs_ok) == 20);   /* job 7 too, on its second attempt */
    CHECK(load(&c.jobs_failed) == 1);
    CHECK(load(&c.events) == 5);
    CHECK(stats.handled >= 21 && stats.failed == 1);
    MUST(pgbroker_pool_shutdown(pool, NULL, &must_err)); /* again: nothing to do */
    pgbroker_pool_free(pool);

    /* Bad registrations fail at start, leaving nothing running. */
    MUST(pgbroker_pool_new(broker, 0, 0, &pool, &must_err));
    MUST(pgbroker_pool_queue(pool, "bad queue!", 1, on_job, &c, &must_err));
    err = NULL;
    rc = pgbroker_pool_start(pool, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_NAME, "");
    pgbroker_pool_free(pool);
    MUST(pgbroker_pool_new(broker, 1, 0, &pool, &must_err));
    MUST(pgbroker_pool_queue(pool, "c_pool", 0, on_job, &c, &must_err));
    err = NULL;
    rc = pgbroker_pool_start(pool, &err);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_CONFIG, "");
    pgbroker_pool_free(pool);
    /* A pool freed without starting or shutting down. */
    MUST(pgbroker_pool_new(broker, 1, 0, &pool, &must_err));
    pgbroker_pool_free(pool);
}

static void test_db_errors(pgbroker_broker *broker, const char *missing_db) {
    /* Errors PostgreSQL reports carry their SQLSTATE. */
    pgbroker_broker *other = NULL;
    pgbroker_error *err = NULL;
    int rc = pgbroker_connect(missing_db, &other, &err);
    CHECK(other == NULL);
    CHECK(pgbroker_error_sqlstate(err) != NULL &&
          strcmp(pgbroker_error_sqlstate(err), "3D000") == 0); /* invalid_catalog_name */
    EXPECT_ERROR(rc, err, PGBROKER_KIND_CONNECT, "does not exist");

    /* JSON PostgreSQL's jsonb does not take, a NUL character: refused before anything is sent,
     * so no SQLSTATE. */
    err = NULL;
    rc = pgbroker_publish(broker, "orders.nul", "{\"a\": \"\\u0000\"}", NULL, NULL, &err);
    CHECK(pgbroker_error_sqlstate(err) == NULL);
    EXPECT_ERROR(rc, err, PGBROKER_KIND_INVALID_INPUT, "NUL character");
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s <database url> <unreachable url> <missing database url>\n",
                argv[0]);
        return 2;
    }
    test_static_and_null();
    test_connect_errors(argv[2]);

    pgbroker_broker *broker = NULL;
    MUST(pgbroker_connect(argv[1], &broker, &must_err));
    int32_t version = 0;
    MUST(pgbroker_install(broker, &version, &must_err));
    CHECK(version >= 1);
    MUST(pgbroker_install(broker, NULL, &must_err));

    test_notify(broker);
    test_log(broker);
    test_queue(broker);
    test_pool(broker);
    test_db_errors(broker, argv[3]);
    pgbroker_free(broker);

    if (failures > 0) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("test_pgbroker: all checks passed\n");
    return 0;
}
