//! Steward's store. One implementation of the store interface, written once in
//! SQL that both backends accept, over sqlx's `Any` driver:
//!
//! * SQLite (the embedded default): WAL, one writer connection so writes never
//!   contend for SQLite's lock, several reader connections.
//! * PostgreSQL: one pool; rows that guard an invariant are locked with
//!   `FOR UPDATE` inside the transaction that checks it.
//!
//! Migrations live per backend under `migrations/` and run at open. Nothing but
//! this crate writes SQL. Every change is written together with its audit
//! record, in one transaction, through [`audit::append`].

pub mod agents;
mod appender;
pub mod approvals;
pub mod audit;
pub mod behaviour;
pub mod cache;
pub mod catalog;
pub mod credentials;
pub mod dashboard_sessions;
pub mod delegation;
pub mod humans;
mod key_uses;
pub mod mcp_servers;
pub mod policies;
pub mod quotas;
pub mod recert;
mod rows;
pub mod tenants;
mod wal;
pub mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};
use steward_core::Error;
use steward_types::ErrorCode;

pub use rows::Cursor;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Row lock for read-check-write transactions (SQLite has a single writer
    /// already, and no such clause).
    pub(crate) fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The store: inventory, credentials, audit log.
#[derive(Clone, Debug)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    identities: std::sync::Arc<cache::Identities>,
    /// Key uses noted and not yet written ([`key_uses`]).
    key_uses: std::sync::Arc<key_uses::KeyUses>,
    /// One-trip appends that failed and went in statement by statement.
    one_trip_fallbacks: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Held by every clone; the SQLite checkpointer ([`wal`]) and the key
    /// use writer ([`key_uses`]) stop when the last one is dropped or the
    /// pools are closed.
    _alive: std::sync::Arc<()>,
    checkpointer: Option<AnyPool>,
    /// SQLite's one-trip audit appends, on the caller's thread.
    appender: Option<std::sync::Arc<appender::Appender>>,
}

/// Map a database error to the catalogue: unreachable stores are
/// `store_unavailable` (fail closed), the rest `internal`.
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => {
            tracing::error!(error = %e, "store unavailable");
            Error::new(
                ErrorCode::StoreUnavailable,
                "the store cannot be reached; nothing was changed",
            )
        }
        // PostgreSQL refusing a value (a NUL character, a string too long
        // for its column or index): the request's fault, not the store's.
        sqlx::Error::Database(db)
            if matches!(
                db.code().as_deref(),
                Some("22021" | "22001" | "54000" | "22P05")
            ) =>
        {
            tracing::warn!(error = %e, "the store refused a value");
            Error::invalid(
                "request",
                "a value in the request holds a NUL character or is too long for the store; nothing was changed",
            )
        }
        _ => {
            tracing::error!(error = %e, "store error");
            Error::internal("the store failed; nothing was changed")
        }
    }
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation),
        _ => false,
    }
}

impl Store {
    /// Connect to `url` (`sqlite://PATH` or `postgres://...`), creating the
    /// SQLite file and its folder if needed, and apply migrations.
    pub async fn open(url: &str) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(Error::invalid(
                "database_url",
                format!("unsupported database URL '{url}' (use sqlite://PATH or postgres://...)"),
            ));
        };
        let open_error = |e: sqlx::Error| {
            Error::new(
                ErrorCode::StoreUnavailable,
                format!("cannot open the store at {}: {e}", redact(url)),
            )
        };
        let (read, write, checkpointer, appender) = match backend {
            Backend::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                // `synchronous=normal` trades durability against power loss
                // (not against a crash of the process) for latency; the
                // default, FULL, makes every commit durable.
                let synchronous = if query
                    .split('&')
                    .any(|kv| kv.eq_ignore_ascii_case("synchronous=normal"))
                {
                    "NORMAL"
                } else {
                    "FULL"
                };
                if let Some(dir) = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::new(
                            ErrorCode::StoreUnavailable,
                            format!("cannot create {}: {e}", dir.display()),
                        )
                    })?;
                }
                let options = AnyConnectOptions::from_str(&format!("sqlite://{path}?mode=rwc"))
                    .map_err(open_error)?
                    .disable_statement_logging();
                // The writer never checkpoints; `wal::checkpoint` does.
                let write = sqlite_pool(1, synchronous, "; PRAGMA wal_autocheckpoint = 0".into())
                    .connect_with(options.clone())
                    .await
                    .map_err(open_error)?;
                // WAL is a property of the file; set it once before readers open.
                write
                    .execute("PRAGMA journal_mode = WAL")
                    .await
                    .map_err(open_error)?;
                // Migrate before any other connection reads the schema: a
                // connection that loaded the old schema prepares `SELECT *`
                // with the old columns, and rows then come back with more.
                migrate(&SQLITE_MIGRATIONS, &write).await?;
                let read = sqlite_pool(4, synchronous, String::new())
                    .connect_with(options.clone())
                    .await
                    .map_err(open_error)?;
                // A `RESTART` holds the writer while it waits for readers of the
                // old log: give up after `wal::PATIENCE_MS` and try at the
                // next tick rather than stall decisions.
                let checkpointer = sqlite_pool(
                    1,
                    synchronous,
                    format!("; PRAGMA busy_timeout = {}", wal::PATIENCE_MS),
                )
                .connect_with(options)
                .await
                .map_err(open_error)?;
                let appender = appender::Appender::open(path, synchronous)?;
                (
                    read,
                    write,
                    Some(checkpointer),
                    Some(std::sync::Arc::new(appender)),
                )
            }
            Backend::Postgres => {
                let options = AnyConnectOptions::from_str(url)
                    .map_err(open_error)?
                    .disable_statement_logging();
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                migrate(&POSTGRES_MIGRATIONS, &pool).await?;
                (pool.clone(), pool, None, None)
            }
        };
        let alive = std::sync::Arc::new(());
        if let Some(pool) = &checkpointer {
            tokio::spawn(wal::checkpoint(
                pool.clone(),
                std::sync::Arc::downgrade(&alive),
            ));
        }
        let store = Store {
            appender,
            _alive: alive,
            checkpointer,
            read,
            write,
            backend,
            // Only a single node's own writes are seen: identities are
            // cached on SQLite (one node), read fresh on PostgreSQL, where
            // other nodes write too.
            identities: std::sync::Arc::new(cache::Identities::new(backend == Backend::Sqlite)),
            key_uses: Default::default(),
            one_trip_fallbacks: Default::default(),
        };
        let indexed = store.index_old_audit_entries().await?;
        if indexed > 0 {
            tracing::info!(
                entries = indexed,
                "indexed who earlier audit entries are about"
            );
        }
        // The writer's copy holds its own token, not `alive`, so that it
        // does not keep the store alive itself.
        let writer = Store {
            _alive: std::sync::Arc::new(()),
            ..store.clone()
        };
        tokio::spawn(key_uses::flush_every(
            writer,
            std::sync::Arc::downgrade(&store._alive),
        ));
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Check the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Close every connection; later calls fail with `store_unavailable`.
    pub async fn close(&self) {
        if let Err(e) = self.flush_key_uses().await {
            tracing::warn!(error = %e, "writing when keys were last used failed at close");
        }
        if let Some(pool) = &self.checkpointer {
            pool.close().await;
        }
        self.write.close().await;
        self.read.close().await;
    }

    /// A setting, created with `init` when absent (first writer wins across nodes).
    pub async fn setting_or_init(
        &self,
        key: &str,
        init: impl FnOnce() -> String,
    ) -> Result<String, Error> {
        if let Some(v) = self.setting(key).await? {
            return Ok(v);
        }
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(init())
        .execute(&self.write)
        .await
        .map_err(db_error)?;
        self.setting(key)
            .await?
            .ok_or_else(|| Error::internal(format!("setting {key} vanished")))
    }

    /// Remove a setting (a secret that moved out of the store).
    pub async fn delete_setting(&self, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM settings WHERE key = $1")
            .bind(key)
            .execute(&self.write)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// A setting's value, if it is set.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, Error> {
        sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.write)
            .await
            .map_err(db_error)
    }
}

impl Store {
    /// Run a statement that takes no parameters (test set-up: schemas).
    pub async fn execute_raw(&self, sql: &str) -> Result<(), Error> {
        sqlx::raw_sql(sql)
            .execute(&self.write)
            .await
            .map_err(db_error)?;
        self.identities.changes().bump();
        self.identities.changes().forget_audit_head();
        Ok(())
    }
}

/// A write transaction. Committing it tells the store's identity cache that
/// the inventory may have changed (see [`cache`]); the decision path's own
/// writes, which change no identity, commit with [`Tx::commit_unchanged`].
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    changes: std::sync::Arc<cache::Changes>,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }
}

impl Tx {
    /// Commit, then invalidate cached identities.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await?;
        self.changes.bump();
        Ok(())
    }

    /// Commit a transaction that changed no identity (audit records, quota
    /// counters): cached identities stay valid.
    pub(crate) async fn commit_unchanged(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// The audit head is moved in this transaction: forget what is known
    /// of it (see [`cache::Changes::audit_head`]).
    pub(crate) fn moves_audit_head(&self) {
        self.changes.forget_audit_head();
    }

    /// Roll back: nothing changed.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

/// Apply the migrations the store lacks.
async fn migrate(migrator: &sqlx::migrate::Migrator, pool: &AnyPool) -> Result<(), Error> {
    migrator.run(pool).await.map_err(|e| {
        Error::new(
            ErrorCode::StoreUnavailable,
            format!("migrating the store failed: {e}"),
        )
    })
}

fn sqlite_pool(max: u32, synchronous: &'static str, more: String) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        // A file's connection does not go stale as a network one can; the
        // ping before every use would be one more round trip to the
        // connection's thread per transaction.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            let more = more.clone();
            Box::pin(async move {
                conn.execute(format!("PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000{more}").as_str())
                    .await?;
                Ok(())
            })
        })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
