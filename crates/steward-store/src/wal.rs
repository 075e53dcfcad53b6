//! SQLite's write-ahead log, checkpointed off the writer's path.
//!
//! By default SQLite checkpoints inside the commit that takes the log past
//! 1000 pages: that commit (and every decision waiting on it) copies the log
//! into the database file and syncs it, a stall of tens of milliseconds every
//! few hundred decisions. The writer connection turns automatic checkpoints
//! off and a task of its own runs a `PASSIVE` checkpoint on a connection of
//! its own a few times a second, which copies what readers no longer need
//! without taking the writer's lock; the writer keeps appending meanwhile.

use std::sync::Weak;
use std::time::Duration;

use sqlx::AnyPool;

/// How often the log is checkpointed. A few hundred milliseconds of
/// decisions is a few thousand log pages at most.
const EVERY: Duration = Duration::from_millis(200);

/// Checkpoint `pool`'s database every [`EVERY`] until the store is closed
/// (the pool closes) or dropped (`alive` no longer upgrades).
pub(crate) fn start(pool: AnyPool, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.upgrade().is_none() || pool.is_closed() {
                break;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                // The next round tries again; the log only grows meanwhile.
                tracing::warn!(error = %e, "checkpointing the SQLite log failed");
            }
        }
        pool.close().await;
    });
}
