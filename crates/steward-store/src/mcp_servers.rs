//! Upstream MCP servers registered for the gateway.

use sqlx::Row;
use sqlx::any::AnyRow;
use steward_core::{ChangeContext, Error};
use steward_types::{
    MCP_DEFAULT_TIMEOUT_SECS, McpDecisionRecord, McpServer, McpTransport, PutMcpServer,
};

use crate::audit::{append, event};
use crate::rows::{self, new_id};
use crate::{Store, Tx, db_error};

/// The longest an upstream may be given to answer one request.
pub const MAX_TIMEOUT_SECS: u32 = 600;

/// Check a registration before it is written.
pub fn validate_mcp_server(req: &PutMcpServer) -> Result<(), Error> {
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 64
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !name_ok {
        return Err(Error::invalid(
            "name",
            format!(
                "'{}' is not a server name (1 to 64 letters, digits, '-' or '_')",
                req.name
            ),
        ));
    }
    steward_core::validate::text("description", &req.description)?;
    match &req.transport {
        McpTransport::StreamableHttp { url } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return Err(Error::invalid(
                    "transport.url",
                    format!("'{url}' is not an http:// or https:// URL"),
                ));
            }
        }
        McpTransport::Stdio { command, args, env } => {
            if command.trim().is_empty() || command.contains('\0') {
                return Err(Error::invalid(
                    "transport.command",
                    "name the program to run",
                ));
            }
            if args.iter().any(|a| a.contains('\0')) {
                return Err(Error::invalid(
                    "transport.args",
                    "arguments may not contain NUL",
                ));
            }
            if env
                .keys()
                .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
            {
                return Err(Error::invalid(
                    "transport.env",
                    "variable names are non-empty, without '=' or NUL",
                ));
            }
        }
    }
    for (tool, meta) in &req.tools {
        if tool.is_empty() || tool.len() > 128 {
            return Err(Error::invalid(
                "tools",
                "tool names have 1 to 128 characters",
            ));
        }
        if !["low", "medium", "high"].contains(&meta.risk.as_str()) {
            return Err(Error::invalid(
                &format!("tools.{tool}.risk"),
                format!("'{}' is not a risk (low, medium, high)", meta.risk),
            ));
        }
        if meta.classification.is_empty() || meta.classification.len() > 64 {
            return Err(Error::invalid(
                &format!("tools.{tool}.classification"),
                "a classification has 1 to 64 characters",
            ));
        }
        if meta.cost_estimate < 0 {
            return Err(Error::invalid(
                &format!("tools.{tool}.cost_estimate"),
                "a cost estimate is zero or more",
            ));
        }
    }
    if let Some(t) = req.timeout_secs
        && !(1..=MAX_TIMEOUT_SECS).contains(&t)
    {
        return Err(Error::invalid(
            "timeout_secs",
            format!("between 1 and {MAX_TIMEOUT_SECS} seconds"),
        ));
    }
    Ok(())
}

/// The registration as it may appear in the audit log: environment values
/// (often upstream credentials) are replaced by `***`.
pub fn redacted(server: &McpServer) -> McpServer {
    let mut out = server.clone();
    if let McpTransport::Stdio { env, .. } = &mut out.transport {
        for v in env.values_mut() {
            *v = "***".into();
        }
    }
    out
}

fn server_row(row: &AnyRow) -> Result<McpServer, Error> {
    let json = |col: &str| -> Result<String, Error> { row.try_get(col).map_err(db_error) };
    let parse_err =
        |col: &str, e: serde_json::Error| Error::internal(format!("corrupt column {col}: {e}"));
    let timeout: i64 = row.try_get("timeout_secs").map_err(db_error)?;
    let time = |col: &str| -> Result<chrono::DateTime<chrono::Utc>, Error> {
        let ms: i64 = row.try_get(col).map_err(db_error)?;
        Ok(chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default())
    };
    Ok(McpServer {
        id: row.try_get("id").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        transport: serde_json::from_str(&json("transport")?)
            .map_err(|e| parse_err("transport", e))?,
        tools: serde_json::from_str(&json("tools")?).map_err(|e| parse_err("tools", e))?,
        timeout_secs: u32::try_from(timeout).unwrap_or(MCP_DEFAULT_TIMEOUT_SECS),
        decision_record: {
            let text: String = row.try_get("decision_record").map_err(db_error)?;
            McpDecisionRecord::parse(&text).ok_or_else(|| {
                Error::internal(format!("corrupt column decision_record: '{text}'"))
            })?
        },
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
    })
}

impl Store {
    /// Register an upstream MCP server, or replace the one with the same
    /// name. Returns the server and whether anything changed.
    pub async fn put_mcp_server(
        &self,
        ctx: &ChangeContext,
        req: PutMcpServer,
    ) -> Result<(McpServer, bool), Error> {
        let mut tx = self.begin().await?;
        let out = self.put_mcp_server_in(&mut tx, ctx, req).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// [`Store::put_mcp_server`] inside a caller's transaction.
    pub async fn put_mcp_server_in(
        &self,
        tx: &mut Tx,
        ctx: &ChangeContext,
        req: PutMcpServer,
    ) -> Result<(McpServer, bool), Error> {
        validate_mcp_server(&req)?;
        let existing = sqlx::query(&format!(
            "SELECT * FROM mcp_servers WHERE tenant_id = $1 AND name = $2{}",
            self.backend.for_update()
        ))
        .bind(&ctx.tenant_id)
        .bind(&req.name)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?
        .map(|r| server_row(&r))
        .transpose()?;
        let timeout_secs = req.timeout_secs.unwrap_or(MCP_DEFAULT_TIMEOUT_SECS);
        match existing {
            Some(before) => {
                if before.matches(&req) {
                    return Ok((before, false));
                }
                let after = McpServer {
                    description: req.description,
                    transport: req.transport,
                    tools: req.tools,
                    timeout_secs,
                    decision_record: req.decision_record,
                    updated_at: ctx.now,
                    ..before.clone()
                };
                sqlx::query(
                    "UPDATE mcp_servers SET description = $1, transport = $2, tools = $3, \
                     timeout_secs = $4, updated_at = $5, decision_record = $6 WHERE id = $7",
                )
                .bind(&after.description)
                .bind(rows::to_json(&after.transport))
                .bind(rows::to_json(&after.tools))
                .bind(i64::from(after.timeout_secs))
                .bind(rows::ms(after.updated_at))
                .bind(after.decision_record.as_str())
                .bind(&after.id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
                append(
                    tx,
                    ctx,
                    event(
                        "mcp_server.update",
                        "mcp_server",
                        &after.id,
                        Some(&redacted(&before)),
                        Some(&redacted(&after)),
                        None,
                    ),
                )
                .await?;
                Ok((after, true))
            }
            None => {
                let server = McpServer {
                    id: new_id("mcp"),
                    name: req.name,
                    description: req.description,
                    transport: req.transport,
                    tools: req.tools,
                    timeout_secs,
                    decision_record: req.decision_record,
                    created_at: ctx.now,
                    updated_at: ctx.now,
                };
                sqlx::query(
                    "INSERT INTO mcp_servers (id, tenant_id, name, description, transport, tools, \
                     timeout_secs, created_at, updated_at, decision_record) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&server.id)
                .bind(&ctx.tenant_id)
                .bind(&server.name)
                .bind(&server.description)
                .bind(rows::to_json(&server.transport))
                .bind(rows::to_json(&server.tools))
                .bind(i64::from(server.timeout_secs))
                .bind(rows::ms(server.created_at))
                .bind(rows::ms(server.updated_at))
                .bind(server.decision_record.as_str())
                .execute(&mut **tx)
                .await
                .map_err(|e| {
                    if crate::is_unique_violation(&e) {
                        Error::already_exists("mcp server", &server.name)
                    } else {
                        db_error(e)
                    }
                })?;
                append(
                    tx,
                    ctx,
                    event(
                        "mcp_server.create",
                        "mcp_server",
                        &server.id,
                        None,
                        Some(&redacted(&server)),
                        None,
                    ),
                )
                .await?;
                Ok((server, true))
            }
        }
    }

    /// A registered server by id or name.
    pub async fn get_mcp_server(&self, tenant_id: &str, key: &str) -> Result<McpServer, Error> {
        let row = crate::tenants::find_row(&self.read, "mcp_servers", "name", tenant_id, key, "")
            .await?
            .ok_or_else(|| Error::not_found("mcp server", key))?;
        server_row(&row)
    }

    /// Every registered server of the tenant, by name.
    pub async fn list_mcp_servers(&self, tenant_id: &str) -> Result<Vec<McpServer>, Error> {
        sqlx::query("SELECT * FROM mcp_servers WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?
            .iter()
            .map(server_row)
            .collect()
    }

    /// Remove a registered server.
    pub async fn delete_mcp_server(&self, ctx: &ChangeContext, key: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let row = crate::tenants::find_row(
            &mut *tx,
            "mcp_servers",
            "name",
            &ctx.tenant_id,
            key,
            self.backend.for_update(),
        )
        .await?
        .ok_or_else(|| Error::not_found("mcp server", key))?;
        let before = server_row(&row)?;
        sqlx::query("DELETE FROM mcp_servers WHERE id = $1")
            .bind(&before.id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        crate::audit::commit(
            tx,
            ctx,
            event(
                "mcp_server.delete",
                "mcp_server",
                &before.id,
                Some(&redacted(&before)),
                None,
                None,
            ),
        )
        .await
    }
}
