//! When agent keys were last used, written beside the requests that use
//! them rather than in them.
//!
//! A key's first use in a minute used to commit its `last_used_at` (and its
//! agent's `last_seen_at`) in a transaction of its own while the request
//! waited: one more fsync'd commit in the hot path for every active key
//! every minute, and on SQLite one more turn of the single writer that
//! every audited decision queues for. Now a use is noted in memory and
//! [`Store::flush_key_uses`] writes what was noted, every [`EVERY`] and
//! when the store closes, a few hundred keys per transaction. Reads of
//! keys and agents on this node show what is noted but not yet written
//! ([`KeyUses::key`], [`KeyUses::agent`]); another node sees it after the
//! next flush.
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

/// Uses noted on this node and not yet written: by key id, and the latest
/// per agent (what an agent's "last seen" shows meanwhile).
#[derive(Debug, Default)]
pub(crate) struct KeyUses {
    pending: Mutex<Pending>,
}

#[derive(Debug, Default)]
struct Pending {
    keys: HashMap<String, Use>,
    agents: HashMap<String, DateTime<Utc>>,
}

impl KeyUses {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Note a use; a later time replaces an earlier one.
    pub(crate) fn note(&self, key_id: &str, agent_id: &str, at: DateTime<Utc>) {
        let mut pending = self.lock();
        match pending.keys.get_mut(key_id) {
            Some(u) if u.at >= at => {}
            Some(u) => u.at = at,
            None => {
                pending.keys.insert(
                    key_id.to_string(),
                    Use {
                        agent_id: agent_id.to_string(),
                        at,
                    },
                );
            }
        }
        let seen = pending.agents.entry(agent_id.to_string()).or_insert(at);
        *seen = (*seen).max(at);
    }

    /// The noted, unwritten last use of a key.
    pub(crate) fn key(&self, key_id: &str) -> Option<DateTime<Utc>> {
        self.lock().keys.get(key_id).map(|u| u.at)
    }

    /// The latest noted, unwritten use of any of an agent's keys.
    pub(crate) fn agent(&self, agent_id: &str) -> Option<DateTime<Utc>> {
        self.lock().agents.get(agent_id).copied()
    }

    /// Everything noted, left in place until it is written, so that reads
    /// meanwhile still show it.
    fn snapshot(&self) -> Vec<(String, Use)> {
        let pending = self.lock();
        pending
            .keys
            .iter()
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect()
    }

    /// These uses are written: forget them, unless a later use of the same
    /// key (or of another key of the same agent) was noted meanwhile.
    fn written(&self, uses: &[(String, Use)]) {
        let mut pending = self.lock();
        for (key_id, u) in uses {
            if pending.keys.get(key_id).is_some_and(|p| p.at <= u.at) {
                pending.keys.remove(key_id);
            }
            if pending
                .agents
                .get(&u.agent_id)
                .is_some_and(|at| *at <= u.at)
            {
                pending.agents.remove(&u.agent_id);
            }
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
        let mut uses = self.key_uses.snapshot();
        // Agent rows in id order, the order every other change that locks
        // many agents takes them (a recertification's close, a leaver), so
        // a flush and such a change wait for each other, never deadlock.
        uses.sort_by(|(ka, a), (kb, b)| (&a.agent_id, ka).cmp(&(&b.agent_id, kb)));
        for chunk in uses.chunks(CHUNK) {
            self.write_key_uses(chunk).await?;
            self.key_uses.written(chunk);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[test]
    fn what_is_noted_stays_shown_until_written_and_later_uses_survive_the_write() {
        let uses = KeyUses::default();
        uses.note("k1", "a", at(10));
        uses.note("k1", "a", at(5)); // older: ignored
        uses.note("k2", "a", at(20));
        uses.note("k3", "b", at(30));
        assert_eq!(uses.key("k1"), Some(at(10)));
        assert_eq!(uses.agent("a"), Some(at(20)));

        let first = uses.snapshot();
        assert_eq!(first.len(), 3);
        // Noted while the snapshot is being written.
        uses.note("k3", "b", at(40));
        // Still shown before the write is done.
        assert_eq!(uses.key("k1"), Some(at(10)));
        uses.written(&first);
        assert_eq!(uses.key("k1"), None);
        assert_eq!(uses.key("k2"), None);
        assert_eq!(uses.agent("a"), None);
        assert_eq!(uses.key("k3"), Some(at(40)));
        assert_eq!(uses.agent("b"), Some(at(40)));

        // An agent's other key written alone keeps the agent's later time.
        uses.note("k4", "c", at(50));
        uses.note("k5", "c", at(60));
        let only_k4: Vec<_> = uses
            .snapshot()
            .into_iter()
            .filter(|(k, _)| k == "k4")
            .collect();
        uses.written(&only_k4);
        assert_eq!(uses.agent("c"), Some(at(60)));
        assert_eq!(latest(Some(at(1)), uses.agent("c")), Some(at(60)));
        assert_eq!(latest(Some(at(70)), uses.agent("c")), Some(at(70)));
    }
}
