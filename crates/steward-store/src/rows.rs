//! Conversions between rows and wire types, ids, and the paging helper.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;
use steward_core::Error;
use steward_types::{
    Actor, Agent, AgentState, ApiKey, ApiToken, AuditEntry, Human, HumanStatus, Page, Persona,
    RiskTier, Role, Team, Tenant, TokenRole,
};

use crate::db_error;

/// A new id: a kind prefix and a time-ordered UUID, so ids sort by creation.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// `n` numbered parameters from `$first`, comma-separated, for an `IN (...)`.
pub(crate) fn marks(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

pub(crate) fn time(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(crate) fn from_json<T: DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, Error> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| Error::internal(format!("corrupt column {col}: {e}")))
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, Error>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(db_error)
}

pub(crate) fn get_time(row: &AnyRow, col: &str) -> Result<DateTime<Utc>, Error> {
    Ok(time(get::<i64>(row, col)?))
}

pub(crate) fn get_opt_time(row: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>, Error> {
    Ok(get::<Option<i64>>(row, col)?.map(time))
}

fn get_u32(row: &AnyRow, col: &str) -> Result<u32, Error> {
    u32::try_from(get::<i64>(row, col)?)
        .map_err(|_| Error::internal(format!("column {col} out of range")))
}

pub(crate) fn parse_tier(s: &str) -> Result<RiskTier, Error> {
    match s {
        "low" => Ok(RiskTier::Low),
        "medium" => Ok(RiskTier::Medium),
        "high" => Ok(RiskTier::High),
        other => Err(Error::internal(format!(
            "unknown risk tier {other} in store"
        ))),
    }
}

pub(crate) fn tenant(row: &AnyRow) -> Result<Tenant, Error> {
    Ok(Tenant {
        id: get(row, "id")?,
        name: get(row, "name")?,
        created_at: get_time(row, "created_at")?,
    })
}

pub(crate) fn team(row: &AnyRow) -> Result<Team, Error> {
    Ok(Team {
        id: get(row, "id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        created_at: get_time(row, "created_at")?,
    })
}

/// A human without their teams (filled in by the caller).
pub(crate) fn human(row: &AnyRow) -> Result<Human, Error> {
    let status: String = get(row, "status")?;
    Ok(Human {
        id: get(row, "id")?,
        email: get(row, "email")?,
        display_name: get(row, "display_name")?,
        external_id: get(row, "external_id")?,
        status: if status == "active" {
            HumanStatus::Active
        } else {
            HumanStatus::Deactivated
        },
        teams: Vec::new(),
        roles: from_json(row, "roles")?,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

pub(crate) fn role(row: &AnyRow) -> Result<Role, Error> {
    Ok(Role {
        id: get(row, "id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        writes: get::<i64>(row, "writes")? != 0,
        created_at: get_time(row, "created_at")?,
    })
}

pub(crate) fn persona(row: &AnyRow) -> Result<Persona, Error> {
    Ok(Persona {
        id: get(row, "id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        roles: from_json(row, "roles")?,
        classifications: from_json(row, "classifications")?,
        quotas: from_json(row, "quotas")?,
        max_children: get_u32(row, "max_children")?,
        max_depth: get_u32(row, "max_depth")?,
        approval_tier: get::<Option<String>>(row, "approval_tier")?
            .as_deref()
            .map(parse_tier)
            .transpose()?,
        approval_required_for: from_json(row, "approval_required_for")?,
        created_at: get_time(row, "created_at")?,
    })
}

pub(crate) fn agent(row: &AnyRow) -> Result<Agent, Error> {
    let state: String = get(row, "state")?;
    Ok(Agent {
        id: get(row, "id")?,
        name: get(row, "name")?,
        owner_id: get(row, "owner_id")?,
        team_id: get(row, "team_id")?,
        purpose: get(row, "purpose")?,
        platform: get(row, "platform")?,
        model: get(row, "model")?,
        persona_id: get(row, "persona_id")?,
        roles: from_json(row, "roles")?,
        classifications: from_json(row, "classifications")?,
        labels: from_json(row, "labels")?,
        parent_id: get(row, "parent_id")?,
        depth: get_u32(row, "depth")?,
        expires_at: get_opt_time(row, "expires_at")?,
        state: AgentState::parse(&state)
            .ok_or_else(|| Error::internal(format!("unknown state {state}")))?,
        state_reason: get(row, "state_reason")?,
        risk_tier: parse_tier(&get::<String>(row, "risk_tier")?)?,
        orphaned: get::<i64>(row, "orphaned")? != 0,
        created_at: get_time(row, "created_at")?,
        updated_at: get_time(row, "updated_at")?,
        last_seen_at: get_opt_time(row, "last_seen_at")?,
    })
}

pub(crate) fn api_key(row: &AnyRow) -> Result<ApiKey, Error> {
    Ok(ApiKey {
        id: get(row, "id")?,
        agent_id: get(row, "agent_id")?,
        name: get(row, "name")?,
        prefix: get(row, "prefix")?,
        created_at: get_time(row, "created_at")?,
        expires_at: get_opt_time(row, "expires_at")?,
        last_used_at: get_opt_time(row, "last_used_at")?,
        revoked_at: get_opt_time(row, "revoked_at")?,
    })
}

pub(crate) fn api_token(row: &AnyRow) -> Result<ApiToken, Error> {
    let role: String = get(row, "role")?;
    Ok(ApiToken {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        name: get(row, "name")?,
        role: match role.as_str() {
            "admin" => TokenRole::Admin,
            "pep" => TokenRole::Pep,
            _ => TokenRole::Auditor,
        },
        human_id: get(row, "human_id")?,
        prefix: get(row, "prefix")?,
        created_at: get_time(row, "created_at")?,
        expires_at: get_opt_time(row, "expires_at")?,
        last_used_at: get_opt_time(row, "last_used_at")?,
        revoked_at: get_opt_time(row, "revoked_at")?,
    })
}

pub(crate) fn policy(row: &AnyRow) -> Result<steward_types::Policy, Error> {
    Ok(steward_types::Policy {
        id: get(row, "id")?,
        description: get(row, "description")?,
        owner: get(row, "owner")?,
        text: get(row, "text")?,
        effect: get(row, "effect")?,
        version: get(row, "version")?,
        updated_at: get_time(row, "updated_at")?,
    })
}

pub(crate) fn resource_entity(row: &AnyRow) -> Result<steward_types::ResourceEntity, Error> {
    Ok(steward_types::ResourceEntity {
        resource_type: get(row, "type")?,
        id: get(row, "id")?,
        attributes: from_json(row, "attributes")?,
    })
}

pub(crate) fn audit_entry(row: &AnyRow) -> Result<AuditEntry, Error> {
    audit_entry_named(row).map_err(|why| Error::internal(format!("an audit entry: {why}")))
}

/// A log row decoded column by column; the error names the first column
/// that does not read back, and why.
pub(crate) fn audit_entry_named(row: &AnyRow) -> Result<AuditEntry, String> {
    fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, String>
    where
        T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        row.try_get(col)
            .map_err(|e| format!("its {col} column cannot be read ({e})"))
    }
    let json = |col: &str| -> Result<Option<serde_json::Value>, String> {
        get::<Option<String>>(row, col)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| format!("its {col} column is not JSON ({e})"))
            })
            .transpose()
    };
    Ok(AuditEntry {
        seq: get(row, "seq")?,
        time: time(get(row, "time")?),
        tenant_id: get(row, "tenant_id")?,
        actor: Actor {
            kind: get(row, "actor_kind")?,
            id: get(row, "actor_id")?,
            human_id: get(row, "actor_human_id")?,
        },
        action: get(row, "action")?,
        resource_type: get(row, "resource_type")?,
        resource_id: get(row, "resource_id")?,
        before: json("before")?,
        after: json("after")?,
        reason: get(row, "reason")?,
        request_id: get(row, "request_id")?,
        source: get(row, "source")?,
        leaf_hash: get(row, "leaf_hash")?,
    })
}

/// A value bound to a dynamically built query.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// `params` bound in order.
fn arguments(params: Vec<Param>) -> Result<sqlx::any::AnyArguments<'static>, Error> {
    use sqlx::Arguments;
    let mut args = sqlx::any::AnyArguments::default();
    for p in params {
        match p {
            Param::Text(s) => args.add(s),
            Param::Int(i) => args.add(i),
        }
        .map_err(|e| Error::internal(format!("binding a query's value: {e}")))?;
    }
    Ok(args)
}

/// A `SELECT` with `WHERE` clauses added one by one and keyset pagination.
pub(crate) struct Select {
    sql: String,
    params: Vec<Param>,
}

impl Select {
    /// A query whose text ends in a `WHERE` clause binding `params`.
    pub(crate) fn new(sql: String, params: Vec<Param>) -> Self {
        Select { sql, params }
    }

    /// `SELECT * FROM table WHERE tenant_id = $1`.
    pub(crate) fn tenant_rows(table: &str, tenant_id: &str) -> Self {
        Select {
            sql: format!("SELECT * FROM {table} WHERE tenant_id = $1"),
            params: vec![Param::Text(tenant_id.into())],
        }
    }

    /// `SELECT * FROM table` (tables that are not tenant-scoped).
    pub(crate) fn all(table: &str) -> Self {
        Select {
            sql: format!("SELECT * FROM {table} WHERE 1 = 1"),
            params: Vec::new(),
        }
    }

    /// Add ` AND {clause}` where the clause uses `?` for the one value.
    pub(crate) fn and(mut self, clause: &str, value: Param) -> Self {
        self.params.push(value);
        let placeholder = format!("${}", self.params.len());
        self.sql.push_str(" AND ");
        self.sql.push_str(&clause.replace('?', &placeholder));
        self
    }

    /// The one integer the query with `tail` added returns, if any row.
    pub(crate) async fn scalar(
        self,
        pool: &sqlx::AnyPool,
        tail: &str,
    ) -> Result<Option<i64>, Error> {
        let sql = self.sql + tail;
        sqlx::query_scalar_with::<_, i64, _>(&sql, arguments(self.params)?)
            .fetch_optional(pool)
            .await
            .map_err(db_error)
    }

    /// Page by `key` ascending from the cursor; fetch one more than `limit` to
    /// know whether there is a next page.
    pub(crate) async fn page<T>(
        self,
        pool: &sqlx::AnyPool,
        key: &str,
        cursor: &Cursor,
        decode: impl Fn(&AnyRow) -> Result<T, Error>,
        key_of: impl Fn(&T) -> String,
    ) -> Result<Page<T>, Error> {
        let mut q = match &cursor.after {
            Some(after) => self.and(&format!("{key} > ?"), after.clone()),
            None => self,
        };
        q.sql
            .push_str(&format!(" ORDER BY {key} LIMIT {}", cursor.limit + 1));
        let rows = sqlx::query_with(&q.sql, arguments(q.params)?)
            .fetch_all(pool)
            .await
            .map_err(db_error)?;
        let mut items = rows.iter().map(decode).collect::<Result<Vec<T>, Error>>()?;
        let next_cursor = if items.len() > cursor.limit as usize {
            items.truncate(cursor.limit as usize);
            items.last().map(key_of)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

/// A validated position and page size.
#[derive(Debug, Clone)]
pub struct Cursor {
    after: Option<Param>,
    limit: u32,
}

impl Cursor {
    /// Default page size.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// Largest page size.
    pub const MAX_LIMIT: u32 = 500;

    /// A cursor over ids (text keys).
    pub fn text(after: Option<String>, limit: Option<u32>) -> Result<Cursor, Error> {
        Ok(Cursor {
            after: after.map(Param::Text),
            limit: Self::check_limit(limit)?,
        })
    }

    /// A cursor over sequence numbers.
    pub fn seq(after: Option<String>, limit: Option<u32>) -> Result<Cursor, Error> {
        let after = match after {
            Some(s) => Some(Param::Int(s.parse::<i64>().map_err(|_| {
                Error::new(
                    steward_types::ErrorCode::InvalidQuery,
                    format!("cursor: '{s}' is not a cursor from this list"),
                )
            })?)),
            None => None,
        };
        Ok(Cursor {
            after,
            limit: Self::check_limit(limit)?,
        })
    }

    fn check_limit(limit: Option<u32>) -> Result<u32, Error> {
        match limit {
            None => Ok(Self::DEFAULT_LIMIT),
            Some(l) if (1..=Self::MAX_LIMIT).contains(&l) => Ok(l),
            Some(l) => Err(Error::new(
                steward_types::ErrorCode::InvalidQuery,
                format!("limit: {l} is outside 1..={}", Self::MAX_LIMIT),
            )),
        }
    }
}
