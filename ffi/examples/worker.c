/*
 * pgbroker from C: enqueue jobs, work them on a pool of threads with a C callback, publish
 * events and read them from a subscription.
 *
 *     cc -I ffi/include ffi/examples/worker.c -L target/release -lpgbroker \
 *        -Wl,-rpath,$PWD/target/release -o worker
 *     DATABASE_URL=postgres://app@localhost/app ./worker
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pgbroker.h"

/* Prints the error and exits: what a small program does with a failure it cannot handle. */
static void check(int rc, pgbroker_error *err, const char *what) {
    if (rc == 0) return;
    fprintf(stderr, "%s failed: %s [%s, sqlstate %s]\n", what, pgbroker_error_message(err),
            pgbroker_kind_name(rc),
            pgbroker_error_sqlstate(err) ? pgbroker_error_sqlstate(err) : "-");
    pgbroker_error_free(err);
    exit(1);
}

/* Runs on a pool thread, several at once: only atomic updates to shared state. Returning 0
   completes the job; anything else fails this attempt (retried with backoff). */
static int send_email(void *user_data, const pgbroker_job *job, pgbroker_outcome *outcome) {
    int *done = user_data;
    if (pgbroker_job_payload(job)[0] != '{') {
        pgbroker_outcome_set_error(outcome, "payload is not an object");
        return 1;
    }
    printf("job %lld (attempt %d): %s\n", (long long)pgbroker_job_id(job),
           pgbroker_job_attempt(job), pgbroker_job_payload(job));
    __atomic_add_fetch(done, 1, __ATOMIC_SEQ_CST);
    return 0;
}

int main(void) {
    const char *url = getenv("DATABASE_URL");
    if (url == NULL) {
        fprintf(stderr, "set DATABASE_URL\n");
        return 2;
    }
    pgbroker_error *err = NULL;
    pgbroker_broker *broker = NULL;
    check(pgbroker_connect(url, &broker, &err), err, "connect");
    check(pgbroker_install(broker, NULL, &err), err, "install");

    /* The queue: enqueue ten jobs, then work them on a pool of 4 threads. */
    for (int i = 0; i < 10; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "{\"to\": \"user%d@example.com\"}", i);
        pgbroker_job_options options = {0};
        options.max_attempts = 5;
        check(pgbroker_enqueue(broker, "emails", payload, &options, NULL, &err), err, "enqueue");
    }
    int done = 0;
    pgbroker_pool *pool = NULL;
    check(pgbroker_pool_new(broker, 4, 10000, &pool, &err), err, "pool_new");
    check(pgbroker_pool_queue(pool, "emails", 4, send_email, &done, &err), err, "pool_queue");
    check(pgbroker_pool_start(pool, &err), err, "pool_start");
    for (int i = 0; i < 300 && __atomic_load_n(&done, __ATOMIC_SEQ_CST) < 10; i++) {
        struct timespec tick = {0, 20 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
    pgbroker_pool_stats stats;
    check(pgbroker_pool_shutdown(pool, &stats, &err), err, "pool_shutdown");
    pgbroker_pool_free(pool);
    printf("worked %d jobs (%llu handled, %llu failed)\n", done,
           (unsigned long long)stats.handled, (unsigned long long)stats.failed);

    /* The log: a subscription sees the events published after it was created. */
    check(pgbroker_subscribe(broker, "audit", "orders.#", &err), err, "subscribe");
    pgbroker_new_event events[3] = {
        {"orders.created", "{\"id\": 1}", "customer-1"},
        {"orders.paid", "{\"id\": 1, \"amount\": 25}", "customer-1"},
        {"orders.created", "{\"id\": 2}", "customer-2"},
    };
    check(pgbroker_publish_batch(broker, events, 3, NULL, &err), err, "publish_batch");
    pgbroker_batch *batch = NULL;
    check(pgbroker_read(broker, "audit", 100, &batch, &err), err, "read");
    for (size_t i = 0; i < pgbroker_batch_len(batch); i++) {
        printf("event %lld %s: %s\n", (long long)pgbroker_batch_event_id(batch, i),
               pgbroker_batch_topic(batch, i), pgbroker_batch_payload(batch, i));
    }
    printf("read %zu events\n", pgbroker_batch_len(batch));
    check(pgbroker_ack(broker, batch, &err), err, "ack");
    pgbroker_batch_free(batch);

    /* Bad input is a clear, typed error. */
    int rc = pgbroker_enqueue(broker, "emails", "{not json", NULL, NULL, &err);
    printf("bad JSON: %s (%s)\n", pgbroker_error_message(err), pgbroker_kind_name(rc));
    pgbroker_error_free(err);

    pgbroker_free(broker);
    return 0;
}
