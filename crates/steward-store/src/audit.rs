//! The audit sink: the one place every change is recorded, inside the
//! transaction that makes it, so a change and its record land together or not
//! at all.
//!
//! Each entry gets the next sequence number under the head row's lock (so the
//! log has no gaps, across nodes too) and stores the leaf hash of its
//! canonical encoding ([`canonical_entry`]); the Merkle tree over those
//! leaves, signed checkpoints and proofs are built from them.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sqlx::Row;
use steward_audit::{Hash, SignedTreeHead, TreeHead, leaf_hash};
use steward_core::{AuditEvent, ChangeContext, Error};
use steward_types::{AuditEntry, AuditFilter, ErrorCode, LegalHold, Page};

use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, db_error};

/// The bytes an entry's leaf hash covers: its fields as canonical JSON,
/// exactly as [`steward_audit::canonical_entry`] computes them from an
/// exported entry (one encoding for the store and the offline verifier; a
/// property test holds the two together). Written straight from the
/// entry, keys in their sorted order, with no intermediate JSON tree: this
/// runs for every record in the group commit. The time is in milliseconds,
/// as stored.
pub fn canonical_entry(e: &AuditEntry) -> Vec<u8> {
    use steward_audit::{write_canonical, write_canonical_str};
    fn text(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
        out.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => write_canonical_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    fn json(out: &mut Vec<u8>, key: &str, value: Option<&serde_json::Value>) {
        out.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => write_canonical(out, v),
            None => out.extend_from_slice(b"null"),
        }
    }
    let mut out = Vec::with_capacity(512);
    text(&mut out, "{\"action\":", Some(&e.action));
    text(
        &mut out,
        ",\"actor\":{\"human_id\":",
        e.actor.human_id.as_deref(),
    );
    text(&mut out, ",\"id\":", Some(&e.actor.id));
    text(&mut out, ",\"kind\":", Some(&e.actor.kind));
    json(&mut out, "},\"after\":", e.after.as_ref());
    json(&mut out, ",\"before\":", e.before.as_ref());
    text(&mut out, ",\"reason\":", e.reason.as_deref());
    text(&mut out, ",\"request_id\":", e.request_id.as_deref());
    text(&mut out, ",\"resource_id\":", Some(&e.resource_id));
    text(&mut out, ",\"resource_type\":", Some(&e.resource_type));
    out.extend_from_slice(format!(",\"seq\":{}", e.seq).as_bytes());
    // The source address joined the log later: covered when present, so
    // entries without one hash as they always did.
    if let Some(source) = &e.source {
        text(&mut out, ",\"source\":", Some(source));
    }
    text(&mut out, ",\"tenant_id\":", Some(&e.tenant_id));
    out.extend_from_slice(format!(",\"time\":{}}}", e.time.timestamp_millis()).as_bytes());
    out
}

/// Claim `n` sequence numbers at the log's head in one statement, which
/// locks the head until the transaction ends; returns the size before them.
pub(crate) async fn claim_head(tx: &mut crate::Tx, n: i64) -> Result<i64, Error> {
    tx.moves_audit_head();
    let size: i64 =
        sqlx::query_scalar("UPDATE audit_head SET size = size + $1 WHERE id = 1 RETURNING size")
            .bind(n)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
    Ok(size - n)
}

/// Columns of one audit row, in the order [`insert_many`] binds them.
const COLUMNS: &str = "seq, tenant_id, time, actor_kind, actor_id, actor_human_id, action, \
     resource_type, resource_id, before, after, reason, request_id, leaf_hash, source";
const COLUMN_COUNT: usize = 15;

/// Most rows one `INSERT` carries. Batches are cut into pieces of 32, 16,
/// 8, 4, 2 and 1 rows, so that a handful of statement texts serve every
/// batch size (prepared once per connection) and a batch of n records costs
/// about log2(n) statements rather than n.
const MAX_ROWS: usize = 32;

/// `INSERT INTO {into} VALUES` with `rows` rows of `width` parameters each,
/// numbered from `$first`.
pub(crate) fn values_sql(into: &str, width: usize, rows: usize, first: usize) -> String {
    let mut sql = format!("INSERT INTO {into} VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", first + r * width + c));
        }
        sql.push(')');
    }
    sql
}

/// `INSERT` text for `rows` audit rows. A row whose sequence number is
/// taken fails the statement (see [`Store::append_in_one_trip`]).
fn insert_sql(rows: usize) -> String {
    values_sql(&format!("audit_log ({COLUMNS})"), COLUMN_COUNT, rows, 1)
}

/// `INSERT` text for `rows` subject rows (see [`subjects`]), parameters
/// numbered from `$first`; a row already there (indexed by another node's
/// backfill) is left alone.
fn subjects_sql(rows: usize, first: usize) -> String {
    values_sql("audit_subjects (entry, subject_id)", 2, rows, first) + " ON CONFLICT DO NOTHING"
}

/// How many of `left` rows the next statement carries: 32, 16, 8, 4, 2 or 1.
fn piece(left: usize) -> usize {
    [MAX_ROWS, 16, 8, 4, 2, 1]
        .into_iter()
        .find(|&n| n <= left)
        .unwrap_or(1)
}

/// Whether `s` is the id of an agent, a human or a team: its kind's prefix
/// and the 32 lower-case hex digits of a UUID (see `rows::new_id`).
fn is_identity_id(s: &str) -> bool {
    ["agt_", "hum_", "team_"]
        .iter()
        .find_map(|prefix| s.strip_prefix(prefix))
        .is_some_and(|rest| {
            rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// The agents, humans and teams an entry is about, as the audit filters by
/// agent, human and team find it: its actor, the human behind the actor,
/// its resource and, for a decision, its principal and every identity in
/// its chain (the ancestors, the person acted for); for a key event, the
/// key's agent. Only those fields: ids a caller put in a request's context
/// or attributes do not make a decision about anyone else. Sorted, each
/// once.
pub fn subjects(e: &AuditEntry) -> Vec<&str> {
    fn text(v: Option<&serde_json::Value>) -> Option<&str> {
        v.and_then(serde_json::Value::as_str)
    }
    let mut all = vec![e.actor.id.as_str(), e.resource_id.as_str()];
    all.extend(e.actor.human_id.as_deref());
    let after = e.after.as_ref();
    if e.action.starts_with("decision.") {
        all.extend(text(after.and_then(|a| a.pointer("/principal/id"))));
        if let Some(chain) = after
            .and_then(|a| a.get("chain"))
            .and_then(|c| c.as_array())
        {
            all.extend(chain.iter().filter_map(|link| text(link.get("id"))));
        }
    } else if e.resource_type == "agent_key" {
        all.extend(text(after.and_then(|a| a.get("agent_id"))));
    }
    all.retain(|s| is_identity_id(s));
    all.sort_unstable();
    all.dedup();
    all
}

/// The `audit_subjects` rows of `entries`.
fn subject_rows<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Vec<(i64, &'a str)> {
    entries
        .into_iter()
        .flat_map(|e| subjects(e).into_iter().map(move |s| (e.seq, s)))
        .collect()
}

/// Insert `rows` into `audit_subjects`, in as few statements as
/// [`MAX_ROWS`] allows.
async fn insert_subjects(tx: &mut crate::Tx, rows: &[(i64, &str)]) -> Result<(), Error> {
    let mut rest = rows;
    while !rest.is_empty() {
        let (now, tail) = rest.split_at(piece(rest.len()));
        let sql = subjects_sql(now.len(), 1);
        let mut q = sqlx::query(&sql);
        for (entry, subject) in now {
            q = q.bind(*entry).bind(*subject);
        }
        q.execute(&mut **tx).await.map_err(db_error)?;
        rest = tail;
    }
    Ok(())
}

/// The stored entry for `event` at `seq`, with its leaf hash.
pub(crate) fn entry(seq: i64, ctx: &ChangeContext, event: AuditEvent) -> (AuditEntry, Hash) {
    // Times are kept to the millisecond, as stored.
    let time = DateTime::from_timestamp_millis(ctx.now.timestamp_millis()).unwrap_or_default();
    let entry = AuditEntry {
        seq,
        time,
        tenant_id: ctx.tenant_id.clone(),
        actor: ctx.actor.clone(),
        action: event.action,
        resource_type: event.resource_type,
        resource_id: event.resource_id,
        before: event.before,
        after: event.after,
        reason: event.reason,
        request_id: ctx.request_id.clone(),
        source: ctx.source.clone(),
        leaf_hash: None,
    };
    let leaf = leaf_hash(&canonical_entry(&entry));
    (entry, leaf)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Bind one row's values, in [`COLUMNS`] order.
/// One value of an audit row.
pub(crate) enum Column<'a> {
    Int(i64),
    Text(Option<Cow<'a, str>>),
}

/// An entry's row with its leaf hash, in [`COLUMNS`] order: what every
/// writer of the log binds.
pub(crate) fn row_values<'a>(entry: &'a AuditEntry, leaf: &Hash) -> [Column<'a>; COLUMN_COUNT] {
    use Column::{Int, Text};
    let text = |s: &'a str| Text(Some(Cow::Borrowed(s)));
    let optional = |s: &'a Option<String>| Text(s.as_deref().map(Cow::Borrowed));
    let json = |v: &Option<serde_json::Value>| Text(v.as_ref().map(|v| Cow::Owned(v.to_string())));
    [
        Int(entry.seq),
        text(&entry.tenant_id),
        Int(rows::ms(entry.time)),
        text(entry.actor.kind.as_str()),
        text(&entry.actor.id),
        optional(&entry.actor.human_id),
        text(&entry.action),
        text(&entry.resource_type),
        text(&entry.resource_id),
        json(&entry.before),
        json(&entry.after),
        optional(&entry.reason),
        optional(&entry.request_id),
        Text(Some(Cow::Owned(leaf.to_hex()))),
        optional(&entry.source),
    ]
}

fn bind_entry<'q>(mut q: AnyQuery<'q>, entry: &'q AuditEntry, leaf: &Hash) -> AnyQuery<'q> {
    for column in row_values(entry, leaf) {
        q = match column {
            Column::Int(v) => q.bind(v),
            Column::Text(Some(Cow::Borrowed(s))) => q.bind(s),
            Column::Text(t) => q.bind(t.map(Cow::into_owned)),
        };
    }
    q
}

/// Insert entries (made by [`entry`]) at the sequence numbers they carry,
/// in as few statements as [`MAX_ROWS`] allows.
pub(crate) async fn insert_many(
    tx: &mut crate::Tx,
    entries: &[(AuditEntry, Hash)],
) -> Result<(), Error> {
    let mut rest = entries;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(piece(rest.len()));
        let sql = insert_sql(piece.len());
        let mut q = sqlx::query(&sql);
        for (entry, leaf) in piece {
            q = bind_entry(q, entry, leaf);
        }
        q.execute(&mut **tx).await.map_err(db_error)?;
        rest = tail;
    }
    insert_subjects(tx, &subject_rows(entries.iter().map(|(e, _)| e))).await
}

/// Most records [`Store::append_in_one_trip`] takes: one statement text
/// per count, each prepared once. Larger batches come only under load,
/// where a round trip per statement is shared by many records.
pub(crate) const ONE_TRIP_MAX: usize = 16;

/// One retention pruning as the log records it, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruning {
    /// Its record's position.
    pub seq: i64,
    /// When it ran.
    pub time: i64,
    /// Entries older than this lost their payload.
    pub cutoff: i64,
    /// The tenants it left alone (under a legal hold then); `None` when the
    /// record does not say (recorded before it did).
    pub held: Option<Vec<String>>,
}

impl Store {
    /// Append records on SQLite in one transaction on the caller's thread
    /// ([`crate::appender`]) instead of a round trip to the writer
    /// connection's thread per statement (`BEGIN`, the head, the rows,
    /// `COMMIT`), which was most of a lone decision's wait. Sequence numbers
    /// follow the head this process last wrote, read again after any other
    /// write moved it (see [`crate::cache::Changes::audit_head`]); if
    /// another process appended meanwhile, the rows collide on their
    /// sequence numbers, nothing is written, and the records go in by the
    /// ordinary path, numbered under the head's lock.
    pub(crate) async fn append_in_one_trip(
        &self,
        records: Vec<(ChangeContext, AuditEvent)>,
    ) -> Result<Vec<i64>, Error> {
        let changes = self.identities.changes();
        // Held while the appender writes: no other writer of this process
        // runs meanwhile.
        let mut conn = self.write.acquire().await.map_err(db_error)?;
        let head = match changes.audit_head() {
            Some(head) => head,
            None => sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
                .fetch_one(&mut *conn)
                .await
                .map_err(db_error)?,
        };
        let mut entries: Vec<_> = records
            .into_iter()
            .zip(head + 1..)
            .map(|((ctx, event), seq)| entry(seq, &ctx, event))
            .collect();
        let size = head + entries.len() as i64;
        let subjects = serde_json::to_string(&subject_rows(entries.iter().map(|(e, _)| e)))
            .map_err(|e| Error::internal(format!("encoding an entry's subjects: {e}")))?;
        let appender = self
            .appender
            .as_ref()
            .ok_or_else(|| Error::internal("the one-trip append is SQLite's alone"))?;
        match appender.append(&entries, &insert_sql(entries.len()), &subjects, size) {
            Ok(()) => {
                changes.set_audit_head(size);
                return Ok((head + 1..=size).collect());
            }
            Err(e) => {
                changes.forget_audit_head();
                self.one_trip_fallbacks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "a one-trip audit append failed; appending statement by statement");
            }
        }
        drop(conn);
        let mut tx = self.begin().await?;
        let start = claim_head(&mut tx, entries.len() as i64).await?;
        for ((entry, leaf), seq) in entries.iter_mut().zip(start + 1..) {
            entry.seq = seq;
            *leaf = leaf_hash(&canonical_entry(entry));
        }
        insert_many(&mut tx, &entries).await?;
        tx.commit_unchanged().await.map_err(db_error)?;
        Ok((start + 1..=start + entries.len() as i64).collect())
    }
}

/// The longest action, resource type or resource id a record may carry:
/// these are indexed, and PostgreSQL refuses an index entry over about
/// 2.7 kB. Ids checked at the API are at most 512 bytes.
const MAX_INDEXED: usize = 1024;

/// Whether every store can keep a record: no NUL character in its text
/// (PostgreSQL refuses one) and no indexed field over [`MAX_INDEXED`].
/// Checked before a record joins a batch of others' records, which one
/// refused statement would fail whole.
pub fn storable(event: &AuditEvent) -> Result<(), Error> {
    for (field, value) in [
        ("action", &event.action),
        ("resource_type", &event.resource_type),
        ("resource_id", &event.resource_id),
    ] {
        if value.len() > MAX_INDEXED {
            return Err(Error::invalid(
                field,
                format!("longer than {MAX_INDEXED} bytes; nothing was recorded"),
            ));
        }
        if value.contains('\0') {
            return Err(Error::invalid(
                field,
                "holds a NUL character; nothing was recorded",
            ));
        }
    }
    if event.reason.as_deref().is_some_and(|r| r.contains('\0')) {
        return Err(Error::invalid(
            "reason",
            "holds a NUL character; nothing was recorded",
        ));
    }
    Ok(())
}

pub(crate) async fn set_head(tx: &mut crate::Tx, size: i64) -> Result<(), Error> {
    sqlx::query("UPDATE audit_head SET size = $1 WHERE id = 1")
        .bind(size)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Append one event to the log within `tx`.
pub async fn append(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    event: AuditEvent,
) -> Result<(), Error> {
    append_all(tx, ctx, vec![event]).await
}

/// Append events to the log within `tx`, in their order: the head moved
/// once and the rows inserted in as few statements as [`insert_many`]
/// allows, so a change that records one entry per agent (a leaver's
/// orphaned agents) costs a statement per [`MAX_ROWS`] entries, not three
/// per entry. Claiming the head locks it (PostgreSQL serialises appends on
/// that row; SQLite has one writer).
pub async fn append_all(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    events: Vec<AuditEvent>,
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let start = claim_head(tx, events.len() as i64).await?;
    let entries: Vec<_> = events
        .into_iter()
        .zip(start + 1..)
        .map(|(event, seq)| entry(seq, ctx, event))
        .collect();
    insert_many(tx, &entries).await
}

/// Append the event and commit: the change and its record land together or
/// not at all.
pub async fn commit(
    mut tx: crate::Tx,
    ctx: &ChangeContext,
    event: AuditEvent,
) -> Result<(), Error> {
    append(&mut tx, ctx, event).await?;
    tx.commit().await.map_err(db_error)
}

/// An event for a change from `before` to `after`, without a reason.
pub fn change<T: serde::Serialize>(
    action: &str,
    resource_type: &str,
    resource_id: &str,
    before: &T,
    after: &T,
) -> AuditEvent {
    event(
        action,
        resource_type,
        resource_id,
        Some(before),
        Some(after),
        None,
    )
}

/// An event describing a change from `before` to `after`.
pub fn event<T: serde::Serialize>(
    action: &str,
    resource_type: &str,
    resource_id: &str,
    before: Option<&T>,
    after: Option<&T>,
    reason: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        action: action.into(),
        resource_type: resource_type.into(),
        resource_id: resource_id.into(),
        before: before.and_then(|b| serde_json::to_value(b).ok()),
        after: after.and_then(|a| serde_json::to_value(a).ok()),
        reason: reason.map(str::to_string),
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// One row of the log as [`Store::audit_rows_all`] reads it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// Its sequence number.
    pub seq: i64,
    /// The entry, its stored leaf hash and whether its payload was pruned;
    /// or which column does not read back, and why.
    pub read: Result<(AuditEntry, Option<String>, bool), String>,
}

/// A log row, its stored leaf hash and whether it was pruned; or which
/// column does not read back, and why.
fn stored_entry(row: &sqlx::any::AnyRow) -> Result<(AuditEntry, Option<String>, bool), String> {
    let entry = rows::audit_entry_named(row)?;
    let pruned: i64 = row
        .try_get("pruned")
        .map_err(|e| format!("its pruned column cannot be read ({e})"))?;
    let leaf = entry.leaf_hash.clone();
    Ok((entry, leaf, pruned != 0))
}

impl Store {
    /// Read the tenant's log, oldest first, filtered (see [`AuditFilter`]
    /// and [`AuditConditions::resolve`]).
    pub async fn list_audit(
        &self,
        tenant_id: &str,
        filter: AuditFilter,
    ) -> Result<Page<AuditEntry>, Error> {
        let cursor = Cursor::seq(filter.cursor.clone(), filter.limit)?;
        let conditions = AuditConditions::resolve(self, tenant_id, &filter).await?;
        let (mut q, key) = conditions.select(tenant_id, "audit_log.*");
        if let Some(n) = filter.last
            && let Some(start) = conditions.nth_last_seq(&self.read, tenant_id, n).await?
        {
            q = q.and(&format!("{key} >= ?"), Param::Int(start));
        }
        q.page(&self.read, key, &cursor, rows::audit_entry, |e| {
            e.seq.to_string()
        })
        .await
    }

    /// The first and last sequence numbers of the tenant's entries in
    /// `since_ms..until_ms` (half open) up to `max_seq`, whose payload is
    /// kept (not pruned); `None` when there is none.
    pub async fn audit_tenant_span(
        &self,
        tenant_id: &str,
        since_ms: i64,
        until_ms: i64,
        max_seq: i64,
    ) -> Result<Option<(i64, i64)>, Error> {
        let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MIN(seq), MAX(seq) FROM audit_log WHERE tenant_id = $1 AND time >= $2 \
             AND time < $3 AND seq <= $4 AND pruned = 0",
        )
        .bind(tenant_id)
        .bind(since_ms)
        .bind(until_ms)
        .bind(max_seq)
        .fetch_one(&self.read)
        .await
        .map_err(db_error)?;
        Ok(first.zip(last))
    }

    /// Signed checkpoints with `min_size <= size <= max_size`, smallest
    /// first.
    pub async fn checkpoints_between(
        &self,
        min_size: i64,
        max_size: i64,
    ) -> Result<Vec<SignedTreeHead>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE size >= $1 AND size <= $2 \
             ORDER BY size"
        ))
        .bind(min_size)
        .bind(max_size)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.iter().map(checkpoint_or_error).collect()
    }

    /// The smallest signed checkpoint covering entry `seq`, if any.
    pub async fn checkpoint_covering(&self, seq: i64) -> Result<Option<SignedTreeHead>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE size >= $1 ORDER BY size \
             LIMIT 1"
        ))
        .bind(seq)
        .fetch_optional(&self.read)
        .await
        .map_err(db_error)?;
        row.as_ref().map(checkpoint_or_error).transpose()
    }

    /// Leaf hashes of entries `from..=to` (1-based), in order.
    pub async fn audit_leaves(&self, from: i64, to: i64) -> Result<Vec<(i64, Hash)>, Error> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT seq, leaf_hash FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(seq, h)| {
                let h = h.ok_or_else(|| {
                    Error::internal(format!("audit entry {seq} has no leaf hash"))
                })?;
                Ok((
                    seq,
                    Hash::from_hex(&h)
                        .map_err(|e| Error::internal(format!("audit entry {seq}: {e}")))?,
                ))
            })
            .collect()
    }

    /// The log's size (the last sequence number).
    pub async fn audit_size(&self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(db_error)
    }

    /// Every entry from `after` on (all tenants), in order: the entry, its
    /// stored leaf hash and whether its payload was pruned. Reads in pages
    /// to bound memory. A row that cannot be read back fails the page (see
    /// [`Store::audit_rows_all`] for reading past one).
    pub async fn audit_page_all(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(AuditEntry, Option<String>, bool)>, Error> {
        self.audit_rows_all(after, limit)
            .await?
            .into_iter()
            .map(|row| {
                let seq = row.seq;
                row.read.map_err(|why| {
                    Error::internal(format!("audit entry {seq} cannot be read: {why}"))
                })
            })
            .collect()
    }

    /// As [`Store::audit_page_all`], each row read on its own, for
    /// verification: a row that no longer reads back as an entry (a payload
    /// that is not JSON, a column of the wrong type) is reported with its
    /// sequence number, not as a failed read of the whole log.
    pub async fn audit_rows_all(&self, after: i64, limit: i64) -> Result<Vec<StoredRow>, Error> {
        let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                // The key column is an integer on both stores, so every row
                // read has one.
                let seq: i64 = row.try_get("seq").map_err(db_error)?;
                Ok(StoredRow {
                    seq,
                    read: stored_entry(row),
                })
            })
            .collect()
    }

    /// Store a signed checkpoint (another node may have stored the same size).
    pub async fn insert_checkpoint(&self, sth: &SignedTreeHead) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, origin, root, time_ms, signature, key_id) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(i64::try_from(sth.head.size).unwrap_or(i64::MAX))
        .bind(&sth.head.origin)
        .bind(sth.head.root.to_hex())
        .bind(sth.head.time_ms)
        .bind(&sth.signature)
        .bind(&sth.key_id)
        .execute(&self.write)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Every checkpoint, smallest first.
    pub async fn checkpoints(&self) -> Result<Vec<SignedTreeHead>, Error> {
        self.checkpoint_rows("ORDER BY size")
            .await?
            .iter()
            .map(checkpoint_or_error)
            .collect()
    }

    /// Every checkpoint, smallest first, each read on its own, for
    /// verification: a row that does not read back (a root that is not a
    /// hash) is given as its size and why, not as a failed read of them all.
    pub async fn checkpoints_as_stored(
        &self,
    ) -> Result<Vec<Result<SignedTreeHead, (i64, String)>>, Error> {
        self.checkpoint_rows("ORDER BY size")
            .await?
            .iter()
            .map(|row| {
                let size: i64 = row.try_get("size").map_err(db_error)?;
                Ok(read_checkpoint(row).map_err(|why| (size, why)))
            })
            .collect()
    }

    /// The checkpoint of the largest tree, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<SignedTreeHead>, Error> {
        self.checkpoint_rows("ORDER BY size DESC LIMIT 1")
            .await?
            .first()
            .map(checkpoint_or_error)
            .transpose()
    }

    async fn checkpoint_rows(&self, order: &str) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        sqlx::query(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints {order}"
        ))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)
    }
}

/// `invalid_query` for a bad audit filter value.
pub fn bad_filter(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidQuery, message)
}

/// The columns [`read_checkpoint`] reads.
const CHECKPOINT_COLUMNS: &str = "size, origin, root, time_ms, signature, key_id";

/// A checkpoint row, or which column does not read back and why.
fn read_checkpoint(row: &sqlx::any::AnyRow) -> Result<SignedTreeHead, String> {
    fn get<'r, T>(row: &'r sqlx::any::AnyRow, col: &str) -> Result<T, String>
    where
        T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        row.try_get(col)
            .map_err(|e| format!("its {col} column cannot be read ({e})"))
    }
    let size: i64 = get(row, "size")?;
    let root: String = get(row, "root")?;
    Ok(SignedTreeHead {
        head: TreeHead {
            origin: get(row, "origin")?,
            size: u64::try_from(size).map_err(|_| format!("its size {size} is negative"))?,
            root: Hash::from_hex(&root).map_err(|e| format!("its root is not a hash ({e})"))?,
            time_ms: get(row, "time_ms")?,
        },
        signature: get(row, "signature")?,
        key_id: get(row, "key_id")?,
    })
}

fn checkpoint_or_error(row: &sqlx::any::AnyRow) -> Result<SignedTreeHead, Error> {
    read_checkpoint(row).map_err(|why| Error::internal(format!("a stored checkpoint: {why}")))
}

/// Milliseconds of an RFC 3339 time given for the filter `name`, or
/// `invalid_query` saying what is expected.
pub fn parse_time_filter(name: &str, text: &str) -> Result<i64, Error> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            bad_filter(format!(
                "{name}: '{text}' is not an RFC 3339 time (like 2026-11-26T10:00:00Z)"
            ))
        })
}

/// A time range `since..until` (milliseconds, half open) from optional RFC
/// 3339 bounds; a reversed range is `invalid_query`.
pub fn parse_time_range(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), Error> {
    let since_ms = since.map(|s| parse_time_filter("since", s)).transpose()?;
    let until_ms = until.map(|u| parse_time_filter("until", u)).transpose()?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && s > u
    {
        return Err(bad_filter(format!(
            "since ({}) is after until ({}): the time range is reversed",
            since.unwrap_or_default(),
            until.unwrap_or_default()
        )));
    }
    Ok((since_ms, until_ms))
}

/// The outcomes a decision entry can record.
const DECISIONS: [&str; 3] = ["allow", "deny", "approval_required"];

/// The `WHERE` conditions of an audit query, each with its one bound value
/// (see `Select::and`: every `?` in a clause is that value), and the
/// identity whose entries drive it.
///
/// All of them are plain SQL over the `audit_log` columns, portable between
/// SQLite and PostgreSQL. Who an entry is about (its actor, resource, and a
/// decision's principal, chain and the person it was for) is indexed in
/// `audit_subjects` (see [`subjects`]). A filter by agent, or else by
/// human, reads that identity's entries through the index in order, so a
/// page costs what it returns, not the log's length; a second identity
/// filter and a team's filter are a membership test against the index.
pub struct AuditConditions {
    clauses: Vec<(String, Param)>,
    driver: Option<String>,
}

impl AuditConditions {
    /// Check and resolve a filter: names and e-mails become ids, the
    /// decision becomes an action, times become milliseconds. Anything
    /// malformed or unknown is `invalid_query` naming the filter.
    pub async fn resolve(
        store: &Store,
        tenant_id: &str,
        filter: &AuditFilter,
    ) -> Result<AuditConditions, Error> {
        let mut clauses: Vec<(String, Param)> = Vec::new();
        let mut driver = None;
        let (since, until) = parse_time_range(filter.since.as_deref(), filter.until.as_deref())?;
        if let Some(n) = filter.last
            && !(1..=Cursor::MAX_LIMIT).contains(&n)
        {
            return Err(bad_filter(format!(
                "last: {n} is outside 1..={}",
                Cursor::MAX_LIMIT
            )));
        }
        if let Some(since) = since {
            clauses.push(("time >= ?".into(), Param::Int(since)));
        }
        if let Some(until) = until {
            clauses.push(("time < ?".into(), Param::Int(until)));
        }
        if let Some(action) = non_empty("action", filter.action.as_deref())? {
            clauses.extend(action_clause(action)?);
        }
        if let Some(decision) = non_empty("decision", filter.decision.as_deref())? {
            if !DECISIONS.contains(&decision) {
                return Err(bad_filter(format!(
                    "decision: '{decision}' is not a decision (allow, deny or approval_required)"
                )));
            }
            clauses.push((
                "action = ?".into(),
                Param::Text(format!("decision.{decision}")),
            ));
        }
        if let Some(r) = non_empty("resource_id", filter.resource_id.as_deref())? {
            clauses.push(("resource_id = ?".into(), Param::Text(r.into())));
        }
        if let Some(r) = non_empty("resource", filter.resource.as_deref())? {
            // `type:id`, or an id (which may itself hold a colon).
            clauses.push((
                "(resource_id = ? OR resource_type || ':' || resource_id = ?)".into(),
                Param::Text(r.into()),
            ));
        }
        let mut about = |id: String| match driver {
            None => driver = Some(id),
            Some(_) => clauses.push((
                "seq IN (SELECT s.entry FROM audit_subjects s WHERE s.subject_id = ?)".into(),
                Param::Text(id),
            )),
        };
        if let Some(key) = non_empty("agent", filter.agent.as_deref())? {
            let agent = store
                .get_agent(tenant_id, key)
                .await
                .map_err(|e| unknown(e, "agent", key, "id or name"))?;
            about(agent.id);
        }
        if let Some(key) = non_empty("human", filter.human.as_deref())? {
            let human = store
                .get_human(tenant_id, key)
                .await
                .map_err(|e| unknown(e, "human", key, "id or e-mail"))?;
            about(human.id);
        }
        if let Some(key) = non_empty("team", filter.team.as_deref())? {
            let team = store
                .get_team(tenant_id, key)
                .await
                .map_err(|e| unknown(e, "team", key, "id or name"))?;
            // The team itself and its agents now.
            clauses.push((
                "seq IN (SELECT s.entry FROM audit_subjects s WHERE s.subject_id = ? \
                 OR s.subject_id IN (SELECT id FROM agents WHERE team_id = ?))"
                    .into(),
                Param::Text(team.id),
            ));
        }
        Ok(AuditConditions { clauses, driver })
    }

    /// The query for the tenant's entries these conditions select, with
    /// `columns`, and the key that orders them: the entry's sequence
    /// number, read from the driving identity's index when there is one.
    fn select(&self, tenant_id: &str, columns: &str) -> (Select, &'static str) {
        let (mut q, key) = match &self.driver {
            Some(id) => (
                Select::new(
                    format!("SELECT {columns} {BY_SUBJECT}"),
                    vec![Param::Text(id.clone()), Param::Text(tenant_id.into())],
                ),
                "audit_subjects.entry",
            ),
            None => (
                Select::new(
                    format!("SELECT {columns} FROM audit_log WHERE tenant_id = $1"),
                    vec![Param::Text(tenant_id.into())],
                ),
                "seq",
            ),
        };
        for (clause, value) in &self.clauses {
            q = q.and(clause, value.clone());
        }
        (q, key)
    }

    /// The sequence number of the `n`th last entry matching, if there are
    /// that many.
    async fn nth_last_seq(
        &self,
        pool: &sqlx::AnyPool,
        tenant_id: &str,
        n: u32,
    ) -> Result<Option<i64>, Error> {
        let (q, key) = self.select(tenant_id, "seq");
        q.scalar(
            pool,
            &format!(
                " ORDER BY {key} DESC LIMIT 1 OFFSET {}",
                n.saturating_sub(1)
            ),
        )
        .await
    }
}

/// The entries of one identity (`$1`) in one tenant (`$2`), read through
/// `audit_subjects` in order of the entries (`CROSS JOIN` keeps the index
/// on the outside in SQLite); ordered by `audit_subjects.entry`.
#[doc(hidden)]
pub const BY_SUBJECT: &str = "FROM audit_subjects CROSS JOIN audit_log \
     WHERE audit_subjects.subject_id = $1 \
     AND audit_log.seq = audit_subjects.entry AND audit_log.tenant_id = $2";

/// A filter's value, `None` when absent; an empty one is `invalid_query`.
fn non_empty<'a>(name: &str, value: Option<&'a str>) -> Result<Option<&'a str>, Error> {
    match value.map(str::trim) {
        None => Ok(None),
        Some("") => Err(bad_filter(format!("{name}: must not be empty when given"))),
        Some(v) => Ok(Some(v)),
    }
}

/// `action = ?`, or for `prefix*` a comparison of the action's start.
fn action_clause(action: &str) -> Result<Option<(String, Param)>, Error> {
    let (prefix, wildcard) = match action.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (action, false),
    };
    if prefix.contains('*') {
        return Err(bad_filter(format!(
            "action: '{action}' may hold one '*', at the end (like decision.*)"
        )));
    }
    Ok(match (wildcard, prefix.chars().count()) {
        (true, 0) => None,
        (true, n) => Some((
            format!("substr(action, 1, {n}) = ?"),
            Param::Text(prefix.into()),
        )),
        (false, _) => Some(("action = ?".into(), Param::Text(prefix.into()))),
    })
}

/// A `not_found` while resolving a filter is the caller's mistake.
fn unknown(e: Error, kind: &str, key: &str, what: &str) -> Error {
    if e.code == ErrorCode::NotFound {
        bad_filter(format!(
            "{kind}: no {kind} '{key}' in this tenant (give its {what})"
        ))
    } else {
        e
    }
}

impl Store {
    /// Place a legal hold on the tenant's entries.
    pub async fn place_hold(&self, ctx: &ChangeContext, reason: &str) -> Result<LegalHold, Error> {
        steward_core::validate::text("reason", reason)?;
        if reason.trim().is_empty() {
            return Err(Error::invalid("reason", "a legal hold needs a reason"));
        }
        let hold = LegalHold {
            id: rows::new_id("hold"),
            tenant_id: ctx.tenant_id.clone(),
            reason: reason.into(),
            created_at: ctx.now,
            released_at: None,
        };
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO legal_holds (id, tenant_id, reason, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&hold.id)
        .bind(&hold.tenant_id)
        .bind(&hold.reason)
        .bind(rows::ms(ctx.now))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(
            tx,
            ctx,
            event(
                "audit.hold",
                "legal_hold",
                &hold.id,
                None,
                Some(&hold),
                Some(reason),
            ),
        )
        .await?;
        Ok(hold)
    }

    /// Release a legal hold.
    pub async fn release_hold(&self, ctx: &ChangeContext, id: &str) -> Result<LegalHold, Error> {
        let mut tx = self.begin().await?;
        let row: Option<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT tenant_id, reason, created_at, released_at FROM legal_holds WHERE id = $1 AND tenant_id = $2",
        )
        .bind(id)
        .bind(&ctx.tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let (tenant_id, reason, created, released) =
            row.ok_or_else(|| Error::not_found("legal hold", id))?;
        if released.is_some() {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!("legal hold '{id}' is already released"),
            ));
        }
        let before = LegalHold {
            id: id.into(),
            tenant_id,
            reason,
            created_at: time(created),
            released_at: None,
        };
        let mut after = before.clone();
        after.released_at = Some(ctx.now);
        sqlx::query("UPDATE legal_holds SET released_at = $1 WHERE id = $2")
            .bind(rows::ms(ctx.now))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        commit(
            tx,
            ctx,
            change("audit.hold.release", "legal_hold", id, &before, &after),
        )
        .await?;
        Ok(after)
    }

    /// The tenant's legal holds, newest first.
    pub async fn legal_holds(&self, tenant_id: &str) -> Result<Vec<LegalHold>, Error> {
        let rows: Vec<(String, String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT id, tenant_id, reason, created_at, released_at FROM legal_holds WHERE tenant_id = $1 ORDER BY id DESC",
        )
        .bind(tenant_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, tenant_id, reason, c, r)| LegalHold {
                id,
                tenant_id,
                reason,
                created_at: time(c),
                released_at: r.map(time),
            })
            .collect())
    }

    /// Every legal hold of every tenant, for verification: (tenant, created,
    /// released) in milliseconds.
    pub async fn all_legal_holds(&self) -> Result<Vec<(String, i64, Option<i64>)>, Error> {
        sqlx::query_as("SELECT tenant_id, created_at, released_at FROM legal_holds")
            .fetch_all(&self.read)
            .await
            .map_err(db_error)
    }

    /// The log's retention prunings, in order, for verification. A pruning
    /// recorded before prune records were kept whole has lost its cut-off
    /// and list of held tenants: its own time stands in for the cut-off.
    pub async fn prune_records(&self) -> Result<Vec<Pruning>, Error> {
        let rows: Vec<(i64, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT seq, time, after, pruned FROM audit_log WHERE action = 'audit.prune' ORDER BY seq",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, time, after, pruned)| {
                if pruned != 0 {
                    return Some(Pruning {
                        seq,
                        time,
                        cutoff: time,
                        held: None,
                    });
                }
                let after: serde_json::Value = serde_json::from_str(after.as_deref()?).ok()?;
                let cutoff = after.get("older_than")?.as_str()?;
                let cutoff = DateTime::parse_from_rfc3339(cutoff).ok()?;
                let held = after.get("held_tenants").and_then(|h| {
                    h.as_array().map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(String::from))
                            .collect()
                    })
                });
                Some(Pruning {
                    seq,
                    time,
                    cutoff: cutoff.timestamp_millis(),
                    held,
                })
            })
            .collect())
    }

    /// Drop the payload of entries older than `before` (retention), except
    /// for tenants under an active legal hold and the records of earlier
    /// prunings (which verification needs). The sequence number, time,
    /// tenant, action and leaf hash stay, so the tree still verifies. Returns
    /// how many entries were pruned.
    ///
    /// The pruning is recorded first, in a transaction of its own: the
    /// record (its cut-off and the tenants it leaves alone) is what lets
    /// verification accept an entry before it without its payload, so a
    /// pruning stopped half-way leaves nothing unexplained. The entries are
    /// then emptied [`PRUNE_CHUNK`] sequence numbers per transaction, from
    /// the oldest entry still holding a payload, until a stretch holds
    /// nothing older than the cut-off: the store's writer is never held for
    /// more than one stretch, however long the log (one transaction over
    /// the whole log used to hold every decision up for as long as it took
    /// to read it).
    pub async fn prune_audit(
        &self,
        ctx: &ChangeContext,
        before: DateTime<Utc>,
    ) -> Result<u64, Error> {
        self.prune_audit_by(ctx, before, PRUNE_CHUNK).await
    }

    /// [`Store::prune_audit`] with stretches of `chunk` sequence numbers.
    #[doc(hidden)]
    pub async fn prune_audit_by(
        &self,
        ctx: &ChangeContext,
        before: DateTime<Utc>,
        chunk: i64,
    ) -> Result<u64, Error> {
        let mut tx = self.begin().await?;
        // The tenants held now, named in the record, so verification knows
        // exactly whose entries this pruning left alone.
        let held: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT tenant_id FROM legal_holds WHERE released_at IS NULL ORDER BY tenant_id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let summary = serde_json::json!({ "older_than": before, "held_tenants": held });
        append(
            &mut tx,
            ctx,
            event(
                "audit.prune",
                "audit_log",
                "retention",
                None,
                Some(&summary),
                None,
            ),
        )
        .await?;
        let record: i64 = sqlx::query_scalar("SELECT size FROM audit_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit_unchanged().await.map_err(db_error)?;

        let exclude = if held.is_empty() {
            String::new()
        } else {
            format!(" AND tenant_id NOT IN ({})", rows::marks(5, held.len()))
        };
        // A tenant put under a hold while the pruning runs is left alone
        // from the next stretch on (each stretch reads the holds again): it
        // is not named in the record, and none of its entries is emptied.
        let sql = format!(
            "UPDATE audit_log SET before = NULL, after = NULL, reason = NULL, request_id = NULL, source = NULL, \
             actor_id = '', actor_human_id = NULL, resource_id = '', pruned = 1 \
             WHERE seq >= $1 AND seq < $2 AND seq < $3 AND pruned = 0 AND time < $4 \
             AND action <> 'audit.prune'{exclude} \
             AND tenant_id NOT IN (SELECT tenant_id FROM legal_holds WHERE released_at IS NULL)"
        );
        let cutoff = rows::ms(before);
        // The oldest entry that still holds a payload (read beside the
        // writer, not under it).
        let Some(mut from) = sqlx::query_scalar::<_, i64>(
            "SELECT seq FROM audit_log WHERE pruned = 0 AND action <> 'audit.prune' \
             ORDER BY seq LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await
        .map_err(db_error)?
        else {
            return Ok(0);
        };
        let mut pruned = 0;
        while from < record {
            let to = from.saturating_add(chunk.max(1));
            let mut tx = self.begin().await?;
            let mut update = sqlx::query(&sql)
                .bind(from)
                .bind(to)
                .bind(record)
                .bind(cutoff);
            for tenant in &held {
                update = update.bind(tenant);
            }
            pruned += update
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
            // Who the emptied entries were about goes with their payload.
            sqlx::query(
                "DELETE FROM audit_subjects WHERE entry >= $1 AND entry < $2 AND entry IN \
                 (SELECT seq FROM audit_log WHERE seq >= $1 AND seq < $2 AND pruned = 1)",
            )
            .bind(from)
            .bind(to)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            // Entries are appended in time order (up to the clocks of
            // several nodes): a stretch with nothing older than the cut-off
            // ends the pruning; what a skewed clock left behind goes next time.
            let oldest: Option<i64> =
                sqlx::query_scalar("SELECT MIN(time) FROM audit_log WHERE seq >= $1 AND seq < $2")
                    .bind(from)
                    .bind(to)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error)?;
            // Audit rows only; no identity changed.
            tx.commit_unchanged().await.map_err(db_error)?;
            if oldest.is_some_and(|t| t >= cutoff) {
                break;
            }
            from = to;
        }
        Ok(pruned)
    }
}

/// Sequence numbers a retention pruning empties per transaction.
pub const PRUNE_CHUNK: i64 = 5_000;

impl Store {
    /// How many one-trip appends failed and went in statement by statement
    /// (another process appended meanwhile, or a bug): the tests hold the
    /// one-trip path to working.
    #[doc(hidden)]
    pub fn one_trip_fallbacks(&self) -> u64 {
        self.one_trip_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Index who the entries written before migration 0020 are about (see
    /// [`subjects`]), [`PRUNE_CHUNK`] entries per transaction, noting in
    /// `audit_subjects_backfill` how far it went: an interrupted run goes on
    /// at the next open, and nodes opening together share the work (a row
    /// indexed twice is left alone). Returns how many entries it read.
    pub(crate) async fn index_old_audit_entries(&self) -> Result<i64, Error> {
        let mut read = 0;
        loop {
            let mut tx = self.begin().await?;
            let Some((next, up_to)) = sqlx::query_as::<_, (i64, i64)>(&format!(
                "SELECT next, up_to FROM audit_subjects_backfill WHERE id = 1{}",
                self.backend.for_update()
            ))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            else {
                return Ok(read);
            };
            // The index by identity is dropped for the backfill and built
            // again at its end: kept, it would have most of its pages
            // written again for every stretch (its rows go everywhere in
            // it), where building it sorts them once.
            if next == 1 {
                sqlx::query("DROP INDEX IF EXISTS audit_subjects_subject")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
            let to = next.saturating_add(PRUNE_CHUNK - 1).min(up_to);
            let found = sqlx::query(
                "SELECT * FROM audit_log WHERE seq >= $1 AND seq <= $2 AND pruned = 0 ORDER BY seq",
            )
            .bind(next)
            .bind(to)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            // An entry that cannot be read (altered in the database) is
            // not indexed, rather than keeping every node from starting;
            // `steward audit verify` says whether and where the log was
            // altered.
            let mut entries = Vec::with_capacity(found.len());
            for row in &found {
                match rows::audit_entry(row) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => tracing::warn!(
                        seq = rows::get::<i64>(row, "seq").ok(),
                        error = %e.message,
                        "an audit entry that cannot be read is not indexed by who it is about"
                    ),
                }
            }
            insert_subjects(&mut tx, &subject_rows(&entries)).await?;
            let marker = if to >= up_to {
                // As migration 0020 made it.
                sqlx::query(
                    "CREATE INDEX IF NOT EXISTS audit_subjects_subject ON audit_subjects (subject_id, entry)",
                )
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                sqlx::query("DELETE FROM audit_subjects_backfill WHERE id = 1")
            } else {
                sqlx::query("UPDATE audit_subjects_backfill SET next = $1 WHERE id = 1")
                    .bind(to + 1)
            };
            marker.execute(&mut *tx).await.map_err(db_error)?;
            tx.commit_unchanged().await.map_err(db_error)?;
            read += entries.len() as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use steward_types::Actor;

    /// Any text, control characters and non-ASCII included.
    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("(.|[\\x00-\\x1f\\\\\"\\u{80}-\\u{10ffff}]){0,12}").unwrap()
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((text(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn entry() -> impl Strategy<Value = AuditEntry> {
        (
            (
                any::<i64>(),
                0..4_102_444_800_000_i64,
                text(),
                text(),
                text(),
            ),
            (proptest::option::of(text()), text(), text(), text()),
            (proptest::option::of(json()), proptest::option::of(json())),
            (proptest::option::of(text()), proptest::option::of(text())),
            proptest::option::of(text()),
        )
            .prop_map(
                |(
                    (seq, ms, tenant_id, kind, id),
                    (human_id, action, resource_type, resource_id),
                    (before, after),
                    (reason, request_id),
                    source,
                )| AuditEntry {
                    seq,
                    time: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                    tenant_id,
                    actor: Actor { kind, id, human_id },
                    action,
                    resource_type,
                    resource_id,
                    before,
                    after,
                    reason,
                    request_id,
                    source,
                    leaf_hash: None,
                },
            )
    }

    /// What verification hashes again: the entry as read back from the
    /// text the store keeps of its payload.
    fn read_back(e: &AuditEntry) -> AuditEntry {
        let stored = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        let parse = |t: Option<String>| t.map(|t| serde_json::from_str(&t).unwrap());
        AuditEntry {
            before: parse(stored(&e.before)),
            after: parse(stored(&e.after)),
            ..e.clone()
        }
    }

    /// Floats a caller put in a decision's context, as JSON text the way
    /// a client sends them, parsed as the server parses a request.
    fn with_floats(texts: &[&str]) -> AuditEntry {
        let numbers: Vec<Value> = texts
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        AuditEntry {
            seq: 1,
            time: DateTime::from_timestamp_millis(0).unwrap_or_default(),
            tenant_id: "default".into(),
            actor: Actor {
                kind: "agent".into(),
                id: "agt_1".into(),
                human_id: None,
            },
            action: "decision.allow".into(),
            resource_type: "api".into(),
            resource_id: "billing".into(),
            before: None,
            after: Some(serde_json::json!({ "context": { "x": numbers } })),
            reason: None,
            request_id: None,
            source: None,
            leaf_hash: None,
        }
    }

    #[test]
    fn floats_read_back_as_they_were_hashed() {
        // Shortest round-trip digits (as serde_json and JavaScript print
        // an f64) and plain decimals that serde_json's fast float parser
        // reads one unit off, extremes and denormals.
        let e = with_floats(&[
            "-1.157573748487175e-210",
            "8.712240929461937e85",
            "90.18217000830143",
            "99515988148466111e-9",
            "0.30000000000000004",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "5e-324",
        ]);
        assert_eq!(
            String::from_utf8(canonical_entry(&read_back(&e))).unwrap(),
            String::from_utf8(canonical_entry(&e)).unwrap()
        );
    }

    proptest! {
        /// Any finite float in a payload hashes alike when written and when
        /// read back from the store.
        #[test]
        fn any_float_reads_back_as_it_was_hashed(x in any::<f64>()) {
            prop_assume!(x.is_finite());
            let e = with_floats(&[&serde_json::to_string(&x).unwrap()]);
            prop_assert_eq!(canonical_entry(&read_back(&e)), canonical_entry(&e));
        }

        /// The store's encoder and the offline verifier's (from the entry as
        /// exported JSON) give the same bytes for every entry.
        #[test]
        fn the_store_and_the_verifier_encode_an_entry_alike(e in entry()) {
            let exported = serde_json::to_value(&e).unwrap();
            let verifier = steward_audit::canonical_entry(&exported).unwrap();
            prop_assert_eq!(canonical_entry(&e), verifier);
        }
    }

    /// A decision names its principal and chain (the person acted for is
    /// in it), not what a caller put in its context; a key event its
    /// agent; every entry its actor, actor's human and resource. Only ids
    /// of agents, humans and teams count, each once.
    #[test]
    fn an_entry_is_about_the_identities_it_names() {
        let agent = format!("agt_{}", "a".repeat(32));
        let parent = format!("agt_{}", "0".repeat(32));
        let human = format!("hum_{}", "1".repeat(32));
        let team = format!("team_{}", "f".repeat(32));
        let bystander = format!("agt_{}", "b".repeat(32));
        let mut e = AuditEntry {
            seq: 1,
            time: Utc::now(),
            tenant_id: "default".into(),
            actor: Actor {
                kind: "token".into(),
                id: "tok_123".into(),
                human_id: None,
            },
            action: "decision.allow".into(),
            resource_type: "repo".into(),
            resource_id: "r1".into(),
            before: None,
            after: Some(serde_json::json!({
                "principal": {"id": agent},
                "chain": [{"id": agent}, {"id": parent}, {"id": human, "name": "bob@example.com"}],
                "context": {"x": bystander, "y": format!("agt_{}", "A".repeat(32))},
                "resource": {"attributes": {"owner": bystander}},
                "agent_id": bystander,
            })),
            reason: None,
            request_id: None,
            source: None,
            leaf_hash: None,
        };
        assert_eq!(subjects(&e), [&parent, &agent, &human]);
        e.action = "agent.update".into();
        e.resource_id = agent.clone();
        e.actor.human_id = Some(human.clone());
        assert_eq!(subjects(&e), [&agent, &human]);
        e.action = "key.create".into();
        e.resource_type = "agent_key".into();
        e.resource_id = team.clone();
        assert_eq!(subjects(&e), [&bystander, &human, &team]);
        e.actor.id = format!("agt_{}", "a".repeat(31));
        e.after = None;
        assert_eq!(subjects(&e), [&human, &team]);
    }
}
