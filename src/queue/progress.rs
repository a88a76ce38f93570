//! Progress reports of running jobs: [`JobContext::set_progress`], stored in the job's
//! `details` and sent to watchers (`pgbroker.set_progress`, schema/functions/job_options.sql).

use super::{input_error, JobContext};
use crate::{Error, ErrorKind, Payload, Result, ToPayload};

const PROGRESS_SQL: &str = "SELECT pgbroker.set_progress($1, $2, $3)";

/// The largest progress report, in bytes of JSON text (it travels in a notification).
pub const MAX_PROGRESS_BYTES: usize = 4000;

impl JobContext<'_> {
    /// Records the job's progress (any JSON, at most [`MAX_PROGRESS_BYTES`]): stored with the
    /// job (see [`JobInfo::progress`](super::JobInfo), `pgbroker jobs`) and sent to
    /// [watchers](crate::Broker::watch_jobs) of its queue as a [`JobEvent`](super::JobEvent)
    /// in state `Running` with `progress` set. One statement on a pooled connection, outside
    /// any transaction of the handler. Returns false when the job no longer runs under this
    /// attempt (cancelled, rescued), and for a job
    /// [taken in a transaction](super::QueueOptions::transactional), which has no stored row
    /// to update while it runs (nothing is recorded then).
    ///
    /// Fails with [`ErrorKind::InvalidInput`] for a report too large, not JSON or with a NUL
    /// character.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(job: &pgbroker::queue::JobContext) -> pgbroker::HandlerResult {
    /// let rows = 10_000;
    /// for done in (0..=rows).step_by(1000) {
    ///     // ... import 1000 rows ...
    ///     job.set_progress(&serde_json::json!({"rows": done, "of": rows}))?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn set_progress<P: ToPayload + ?Sized>(&self, progress: &P) -> Result<bool> {
        let progress = progress
            .to_payload()
            .and_then(Payload::into_json)
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("progress is not JSON: {e}"),
                )
            })?;
        if crate::json_nul::contains_nul(&progress) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "progress contains a NUL character (\\u0000), which jsonb cannot store",
            ));
        }
        let size = progress.to_string().len();
        if size > MAX_PROGRESS_BYTES {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("progress must be at most {MAX_PROGRESS_BYTES} bytes of JSON, got {size}"),
            ));
        }
        let job = self.claimed();
        if job.is_taken() {
            return Ok(false);
        }
        let mut conn = self.broker().conn()?;
        let stmt = conn.statement(PROGRESS_SQL)?;
        let row = conn
            .query_one(&stmt, &[&job.id, &progress, &job.attempt])
            .map_err(input_error)?;
        Ok(row.get(0))
    }
}
