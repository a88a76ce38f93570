//! Balanced partition assignment: the thread that makes one worker pool a member of a
//! subscription and keeps its share of the partitions.
//!
//! Membership and mutual exclusion are both advisory locks, so they end with the session that
//! holds them (a killed process, a terminated or cut connection) without any timeout:
//!
//! - The member connection holds the shared lock `pgbroker.member_lock_key(subscription)` and
//!   checks in every `lock_retry` (`pgbroker.member_checkin`), which returns the number of live
//!   members, this member's rank (oldest first), its share (`partitions / members`, one more for
//!   the `partitions % members` oldest) and the partitions some session holds now.
//! - Each partition is consumed on its own connection holding the partition's exclusive lock,
//!   as with assigned partitions. The lock stays the only guarantee that one consumer at a
//!   time reads a partition; balancing only decides which partitions a member tries to take.
//! - Under its share, a member starts consumers for partitions nobody holds (each tries the
//!   lock once; losing a race just frees the slot for the next check-in). Over it, it tells the
//!   extra consumers to hand their partition back: they finish and acknowledge the batch in
//!   hand, then unlock. Members keep what they hold otherwise, so a join or a leave moves only
//!   the partitions that must move.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use postgres::Client;

use super::options::{ConsumerOptions, Handler};
use super::partition_consumer::PartitionConsumer;
use crate::worker::SourceContext;
use crate::{Error, ErrorKind, Result};

const CHECKIN_SQL: &str =
    "SELECT members, rank, share, taken FROM pgbroker.member_checkin($1, $2, $3)";

/// What a check-in tells a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) members: u32,
    pub(crate) rank: u32,
    pub(crate) share: usize,
    /// Partitions whose lock some session (this member's included) holds.
    pub(crate) taken: BTreeSet<u32>,
}

/// What a member does after a check-in.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) release: Vec<u32>,
    pub(crate) take: Vec<u32>,
}

/// Decides which partitions to hand back or to try, given the consumers running (partition,
/// holding its lock yet) and a preference score per partition (rendezvous hashing: members
/// prefer different partitions, so they seldom race for the same free one).
pub(crate) fn plan(
    share: usize,
    running: &[(u32, bool)],
    taken: &BTreeSet<u32>,
    partitions: u32,
    score: impl Fn(u32) -> u64,
) -> Plan {
    let mut plan = Plan::default();
    if running.len() > share {
        // Consumers still trying for their lock go first, then the least preferred.
        let mut order = running.to_vec();
        order.sort_by_key(|&(p, holding)| (holding, score(p)));
        plan.release = order[..running.len() - share]
            .iter()
            .map(|&(p, _)| p)
            .collect();
        plan.release.sort_unstable();
    } else if running.len() < share {
        let mut free: Vec<u32> = (0..partitions)
            .filter(|p| !taken.contains(p) && !running.iter().any(|&(r, _)| r == *p))
            .collect();
        free.sort_by_key(|&p| std::cmp::Reverse(score(p)));
        free.truncate(share - running.len());
        free.sort_unstable();
        plan.take = free;
    }
    plan
}

/// A consumer thread started by the balancer.
struct Running {
    thread: JoinHandle<()>,
    /// Dropped to ask for the partition back.
    release: Option<Sender<()>>,
    holding: Arc<AtomicBool>,
}

/// One worker pool's membership of one subscription.
pub(crate) struct Balancer {
    pub(crate) name: Arc<str>,
    pub(crate) member_name: String,
    pub(crate) partitions: u32,
    pub(crate) options: Arc<ConsumerOptions>,
    pub(crate) handler: Handler,
    /// Wake-ups per partition, handed to the partition's consumer.
    pub(crate) wake: Vec<Receiver<()>>,
    pub(crate) ctx: SourceContext,
    client: Option<Client>,
    running: BTreeMap<u32, Running>,
    preference: RandomState,
}

impl Balancer {
    /// Joins the subscription (one check-in, so that a missing schema or subscription fails
    /// the pool's start); consumers start when the thread runs.
    pub(crate) fn join(
        name: Arc<str>,
        member_name: String,
        partitions: u32,
        options: Arc<ConsumerOptions>,
        handler: Handler,
        wake: Vec<Receiver<()>>,
        ctx: SourceContext,
    ) -> Result<Balancer> {
        let mut b = Balancer {
            name,
            member_name,
            partitions,
            options,
            handler,
            wake,
            ctx,
            client: None,
            running: BTreeMap::new(),
            preference: RandomState::new(),
        };
        b.check_in()?;
        Ok(b)
    }

    /// Checks in every `lock_retry` and applies the plan until the pool stops or the
    /// subscription is deleted; then stops its consumers and leaves.
    pub(crate) fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            self.reap();
            if self.ctx.is_stopping() {
                break;
            }
            match self.check_in() {
                Ok(view) => {
                    failures = 0;
                    self.apply(&view);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    log::warn!("pgbroker consumers of {:?} stop: {e}", self.name);
                    break;
                }
                Err(e) => {
                    // Consumers keep their partitions meanwhile: their locks are on their
                    // own connections. Others see this member gone and rebalance without it.
                    log::warn!(
                        "pgbroker member {:?} of {:?} lost its connection: {e}",
                        self.member_name,
                        self.name
                    );
                    self.client = None;
                    failures += 1;
                    let delay = self
                        .ctx
                        .broker
                        .config()
                        .reconnect_delay(failures.min(16) - 1);
                    if !self.ctx.sleep(delay) {
                        break;
                    }
                    continue;
                }
            }
            if !self.ctx.sleep(self.options.lock_retry) {
                break;
            }
        }
        for r in self.running.values_mut() {
            r.release = None;
        }
        for (_, r) in std::mem::take(&mut self.running) {
            if r.thread.join().is_err() {
                log::error!("pgbroker: a consumer thread of {:?} panicked", self.name);
            }
        }
        if let Some(mut client) = self.client.take() {
            // Closing the connection ends the membership; the row is only tidied up.
            let _ = client.execute(
                "DELETE FROM pgbroker.subscription_members \
                  WHERE subscription = $1 AND pid = pg_backend_pid()",
                &[&&*self.name],
            );
        }
    }

    /// Renews the membership (connecting first when needed), reporting the partitions held.
    fn check_in(&mut self) -> Result<View> {
        if self.client.is_none() {
            self.client = Some(self.ctx.broker.connect_dedicated()?);
        }
        let held: Vec<i32> = self
            .running
            .iter()
            .filter(|(_, r)| r.holding.load(Ordering::SeqCst))
            .map(|(p, _)| *p as i32)
            .collect();
        let client = self.client.as_mut().expect("connected above");
        let row = client
            .query_one(CHECKIN_SQL, &[&&*self.name, &self.member_name, &held])
            .map_err(|e| {
                if e.code().map(|c| c.code()) == Some("P0002") {
                    Error::with_cause(
                        ErrorKind::NotFound,
                        Some(format!("no subscription {:?}", self.name)),
                        e,
                    )
                } else {
                    Error::from(e)
                }
            })?;
        Ok(View {
            members: row.get::<_, i32>(0).max(1) as u32,
            rank: row.get::<_, i32>(1).max(0) as u32,
            share: row.get::<_, i32>(2).max(0) as usize,
            taken: row
                .get::<_, Vec<i32>>(3)
                .into_iter()
                .map(|p| p.max(0) as u32)
                .collect(),
        })
    }

    /// Hands back the partitions past the share, or starts consumers for free ones.
    fn apply(&mut self, view: &View) {
        // Consumers already handing back do not count: they are leaving.
        let running: Vec<(u32, bool)> = self
            .running
            .iter()
            .filter(|(_, r)| r.release.is_some())
            .map(|(p, r)| (*p, r.holding.load(Ordering::SeqCst)))
            .collect();
        let mut taken = view.taken.clone();
        taken.extend(self.running.keys()); // leaving ones are not free until reaped
        let preference = &self.preference;
        let plan = plan(view.share, &running, &taken, self.partitions, |p| {
            preference.hash_one(p)
        });
        if !plan.release.is_empty() || !plan.take.is_empty() {
            log::debug!(
                "pgbroker member {:?} of {:?} (rank {} of {}, share {}): releasing {:?}, \
                 taking {:?}",
                self.member_name,
                self.name,
                view.rank,
                view.members,
                view.share,
                plan.release,
                plan.take
            );
        }
        for p in plan.release {
            if let Some(r) = self.running.get_mut(&p) {
                r.release = None;
            }
        }
        for p in plan.take {
            if let Err(e) = self.start_consumer(p) {
                log::error!("pgbroker: cannot start a consumer thread: {e}");
            }
        }
    }

    fn start_consumer(&mut self, partition: u32) -> Result<()> {
        let (release_tx, release_rx) = crossbeam_channel::bounded(0);
        let holding = Arc::new(AtomicBool::new(false));
        let consumer = PartitionConsumer {
            name: self.name.clone(),
            partition,
            options: self.options.clone(),
            handler: self.handler.clone(),
            wake: self.wake[partition as usize].clone(),
            ctx: self.ctx.clone(),
            release: release_rx,
            wait_for_lock: false,
            holding: holding.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("pgbroker-sub-{}-{partition}", self.name))
            .spawn(move || consumer.run())?;
        self.running.insert(
            partition,
            Running {
                thread,
                release: Some(release_tx),
                holding,
            },
        );
        Ok(())
    }

    /// Joins the consumers that ended (handed back, lost a race for the lock, or stopped).
    fn reap(&mut self) {
        let ended: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, r)| r.thread.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            if let Some(r) = self.running.remove(&p) {
                if r.thread.join().is_err() {
                    log::error!("pgbroker: a consumer thread of {:?} panicked", self.name);
                }
            }
        }
    }
}

/// `host:process-id`, the default name of a member.
pub(crate) fn default_member_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod test {
    use super::*;

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    /// Prefers low partition numbers, so results are easy to read.
    fn low_first(p: u32) -> u64 {
        u64::MAX - p as u64
    }

    #[test]
    fn takes_free_partitions_up_to_the_share() {
        let p = plan(2, &[], &set(&[0, 1]), 6, low_first);
        assert_eq!(p.take, [2, 3]);
        assert!(p.release.is_empty());
        let p = plan(2, &[(4, true)], &set(&[0, 1, 4]), 6, low_first);
        assert_eq!(p.take, [2]);
    }

    #[test]
    fn takes_nothing_when_every_partition_is_held() {
        let p = plan(3, &[(0, true)], &set(&[0, 1, 2, 3, 4, 5]), 6, low_first);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn hands_back_partitions_past_the_share_trying_ones_first() {
        let running = [(0, true), (1, true), (2, false)];
        let p = plan(1, &running, &set(&[0, 1]), 6, low_first);
        // 2 has no lock yet; then the least preferred of those held.
        assert_eq!(p.release, [1, 2]);
        assert!(p.take.is_empty());
    }

    #[test]
    fn keeps_what_it_holds_at_its_share() {
        let running = [(3, true), (5, true)];
        assert_eq!(
            plan(2, &running, &set(&[3, 5]), 6, low_first),
            Plan::default()
        );
    }

    #[test]
    fn shares_add_up_to_the_partitions() {
        // The SQL rule, restated: partitions / members, one more for the oldest.
        let share = |n: usize, m: usize, rank: usize| n / m + usize::from(rank < n % m);
        for n in 1..40 {
            for m in 1..12 {
                let total: usize = (0..m).map(|r| share(n, m, r)).sum();
                assert_eq!(total, n);
            }
        }
        assert_eq!(
            (0..4).map(|r| share(6, 4, r)).collect::<Vec<_>>(),
            [2, 2, 1, 1]
        );
    }
}
