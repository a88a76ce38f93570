//! The dashboard's reads and actions: each statement in its own file under
//! `schema/dashboard/`, run on a pooled connection of the server's broker.

use std::time::SystemTime;

use postgres::Row;
use serde_json::{json, Value};

/// The statements, one source each.
mod sql {
    pub(super) const QUEUES: &str = include_str!("../../../schema/dashboard/queues.sql");
    pub(super) const JOBS_FINISHED: &str =
        include_str!("../../../schema/dashboard/jobs_finished.sql");
    pub(super) const SUBSCRIPTIONS: &str =
        include_str!("../../../schema/dashboard/subscriptions.sql");
    pub(super) const QUEUE_JOBS: &str = include_str!("../../../schema/dashboard/queue_jobs.sql");
    pub(super) const QUEUE_JOB_BY_ID: &str =
        include_str!("../../../schema/dashboard/queue_job_by_id.sql");
    pub(super) const JOB: &str = include_str!("../../../schema/dashboard/job.sql");
    pub(super) const JOB_DELETE: &str = include_str!("../../../schema/dashboard/job_delete.sql");
    pub(super) const JOB_RUN_NOW: &str = include_str!("../../../schema/dashboard/job_run_now.sql");
    pub(super) const QUEUE_RETRY_DEAD: &str =
        include_str!("../../../schema/dashboard/queue_retry_dead.sql");
    pub(super) const SUBSCRIPTION: &str =
        include_str!("../../../schema/dashboard/subscription.sql");
    pub(super) const SUBSCRIPTION_PARTITIONS: &str =
        include_str!("../../../schema/dashboard/subscription_partitions.sql");
    pub(super) const SUBSCRIPTION_MEMBERS: &str =
        include_str!("../../../schema/dashboard/subscription_members.sql");
    pub(super) const SUBSCRIPTION_DEAD: &str =
        include_str!("../../../schema/dashboard/subscription_dead.sql");
    pub(super) const HORIZON_HOLDER: &str =
        include_str!("../../../schema/dashboard/horizon_holder.sql");
    pub(super) const SEEK_TIME: &str = include_str!("../../../schema/dashboard/seek_time.sql");
    pub(super) const WEBHOOKS: &str = include_str!("../../../schema/dashboard/webhooks.sql");
    pub(super) const WEBHOOK_DEAD: &str =
        include_str!("../../../schema/dashboard/webhook_dead.sql");
    pub(super) const EVENTS: &str = include_str!("../../../schema/dashboard/events.sql");
    pub(super) const EVENT: &str = include_str!("../../../schema/dashboard/event.sql");
}

/// Events behind are counted up to this many per partition (then shown as "at least"): the
/// count walks the log after the cursor, so a subscription far behind costs a bounded scan.
pub(crate) const LAG_CAP: i64 = 10_000;

/// What a dashboard read or action failed with, shown to the operator.
pub(crate) type DataResult<T> = Result<T, String>;

fn db<T>(r: Result<T, postgres::Error>) -> DataResult<T> {
    r.map_err(|e| match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    })
}

/// A connection of the server's broker.
pub(crate) struct Data {
    conn: pgbroker::PooledConn,
}

/// One queue's counts on the overview.
pub(crate) struct QueueRow {
    pub(crate) queue: String,
    pub(crate) counts: [i64; 6],
    pub(crate) dead_last_minute: i64,
    pub(crate) oldest_secs: Option<f64>,
}

/// The job states in the order of `QueueRow::counts`.
pub(crate) const STATES: [&str; 6] = [
    "available",
    "scheduled",
    "running",
    "completed",
    "dead",
    "cancelled",
];

/// One subscription on the overview.
pub(crate) struct SubscriptionRow {
    pub(crate) name: String,
    pub(crate) patterns: String,
    pub(crate) partitions: i32,
    pub(crate) members: i64,
    pub(crate) events_behind: i64,
    /// Some partition has at least [`LAG_CAP`] events behind (the count is a lower bound).
    pub(crate) behind_capped: bool,
    pub(crate) oldest_secs: Option<f64>,
    pub(crate) beyond_horizon: i64,
    pub(crate) horizon_pid: Option<i32>,
    pub(crate) horizon_secs: Option<f64>,
    pub(crate) dead: i64,
    pub(crate) retrying: i64,
}

/// A job in a queue's listing.
pub(crate) struct JobRow {
    pub(crate) id: i64,
    pub(crate) state: String,
    pub(crate) priority: i32,
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) unique_key: Option<String>,
    pub(crate) payload: String,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: Option<SystemTime>,
}

/// Everything about one job.
pub(crate) struct JobDetail {
    pub(crate) id: i64,
    pub(crate) queue: String,
    pub(crate) state: String,
    pub(crate) payload: String,
    pub(crate) priority: i32,
    pub(crate) run_at: Option<SystemTime>,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) unique_key: Option<String>,
    pub(crate) lease_until: Option<SystemTime>,
    pub(crate) worker: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) errors: Option<String>,
    pub(crate) result: Option<String>,
    pub(crate) created_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
}

/// A subscription's own row.
pub(crate) struct SubscriptionDetail {
    pub(crate) name: String,
    pub(crate) patterns: String,
    pub(crate) partitions: i32,
    pub(crate) expire_secs: Option<f64>,
    pub(crate) created_at: Option<SystemTime>,
}

/// One partition of a subscription.
pub(crate) struct PartitionRow {
    pub(crate) part: i32,
    pub(crate) cursor: String,
    pub(crate) events_behind: i64,
    pub(crate) oldest_secs: Option<f64>,
    pub(crate) beyond_horizon: i64,
    pub(crate) holder: Option<String>,
}

/// A consuming process.
pub(crate) struct MemberRow {
    pub(crate) pid: i32,
    pub(crate) name: String,
    pub(crate) partitions: String,
    pub(crate) joined_at: Option<SystemTime>,
    pub(crate) seen_at: Option<SystemTime>,
}

/// A dead (or retrying) event of a subscription.
pub(crate) struct DeadRow {
    pub(crate) id: i64,
    pub(crate) position: String,
    pub(crate) topic: String,
    pub(crate) key: Option<String>,
    pub(crate) payload: String,
    pub(crate) attempt: i32,
    pub(crate) dead: bool,
    pub(crate) last_error: Option<String>,
    pub(crate) failed_at: Option<SystemTime>,
}

/// An event of the log.
pub(crate) struct EventRow {
    pub(crate) position: String,
    pub(crate) topic: String,
    pub(crate) key: Option<String>,
    pub(crate) payload: String,
    pub(crate) headers: Option<String>,
    pub(crate) created_at: Option<SystemTime>,
}

/// A webhook endpoint and its delivery state.
pub(crate) struct EndpointRow {
    pub(crate) id: i64,
    pub(crate) url: String,
    pub(crate) patterns: String,
    pub(crate) enabled: bool,
    pub(crate) disabled_reason: Option<String>,
    pub(crate) header_names: Option<String>,
    pub(crate) attempt: i32,
    pub(crate) next_attempt_at: Option<SystemTime>,
    pub(crate) last_status: Option<i32>,
    pub(crate) last_error: Option<String>,
    pub(crate) delivered: i64,
    pub(crate) failed: i64,
    pub(crate) dead: i64,
}

/// A webhook delivery given up.
pub(crate) struct DeadDeliveryRow {
    pub(crate) endpoint_id: i64,
    pub(crate) event_id: i64,
    pub(crate) position: String,
    pub(crate) topic: String,
    pub(crate) payload: String,
    pub(crate) attempts: i32,
    pub(crate) last_status: Option<i32>,
    pub(crate) last_error: Option<String>,
    pub(crate) failed_at: Option<SystemTime>,
    pub(crate) redrive: bool,
}

/// Filters of a queue's job listing.
pub(crate) struct JobFilter<'a> {
    pub(crate) state: Option<&'a str>,
    pub(crate) before_id: Option<i64>,
    pub(crate) search: Option<&'a str>,
    pub(crate) limit: i64,
}

/// Filters of the events listing.
pub(crate) struct EventFilter<'a> {
    pub(crate) pattern: Option<&'a str>,
    pub(crate) before_time: Option<SystemTime>,
    pub(crate) before: Option<(String, i64)>,
    pub(crate) limit: i64,
}

impl Data {
    /// Runs a read in a transaction of its own with JIT compilation off (it costs more than
    /// it saves on these short queries: 350 ms for the lag count on 1M events) and bitmap
    /// scans off (a lag count capped at a few thousand events would otherwise build a bitmap
    /// of every event after the cursor before stopping).
    fn read(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> DataResult<Vec<Row>> {
        let mut tx = db(self.conn.transaction())?;
        db(tx.batch_execute("SET LOCAL jit = off; SET LOCAL enable_bitmapscan = off"))?;
        let rows = db(tx.query(sql, params))?;
        db(tx.commit())?;
        Ok(rows)
    }

    fn read_one(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> DataResult<Row> {
        self.read(sql, params)?
            .into_iter()
            .next()
            .ok_or_else(|| "the query returned no row".to_owned())
    }

    fn read_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> DataResult<Option<Row>> {
        Ok(self.read(sql, params)?.into_iter().next())
    }

    pub(crate) fn new(broker: &pgbroker::Broker) -> DataResult<Data> {
        Ok(Data {
            conn: broker.conn().map_err(|e| e.to_string())?,
        })
    }

    pub(crate) fn queues(&mut self) -> DataResult<Vec<QueueRow>> {
        let rows = self.read(sql::QUEUES, &[])?;
        Ok(rows
            .iter()
            .map(|r| QueueRow {
                queue: r.get(0),
                counts: [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)],
                dead_last_minute: r.get(7),
                oldest_secs: r.get(8),
            })
            .collect())
    }

    pub(crate) fn jobs_finished(&mut self) -> DataResult<i64> {
        Ok(self.read_one(sql::JOBS_FINISHED, &[])?.get(0))
    }

    pub(crate) fn subscriptions(&mut self) -> DataResult<Vec<SubscriptionRow>> {
        let rows = self.read(sql::SUBSCRIPTIONS, &[])?;
        let holder = self.horizon_holder()?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: String = r.get(0);
            let parts = self.partitions(&name)?;
            let beyond_horizon: i64 = parts.iter().map(|p| p.beyond_horizon).sum();
            out.push(SubscriptionRow {
                events_behind: parts.iter().map(|p| p.events_behind).sum(),
                behind_capped: parts.iter().any(|p| p.events_behind >= LAG_CAP),
                oldest_secs: parts.iter().filter_map(|p| p.oldest_secs).reduce(f64::max),
                beyond_horizon,
                horizon_pid: holder.filter(|_| beyond_horizon > 0).map(|h| h.0),
                horizon_secs: holder.filter(|_| beyond_horizon > 0).map(|h| h.1),
                name,
                patterns: r.get(1),
                partitions: r.get(2),
                members: r.get(3),
                dead: r.get(4),
                retrying: r.get(5),
            });
        }
        Ok(out)
    }

    /// The transaction holding the xid8 horizon back: its pid and age in seconds.
    pub(crate) fn horizon_holder(&mut self) -> DataResult<Option<(i32, f64)>> {
        let row = self.read_opt(sql::HORIZON_HOLDER, &[])?;
        Ok(row.map(|r| (r.get(0), r.get::<_, Option<f64>>(1).unwrap_or(0.0))))
    }

    /// The overview as JSON, for the page's live updates.
    pub(crate) fn overview_json(&mut self) -> DataResult<Value> {
        let queues: Vec<Value> = self
            .queues()?
            .iter()
            .map(|q| {
                let mut o = json!({
                    "queue": q.queue,
                    "dead_last_minute": q.dead_last_minute,
                    "oldest_secs": q.oldest_secs,
                });
                for (state, n) in STATES.iter().zip(q.counts) {
                    o[*state] = json!(n);
                }
                o
            })
            .collect();
        let subscriptions: Vec<Value> = self
            .subscriptions()?
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "members": s.members,
                    "events_behind": s.events_behind,
                    "behind_capped": s.behind_capped,
                    "oldest_secs": s.oldest_secs,
                    "beyond_horizon": s.beyond_horizon,
                    "horizon_pid": s.horizon_pid,
                    "horizon_secs": s.horizon_secs,
                    "dead": s.dead,
                    "retrying": s.retrying,
                })
            })
            .collect();
        Ok(json!({
            "queues": queues,
            "subscriptions": subscriptions,
            "jobs_finished": self.jobs_finished()?,
        }))
    }

    pub(crate) fn queue_jobs(&mut self, queue: &str, f: &JobFilter<'_>) -> DataResult<Vec<JobRow>> {
        // A number is looked up by the primary key; it may also be a unique key or payload
        // text, so the general search follows when the id names no job of this queue.
        let mut rows = match f.search.map(str::parse::<i64>) {
            Some(Ok(id)) if f.before_id.is_none() => {
                self.read(sql::QUEUE_JOB_BY_ID, &[&queue, &id])?
            }
            _ => Vec::new(),
        };
        if rows.is_empty() {
            rows = self.read(
                sql::QUEUE_JOBS,
                &[&queue, &f.state, &f.before_id, &f.search, &f.limit],
            )?;
        }
        Ok(rows
            .iter()
            .map(|r| JobRow {
                id: r.get(0),
                state: r.get(1),
                priority: r.get(2),
                run_at: r.get(3),
                attempt: r.get(4),
                max_attempts: r.get(5),
                unique_key: r.get(6),
                payload: r.get(7),
                last_error: r.get(8),
                created_at: r.get(9),
            })
            .collect())
    }

    pub(crate) fn job(&mut self, id: i64) -> DataResult<Option<JobDetail>> {
        let row = self.read_opt(sql::JOB, &[&id])?;
        Ok(row.map(|r| JobDetail {
            id: r.get(0),
            queue: r.get(1),
            state: r.get(2),
            payload: r.get(3),
            priority: r.get(4),
            run_at: r.get(5),
            attempt: r.get(6),
            max_attempts: r.get(7),
            unique_key: r.get(8),
            lease_until: r.get(9),
            worker: r.get(10),
            last_error: r.get(11),
            errors: r.get(12),
            result: r.get(13),
            created_at: r.get(14),
            finished_at: r.get(15),
        }))
    }

    pub(crate) fn retry_job(&mut self, id: i64) -> DataResult<bool> {
        Ok(db(self.conn.query_one("SELECT pgbroker.retry($1)", &[&id]))?.get(0))
    }

    pub(crate) fn cancel_job(&mut self, id: i64) -> DataResult<bool> {
        Ok(db(self.conn.query_one("SELECT pgbroker.cancel($1)", &[&id]))?.get(0))
    }

    pub(crate) fn delete_job(&mut self, id: i64) -> DataResult<Option<String>> {
        Ok(db(self.conn.query_opt(sql::JOB_DELETE, &[&id]))?.map(|r| r.get(0)))
    }

    pub(crate) fn run_job_now(&mut self, id: i64) -> DataResult<bool> {
        Ok(db(self.conn.query_opt(sql::JOB_RUN_NOW, &[&id]))?.is_some())
    }

    pub(crate) fn retry_dead(&mut self, queue: &str) -> DataResult<i64> {
        Ok(db(self.conn.query_one(sql::QUEUE_RETRY_DEAD, &[&queue]))?.get(0))
    }

    pub(crate) fn subscription(&mut self, name: &str) -> DataResult<Option<SubscriptionDetail>> {
        let row = self.read_opt(sql::SUBSCRIPTION, &[&name])?;
        Ok(row.map(|r| SubscriptionDetail {
            name: r.get(0),
            patterns: r.get(1),
            partitions: r.get(2),
            expire_secs: r.get(3),
            created_at: r.get(4),
        }))
    }

    pub(crate) fn partitions(&mut self, name: &str) -> DataResult<Vec<PartitionRow>> {
        let rows = self.read(sql::SUBSCRIPTION_PARTITIONS, &[&name, &LAG_CAP])?;
        Ok(rows
            .iter()
            .map(|r| PartitionRow {
                part: r.get(0),
                cursor: r.get(1),
                events_behind: r.get(2),
                oldest_secs: r.get(3),
                beyond_horizon: r.get(4),
                holder: r.get(5),
            })
            .collect())
    }

    pub(crate) fn members(&mut self, name: &str) -> DataResult<Vec<MemberRow>> {
        let rows = self.read(sql::SUBSCRIPTION_MEMBERS, &[&name])?;
        Ok(rows
            .iter()
            .map(|r| MemberRow {
                pid: r.get(0),
                name: r.get(1),
                partitions: r.get(2),
                joined_at: r.get(3),
                seen_at: r.get(4),
            })
            .collect())
    }

    pub(crate) fn dead_letters(&mut self, name: &str) -> DataResult<Vec<DeadRow>> {
        let rows = self.read(sql::SUBSCRIPTION_DEAD, &[&name])?;
        Ok(rows
            .iter()
            .map(|r| DeadRow {
                id: r.get(0),
                position: r.get(1),
                topic: r.get(2),
                key: r.get(3),
                payload: r.get(4),
                attempt: r.get(5),
                dead: r.get(6),
                last_error: r.get(7),
                failed_at: r.get(8),
            })
            .collect())
    }

    pub(crate) fn redrive(&mut self, name: &str, ids: Option<Vec<i64>>) -> DataResult<i32> {
        Ok(db(self
            .conn
            .query_one("SELECT pgbroker.redrive($1, $2)", &[&name, &ids]))?
        .get(0))
    }

    /// Seeks every partition of `name` to `(tx, id)`; how many partitions moved.
    pub(crate) fn seek(&mut self, name: &str, tx: &str, id: i64) -> DataResult<u32> {
        let parts: i32 = match self.subscription(name)? {
            Some(s) => s.partitions,
            None => return Err(format!("no subscription {name:?}")),
        };
        let mut tx_conn = db(self.conn.transaction())?;
        let mut moved = 0;
        for part in 0..parts {
            let row = db(tx_conn.query_one(
                "SELECT pgbroker.seek($1, $2::text::xid8, $3, $4)",
                &[&name, &tx, &id, &part],
            ))?;
            if row.get::<_, bool>(0) {
                moved += 1;
            }
        }
        db(tx_conn.commit())?;
        Ok(moved)
    }

    /// The position just before the first event at or after `t`.
    pub(crate) fn position_at(&mut self, t: SystemTime) -> DataResult<Option<(String, i64)>> {
        let row = self.read_opt(sql::SEEK_TIME, &[&t])?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub(crate) fn webhook_endpoints(&mut self) -> DataResult<Vec<EndpointRow>> {
        let rows = self.read(sql::WEBHOOKS, &[])?;
        Ok(rows
            .iter()
            .map(|r| EndpointRow {
                id: r.get(0),
                url: r.get(1),
                patterns: r.get(2),
                enabled: r.get(3),
                disabled_reason: r.get(4),
                header_names: r.get(5),
                attempt: r.get(6),
                next_attempt_at: r.get(7),
                last_status: r.get(8),
                last_error: r.get(9),
                delivered: r.get(10),
                failed: r.get(11),
                dead: r.get(12),
            })
            .collect())
    }

    pub(crate) fn webhook_dead(&mut self) -> DataResult<Vec<DeadDeliveryRow>> {
        let rows = self.read(sql::WEBHOOK_DEAD, &[])?;
        Ok(rows
            .iter()
            .map(|r| DeadDeliveryRow {
                endpoint_id: r.get(0),
                event_id: r.get(1),
                position: r.get(2),
                topic: r.get(3),
                payload: r.get(4),
                attempts: r.get(5),
                last_status: r.get(6),
                last_error: r.get(7),
                failed_at: r.get(8),
                redrive: r.get(9),
            })
            .collect())
    }

    /// Marks an endpoint's dead deliveries (one, or all) for another try; how many.
    pub(crate) fn webhook_redrive(&mut self, endpoint: i64, event: Option<i64>) -> DataResult<i64> {
        Ok(db(self.conn.query_one(
            "SELECT pgbroker.webhook_redrive($1, $2)",
            &[&endpoint, &event],
        ))?
        .get(0))
    }

    /// Enables or disables an endpoint; false when there is none.
    pub(crate) fn webhook_set_enabled(&mut self, endpoint: i64, enabled: bool) -> DataResult<bool> {
        Ok(db(self.conn.query_one(
            "SELECT pgbroker.webhook_set_enabled($1, $2, 'disabled from the dashboard')",
            &[&endpoint, &enabled],
        ))?
        .get(0))
    }

    pub(crate) fn events(&mut self, f: &EventFilter<'_>) -> DataResult<Vec<EventRow>> {
        let (tx, id) = match &f.before {
            Some((tx, id)) => (Some(tx.as_str()), Some(*id)),
            None => (None, None),
        };
        let rows = self.read(
            sql::EVENTS,
            &[&f.pattern, &f.before_time, &tx, &id, &f.limit],
        )?;
        Ok(rows.iter().map(event_row).collect())
    }

    pub(crate) fn event(&mut self, tx: &str, id: i64) -> DataResult<Option<EventRow>> {
        let row = self.read_opt(sql::EVENT, &[&tx, &id])?;
        Ok(row.as_ref().map(event_row))
    }
}

/// An event row of events.sql (headers NULL: the listing does not show them) or event.sql.
fn event_row(r: &Row) -> EventRow {
    EventRow {
        position: r.get(0),
        topic: r.get(1),
        key: r.get(2),
        payload: r.get(3),
        headers: r.get(4),
        created_at: r.get(5),
    }
}
