//! Dashboard sessions that were signed out. A session lives in its sealed
//! cookie, not in the store; what the store keeps is the ids of those ended
//! before their time ran out, so that every node sharing it refuses a copy
//! of the cookie. An id is kept until the session would have expired anyway.

use chrono::{DateTime, Utc};
use steward_core::Error;

use crate::rows;
use crate::{Store, db_error};

/// The one lookup every dashboard request makes: by primary key.
pub const ENDED: &str = "SELECT id FROM dashboard_sessions_ended WHERE id = $1";

impl Store {
    /// Record that the dashboard session `id` has ended; without this it
    /// would have lasted until `expires_at`. Ending it again changes
    /// nothing. Ids whose sessions have expired by `now` are pruned on the
    /// way.
    pub async fn end_dashboard_session(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM dashboard_sessions_ended WHERE expires_at <= $1")
            .bind(rows::ms(now))
            .execute(&self.write)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO dashboard_sessions_ended (id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(rows::ms(expires_at))
        .execute(&self.write)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Whether the dashboard session `id` was ended (until its expiry has
    /// passed and it is pruned).
    pub async fn dashboard_session_ended(&self, id: &str) -> Result<bool, Error> {
        Ok(sqlx::query(ENDED)
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?
            .is_some())
    }
}
