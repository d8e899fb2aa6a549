//! The store's part for signing keys, refresh tokens and the event list (issue 7). A trait of its
//! own, a supertrait of [`super::Store`], so `ctx.store` answers these calls too.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{Event, SqliteStore, StoreError, StoreResult};

/// A JWT signing key (`migrations/sqlite/0012_keys_refresh.sql`).
#[derive(Debug, Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// Sealed with the secret-env key.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// `None` for the active key.
    pub retired_at: Option<DateTime<Utc>>,
}

/// A refresh token; only its sha256 is stored.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    pub id: String,
    /// Every token descended from one login shares the family; a replay revokes all of them.
    pub family: String,
    pub user_id: String,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// One app's events, by id.
    pub app_id: Option<String>,
    /// Events whose actor is this user, directly or through one of their API tokens
    /// (`USER (token NAME)`): logins, token use, their changes.
    pub actor: Option<String>,
    /// Only events from this id on: an app's own history starts at its `app.create`, so an app
    /// created again under a name another space used before does not show that space's events.
    pub since_id: Option<i64>,
}

/// A stored event with its id (the list's cursor) and time.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub time: DateTime<Utc>,
    pub event: Event,
}

#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<super::User>>;
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Retires the active key (at `key.created_at`), makes `key` the active one and records the
    /// event, in one transaction.
    async fn add_signing_key(&self, key: &SigningKeyRecord, event: &Event) -> StoreResult<()>;
    /// Deletes keys retired before `retired_before` that no live CI token (unrevoked, expiring
    /// after `now`) names; returns their kids.
    async fn drop_signing_keys(
        &self,
        retired_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
    /// Names `kid` as the signer of CI tokens from before keys had ids.
    async fn backfill_token_kids(&self, kid: &str) -> StoreResult<u64>;

    async fn insert_refresh_token(&self, t: &RefreshRecord) -> StoreResult<()>;
    async fn refresh_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>>;
    /// Marks the token used unless it already was (or is revoked); returns whether this call did.
    async fn use_refresh_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Revokes every token of the family; returns how many were still unrevoked.
    async fn revoke_refresh_family(&self, family: &str, at: DateTime<Utc>) -> StoreResult<u64>;
    /// Forgets refresh tokens expired before `before` (used ones are kept until then, to
    /// recognise a replay); returns how many.
    async fn delete_expired_refresh_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Events matching `filter`, oldest first, with ids above `after_id`, at most `limit`.
    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<EventRow>>;
    async fn count_events(&self, filter: &EventFilter) -> StoreResult<u64>;
    /// The id of the newest `app.create` event of `app_name`: where the current app's history
    /// starts.
    async fn app_created_event(&self, app_id: &str) -> StoreResult<Option<i64>>;
}

fn key_from_row(r: &SqliteRow) -> StoreResult<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.try_get("kid")?,
        secret: r.try_get("secret")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
    })
}

fn refresh_from_row(r: &SqliteRow) -> StoreResult<RefreshRecord> {
    Ok(RefreshRecord {
        id: r.try_get("id")?,
        family: r.try_get("family")?,
        user_id: r.try_get("user_id")?,
        token_hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// The LIKE pattern of a user's token-made events (`USER (token %`), wildcards escaped.
fn token_actor_pattern(username: &str) -> String {
    let escaped = username
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped} (token %")
}

/// `WHERE` clause of an event filter; binds follow in the order app, actor, actor pattern.
fn event_where(filter: &EventFilter) -> String {
    let mut w = vec!["1 = 1"];
    if filter.app_id.is_some() {
        w.push("app_id = ?");
    }
    if filter.actor.is_some() {
        w.push("(actor = ? OR actor LIKE ? ESCAPE '\\')");
    }
    if filter.since_id.is_some() {
        w.push("id >= ?");
    }
    w.join(" AND ")
}

#[async_trait]
impl AuthStore for SqliteStore {
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<super::User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| super::sqlite::user_from_row(&r)).transpose()
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn add_signing_key(&self, key: &SigningKeyRecord, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.secret)
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("signing key {} exists", key.kid))
            }
            e => e.into(),
        })?;
        super::sqlite::insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn drop_signing_keys(
        &self,
        retired_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.write_tx().await?;
        let kids: Vec<String> = sqlx::query_scalar(
            "SELECT kid FROM signing_keys k
             WHERE retired_at IS NOT NULL AND retired_at < ?
               AND NOT EXISTS (SELECT 1 FROM api_tokens t
                               WHERE t.kid = k.kid AND t.revoked_at IS NULL AND t.expires_at > ?)",
        )
        .bind(retired_before)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for kid in &kids {
            sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
                .bind(kid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(kids)
    }

    async fn backfill_token_kids(&self, kid: &str) -> StoreResult<u64> {
        let r = sqlx::query("UPDATE api_tokens SET kid = ? WHERE kid IS NULL")
            .bind(kid)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    async fn insert_refresh_token(&self, t: &RefreshRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family, user_id, token_hash, created_at, expires_at, used_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.family)
        .bind(&t.user_id)
        .bind(&t.token_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(t.revoked_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn refresh_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>> {
        let row = sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }

    async fn use_refresh_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn revoke_refresh_family(&self, family: &str, at: DateTime<Utc>) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected())
    }

    async fn delete_expired_refresh_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < ?")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<EventRow>> {
        let sql = format!(
            "SELECT * FROM events WHERE {} AND id > ? ORDER BY id LIMIT ?",
            event_where(filter)
        );
        let mut q = sqlx::query(&sql);
        if let Some(a) = &filter.app_id {
            q = q.bind(a);
        }
        if let Some(a) = &filter.actor {
            q = q.bind(a).bind(token_actor_pattern(a));
        }
        if let Some(id) = filter.since_id {
            q = q.bind(id);
        }
        let rows = q
            .bind(after_id.unwrap_or(0))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: r.try_get("id")?,
                    time: r.try_get("created_at")?,
                    event: Event {
                        app_name: r.try_get("app_name")?,
                        app_id: r.try_get("app_id")?,
                        actor: r.try_get("actor")?,
                        kind: r.try_get("kind")?,
                        message: r.try_get("message")?,
                    },
                })
            })
            .collect()
    }

    async fn app_created_event(&self, app_id: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(id) FROM events WHERE app_id = ? AND kind = 'app.create'",
        )
        .bind(app_id)
        .fetch_one(self.pool())
        .await?)
    }

    async fn count_events(&self, filter: &EventFilter) -> StoreResult<u64> {
        let sql = format!("SELECT COUNT(*) FROM events WHERE {}", event_where(filter));
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        if let Some(a) = &filter.app_id {
            q = q.bind(a);
        }
        if let Some(a) = &filter.actor {
            q = q.bind(a).bind(token_actor_pattern(a));
        }
        if let Some(id) = filter.since_id {
            q = q.bind(id);
        }
        Ok(q.fetch_one(self.pool()).await? as u64)
    }
}
