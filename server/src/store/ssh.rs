//! The store's part for `paas ssh` settings (issue 21): whether an app and its space allow ssh.
//! A role trait of its own, a supertrait of [`super::Store`]; the SQL reads the same on both
//! backends.

use async_trait::async_trait;
use sqlx::Row;

use super::sql::Dialect;
use super::{Event, PgStore, SqliteStore, StoreResult};

#[async_trait]
pub trait SshStore: Send + Sync + 'static {
    /// (the app allows ssh, its space allows ssh); both true unless turned off.
    async fn ssh_settings(&self, app_id: &str, space_id: &str) -> StoreResult<(bool, bool)>;
    /// Sets the app's setting and records `event` in the same transaction.
    async fn set_app_ssh(&self, app_id: &str, enabled: bool, event: &Event) -> StoreResult<()>;
    /// Sets the space's setting and records `event` in the same transaction.
    async fn set_space_ssh(&self, space_id: &str, allowed: bool, event: &Event) -> StoreResult<()>;
    /// Relays a session offer to `node` through the database, for whichever controller the node
    /// long-polls (several controllers).
    async fn add_ssh_offer(&self, session_id: &str, node: &str, offer: &str) -> StoreResult<()>;
    /// Takes (deletes and answers) the offers waiting for `node`: each goes to one long-poll.
    /// Offers older than a minute are dropped unanswered.
    async fn take_ssh_offers(&self, node: &str) -> StoreResult<Vec<String>>;
    async fn delete_ssh_offer(&self, session_id: &str) -> StoreResult<()>;
}

macro_rules! ssh_store {
    ($m:ident, $store:ty, $backend:ident) => {
        mod $m {
            use super::*;

            #[async_trait]
            impl SshStore for $store {
                async fn add_ssh_offer(
                    &self,
                    session_id: &str,
                    node: &str,
                    offer: &str,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO ssh_offers (session_id, node, offer, created_at)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(session_id)
                    .bind(node)
                    .bind(offer)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn take_ssh_offers(&self, node: &str) -> StoreResult<Vec<String>> {
                    sqlx::query("DELETE FROM ssh_offers WHERE created_at < $1")
                        .bind(chrono::Utc::now() - chrono::Duration::seconds(60))
                        .execute(&self.pool)
                        .await?;
                    let rows = sqlx::query("DELETE FROM ssh_offers WHERE node = $1 RETURNING offer")
                        .bind(node)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| Ok(r.try_get::<String, _>("offer")?))
                        .collect()
                }

                async fn delete_ssh_offer(&self, session_id: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM ssh_offers WHERE session_id = $1")
                        .bind(session_id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn ssh_settings(
                    &self,
                    app_id: &str,
                    space_id: &str,
                ) -> StoreResult<(bool, bool)> {
                    let app = sqlx::query("SELECT enabled FROM app_ssh WHERE app_id = $1")
                        .bind(app_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|r| r.try_get::<bool, _>("enabled"))
                        .transpose()?
                        .unwrap_or(true);
                    let space = sqlx::query("SELECT allowed FROM space_ssh WHERE space_id = $1")
                        .bind(space_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .map(|r| r.try_get::<bool, _>("allowed"))
                        .transpose()?
                        .unwrap_or(true);
                    Ok((app, space))
                }

                async fn set_app_ssh(
                    &self,
                    app_id: &str,
                    enabled: bool,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO app_ssh (app_id, enabled, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (app_id) DO UPDATE SET enabled = $2, updated_at = $3",
                    )
                    .bind(app_id)
                    .bind(enabled)
                    .bind(chrono::Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_space_ssh(
                    &self,
                    space_id: &str,
                    allowed: bool,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO space_ssh (space_id, allowed, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (space_id) DO UPDATE SET allowed = $2, updated_at = $3",
                    )
                    .bind(space_id)
                    .bind(allowed)
                    .bind(chrono::Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    };
}

ssh_store!(on_sqlite, SqliteStore, sqlite);
ssh_store!(on_postgres, PgStore, postgres);
