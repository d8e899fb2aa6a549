//! The built-in broker's side of a PostgreSQL service instance: the controller logs in as the
//! administrator over the published port and runs the few statements a binding needs. Role
//! names and passwords are generated (letters, digits, `_`), so they are spliced in as they are.

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use std::time::Duration;

use super::Endpoint;

/// The one database of every instance.
pub const DATABASE: &str = "db";
/// The group every binding's role is a member of: it may connect to [`DATABASE`] and use its
/// `public` schema, and owns what a dropped binding owned.
const USERS: &str = "paas_users";
const ADMIN: &str = "paas_admin";

/// One connection as a pool of one: sqlx's executor impls for a pool reference are what the
/// broker's `async_trait` futures can be sent with (a `&mut PgConnection`'s are higher-ranked).
async fn connect(ep: &Endpoint, database: &str) -> Result<PgPool, String> {
    let opts = PgConnectOptions::new()
        .host(&ep.host)
        .port(ep.port)
        .username(ADMIN)
        .password(&ep.admin_password)
        .database(database)
        .ssl_mode(PgSslMode::Disable);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts);
    match tokio::time::timeout(Duration::from_secs(5), pool).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("PostgreSQL not accepting connections yet: {e}")),
        Err(_) => Err("PostgreSQL not answering yet".into()),
    }
}

async fn exec(conn: &PgPool, sql: &str) -> Result<(), String> {
    sqlx::raw_sql(sql)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| format!("PostgreSQL: {e}"))
}

/// Makes the database and the users' group once; a no-op after.
pub(super) async fn prepare(ep: &Endpoint) -> Result<(), String> {
    let conn = connect(ep, "postgres").await?;
    let has_db = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(DATABASE)
        .fetch_optional(&conn)
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if !has_db {
        exec(&conn, &format!("CREATE DATABASE {DATABASE}")).await?;
    }
    let has_group = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(USERS)
        .fetch_optional(&conn)
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if !has_group {
        exec(&conn, &format!("CREATE ROLE {USERS} NOLOGIN")).await?;
    }
    // Only bindings connect: not every role of the cluster.
    exec(
        &conn,
        &format!(
            "REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC; \
             GRANT CONNECT, TEMPORARY ON DATABASE {DATABASE} TO {USERS}"
        ),
    )
    .await?;
    conn.close().await;
    let db = connect(ep, DATABASE).await?;
    exec(
        &db,
        &format!("GRANT USAGE, CREATE ON SCHEMA public TO {USERS}"),
    )
    .await?;
    db.close().await;
    Ok(())
}

/// A login role for one binding; what it creates is shared with the other bindings.
pub(super) async fn add_role(ep: &Endpoint, user: &str, password: &str) -> Result<(), String> {
    let conn = connect(ep, "postgres").await?;
    let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(user)
        .fetch_optional(&conn)
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if exists {
        exec(
            &conn,
            &format!("ALTER ROLE {user} LOGIN PASSWORD '{password}'"),
        )
        .await?;
    } else {
        exec(
            &conn,
            &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {USERS}"),
        )
        .await?;
    }
    conn.close().await;
    let db = connect(ep, DATABASE).await?;
    exec(
        &db,
        &format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {user} IN SCHEMA public GRANT ALL ON TABLES TO {USERS}; \
             ALTER DEFAULT PRIVILEGES FOR ROLE {user} IN SCHEMA public GRANT ALL ON SEQUENCES TO {USERS}"
        ),
    )
    .await?;
    db.close().await;
    Ok(())
}

/// No more logins for the binding's role, its sessions ended, what it owned handed to the
/// group, the role dropped.
pub(super) async fn remove_role(ep: &Endpoint, user: &str) -> Result<(), String> {
    let conn = connect(ep, "postgres").await?;
    let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(user)
        .fetch_optional(&conn)
        .await
        .map_err(|e| e.to_string())?
        .is_some();
    if !exists {
        return Ok(());
    }
    exec(&conn, &format!("ALTER ROLE {user} NOLOGIN")).await?;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(user)
        .fetch_all(&conn)
        .await
        .map_err(|e| e.to_string())?;
    let db = connect(ep, DATABASE).await?;
    exec(
        &db,
        &format!("REASSIGN OWNED BY {user} TO {USERS}; DROP OWNED BY {user}"),
    )
    .await?;
    db.close().await;
    exec(&conn, &format!("DROP ROLE {user}")).await?;
    conn.close().await;
    Ok(())
}
