//! When agent keys were last used, written beside the requests that use
//! them rather than in them.
//!
//! A key's first use in a minute used to commit its `last_used_at` (and its
//! agent's `last_seen_at`) in a transaction of its own while the request
//! waited: one more fsync'd commit in the hot path for every active key
//! every minute, and on SQLite one more turn of the single writer that
//! every audited decision queues for. Now a use is noted in memory and
//! [`flush`] writes what was noted, every [`EVERY`] and when the store
//! closes, a few hundred keys per transaction. Reads of keys and agents on
//! this node show what is noted but not yet written ([`KeyUses::key`],
//! [`KeyUses::agent`]); another node sees it after the next flush.
//!
//! What this gives up: a process killed between a use and the next flush
//! loses that use's time (at most [`EVERY`]); the next use notes it again.
//! No decision depends on it: it is what `steward keys list` and the agent
//! page show, and what an owner reads to find idle agents.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use steward_core::Error;

use crate::{Store, db_error, rows};

/// How often noted uses are written.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// Keys written per transaction, so that a flush after a burst of new keys
/// does not hold the writer for long.
const CHUNK: usize = 200;

/// A key's use that is not written yet.
#[derive(Debug, Clone)]
struct Use {
    agent_id: String,
    at: DateTime<Utc>,
}

/// Uses noted on this node and not yet written, by key id.
#[derive(Debug, Default)]
pub(crate) struct KeyUses {
    pending: Mutex<HashMap<String, Use>>,
}

impl KeyUses {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Use>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Note a use; a later time replaces an earlier one.
    pub(crate) fn note(&self, key_id: &str, agent_id: &str, at: DateTime<Utc>) {
        let mut pending = self.lock();
        match pending.get_mut(key_id) {
            Some(u) if u.at >= at => {}
            Some(u) => u.at = at,
            None => {
                pending.insert(
                    key_id.to_string(),
                    Use {
                        agent_id: agent_id.to_string(),
                        at,
                    },
                );
            }
        }
    }

    /// The noted, unwritten last use of a key.
    pub(crate) fn key(&self, key_id: &str) -> Option<DateTime<Utc>> {
        self.lock().get(key_id).map(|u| u.at)
    }

    /// The latest noted, unwritten use of any of an agent's keys.
    pub(crate) fn agent(&self, agent_id: &str) -> Option<DateTime<Utc>> {
        let pending = self.lock();
        if pending.is_empty() {
            return None;
        }
        pending
            .values()
            .filter(|u| u.agent_id == agent_id)
            .map(|u| u.at)
            .max()
    }

    /// Everything noted, leaving nothing.
    fn take(&self) -> Vec<(String, Use)> {
        self.lock().drain().collect()
    }

    /// Put back uses that could not be written (unless a later use of the
    /// same key was noted meanwhile).
    fn restore(&self, uses: Vec<(String, Use)>) {
        for (key_id, u) in uses {
            self.note(&key_id, &u.agent_id, u.at);
        }
    }
}

/// The later of a stored time and a noted one.
pub(crate) fn latest(
    stored: Option<DateTime<Utc>>,
    noted: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    stored.max(noted)
}

impl Store {
    /// Write the key uses noted on this node; what fails to be written is
    /// kept for the next flush. A time never goes backwards: a use another
    /// node wrote later stays.
    pub async fn flush_key_uses(&self) -> Result<(), Error> {
        let uses = self.key_uses.take();
        let mut rest = uses.as_slice();
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(CHUNK));
            if let Err(e) = self.write_key_uses(chunk).await {
                self.key_uses.restore(rest.to_vec());
                return Err(e);
            }
            rest = after;
        }
        Ok(())
    }

    async fn write_key_uses(&self, uses: &[(String, Use)]) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        for (key_id, u) in uses {
            let at = rows::ms(u.at);
            sqlx::query(
                "UPDATE agent_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(key_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query(
                "UPDATE agents SET last_seen_at = $1 WHERE id = $2 \
                 AND (last_seen_at IS NULL OR last_seen_at < $1)",
            )
            .bind(at)
            .bind(&u.agent_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        // No decision depends on when a key was last used.
        tx.commit_unchanged().await.map_err(db_error)
    }
}

/// Flush every [`EVERY`] until the store is closed ([`Store::close`]
/// flushes a last time itself) or dropped (`alive` gone: then once more).
pub(crate) async fn flush_every(store: Store, alive: Weak<()>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if store.write.is_closed() {
            break;
        }
        let last = alive.upgrade().is_none();
        if let Err(e) = store.flush_key_uses().await {
            tracing::warn!(error = %e, "writing when keys were last used failed; retrying");
        }
        if last {
            break;
        }
    }
}
