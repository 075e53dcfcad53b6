//! SQLite's write-ahead log, checkpointed beside the writer.
//!
//! Left to itself, SQLite checkpoints inline: the commit that takes the log
//! past 1 000 pages copies them into the database file and syncs it, and
//! every decision queued behind that commit waits (18 to 25 ms here, every
//! few hundred decisions). Instead the writer connection never checkpoints
//! (`wal_autocheckpoint = 0`) and this task, on a connection of its own,
//! runs a `PASSIVE` checkpoint every [`EVERY`] (25 ms), which copies pages without
//! taking the writer's lock. A passive checkpoint racing a steady writer
//! never finishes the log, though, and only a finished log starts again from
//! its beginning; so once the log holds [`RESTART_AT`] pages, a `RESTART`
//! checkpoint follows the passive one: it holds the writer only while it
//! copies the pages written since and syncs (1.5 to 5 ms measured under
//! 1000 decisions/s, about once a second), and the next commit writes from
//! the start of the file again, which keeps its size bounded.

use std::sync::Weak;
use std::time::Duration;

use sqlx::AnyPool;

/// How often the log is checkpointed. Often, so each checkpoint has
/// little to copy and sync: under 1000 decisions/s the p99 with
/// `synchronous=normal` was 0.83 to 1.08 ms at 25 ms against 1.03 to 1.23 ms
/// at 100 ms and 2.6 to 2.9 ms at 1 s; 10 ms was no better than 25
/// (docs/benchmarks.md, ninth session). An idle log makes each one a no-op.
pub(crate) const EVERY: Duration = Duration::from_millis(25);

/// Pages (4 KiB each) in the log past which it is restarted.
pub(crate) const RESTART_AT: i64 = 4096;

/// How long a `RESTART` waits for the writer to finish its commit and for
/// readers of the old log to finish, holding the writer meanwhile, before
/// giving up until the next tick: the checkpointer's busy timeout.
pub(crate) const PATIENCE_MS: u32 = 20;

/// Checkpoint until the store is dropped (`alive` gone) or closed.
pub(crate) async fn checkpoint(pool: AnyPool, alive: Weak<()>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() || pool.is_closed() {
            break;
        }
        match run(&pool, "PASSIVE").await {
            Ok(log) if log >= RESTART_AT => {
                if let Err(e) = run(&pool, "RESTART").await {
                    tracing::warn!(error = %e, "restarting the write-ahead log failed; retrying");
                }
            }
            Ok(_) => {}
            Err(sqlx::Error::PoolClosed) => break,
            Err(e) => {
                tracing::warn!(error = %e, "checkpointing the write-ahead log failed; retrying")
            }
        }
    }
    pool.close().await;
}

/// One checkpoint; the pages in the log when it ran. A `RESTART` that
/// could not finish in [`PATIENCE_MS`] reports busy, not an error, and the
/// next tick tries again.
async fn run(pool: &AnyPool, mode: &str) -> Result<i64, sqlx::Error> {
    let (_busy, log, _done): (i64, i64, i64) =
        sqlx::query_as(&format!("PRAGMA wal_checkpoint({mode})"))
            .fetch_one(pool)
            .await?;
    Ok(log)
}
