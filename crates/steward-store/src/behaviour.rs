//! Behavioural baselines: the audit log read in order into hourly activity
//! per agent ([`Store::ingest_activity`], one node at a time under a lease),
//! the history an hour is judged against, alerts (raised once per agent,
//! signal, subject and hour, with their audit record and webhook in one
//! transaction) and each tenant's settings.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::any::AnyRow;
use steward_core::behaviour::{Activity, Finding, History, Settings, hour_of};
use steward_core::lifecycle::Transition;
use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    AlertQuery, BehaviourAlert, ErrorCode, FootprintEntry, Page, ResolveAlert, Signal,
};

use crate::audit::{append, change, event};
use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, db_error};

/// What one audit entry adds to an agent's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Tenant.
    pub tenant_id: String,
    /// The agent it is about.
    pub agent_id: String,
    /// When (the entry's time).
    pub time: DateTime<Utc>,
    /// Its counts.
    pub activity: Activity,
    /// The action and resource type, for a decision.
    pub used: Option<(String, String)>,
}

/// The most an hourly count holds; sums stop there (2^62, so a sum of two
/// never overflows a signed 64-bit column).
const CAP: u64 = 1 << 62;

/// A count from an audit record, at most [`CAP`] (outcomes are reported by
/// clients and may be anything).
fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0).min(CAP)
}

/// The actions whose entries say something about behaviour.
const OBSERVED: &str = "('decision.allow', 'decision.deny', 'decision.approval_required', \
                        'decision.outcome', 'mcp.tool_call', 'agent.register')";

/// The columns of an audit entry the pass reads (not its whole payload as
/// a tree: only the few fields below are decoded).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Logged {
    /// Position in the log.
    pub seq: i64,
    /// When (Unix milliseconds).
    pub time: i64,
    /// Tenant.
    pub tenant_id: String,
    /// `token`, `agent` or `system`.
    pub actor_kind: String,
    /// Who.
    pub actor_id: String,
    /// What was done.
    pub action: String,
    /// Kind of thing it was done to.
    pub resource_type: String,
    /// The payload as stored (JSON text), absent once pruned.
    pub after: Option<String>,
}

/// The fields of a payload the pass uses; the rest is skipped unparsed.
#[derive(Debug, Default, serde::Deserialize)]
struct Payload {
    #[serde(default)]
    principal: Option<Principal>,
    #[serde(default)]
    action: Option<String>,
    /// An object on `decision.outcome`, a word on `mcp.tool_call`.
    #[serde(default)]
    outcome: Option<Value>,
    #[serde(default)]
    response_bytes: Option<Value>,
    #[serde(default)]
    parent_id: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Principal {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// What an audit entry says about an agent's behaviour, if anything:
/// decisions with an agent as principal (requests, denials, the action on
/// the resource type), outcomes and MCP calls an agent reported (bytes,
/// records), and registrations of a child agent (a spawn of its parent).
pub fn observe(entry: &Logged) -> Option<Observation> {
    let after: Payload = serde_json::from_str(entry.after.as_deref()?).ok()?;
    let mut activity = Activity::default();
    let mut used = None;
    let agent_id = match entry.action.as_str() {
        "decision.allow" | "decision.deny" | "decision.approval_required" => {
            let principal = after.principal?;
            if principal.kind.as_deref() != Some("agent") {
                return None;
            }
            activity.requests = 1;
            activity.denials = u64::from(entry.action == "decision.deny");
            used = Some((after.action?, entry.resource_type.clone()));
            principal.id?
        }
        // Reported by the agent, or by an enforcement point for it (the
        // record names whose decision it was).
        "decision.outcome" => {
            let agent = match after.principal {
                Some(Principal {
                    kind: Some(kind),
                    id: Some(id),
                }) if kind == "agent" => id,
                _ if entry.actor_kind == "agent" => entry.actor_id.clone(),
                _ => return None,
            };
            let outcome = after.outcome?;
            activity.bytes = count(outcome.get("bytes"));
            activity.records = count(outcome.get("records"));
            agent
        }
        "mcp.tool_call" if entry.actor_kind == "agent" => {
            activity.bytes = count(after.response_bytes.as_ref());
            entry.actor_id.clone()
        }
        "agent.register" => {
            activity.spawns = 1;
            after.parent_id?
        }
        _ => return None,
    };
    if activity.is_empty() && used.is_none() {
        return None;
    }
    Some(Observation {
        tenant_id: entry.tenant_id.clone(),
        agent_id,
        time: rows::time(entry.time),
        activity,
        used,
    })
}

/// One agent's hour that changed in an ingestion pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    /// Tenant.
    pub tenant_id: String,
    /// The agent.
    pub agent_id: String,
    /// The hour's start.
    pub hour: DateTime<Utc>,
}

/// What a pass has read and not yet written: counts per agent and hour,
/// and the actions used.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    hours: BTreeMap<(String, String, DateTime<Utc>), Activity>,
    uses: BTreeMap<(Key, Key), Use>,
}

impl Tally {
    fn add(&mut self, o: Observation) {
        let agent = (o.tenant_id.clone(), o.agent_id.clone());
        self.hours
            .entry((o.tenant_id, o.agent_id, hour_of(o.time)))
            .or_default()
            .add(&o.activity);
        if let Some(used) = o.used {
            let e = self
                .uses
                .entry((agent, used))
                .or_insert((0, o.time, o.time));
            e.0 += 1;
            e.2 = o.time;
        }
    }
}

type Key = (String, String);
type Use = (i64, DateTime<Utc>, DateTime<Utc>);

fn int(n: u64) -> i64 {
    i64::try_from(n.min(CAP)).unwrap_or(i64::MAX)
}

/// Rows per upsert statement (8 parameters each, well under either
/// database's limit on parameters).
const UPSERT_ROWS: usize = 200;

/// `col = col + excluded.col`, stopping at [`CAP`] (the same SQL on both
/// stores).
fn capped_sum(col: &str) -> String {
    format!(
        "{col} = CASE WHEN agent_activity.{col} > {CAP} - excluded.{col} THEN {CAP} \
         ELSE agent_activity.{col} + excluded.{col} END"
    )
}

fn uint(row: &AnyRow, col: &str) -> Result<u64, Error> {
    Ok(u64::try_from(rows::get::<i64>(row, col)?).unwrap_or(0))
}

fn activity(row: &AnyRow) -> Result<Activity, Error> {
    Ok(Activity {
        requests: uint(row, "requests")?,
        denials: uint(row, "denials")?,
        bytes: uint(row, "bytes")?,
        records: uint(row, "records")?,
        spawns: uint(row, "spawns")?,
    })
}

fn alert(row: &AnyRow) -> Result<BehaviourAlert, Error> {
    let signal: String = rows::get(row, "signal")?;
    Ok(BehaviourAlert {
        id: rows::get(row, "id")?,
        agent_id: rows::get(row, "agent_id")?,
        agent_name: rows::get::<Option<String>>(row, "agent_name")?.unwrap_or_default(),
        signal: Signal::parse(&signal)
            .ok_or_else(|| Error::internal(format!("unknown signal {signal}")))?,
        subject: rows::get(row, "subject")?,
        hour: rows::get_time(row, "hour")?,
        observed: uint(row, "observed")?,
        usual: uint(row, "usual")?,
        threshold: uint(row, "threshold")?,
        message: rows::get(row, "message")?,
        suspended: rows::get::<i64>(row, "suspended")? != 0,
        status: rows::get(row, "status")?,
        created_at: rows::get_time(row, "created_at")?,
        resolved_at: rows::get_opt_time(row, "resolved_at")?,
        resolved_by: rows::get(row, "resolved_by")?,
        resolution: rows::get(row, "resolution")?,
        note: rows::get(row, "note")?,
    })
}

async fn alert_in(tx: &mut crate::Tx, tenant_id: &str, id: &str) -> Result<BehaviourAlert, Error> {
    let row = sqlx::query("SELECT * FROM behaviour_alert_rows WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
    alert(&row)
}

impl Store {
    /// Take (or keep) the lease on reading the log into activity until
    /// `now + lease`; the cursor to read from, or `None` when another node
    /// holds the lease.
    pub async fn claim_activity(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<i64>, Error> {
        let claimed = sqlx::query(
            "UPDATE behaviour_state SET lease_owner = $1, lease_until = $2 \
             WHERE id = 1 AND (lease_until <= $3 OR lease_owner = $1)",
        )
        .bind(owner)
        .bind(rows::ms(now + lease))
        .bind(rows::ms(now))
        .execute(&self.write)
        .await
        .map_err(db_error)?;
        if claimed.rows_affected() != 1 {
            return Ok(None);
        }
        let cursor: i64 = sqlx::query_scalar("SELECT cursor FROM behaviour_state WHERE id = 1")
            .fetch_one(&self.write)
            .await
            .map_err(db_error)?;
        Ok(Some(cursor))
    }

    /// Read up to `limit` entries after `after` into `tally`, writing
    /// nothing; the sequence number read through and the entries read.
    pub async fn read_activity(
        &self,
        after: i64,
        limit: i64,
        tally: &mut Tally,
    ) -> Result<(i64, usize), Error> {
        // Entries up to the head are all committed (the head moves in the
        // transaction that writes them); only the actions that say something
        // about behaviour are read.
        let head = self.audit_size().await?;
        let entries: Vec<Logged> = sqlx::query_as(&format!(
            "SELECT seq, time, tenant_id, actor_kind, actor_id, action, resource_type, after \
             FROM audit_log WHERE seq > $1 AND seq <= $2 AND action IN {OBSERVED} ORDER BY seq LIMIT $3"
        ))
        .bind(after)
        .bind(head)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let through = match entries.last() {
            Some(last) if entries.len() as i64 >= limit => last.seq,
            _ => head.max(after),
        };
        let read = entries.len();
        for o in entries.iter().filter_map(observe) {
            tally.add(o);
        }
        Ok((through, read))
    }

    /// Write what was read from `from` through `through` and move the cursor,
    /// in one transaction, if the cursor is still at `from` and `owner`
    /// still holds the lease (so every entry counts once). The agents'
    /// hours that changed, or `None` when another node got there first.
    pub async fn commit_activity(
        &self,
        owner: &str,
        from: i64,
        through: i64,
        tally: Tally,
        keep_from: DateTime<Utc>,
    ) -> Result<Option<Vec<Touched>>, Error> {
        let mut tx = self.begin().await?;
        let moved = sqlx::query(
            "UPDATE behaviour_state SET cursor = $1 WHERE id = 1 AND cursor = $2 AND lease_owner = $3",
        )
        .bind(through)
        .bind(from)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if moved.rows_affected() != 1 {
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
        // Hours no baseline or learning period can reach any more.
        sqlx::query("DELETE FROM agent_activity WHERE hour < $1")
            .bind(rows::ms(keep_from))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        // Many rows a statement: the pass holds the one writer while it
        // commits, and decisions queue behind it.
        let hours: Vec<_> = tally.hours.iter().collect();
        for chunk in hours.chunks(UPSERT_ROWS) {
            let sql = format!(
                "{} ON CONFLICT (tenant_id, agent_id, hour) DO UPDATE SET {}",
                crate::audit::values_sql(
                    "agent_activity (tenant_id, agent_id, hour, requests, denials, bytes, records, spawns)",
                    8,
                    chunk.len(),
                    1
                ),
                ["requests", "denials", "bytes", "records", "spawns"]
                    .map(capped_sum)
                    .join(", ")
            );
            let mut q = sqlx::query(&sql);
            for ((tenant, agent, hour), a) in chunk {
                q = q
                    .bind(tenant)
                    .bind(agent)
                    .bind(rows::ms(*hour))
                    .bind(int(a.requests))
                    .bind(int(a.denials))
                    .bind(int(a.bytes))
                    .bind(int(a.records))
                    .bind(int(a.spawns));
            }
            q.execute(&mut *tx).await.map_err(db_error)?;
        }
        let uses: Vec<_> = tally.uses.iter().collect();
        for chunk in uses.chunks(UPSERT_ROWS) {
            let sql = format!(
                "{} ON CONFLICT (tenant_id, agent_id, action, resource_type) DO UPDATE SET \
                 uses = agent_footprint.uses + excluded.uses, last_seen = excluded.last_seen",
                crate::audit::values_sql(
                    "agent_footprint (tenant_id, agent_id, action, resource_type, uses, first_seen, last_seen)",
                    7,
                    chunk.len(),
                    1
                )
            );
            let mut q = sqlx::query(&sql);
            for (((tenant, agent), (action, rtype)), (n, first, last)) in chunk {
                q = q
                    .bind(tenant)
                    .bind(agent)
                    .bind(action)
                    .bind(rtype)
                    .bind(*n)
                    .bind(rows::ms(*first))
                    .bind(rows::ms(*last));
            }
            q.execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit_unchanged().await.map_err(db_error)?;
        Ok(Some(
            tally
                .hours
                .into_keys()
                .map(|(tenant_id, agent_id, hour)| Touched {
                    tenant_id,
                    agent_id,
                    hour,
                })
                .collect(),
        ))
    }

    /// How far the log has been read into activity (a sequence number).
    pub async fn activity_cursor(&self) -> Result<i64, Error> {
        sqlx::query_scalar("SELECT cursor FROM behaviour_state WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(db_error)
    }

    /// An agent's history: when it first acted, and its hours in
    /// `[from, to)`.
    pub async fn agent_history(
        &self,
        tenant_id: &str,
        agent_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<History, Error> {
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(hour) FROM agent_activity WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .fetch_one(&self.read)
        .await
        .map_err(db_error)?;
        let rows = sqlx::query(
            "SELECT * FROM agent_activity WHERE tenant_id = $1 AND agent_id = $2 \
             AND hour >= $3 AND hour < $4 ORDER BY hour",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(rows::ms(from))
        .bind(rows::ms(to))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        Ok(History {
            first_seen: first.map(rows::time),
            hours: rows
                .iter()
                .map(|r| Ok((rows::get_time(r, "hour")?, activity(r)?)))
                .collect::<Result<_, Error>>()?,
        })
    }

    /// `action on Type` pairs the agent used for the first time in the hour
    /// starting at `hour` (read from the footprint, so judging an hour again
    /// finds them again).
    pub async fn actions_first_used(
        &self,
        tenant_id: &str,
        agent_id: &str,
        hour: DateTime<Utc>,
    ) -> Result<Vec<String>, Error> {
        let pairs: Vec<(String, String)> = sqlx::query_as(
            "SELECT action, resource_type FROM agent_footprint WHERE tenant_id = $1 AND agent_id = $2 \
             AND first_seen >= $3 AND first_seen < $4 ORDER BY resource_type, action LIMIT 100",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(rows::ms(hour))
        .bind(rows::ms(hour + Duration::hours(1)))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        Ok(pairs
            .into_iter()
            .map(|(action, rtype)| format!("{action} on {rtype}"))
            .collect())
    }

    /// Hours in `[from, to)` with an alert that is open or was confirmed:
    /// what they held is not normal, so they stay out of the baseline.
    pub async fn alerted_hours(
        &self,
        tenant_id: &str,
        agent_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeSet<DateTime<Utc>>, Error> {
        let hours: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT hour FROM behaviour_alerts WHERE tenant_id = $1 AND agent_id = $2 \
             AND hour >= $3 AND hour < $4 AND (status = 'open' OR resolution = 'confirmed')",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(rows::ms(from))
        .bind(rows::ms(to))
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        Ok(hours.into_iter().map(rows::time).collect())
    }

    /// The actions an agent has used, on which resource types.
    pub async fn agent_footprint(
        &self,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<Vec<FootprintEntry>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM agent_footprint WHERE tenant_id = $1 AND agent_id = $2 \
             ORDER BY resource_type, action LIMIT 1000",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(FootprintEntry {
                    action: rows::get(r, "action")?,
                    resource_type: rows::get(r, "resource_type")?,
                    uses: uint(r, "uses")?,
                    first_seen: rows::get_time(r, "first_seen")?,
                    last_seen: rows::get_time(r, "last_seen")?,
                })
            })
            .collect()
    }

    /// Raise an alert for `finding` about the agent's hour, with its audit
    /// record and `behaviour.alert` webhook, suspending the agent first when
    /// `suspend` (and it is active). `None` when the same alert was raised
    /// before.
    pub async fn raise_alert(
        &self,
        ctx: &ChangeContext,
        agent_id: &str,
        hour: DateTime<Utc>,
        finding: &Finding,
        suspend: bool,
    ) -> Result<Option<BehaviourAlert>, Error> {
        let mut tx = self.begin().await?;
        // The agent first, whether or not it is suspended: the lock order of
        // every change about an agent.
        let lock = self.backend.for_update();
        crate::agents::lock_agent(&mut tx, lock, &ctx.tenant_id, agent_id).await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT id FROM behaviour_alerts WHERE tenant_id = $1 AND agent_id = $2 \
             AND signal = $3 AND subject = $4 AND hour = $5",
        )
        .bind(&ctx.tenant_id)
        .bind(agent_id)
        .bind(finding.signal.as_str())
        .bind(&finding.subject)
        .bind(rows::ms(hour))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if exists.is_some() {
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
        let suspended = if suspend {
            let reason = format!("suspended on a behaviour alert: {}", finding.message);
            let reason: String = reason.chars().take(1000).collect();
            match self
                .transition_agent_in(&mut tx, ctx, agent_id, Transition::Suspend, Some(reason))
                .await
            {
                Ok(_) => true,
                Err(e) if e.code == ErrorCode::InvalidTransition => false,
                Err(e) => return Err(e),
            }
        } else {
            false
        };
        let id = rows::new_id("bha");
        let inserted = sqlx::query(
            "INSERT INTO behaviour_alerts (id, tenant_id, agent_id, signal, subject, hour, observed, usual, threshold, \
             message, suspended, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12) \
             ON CONFLICT (tenant_id, agent_id, signal, subject, hour) DO NOTHING",
        )
        .bind(&id)
        .bind(&ctx.tenant_id)
        .bind(agent_id)
        .bind(finding.signal.as_str())
        .bind(&finding.subject)
        .bind(rows::ms(hour))
        .bind(int(finding.observed))
        .bind(int(finding.usual))
        .bind(int(finding.threshold))
        .bind(&finding.message)
        .bind(i64::from(suspended))
        .bind(rows::ms(ctx.now))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() != 1 {
            // Another node raised it between the check and the insert.
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        }
        let raised = alert_in(&mut tx, &ctx.tenant_id, &id).await?;
        append(
            &mut tx,
            ctx,
            event(
                "agent.behaviour_alert",
                "agent",
                agent_id,
                None,
                Some(&raised),
                Some(&raised.message),
            ),
        )
        .await?;
        let text = format!(
            "Agent {} acted out of character: {}{}",
            raised.agent_name,
            raised.message,
            if raised.suspended {
                ". It has been suspended until a person resumes it."
            } else {
                ""
            }
        );
        self.notify_in(
            &mut tx,
            &ctx.tenant_id,
            "behaviour.alert",
            &text,
            serde_json::json!({ "alert": raised }),
            ctx.now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(raised))
    }

    /// The tenant's alerts, oldest first.
    pub async fn list_alerts(
        &self,
        tenant_id: &str,
        q: AlertQuery,
    ) -> Result<Page<BehaviourAlert>, Error> {
        let cursor = Cursor::text(q.cursor, q.limit)?;
        let mut select = Select::tenant_rows("behaviour_alert_rows", tenant_id);
        if let Some(key) = &q.agent {
            let agent = self.get_agent(tenant_id, key).await?;
            select = select.and("agent_id = ?", Param::Text(agent.id));
        }
        if let Some(status) = q.status {
            if status != "open" && status != "resolved" {
                return Err(crate::audit::bad_filter("status must be open or resolved"));
            }
            select = select.and("status = ?", Param::Text(status));
        }
        if let Some(signal) = q.signal {
            let Some(s) = Signal::parse(&signal) else {
                return Err(crate::audit::bad_filter(format!(
                    "signal must be one of {}",
                    Signal::ALL.map(Signal::as_str).join(", ")
                )));
            };
            select = select.and("signal = ?", Param::Text(s.as_str().into()));
        }
        select
            .page(&self.read, "id", &cursor, alert, |a| a.id.clone())
            .await
    }

    /// The tenant's open alerts, newest first, at most `limit`, and how many
    /// are open in all.
    pub async fn open_alerts(
        &self,
        tenant_id: &str,
        agent_id: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<BehaviourAlert>, u64), Error> {
        let agent = agent_id.unwrap_or_default();
        let filter = "tenant_id = $1 AND status = 'open' AND ($2 = '' OR agent_id = $2)";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM behaviour_alerts WHERE {filter}"
        ))
        .bind(tenant_id)
        .bind(agent)
        .fetch_one(&self.read)
        .await
        .map_err(db_error)?;
        let rows = sqlx::query(&format!(
            "SELECT * FROM behaviour_alert_rows WHERE {filter} ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(agent)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db_error)?;
        let items = rows.iter().map(alert).collect::<Result<_, _>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    /// One alert.
    pub async fn get_alert(&self, tenant_id: &str, id: &str) -> Result<BehaviourAlert, Error> {
        let row =
            sqlx::query("SELECT * FROM behaviour_alert_rows WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.read)
                .await
                .map_err(db_error)?;
        match row {
            Some(row) => alert(&row),
            None => Err(Error::not_found("alert", id)),
        }
    }

    /// Resolve an open alert as `expected` or `confirmed`, with a note.
    pub async fn resolve_alert(
        &self,
        ctx: &ChangeContext,
        id: &str,
        req: &ResolveAlert,
    ) -> Result<BehaviourAlert, Error> {
        if req.resolution != "expected" && req.resolution != "confirmed" {
            return Err(Error::invalid(
                "resolution",
                "must be expected (normal after all) or confirmed (a real problem)",
            ));
        }
        if let Some(note) = &req.note {
            validate::text("note", note)?;
        }
        let mut tx = self.begin().await?;
        let lock = self.backend.for_update();
        let row = sqlx::query(&format!(
            "SELECT * FROM behaviour_alerts WHERE tenant_id = $1 AND id = $2{lock}"
        ))
        .bind(&ctx.tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if row.is_none() {
            return Err(Error::not_found("alert", id));
        }
        let before = alert_in(&mut tx, &ctx.tenant_id, id).await?;
        if before.status != "open" {
            return Err(Error::new(
                ErrorCode::AlertResolved,
                format!(
                    "alert {id} was already resolved as {}",
                    before.resolution.as_deref().unwrap_or("?")
                ),
            ));
        }
        sqlx::query(
            "UPDATE behaviour_alerts SET status = 'resolved', resolved_at = $1, resolved_by = $2, \
             resolution = $3, note = $4 WHERE id = $5 AND tenant_id = $6",
        )
        .bind(rows::ms(ctx.now))
        .bind(&ctx.actor.id)
        .bind(&req.resolution)
        .bind(&req.note)
        .bind(id)
        .bind(&ctx.tenant_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let after = alert_in(&mut tx, &ctx.tenant_id, id).await?;
        append(
            &mut tx,
            ctx,
            change(
                "behaviour_alert.resolve",
                "behaviour_alert",
                id,
                &before,
                &after,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(after)
    }

    /// The tenant's settings (the defaults until changed).
    pub async fn behaviour_settings(&self, tenant_id: &str) -> Result<Settings, Error> {
        let row = sqlx::query("SELECT * FROM behaviour_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => rows::from_json(&row, "settings"),
            None => Ok(Settings::default()),
        }
    }

    /// Replace the tenant's settings.
    pub async fn set_behaviour_settings(
        &self,
        ctx: &ChangeContext,
        settings: &Settings,
    ) -> Result<Settings, Error> {
        steward_core::behaviour::check_settings(settings)?;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT * FROM behaviour_settings WHERE tenant_id = $1{}",
            self.backend.for_update()
        ))
        .bind(&ctx.tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let before: Settings = match row {
            Some(row) => rows::from_json(&row, "settings")?,
            None => Settings::default(),
        };
        sqlx::query(
            "INSERT INTO behaviour_settings (tenant_id, settings, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at",
        )
        .bind(&ctx.tenant_id)
        .bind(rows::to_json(settings))
        .bind(rows::ms(ctx.now))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        append(
            &mut tx,
            ctx,
            change(
                "behaviour.settings",
                "tenant",
                &ctx.tenant_id,
                &before,
                settings,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(settings.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// More agents' hours and footprints than one statement holds, written
    /// twice: every row lands, and the second pass adds to the first.
    #[tokio::test]
    async fn passes_add_up_across_many_statements() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        let hour = hour_of(Utc::now());
        let tally = || {
            let mut t = Tally::default();
            for i in 0..UPSERT_ROWS * 2 + 17 {
                let agent = format!("agt_{i}");
                t.hours.insert(
                    ("default".into(), agent.clone(), hour),
                    Activity {
                        requests: 3,
                        denials: 1,
                        ..Default::default()
                    },
                );
                t.uses.insert(
                    (("default".into(), agent), ("read".into(), "repo".into())),
                    (2, hour, hour),
                );
            }
            t
        };
        for _ in 0..2 {
            let from = store
                .claim_activity("n1", Utc::now(), chrono::Duration::seconds(60))
                .await
                .unwrap()
                .unwrap();
            let touched = store
                .commit_activity("n1", from, from, tally(), hour - chrono::Duration::days(1))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(touched.len(), UPSERT_ROWS * 2 + 17);
        }
        for i in [0, UPSERT_ROWS, UPSERT_ROWS * 2 + 16] {
            let agent = format!("agt_{i}");
            let history = store
                .agent_history("default", &agent, hour, hour + chrono::Duration::hours(1))
                .await
                .unwrap();
            assert_eq!(
                history
                    .hours
                    .iter()
                    .map(|(_, a)| (a.requests, a.denials))
                    .collect::<Vec<_>>(),
                [(6, 2)],
                "{agent}"
            );
            let footprint = store.agent_footprint("default", &agent).await.unwrap();
            assert_eq!(footprint.len(), 1);
            assert_eq!((footprint[0].uses, footprint[0].first_seen), (4, hour));
        }
    }

    fn entry(action: &str, actor: (&str, &str), rtype: &str, after: Value) -> Logged {
        Logged {
            seq: 1,
            time: 1_767_225_600_000,
            tenant_id: "default".into(),
            actor_kind: actor.0.into(),
            actor_id: actor.1.into(),
            action: action.into(),
            resource_type: rtype.into(),
            after: Some(after.to_string()),
        }
    }

    #[test]
    fn decisions_count_for_their_agent_principal() {
        let e = entry(
            "decision.deny",
            ("token", "tok_1"),
            "Repo",
            json!({"principal": {"kind": "agent", "id": "agt_1"}, "action": "write"}),
        );
        let o = observe(&e);
        assert_eq!(o.as_ref().map(|o| o.agent_id.as_str()), Some("agt_1"));
        assert_eq!(
            o.as_ref()
                .map(|o| (o.activity.requests, o.activity.denials)),
            Some((1, 1))
        );
        assert_eq!(
            o.and_then(|o| o.used),
            Some(("write".into(), "Repo".into()))
        );
        let human = entry(
            "decision.allow",
            ("token", "tok_1"),
            "Repo",
            json!({"principal": {"kind": "human", "id": "hum_1"}, "action": "read"}),
        );
        assert_eq!(observe(&human), None);
    }

    #[test]
    fn outcomes_calls_and_spawns_count() {
        let outcome = entry(
            "decision.outcome",
            ("agent", "agt_1"),
            "decision",
            json!({"outcome": {"bytes": 2048, "records": 12}}),
        );
        let o = observe(&outcome).map(|o| o.activity);
        assert_eq!(o.map(|a| (a.bytes, a.records)), Some((2048, 12)));
        // An enforcement point reports for the agent its decision was for.
        let reported = entry(
            "decision.outcome",
            ("token", "tok_pep"),
            "decision",
            json!({"outcome": {"bytes": 10}, "principal": {"kind": "agent", "id": "agt_9"}}),
        );
        assert_eq!(
            observe(&reported).map(|o| (o.agent_id, o.activity.bytes)),
            Some(("agt_9".into(), 10))
        );
        let for_a_person = entry(
            "decision.outcome",
            ("token", "tok_pep"),
            "decision",
            json!({"outcome": {"bytes": 10}, "principal": {"kind": "human", "id": "hum_1"}}),
        );
        assert_eq!(observe(&for_a_person), None);
        let call = entry(
            "mcp.tool_call",
            ("agent", "agt_1"),
            "McpTool",
            json!({"response_bytes": 300}),
        );
        assert_eq!(observe(&call).map(|o| o.activity.bytes), Some(300));
        let spawn = entry(
            "agent.register",
            ("agent", "agt_1"),
            "agent",
            json!({"id": "agt_2", "parent_id": "agt_1"}),
        );
        assert_eq!(
            observe(&spawn).map(|o| (o.agent_id, o.activity.spawns)),
            Some(("agt_1".into(), 1))
        );
        let top = entry(
            "agent.register",
            ("token", "t"),
            "agent",
            json!({"parent_id": null}),
        );
        assert_eq!(observe(&top), None);
        let pruned = Logged {
            after: None,
            ..call
        };
        assert_eq!(observe(&pruned), None);
    }
}
