//! The store's part for backing services (issue 22): registered service brokers with their
//! cached catalogs, service instances and their bindings. A role trait of its own, a supertrait
//! of [`super::Store`], expanded for both backends. The refusals that must not race (a second
//! instance of one name in a space, deleting an instance that is bound, binding an instance
//! that is not ready) are decided inside the write transaction, after the writer lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::sql::Dialect;
use super::{PgStore, SqliteStore, StoreError, StoreResult};

/// A broker an operator registered (`service_brokers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRecord {
    pub name: String,
    pub url: String,
    pub username: String,
    /// Sealed by `crate::secrets` (associated data: [`broker_aad`]).
    pub password: String,
    /// `None`: every space sees it.
    pub space_id: Option<String>,
    /// The last catalog fetched, as JSON.
    pub catalog: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The associated data a broker's password is sealed with.
pub fn broker_aad(name: &str) -> String {
    format!("service-broker:{name}")
}

/// The associated data a user-provided instance's credentials are sealed with.
pub fn instance_aad(id: &str) -> String {
    format!("service-instance:{id}")
}

/// The associated data a binding's credentials are sealed with.
pub fn binding_aad(id: &str) -> String {
    format!("service-binding:{id}")
}

/// Instance states, as the API shows them (Cloud Foundry's last operation words).
pub mod state {
    pub const CREATING: &str = "create in progress";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const DELETING: &str = "delete in progress";
}

/// `managed` (a broker's) or `user-provided`.
pub const KIND_MANAGED: &str = "managed";
pub const KIND_USER_PROVIDED: &str = "user-provided";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInstanceRecord {
    pub id: String,
    pub name: String,
    pub space_id: String,
    pub kind: String,
    /// The broker's name; `None` for a user-provided instance.
    pub broker: Option<String>,
    pub service_id: String,
    pub plan_id: String,
    /// The offering's name (Cloud Foundry's `label`).
    pub label: String,
    pub plan: String,
    pub tags: Vec<String>,
    /// A user-provided instance's credentials (JSON object), sealed ([`instance_aad`]).
    pub credentials: Option<String>,
    pub syslog_drain_url: Option<String>,
    pub dashboard_url: Option<String>,
    pub state: String,
    /// The broker's operation of an asynchronous create or delete, to poll.
    pub operation: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    pub id: String,
    pub app_id: String,
    pub instance_id: String,
    /// The credentials (JSON object), sealed ([`binding_aad`]).
    pub credentials: String,
    pub syslog_drain_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait ServiceStore: Send + Sync + 'static {
    /// Registers a broker; `Conflict` when one of that name exists.
    async fn create_broker(&self, broker: &BrokerRecord) -> StoreResult<()>;
    async fn list_brokers(&self) -> StoreResult<Vec<BrokerRecord>>;
    async fn set_broker_catalog(&self, name: &str, catalog: &str) -> StoreResult<()>;
    /// `NotFound` when there is none; `Conflict` while service instances of it exist.
    async fn delete_broker(&self, name: &str) -> StoreResult<()>;

    /// Records a new instance; `Conflict` when its space has one of that name.
    async fn create_service_instance(&self, instance: &ServiceInstanceRecord) -> StoreResult<()>;
    /// Every instance, or those of one space, by name.
    async fn service_instances(
        &self,
        space_id: Option<&str>,
    ) -> StoreResult<Vec<ServiceInstanceRecord>>;
    async fn service_instance(&self, id: &str) -> StoreResult<Option<ServiceInstanceRecord>>;
    async fn service_instance_by_name(
        &self,
        space_id: &str,
        name: &str,
    ) -> StoreResult<Option<ServiceInstanceRecord>>;
    /// Sets an instance's state, operation and description (a poll's or a call's outcome).
    async fn set_service_state(
        &self,
        id: &str,
        state: &str,
        operation: Option<&str>,
        description: Option<&str>,
    ) -> StoreResult<()>;
    /// Replaces a user-provided instance's sealed credentials and syslog drain.
    async fn set_service_credentials(
        &self,
        id: &str,
        sealed: &str,
        syslog_drain_url: Option<&str>,
    ) -> StoreResult<()>;
    /// Marks an instance `delete in progress`; `Conflict` while it is bound (checked in the same
    /// transaction, so a bind cannot slip in between).
    async fn begin_service_delete(&self, id: &str) -> StoreResult<()>;
    /// Removes the row; `Conflict` while it is bound.
    async fn delete_service_instance(&self, id: &str) -> StoreResult<()>;
    /// Instances whose create or delete the broker is still working on.
    async fn services_in_progress(&self) -> StoreResult<Vec<ServiceInstanceRecord>>;

    /// Records a binding; `Conflict` when the app is bound to the instance already or the
    /// instance is not `succeeded` (being deleted, say).
    async fn create_binding(&self, binding: &BindingRecord) -> StoreResult<()>;
    /// An app's bindings, oldest first (the order `VCAP_SERVICES` lists them in).
    async fn bindings_of_app(&self, app_id: &str) -> StoreResult<Vec<BindingRecord>>;
    async fn bindings_of_instance(&self, instance_id: &str) -> StoreResult<Vec<BindingRecord>>;
    async fn delete_binding(&self, id: &str) -> StoreResult<()>;
}

const INSTANCE_COLS: &str = "id, name, space_id, kind, broker, service_id, plan_id, label, plan, \
     tags, credentials, syslog_drain_url, dashboard_url, state, operation, description, \
     created_at, updated_at";

macro_rules! service_store {
    ($m:ident, $store:ty, $row:ty) => {
        mod $m {
            use super::*;

            /// A bound instance is neither deleted nor marked for deletion: decided inside the
            /// caller's write transaction, so a bind cannot slip in between.
            async fn refuse_if_bound(
                tx: &mut sqlx::Transaction<'_, <$row as sqlx::Row>::Database>,
                id: &str,
            ) -> StoreResult<()> {
                let bound: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM service_bindings WHERE instance_id = $1",
                )
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
                if bound > 0 {
                    return Err(StoreError::Conflict(format!(
                        "the service instance is bound to {bound} app(s): unbind them first"
                    )));
                }
                Ok(())
            }

            fn broker(r: &$row) -> StoreResult<BrokerRecord> {
                Ok(BrokerRecord {
                    name: r.try_get("name")?,
                    url: r.try_get("url")?,
                    username: r.try_get("username")?,
                    password: r.try_get("password")?,
                    space_id: r.try_get("space_id")?,
                    catalog: r.try_get("catalog")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            fn instance(r: &$row) -> StoreResult<ServiceInstanceRecord> {
                let tags: String = r.try_get("tags")?;
                Ok(ServiceInstanceRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    space_id: r.try_get("space_id")?,
                    kind: r.try_get("kind")?,
                    broker: r.try_get("broker")?,
                    service_id: r.try_get("service_id")?,
                    plan_id: r.try_get("plan_id")?,
                    label: r.try_get("label")?,
                    plan: r.try_get("plan")?,
                    tags: serde_json::from_str(&tags)
                        .map_err(|e| StoreError::Corrupt(format!("service tags: {e}")))?,
                    credentials: r.try_get("credentials")?,
                    syslog_drain_url: r.try_get("syslog_drain_url")?,
                    dashboard_url: r.try_get("dashboard_url")?,
                    state: r.try_get("state")?,
                    operation: r.try_get("operation")?,
                    description: r.try_get("description")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            fn binding(r: &$row) -> StoreResult<BindingRecord> {
                Ok(BindingRecord {
                    id: r.try_get("id")?,
                    app_id: r.try_get("app_id")?,
                    instance_id: r.try_get("instance_id")?,
                    credentials: r.try_get("credentials")?,
                    syslog_drain_url: r.try_get("syslog_drain_url")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            fn unique_conflict(e: sqlx::Error, what: String) -> StoreError {
                match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        StoreError::Conflict(what)
                    }
                    sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                        StoreError::NotFound(what)
                    }
                    e => e.into(),
                }
            }

            #[async_trait]
            impl ServiceStore for $store {
                async fn create_broker(&self, b: &BrokerRecord) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO service_brokers
                           (name, url, username, password, space_id, catalog, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&b.name)
                    .bind(&b.url)
                    .bind(&b.username)
                    .bind(&b.password)
                    .bind(&b.space_id)
                    .bind(&b.catalog)
                    .bind(b.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        unique_conflict(e, format!("service broker {} already exists", b.name))
                    })?;
                    Ok(())
                }

                async fn list_brokers(&self) -> StoreResult<Vec<BrokerRecord>> {
                    let rows = sqlx::query(
                        "SELECT name, url, username, password, space_id, catalog, created_at
                         FROM service_brokers ORDER BY name",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(broker).collect()
                }

                async fn set_broker_catalog(&self, name: &str, catalog: &str) -> StoreResult<()> {
                    sqlx::query("UPDATE service_brokers SET catalog = $2 WHERE name = $1")
                        .bind(name)
                        .bind(catalog)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn delete_broker(&self, name: &str) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let used: Option<String> = sqlx::query_scalar(
                        "SELECT name FROM service_instances WHERE broker = $1 LIMIT 1",
                    )
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(i) = used {
                        return Err(StoreError::Conflict(format!(
                            "service broker {name} has service instances (such as {i}): delete them first"
                        )));
                    }
                    let done = sqlx::query("DELETE FROM service_brokers WHERE name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("service broker {name}")));
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn create_service_instance(
                    &self,
                    i: &ServiceInstanceRecord,
                ) -> StoreResult<()> {
                    let tags = serde_json::to_string(&i.tags)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    sqlx::query(
                        "INSERT INTO service_instances
                           (id, name, space_id, kind, broker, service_id, plan_id, label, plan,
                            tags, credentials, syslog_drain_url, dashboard_url, state, operation,
                            description, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                                 $15, $16, $17, $18)",
                    )
                    .bind(&i.id)
                    .bind(&i.name)
                    .bind(&i.space_id)
                    .bind(&i.kind)
                    .bind(&i.broker)
                    .bind(&i.service_id)
                    .bind(&i.plan_id)
                    .bind(&i.label)
                    .bind(&i.plan)
                    .bind(tags)
                    .bind(&i.credentials)
                    .bind(&i.syslog_drain_url)
                    .bind(&i.dashboard_url)
                    .bind(&i.state)
                    .bind(&i.operation)
                    .bind(&i.description)
                    .bind(i.created_at)
                    .bind(i.updated_at)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        unique_conflict(
                            e,
                            format!("a service instance named {} exists in this space", i.name),
                        )
                    })?;
                    Ok(())
                }

                async fn service_instances(
                    &self,
                    space_id: Option<&str>,
                ) -> StoreResult<Vec<ServiceInstanceRecord>> {
                    let rows = sqlx::query(&format!(
                        "SELECT {INSTANCE_COLS} FROM service_instances
                         WHERE ($1 IS NULL OR space_id = $1) ORDER BY name, space_id"
                    ))
                    .bind(space_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(instance).collect()
                }

                async fn service_instance(
                    &self,
                    id: &str,
                ) -> StoreResult<Option<ServiceInstanceRecord>> {
                    let row = sqlx::query(&format!(
                        "SELECT {INSTANCE_COLS} FROM service_instances WHERE id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(instance).transpose()
                }

                async fn service_instance_by_name(
                    &self,
                    space_id: &str,
                    name: &str,
                ) -> StoreResult<Option<ServiceInstanceRecord>> {
                    let row = sqlx::query(&format!(
                        "SELECT {INSTANCE_COLS} FROM service_instances
                         WHERE space_id = $1 AND name = $2"
                    ))
                    .bind(space_id)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(instance).transpose()
                }

                async fn set_service_state(
                    &self,
                    id: &str,
                    state: &str,
                    operation: Option<&str>,
                    description: Option<&str>,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "UPDATE service_instances
                         SET state = $2, operation = $3, description = $4, updated_at = $5
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(state)
                    .bind(operation)
                    .bind(description)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn set_service_credentials(
                    &self,
                    id: &str,
                    sealed: &str,
                    syslog_drain_url: Option<&str>,
                ) -> StoreResult<()> {
                    let done = sqlx::query(
                        "UPDATE service_instances
                         SET credentials = $2, syslog_drain_url = $3, updated_at = $4
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(sealed)
                    .bind(syslog_drain_url)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("service instance {id}")));
                    }
                    Ok(())
                }

                async fn begin_service_delete(&self, id: &str) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    refuse_if_bound(&mut tx, id).await?;
                    let done = sqlx::query(
                        "UPDATE service_instances
                         SET state = $2, operation = NULL, description = NULL, updated_at = $3
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(state::DELETING)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("service instance {id}")));
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn delete_service_instance(&self, id: &str) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    refuse_if_bound(&mut tx, id).await?;
                    sqlx::query("DELETE FROM service_instances WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn services_in_progress(&self) -> StoreResult<Vec<ServiceInstanceRecord>> {
                    let rows = sqlx::query(&format!(
                        "SELECT {INSTANCE_COLS} FROM service_instances
                         WHERE state = $1 OR state = $2 ORDER BY updated_at"
                    ))
                    .bind(state::CREATING)
                    .bind(state::DELETING)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(instance).collect()
                }

                async fn create_binding(&self, b: &BindingRecord) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let st: Option<String> = sqlx::query_scalar(
                        "SELECT state FROM service_instances WHERE id = $1",
                    )
                    .bind(&b.instance_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match st.as_deref() {
                        None => {
                            return Err(StoreError::NotFound(format!(
                                "service instance {}",
                                b.instance_id
                            )))
                        }
                        Some(state::SUCCEEDED) => {}
                        Some(other) => {
                            return Err(StoreError::Conflict(format!(
                                "the service instance is not ready to bind ({other})"
                            )))
                        }
                    }
                    sqlx::query(
                        "INSERT INTO service_bindings
                           (id, app_id, instance_id, credentials, syslog_drain_url, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&b.id)
                    .bind(&b.app_id)
                    .bind(&b.instance_id)
                    .bind(&b.credentials)
                    .bind(&b.syslog_drain_url)
                    .bind(b.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        unique_conflict(e, "the app is already bound to this service".into())
                    })?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn bindings_of_app(&self, app_id: &str) -> StoreResult<Vec<BindingRecord>> {
                    let rows = sqlx::query(
                        "SELECT id, app_id, instance_id, credentials, syslog_drain_url, created_at
                         FROM service_bindings WHERE app_id = $1 ORDER BY created_at, id",
                    )
                    .bind(app_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(binding).collect()
                }

                async fn bindings_of_instance(
                    &self,
                    instance_id: &str,
                ) -> StoreResult<Vec<BindingRecord>> {
                    let rows = sqlx::query(
                        "SELECT id, app_id, instance_id, credentials, syslog_drain_url, created_at
                         FROM service_bindings WHERE instance_id = $1 ORDER BY created_at, id",
                    )
                    .bind(instance_id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(binding).collect()
                }

                async fn delete_binding(&self, id: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM service_bindings WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        }
    };
}

service_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow);
service_store!(on_postgres, PgStore, sqlx::postgres::PgRow);
