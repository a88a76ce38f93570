//! Sending notifications: on a pooled connection, or inside the caller's transaction.

use std::borrow::Cow;

use postgres::types::Type;

use super::{validate_channel, MAX_PAYLOAD_BYTES};
use crate::{Broker, Error, ErrorKind, Payload, Result, ToPayload};

/// Validates a channel and payload and returns the payload text.
fn checked<'a>(channel: &str, payload: &'a Payload<'_>) -> Result<Cow<'a, str>> {
    validate_channel(channel)?;
    let text = payload.as_text()?;
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(Error::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "notification payload is {} bytes, the limit is {MAX_PAYLOAD_BYTES}; \
                 publish to the durable log for large messages",
                text.len()
            ),
        ));
    }
    if text.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "notification payload contains a NUL character",
        ));
    }
    Ok(text)
}

const NOTIFY_SQL: &str = "SELECT pg_notify($1, $2)";

impl Broker {
    /// Sends a notification on `channel` now, on a pooled connection (its own transaction).
    ///
    /// Fails before sending anything with [`ErrorKind::InvalidName`] for a bad channel,
    /// [`ErrorKind::PayloadTooLarge`] for a payload over 7999 bytes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// broker.notify("orders", &serde_json::json!({"id": 42, "status": "paid"}))?;
    /// # Ok(()) }
    /// ```
    pub fn notify<P: ToPayload + ?Sized>(&self, channel: &str, payload: &P) -> Result<()> {
        let payload = payload.to_payload()?;
        let text = checked(channel, &payload)?;
        let mut conn = self.conn()?;
        let stmt = conn.statement(NOTIFY_SQL)?;
        conn.execute(&stmt, &[&channel, &text.as_ref()])?;
        Ok(())
    }

    /// Queues a notification in the caller's transaction: it is sent if and when `tx`
    /// commits, and never if it rolls back. Checks as [`notify`](Self::notify) does.
    ///
    /// Within one transaction PostgreSQL folds identical (channel, payload) pairs into one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let mut conn = broker.conn()?;
    /// let mut tx = conn.transaction()?;
    /// tx.execute("INSERT INTO orders (id) VALUES (42)", &[])?;
    /// broker.notify_in(&mut tx, "orders", "42")?;
    /// tx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn notify_in<P: ToPayload + ?Sized>(
        &self,
        tx: &mut postgres::Transaction<'_>,
        channel: &str,
        payload: &P,
    ) -> Result<()> {
        let payload = payload.to_payload()?;
        let text = checked(channel, &payload)?;
        // One round trip: no prepare on a connection we do not own.
        tx.query_typed(
            NOTIFY_SQL,
            &[(&channel, Type::TEXT), (&text.as_ref(), Type::TEXT)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn payload_limit_is_exact() {
        assert!(checked("c", &Payload::text("a".repeat(7999))).is_ok());
        let err = checked("c", &Payload::text("a".repeat(8000))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
        assert_eq!(
            checked("c", &Payload::text("a\0")).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let v = serde_json::json!({"a": 1});
        assert_eq!(checked("c", &Payload::json(&v)).unwrap(), "{\"a\":1}");
    }
}
