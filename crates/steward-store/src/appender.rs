//! SQLite's one-trip audit append, run on the caller's own thread.
//!
//! sqlx runs each SQLite connection on a thread of its own, so every
//! statement is a hand-off to that thread and back. On two cores shared
//! with the load, each hand-off is a chance to wait for a core, and at
//! 1000 audited decisions a second those waits were most of the p99 (see
//! docs/benchmarks.md, nineteenth session). The decision path's small
//! batches of records therefore go through this second connection to the
//! same file, opened with `rusqlite` and used where the group commit's
//! writer runs: no hand-off at all. It writes only while its caller holds
//! the pool's single writer connection, so the two never contend; it
//! never checkpoints (the checkpointer does, as for the writer).
//!
//! The write blocks its worker thread for one commit (a sync of the log
//! with `synchronous=FULL`). Only one batch is written at a time, so at
//! most one worker is held, and the others go on serving.

use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;
use steward_audit::Hash;
use steward_core::Error;
use steward_types::{AuditEntry, ErrorCode};

use crate::audit::{Column, row_values};

/// The statements kept prepared: one `INSERT` per batch size up to
/// [`crate::audit::ONE_TRIP_MAX`], plus the subjects and the head.
const PREPARED: usize = crate::audit::ONE_TRIP_MAX + 4;

/// The appender's connection.
#[derive(Debug)]
pub(crate) struct Appender(Mutex<Connection>);

impl Appender {
    /// Open `path` (already created and migrated by the writer) with the
    /// writer's settings.
    pub(crate) fn open(path: &str, synchronous: &str) -> Result<Appender, Error> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.execute_batch(&format!(
                "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; \
                 PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0"
            ))?;
            conn.set_prepared_statement_cache_capacity(PREPARED);
            Ok(conn)
        };
        open().map(|c| Appender(Mutex::new(c))).map_err(|e| {
            Error::new(
                ErrorCode::StoreUnavailable,
                format!("cannot open the store's audit appender at {path}: {e}"),
            )
        })
    }

    /// Append `entries` and their `subjects` rows (a JSON array of
    /// `[entry, subject]` pairs) and move the head to `size`, in one
    /// transaction. On any error nothing is written.
    pub(crate) fn append(
        &self,
        entries: &[(AuditEntry, Hash)],
        insert_sql: &str,
        subjects: &str,
        size: i64,
    ) -> rusqlite::Result<()> {
        let conn = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let written = (|| {
            let mut insert = conn.prepare_cached(insert_sql)?;
            let columns = entries.iter().flat_map(|(e, leaf)| row_values(e, leaf));
            for (at, column) in (1..).zip(columns) {
                match column {
                    Column::Int(v) => insert.raw_bind_parameter(at, v)?,
                    Column::Text(t) => insert.raw_bind_parameter(at, t.as_deref())?,
                }
            }
            insert.raw_execute()?;
            conn.prepare_cached(
                "INSERT INTO audit_subjects (entry, subject_id) \
                 SELECT value ->> 0, value ->> 1 FROM json_each(?1) WHERE true \
                 ON CONFLICT DO NOTHING",
            )?
            .execute([subjects])?;
            conn.prepare_cached("UPDATE audit_head SET size = ?1 WHERE id = 1")?
                .execute([size])?;
            Ok(())
        })();
        // A failed statement or commit leaves the transaction open.
        match written.and_then(|()| conn.execute_batch("COMMIT")) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                    tracing::debug!(error = %rollback, "nothing to roll back");
                }
                Err(e)
            }
        }
    }
}
