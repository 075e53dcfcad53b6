//! Agent API keys and API tokens. Only hashes are stored; the secret exists in
//! the response that creates it and nowhere else.

use chrono::{DateTime, Utc};
use steward_core::credentials::{display_prefix, generate_secret};
use steward_core::{ChangeContext, Error, validate};
use steward_types::{
    AGENT_KEY_PREFIX, API_TOKEN_PREFIX, ApiKey, ApiToken, CreateKey, CreateToken, CreatedKey,
    CreatedToken, ErrorCode, Page, PageQuery, TokenRole,
};

use crate::agents::lock_agent;
use crate::audit::{append, change, commit, event};
use crate::humans::lock_human;
use crate::key_uses::latest;
use crate::rows::{self, Cursor, Param, Select};
use crate::{Store, db_error};

/// Id of the bootstrap administrator token.
pub const BOOTSTRAP_TOKEN_ID: &str = "tok_bootstrap";

/// A key found by its hash, with the agent it belongs to.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    /// Tenant of the agent.
    pub tenant_id: String,
    /// The key.
    pub key: ApiKey,
}

/// A token found by its hash.
#[derive(Debug, Clone)]
pub struct TokenLookup {
    /// The token.
    pub token: ApiToken,
    /// Whether it may manage tenants.
    pub platform_admin: bool,
}

impl Store {
    /// Create an agent key; `hash` turns the secret into its stored form.
    pub async fn create_key(
        &self,
        ctx: &ChangeContext,
        agent_key: &str,
        req: CreateKey,
        hash: impl Fn(&str) -> String,
    ) -> Result<CreatedKey, Error> {
        validate::text("name", &req.name)?;
        if req.expires_at.is_some_and(|e| e <= ctx.now) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let mut tx = self.begin().await?;
        let agent = lock_agent(
            &mut tx,
            self.backend.for_update(),
            &ctx.tenant_id,
            agent_key,
        )
        .await?;
        if agent.state.is_terminal() {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!(
                    "agent '{}' is {}; it cannot get new keys",
                    agent.name,
                    agent.state.as_str()
                ),
            ));
        }
        let secret = generate_secret(AGENT_KEY_PREFIX);
        let key = ApiKey {
            id: rows::new_id("key"),
            agent_id: agent.id.clone(),
            name: req.name,
            prefix: display_prefix(&secret),
            created_at: ctx.now,
            expires_at: req.expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO agent_keys (id, tenant_id, agent_id, name, prefix, hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&ctx.tenant_id)
        .bind(&key.agent_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(hash(&secret))
        .bind(rows::ms(ctx.now))
        .bind(rows::opt_ms(key.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(
            tx,
            ctx,
            event("key.create", "agent_key", &key.id, None, Some(&key), None),
        )
        .await?;
        Ok(CreatedKey { key, secret })
    }

    /// An agent's keys (metadata only).
    pub async fn list_keys(
        &self,
        tenant_id: &str,
        agent_key: &str,
        page: PageQuery,
    ) -> Result<Page<ApiKey>, Error> {
        let agent = self.get_agent(tenant_id, agent_key).await?;
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::tenant_rows("agent_keys", tenant_id)
            .and("agent_id = ?", Param::Text(agent.id))
            .page(&self.read, "id", &cursor, rows::api_key, |k| k.id.clone())
            .await
            .map(|mut page| {
                for k in &mut page.items {
                    k.last_used_at = latest(k.last_used_at, self.key_uses.key(&k.id));
                }
                page
            })
    }

    /// Revoke one of an agent's keys.
    pub async fn revoke_key(
        &self,
        ctx: &ChangeContext,
        agent_key: &str,
        key_id: &str,
    ) -> Result<ApiKey, Error> {
        let mut tx = self.begin().await?;
        let agent = lock_agent(
            &mut tx,
            self.backend.for_update(),
            &ctx.tenant_id,
            agent_key,
        )
        .await?;
        let row = sqlx::query("SELECT * FROM agent_keys WHERE id = $1 AND agent_id = $2")
            .bind(key_id)
            .bind(&agent.id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("key", key_id))?;
        let before = rows::api_key(&row)?;
        let mut tx = tx;
        // The delegations exchanged with it end with it (before the audit
        // append: delegation rows are locked before the audit head).
        crate::delegation::end_delegations(&mut tx, ctx, "key_id", key_id).await?;
        revoke(tx, ctx, "agent_keys", "key", before, |k| &mut k.revoked_at).await
    }

    /// The key with this hash, in any tenant.
    pub async fn find_key(&self, hash: &str) -> Result<Option<KeyLookup>, Error> {
        let row = sqlx::query("SELECT * FROM agent_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok(KeyLookup {
                tenant_id: sqlx::Row::try_get(&row, "tenant_id").map_err(db_error)?,
                key: rows::api_key(&row)?,
            })
        })
        .transpose()
    }

    /// An agent key by its hash, with its agent: what authentication needs,
    /// kept in memory between changes (see [`crate::cache`]) on SQLite.
    pub async fn find_agent_key(
        &self,
        hash: &str,
    ) -> Result<Option<crate::cache::AgentKey>, Error> {
        if let Some(hit) = self.identities.agent_key(hash) {
            return Ok(Some(hit));
        }
        let seen = self.identities.before_read();
        let Some(found) = self.find_key(hash).await? else {
            return Ok(None);
        };
        let Some((tenant_id, agent)) = self.get_agent_by_id(&found.key.agent_id).await? else {
            return Ok(None);
        };
        if tenant_id != found.tenant_id {
            return Err(Error::internal("an agent key names another tenant's agent"));
        }
        let found = (found, agent);
        if let Some(seen) = seen {
            self.identities.put_agent_key(hash, seen, &found);
        }
        Ok(Some(found))
    }

    /// Note that a key was used, at most once a minute per key: nothing is
    /// written in the request, the time is written beside it (see
    /// [`crate::key_uses`]), so authentication stays a read in the hot path.
    pub fn touch_key(&self, hash: &str, key: &ApiKey, now: DateTime<Utc>) {
        let recent = |t: DateTime<Utc>| now - t < chrono::Duration::seconds(60);
        if key.last_used_at.is_some_and(recent) || self.key_uses.key(&key.id).is_some_and(recent) {
            return;
        }
        self.key_uses.note(&key.id, &key.agent_id, now);
        self.identities.key_used(hash, now);
    }

    /// Create an API token in `ctx.tenant_id`.
    pub async fn create_token(
        &self,
        ctx: &ChangeContext,
        req: CreateToken,
        hash: impl Fn(&str) -> String,
    ) -> Result<CreatedToken, Error> {
        validate::name("name", &req.name)?;
        if req.expires_at.is_some_and(|e| e <= ctx.now) {
            return Err(Error::invalid("expires_at", "must be in the future"));
        }
        let mut tx = self.begin().await?;
        let human_id = match &req.human {
            Some(h) => {
                // Locked, so a deactivation running now either sees this
                // token and revokes it or comes first and refuses it.
                let human = lock_human(&mut tx, self.backend.for_update(), &ctx.tenant_id, h)
                    .await
                    .map_err(|_| Error::unknown_reference("human", "human", h))?;
                if human.status != steward_types::HumanStatus::Active {
                    return Err(Error::new(
                        ErrorCode::OwnerInactive,
                        format!(
                            "human '{}' is deactivated; a token cannot act for them",
                            human.email
                        ),
                    ));
                }
                Some(human.id)
            }
            None => None,
        };
        let secret = generate_secret(API_TOKEN_PREFIX);
        let token = ApiToken {
            id: rows::new_id("tok"),
            tenant_id: ctx.tenant_id.clone(),
            name: req.name,
            role: req.role,
            human_id,
            prefix: display_prefix(&secret),
            created_at: ctx.now,
            expires_at: req.expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        insert_token(&mut tx, &token, &hash(&secret), false).await?;
        commit(
            tx,
            ctx,
            event(
                "token.create",
                "api_token",
                &token.id,
                None,
                Some(&token),
                None,
            ),
        )
        .await?;
        Ok(CreatedToken { token, secret })
    }

    /// The tenant's API tokens (metadata only).
    pub async fn list_tokens(
        &self,
        tenant_id: &str,
        page: PageQuery,
    ) -> Result<Page<ApiToken>, Error> {
        let cursor = Cursor::text(page.cursor, page.limit)?;
        Select::tenant_rows("api_tokens", tenant_id)
            .page(&self.read, "id", &cursor, rows::api_token, |t| t.id.clone())
            .await
    }

    /// Revoke an API token.
    pub async fn revoke_token(&self, ctx: &ChangeContext, id: &str) -> Result<ApiToken, Error> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT * FROM api_tokens WHERE tenant_id = $1 AND id = $2")
            .bind(&ctx.tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("token", id))?;
        if id == BOOTSTRAP_TOKEN_ID {
            return Err(Error::new(
                ErrorCode::Forbidden,
                "the bootstrap token is rotated by setting STEWARD_ADMIN_TOKEN and restarting, not revoked",
            ));
        }
        let before = rows::api_token(&row)?;
        revoke(tx, ctx, "api_tokens", "token", before, |t| {
            &mut t.revoked_at
        })
        .await
    }

    /// The token with this hash.
    pub async fn find_token(&self, hash: &str) -> Result<Option<TokenLookup>, Error> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        row.as_ref().map(token_lookup).transpose()
    }

    /// An API token by id, with the hash of its secret (a rotated token keeps
    /// its id, not its hash).
    pub async fn find_token_by_id(&self, id: &str) -> Result<Option<(TokenLookup, String)>, Error> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?;
        row.map(|row| Ok((token_lookup(&row)?, rows::get(&row, "hash")?)))
            .transpose()
    }

    /// Whether the bootstrap token exists.
    pub async fn has_bootstrap_token(&self) -> Result<bool, Error> {
        Ok(sqlx::query("SELECT id FROM api_tokens WHERE id = $1")
            .bind(BOOTSTRAP_TOKEN_ID)
            .fetch_optional(&self.write)
            .await
            .map_err(db_error)?
            .is_some())
    }

    /// Install the bootstrap administrator token, given its hash, or rotate
    /// to it when `replace`. Answers whether the store now holds this token:
    /// `false` when one was there already and `replace` is off (another node
    /// starting at the same time installed its own first). Nodes starting
    /// together take turns on the tenant's row.
    pub async fn set_bootstrap_token(
        &self,
        ctx: &ChangeContext,
        secret_prefix: &str,
        hash: &str,
        replace: bool,
    ) -> Result<bool, Error> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "SELECT id FROM tenants WHERE id = $1{}",
            self.backend.for_update()
        ))
        .bind(&ctx.tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT hash FROM api_tokens WHERE id = $1")
                .bind(BOOTSTRAP_TOKEN_ID)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        if existing.as_deref() == Some(hash) {
            return Ok(true);
        }
        if existing.is_some() && !replace {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(BOOTSTRAP_TOKEN_ID)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let token = ApiToken {
            id: BOOTSTRAP_TOKEN_ID.into(),
            tenant_id: ctx.tenant_id.clone(),
            name: "bootstrap".into(),
            role: TokenRole::Admin,
            human_id: None,
            prefix: secret_prefix.into(),
            created_at: ctx.now,
            expires_at: None,
            last_used_at: None,
            revoked_at: None,
        };
        insert_token(&mut tx, &token, hash, true).await?;
        let action = if existing.is_some() {
            "token.rotate"
        } else {
            "token.create"
        };
        append(
            &mut tx,
            ctx,
            event(
                action,
                "api_token",
                BOOTSTRAP_TOKEN_ID,
                None,
                Some(&token),
                None,
            ),
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }
}

fn token_lookup(row: &sqlx::any::AnyRow) -> Result<TokenLookup, Error> {
    let platform_admin: i64 = rows::get(row, "platform_admin")?;
    Ok(TokenLookup {
        token: rows::api_token(row)?,
        platform_admin: platform_admin != 0,
    })
}

/// Mark a credential revoked now, with its audit record. `revoked_at` picks
/// the field of the record; `kind` names it in messages and audit actions.
async fn revoke<T: serde::Serialize + Clone + HasId>(
    mut tx: crate::Tx,
    ctx: &ChangeContext,
    table: &str,
    kind: &str,
    before: T,
    revoked_at: impl Fn(&mut T) -> &mut Option<DateTime<Utc>>,
) -> Result<T, Error> {
    let after = revoke_in(&mut tx, ctx, table, kind, before, revoked_at).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(after)
}

/// [`revoke`] inside the caller's transaction, which it leaves open.
pub(crate) async fn revoke_in<T: serde::Serialize + Clone + HasId>(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    table: &str,
    kind: &str,
    before: T,
    revoked_at: impl Fn(&mut T) -> &mut Option<DateTime<Utc>>,
) -> Result<T, Error> {
    let mut after = revoke_all_in(tx, ctx, table, kind, vec![before], revoked_at).await?;
    after
        .pop()
        .ok_or_else(|| Error::internal("a revocation revoked nothing"))
}

/// Revoke several of one kind inside `tx`, each with its record; the
/// records are appended together (see [`crate::audit::append_all`]).
pub(crate) async fn revoke_all_in<T: serde::Serialize + Clone + HasId>(
    tx: &mut crate::Tx,
    ctx: &ChangeContext,
    table: &str,
    kind: &str,
    befores: Vec<T>,
    revoked_at: impl Fn(&mut T) -> &mut Option<DateTime<Utc>>,
) -> Result<Vec<T>, Error> {
    let resource_type = match kind {
        "key" => "agent_key",
        "token" => "api_token",
        other => other,
    };
    let sql = format!("UPDATE {table} SET revoked_at = $1 WHERE id = $2");
    let mut afters = Vec::with_capacity(befores.len());
    let mut records = Vec::with_capacity(befores.len());
    for before in befores {
        let id = before.id().to_string();
        let mut after = before.clone();
        if revoked_at(&mut after).is_some() {
            return Err(Error::new(
                ErrorCode::InvalidTransition,
                format!("{kind} '{id}' is already revoked"),
            ));
        }
        *revoked_at(&mut after) = Some(ctx.now);
        sqlx::query(&sql)
            .bind(rows::ms(ctx.now))
            .bind(&id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        records.push(change(
            &format!("{kind}.revoke"),
            resource_type,
            &id,
            &before,
            &after,
        ));
        afters.push(after);
    }
    crate::audit::append_all(tx, ctx, records).await?;
    Ok(afters)
}

/// Records with an id.
pub(crate) trait HasId {
    fn id(&self) -> &str;
}

impl HasId for ApiKey {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for ApiToken {
    fn id(&self) -> &str {
        &self.id
    }
}

async fn insert_token(
    tx: &mut crate::Tx,
    token: &ApiToken,
    hash: &str,
    platform_admin: bool,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO api_tokens (id, tenant_id, name, role, human_id, prefix, hash, platform_admin, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&token.id)
    .bind(&token.tenant_id)
    .bind(&token.name)
    .bind(token.role.as_str())
    .bind(&token.human_id)
    .bind(&token.prefix)
    .bind(hash)
    .bind(i64::from(platform_admin))
    .bind(rows::ms(token.created_at))
    .bind(rows::opt_ms(token.expires_at))
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}
