//! The balanced consumers (members) of a subscription, as the database sees them.

use std::time::SystemTime;

use super::validate_subscription;
use crate::{Broker, Result};

/// A live balanced consumer of a subscription: one worker pool consuming it without
/// [`ConsumerOptions::only_partitions`](super::ConsumerOptions::only_partitions). Listed by
/// [`Broker::subscription_members`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> pgbroker::Result<()> {
/// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
/// for m in broker.subscription_members("billing")? {
///     println!("{} (pid {}) holds {:?}", m.name, m.pid, m.partitions);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionMember {
    /// The name it gave ([`ConsumerOptions::member_name`](super::ConsumerOptions::member_name);
    /// by default `host:process-id`).
    pub name: String,
    /// The server process id of its membership connection: the member lives as long as it.
    pub pid: i32,
    /// The partitions it held at its last check-in, ascending.
    pub partitions: Vec<u32>,
    /// When it joined; the oldest members get the extra partitions of an uneven split.
    pub joined_at: SystemTime,
    /// When its row was last written: at least every 10 s, and whenever its partitions change.
    pub seen_at: SystemTime,
}

impl Broker {
    /// The live balanced consumers of a subscription, oldest first (none for a subscription
    /// that does not exist). A member whose connection ended is not listed, even before its
    /// row is cleaned up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> pgbroker::Result<()> {
    /// # let broker = pgbroker::Broker::connect("postgres://localhost/app")?;
    /// let shares: Vec<usize> = broker
    ///     .subscription_members("billing")?
    ///     .iter()
    ///     .map(|m| m.partitions.len())
    ///     .collect();
    /// # Ok(()) }
    /// ```
    pub fn subscription_members(&self, subscription: &str) -> Result<Vec<SubscriptionMember>> {
        validate_subscription(subscription)?;
        let mut conn = self.conn()?;
        let rows = conn.query(
            "SELECT pid, name, partitions, joined_at, seen_at FROM pgbroker.live_members($1)",
            &[&subscription],
        )?;
        Ok(rows
            .iter()
            .map(|r| SubscriptionMember {
                pid: r.get(0),
                name: r.get(1),
                partitions: r
                    .get::<_, Vec<i32>>(2)
                    .into_iter()
                    .map(|p| p.max(0) as u32)
                    .collect(),
                joined_at: r.get(3),
                seen_at: r.get(4),
            })
            .collect())
    }
}
