//! Leader election for several controllers on one database (issue 20): whoever holds the
//! `scheduler` lease runs the scheduler and convergence; the others serve the API, agents and
//! router and follow the leader's placements (see [`super::convergence`]). Modelled on Cloud
//! Foundry's Locket lock for the BBS: a 15 s TTL; here 14 s, renewed every 5 s, so a dead leader is replaced
//! 9 to 14.5 s after its death, within Locket's 15 s (its last renewal plus the TTL, plus a follower's retry period).
//!
//! The lease alone cannot stop a leader that stalled (a long GC-like pause, a partition) and
//! still believes it leads; so every scheduler write carries the lease's epoch and holder (a
//! [`Fence`]) and the store refuses it inside its own write transaction once the lease moved on
//! or expired ([`crate::store::StoreError::Fenced`]).
//!
//! On SQLite there is one controller: it always leads, and its writes carry no fence, so the
//! single-machine default pays nothing for this.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::state::AppCtx;
use crate::store::Fence;

/// The lease the scheduler runs under.
pub const SCHEDULER: &str = "scheduler";
/// How long a lease lasts unless renewed: with a follower's retry, a dead leader is replaced
/// within 14.5 s of its last renewal, so within 15 s of its death (Cloud Foundry's Locket: 15 s).
pub const TTL: Duration = Duration::from_secs(14);
/// How often the leader renews it: two renewals may fail before it expires.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a follower tries to take it: the takeover comes at most this long after expiry.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);

/// What this controller may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The only controller (SQLite): leads, writes unfenced.
    Sole,
    /// Holds the lease: leads, every scheduler write carries this fence.
    Leader(Fence),
    /// Another controller leads (or nobody yet).
    Follower,
}

/// This process's part in the election.
pub struct Leadership {
    /// A random id per process, logged at start, stored as the lease's holder.
    pub holder: String,
    shared: bool,
    held: Mutex<Option<(Fence, Instant)>>,
    /// What a follower last saw of the placements (a hash), to wake its agents when the leader
    /// changes them.
    pub(crate) placements_seen: AtomicU64,
    /// The same for the builds in flight, which any controller may place.
    pub(crate) builds_seen: AtomicU64,
}

impl Leadership {
    /// `shared`: whether the database may have other controllers ([`crate::store::LeaseStore::shared`]).
    pub fn new(shared: bool) -> Self {
        let holder = uuid::Uuid::new_v4().simple().to_string();
        Self {
            holder,
            shared,
            held: Mutex::new(None),
            placements_seen: AtomicU64::new(0),
            builds_seen: AtomicU64::new(0),
        }
    }

    /// The role now: a held lease counts only until its local deadline, which is never later
    /// than its expiry in the database.
    pub fn role(&self) -> Role {
        if !self.shared {
            return Role::Sole;
        }
        match self.held.lock().ok().and_then(|h| h.clone()) {
            Some((fence, until)) if Instant::now() < until => Role::Leader(fence),
            _ => Role::Follower,
        }
    }

    /// Whether this controller leads now (`leader` in `GET /v1/info` and `/metrics`).
    pub fn is_leader(&self) -> bool {
        self.role() != Role::Follower
    }

    fn set(&self, held: Option<(Fence, Instant)>) {
        if let Ok(mut h) = self.held.lock() {
            *h = held;
        }
    }

    /// Drops the lease locally after the store refused a fenced write: the next renewal finds
    /// out whether it can be taken again.
    pub fn lost(&self) {
        if self.shared {
            self.set(None);
        }
    }
}

/// Takes, renews and on a graceful stop releases the scheduler lease. Returns at once on SQLite.
pub async fn run(ctx: Arc<AppCtx>) {
    let lead = &ctx.leadership;
    if !lead.shared {
        return;
    }
    tracing::info!(holder = %lead.holder, "controller id; competing for the scheduler lease");
    loop {
        let started = Instant::now();
        let was = lead.role() != Role::Follower;
        match ctx.store.acquire_lease(SCHEDULER, &lead.holder, TTL).await {
            Ok(Some(lease)) => {
                // The database counts the TTL from its own now, which is after `started`.
                lead.set(Some((Fence::from(&lease), started + TTL)));
                if !was {
                    tracing::info!(holder = %lead.holder, epoch = lease.epoch, "took the scheduler lease: this controller leads");
                    ctx.converge.notify_one();
                }
            }
            Ok(None) => {
                if was {
                    tracing::warn!(holder = %lead.holder, "lost the scheduler lease: another controller leads");
                }
                lead.set(None);
            }
            // Keep leading until the local deadline: the store's fencing refuses anything later.
            Err(e) => tracing::warn!(error = %e, "renewing the scheduler lease failed"),
        }
        let wait = if lead.role() == Role::Follower {
            RETRY_EVERY
        } else {
            RENEW_EVERY
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.stopping.cancelled() => break,
        }
    }
    // A graceful stop hands over at once rather than after the TTL.
    if lead.role() != Role::Follower {
        lead.set(None);
        match ctx.store.release_lease(SCHEDULER, &lead.holder).await {
            Ok(_) => tracing::info!("released the scheduler lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the scheduler lease failed"),
        }
    }
}
