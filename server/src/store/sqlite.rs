//! SQLite implementation of [`Store`]: WAL mode, foreign keys on, migrations from
//! `migrations/sqlite` run at open. Runtime queries (not the `query!` macros) so the build needs no
//! database and a PostgreSQL twin can mirror each function.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::{InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState, LogLine};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    #[tracing::instrument]
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

fn app_state(s: &str) -> StoreResult<AppState> {
    match s {
        "started" => Ok(AppState::Started),
        "stopped" => Ok(AppState::Stopped),
        other => Err(StoreError::Corrupt(format!("app state {other:?}"))),
    }
}

fn json_map(s: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("json map: {e}")))
}

fn node_from_row(r: &SqliteRow) -> StoreResult<NodeRecord> {
    Ok(NodeRecord {
        name: r.try_get("name")?,
        address: r.try_get("address")?,
        zone: r.try_get("zone")?,
        labels: json_map(r.try_get("labels")?)?,
        capacity: NodeCapacity {
            memory_mb: r.try_get::<i64, _>("memory_mb")? as u64,
            disk_mb: r.try_get::<i64, _>("disk_mb")? as u64,
            instance_slots: r.try_get::<i64, _>("instance_slots")? as u32,
        },
        token_hash: r.try_get("token_hash")?,
        state: r.try_get("state")?,
        last_heartbeat: r.try_get("last_heartbeat")?,
        registered_at: r.try_get("registered_at")?,
    })
}

fn app_from_row(r: &SqliteRow) -> StoreResult<AppRecord> {
    Ok(AppRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        state: app_state(r.try_get("state")?)?,
        desired_instances: r.try_get::<i64, _>("desired_instances")? as u32,
        memory_mb: r.try_get::<i64, _>("memory_mb")? as u64,
        disk_mb: r.try_get::<i64, _>("disk_mb")? as u64,
        current_revision: r.try_get("current_revision")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn revision_from_row(r: &SqliteRow) -> StoreResult<RevisionRecord> {
    Ok(RevisionRecord {
        app_id: r.try_get("app_id")?,
        number: r.try_get("number")?,
        package: r.try_get("package")?,
        droplet: r.try_get("droplet")?,
        command: r.try_get("command")?,
        detected: r.try_get("detected")?,
        env: json_map(r.try_get("env")?)?,
        created_at: r.try_get("created_at")?,
        created_by: r.try_get("created_by")?,
        description: r.try_get("description")?,
    })
}

fn instance_from_row(r: &SqliteRow) -> StoreResult<InstanceRecord> {
    let state: String = r.try_get("state")?;
    Ok(InstanceRecord {
        id: r.try_get("id")?,
        app_id: r.try_get("app_id")?,
        revision: r.try_get("revision")?,
        process_type: r.try_get("process_type")?,
        index: r.try_get::<i64, _>("idx")? as u32,
        node_name: r.try_get("node_name")?,
        state: InstanceState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("instance state {state:?}")))?,
        container_id: r.try_get("container_id")?,
        host_port: r.try_get::<Option<i64>, _>("host_port")?.map(|p| p as u16),
        restarts: r.try_get::<i64, _>("restarts")? as u32,
        last_exit: r.try_get("last_exit")?,
        placement_error: r.try_get("placement_error")?,
        since: r.try_get("since")?,
        created_at: r.try_get("created_at")?,
    })
}

fn log_from_row(r: &SqliteRow) -> StoreResult<LogLine> {
    Ok(LogLine {
        timestamp: r.try_get("timestamp")?,
        source: r.try_get("source")?,
        stream: r.try_get("stream")?,
        message: r.try_get("message")?,
    })
}

async fn insert_event<'c, E: sqlx::Executor<'c, Database = sqlx::Sqlite>>(ex: E, ev: &Event) -> StoreResult<()> {
    sqlx::query("INSERT INTO events (app_name, actor, kind, message, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&ev.app_name)
        .bind(&ev.actor)
        .bind(&ev.kind)
        .bind(&ev.message)
        .bind(Utc::now())
        .execute(ex)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = ?").bind(username).fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(User {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
                password_hash: r.try_get("password_hash")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn create_user_if_missing(&self, u: &User) -> StoreResult<bool> {
        let res = sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?) ON CONFLICT(username) DO NOTHING",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(u.created_at)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    async fn upsert_node(&self, n: &NodeRecord) -> StoreResult<()> {
        let labels = serde_json::to_string(&n.labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO nodes (name, address, zone, labels, memory_mb, disk_mb, instance_slots, token_hash, state, last_heartbeat, registered_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(name) DO UPDATE SET address = excluded.address, zone = excluded.zone, labels = excluded.labels,
               memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, instance_slots = excluded.instance_slots,
               token_hash = excluded.token_hash, state = excluded.state, last_heartbeat = excluded.last_heartbeat",
        )
        .bind(&n.name)
        .bind(&n.address)
        .bind(&n.zone)
        .bind(labels)
        .bind(n.capacity.memory_mb as i64)
        .bind(n.capacity.disk_mb as i64)
        .bind(n.capacity.instance_slots as i64)
        .bind(&n.token_hash)
        .bind(&n.state)
        .bind(n.last_heartbeat)
        .bind(n.registered_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn node_by_token_hash(&self, token_hash: &str) -> StoreResult<Option<NodeRecord>> {
        let row = sqlx::query("SELECT * FROM nodes WHERE token_hash = ?").bind(token_hash).fetch_optional(&self.pool).await?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn heartbeat_node(&self, name: &str, c: &NodeCapacity, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE nodes SET memory_mb = ?, disk_mb = ?, instance_slots = ?, last_heartbeat = ?, state = 'ready' WHERE name = ?",
        )
        .bind(c.memory_mb as i64)
        .bind(c.disk_mb as i64)
        .bind(c.instance_slots as i64)
        .bind(at)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn mark_lost_nodes(&self, before: DateTime<Utc>) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("UPDATE nodes SET state = 'lost' WHERE state = 'ready' AND last_heartbeat < ? RETURNING name")
            .bind(before)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    async fn app_by_name(&self, name: &str) -> StoreResult<Option<AppRecord>> {
        let row = sqlx::query("SELECT * FROM apps WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(app_from_row).transpose()
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        let rows = sqlx::query("SELECT * FROM apps ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(app_from_row).collect()
    }

    async fn create_app(&self, a: &AppRecord, event: &Event) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "INSERT INTO apps (id, name, state, desired_instances, memory_mb, disk_mb, current_revision, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.name)
        .bind(a.state.as_str())
        .bind(a.desired_instances as i64)
        .bind(a.memory_mb as i64)
        .bind(a.disk_mb as i64)
        .bind(a.current_revision)
        .bind(a.created_at)
        .bind(a.updated_at)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("app {} already exists", a.name)));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_app(&self, app_id: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let name: Option<String> =
            sqlx::query_scalar("DELETE FROM apps WHERE id = ? RETURNING name").bind(app_id).fetch_optional(&mut *tx).await?;
        let Some(name) = name else {
            return Err(StoreError::NotFound("app".into()));
        };
        sqlx::query("DELETE FROM log_lines WHERE app_name = ?").bind(&name).execute(&mut *tx).await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn deploy_revision(&self, app_id: &str, rev: &NewRevision, event: &Event) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let number: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE app_id = ?")
            .bind(app_id)
            .fetch_one(&mut *tx)
            .await?;
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO revisions (app_id, number, package, droplet, command, detected, env, created_at) VALUES (?, ?, ?, ?, ?, ?, '{}', ?)",
        )
        .bind(app_id)
        .bind(number)
        .bind(&rev.package)
        .bind(&rev.droplet)
        .bind(&rev.command)
        .bind(&rev.detected)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE apps SET current_revision = ?, desired_instances = ?, memory_mb = ?, state = 'started', updated_at = ? WHERE id = ?",
        )
        .bind(number)
        .bind(rev.desired_instances as i64)
        .bind(rev.memory_mb as i64)
        .bind(now)
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(number)
    }

    async fn revision(&self, app_id: &str, number: i64) -> StoreResult<Option<RevisionRecord>> {
        let row = sqlx::query("SELECT * FROM revisions WHERE app_id = ? AND number = ?")
            .bind(app_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    async fn list_revisions(&self) -> StoreResult<Vec<RevisionRecord>> {
        let rows = sqlx::query("SELECT * FROM revisions ORDER BY app_id, number").fetch_all(&self.pool).await?;
        rows.iter().map(revision_from_row).collect()
    }

    async fn list_instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY app_id, idx, created_at").fetch_all(&self.pool).await?;
        rows.iter().map(instance_from_row).collect()
    }

    async fn app_instances(&self, app_id: &str) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query("SELECT * FROM instances WHERE app_id = ? ORDER BY idx, created_at")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance_from_row).collect()
    }

    async fn insert_instance(&self, i: &InstanceRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO instances (id, app_id, revision, process_type, idx, node_name, state, container_id, host_port, restarts, last_exit, placement_error, since, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&i.id)
        .bind(&i.app_id)
        .bind(i.revision)
        .bind(&i.process_type)
        .bind(i.index as i64)
        .bind(&i.node_name)
        .bind(i.state.as_str())
        .bind(&i.container_id)
        .bind(i.host_port.map(i64::from))
        .bind(i.restarts as i64)
        .bind(&i.last_exit)
        .bind(&i.placement_error)
        .bind(i.since)
        .bind(i.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM instances WHERE id = ?").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn place_instance(&self, id: &str, node: Option<&str>, placement_error: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET node_name = ?, placement_error = ?, state = 'pending', since = ? WHERE id = ?")
            .bind(node)
            .bind(placement_error)
            .bind(Utc::now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn report_instance(&self, node: &str, r: &InstanceReport) -> StoreResult<bool> {
        let before = sqlx::query("SELECT state, host_port FROM instances WHERE id = ? AND node_name = ?")
            .bind(&r.instance_id)
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        let Some(before) = before else { return Ok(false) };
        let old_state: String = before.try_get("state")?;
        let old_port: Option<i64> = before.try_get("host_port")?;
        sqlx::query(
            "UPDATE instances SET state = ?, container_id = ?, host_port = ?, restarts = ?, last_exit = ?, since = ? WHERE id = ? AND node_name = ?",
        )
        .bind(r.state.as_str())
        .bind(&r.container_id)
        .bind(r.host_port.map(i64::from))
        .bind(r.restarts as i64)
        .bind(&r.last_exit)
        .bind(r.since)
        .bind(&r.instance_id)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(old_state != r.state.as_str() || old_port != r.host_port.map(i64::from))
    }

    async fn add_event(&self, event: &Event) -> StoreResult<()> {
        insert_event(&self.pool, event).await
    }

    async fn recent_events(&self, app_name: &str, limit: i64) -> StoreResult<Vec<(DateTime<Utc>, Event)>> {
        let rows = sqlx::query("SELECT * FROM events WHERE app_name = ? ORDER BY id DESC LIMIT ?")
            .bind(app_name)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("created_at")?,
                    Event {
                        app_name: r.try_get("app_name")?,
                        actor: r.try_get("actor")?,
                        kind: r.try_get("kind")?,
                        message: r.try_get("message")?,
                    },
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn app_name_of_instance(&self, instance_id: &str, node: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT a.name FROM instances i JOIN apps a ON a.id = i.app_id WHERE i.id = ? AND i.node_name = ?")
            .bind(instance_id)
            .bind(node)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn append_logs(&self, lines: &[(String, LogLine)]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for (app, l) in lines {
            sqlx::query("INSERT INTO log_lines (app_name, timestamp, source, stream, message) VALUES (?, ?, ?, ?, ?)")
                .bind(app)
                .bind(l.timestamp)
                .bind(&l.source)
                .bind(&l.stream)
                .bind(&l.message)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn recent_logs(&self, app_name: &str, limit: i64) -> StoreResult<Vec<LogLine>> {
        let rows = sqlx::query("SELECT * FROM log_lines WHERE app_name = ? ORDER BY id DESC LIMIT ?")
            .bind(app_name)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows.iter().map(log_from_row).collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn trim_logs(&self, keep: i64) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM log_lines WHERE id IN (
               SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY app_name ORDER BY id DESC) AS rn FROM log_lines) WHERE rn > ?)",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn deploy_revision_with(&self, app_id: &str, rev: &NewRevision, extra: &RevisionExtra, event: &Event) -> StoreResult<i64> {
        let env = serde_json::to_string(&extra.env).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let number: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE app_id = ?")
            .bind(app_id)
            .fetch_one(&mut *tx)
            .await?;
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO revisions (app_id, number, package, droplet, command, detected, env, created_at, created_by, description)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(app_id)
        .bind(number)
        .bind(&rev.package)
        .bind(&rev.droplet)
        .bind(&rev.command)
        .bind(&rev.detected)
        .bind(&env)
        .bind(now)
        .bind(&extra.created_by)
        .bind(&extra.description)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE apps SET current_revision = ?, desired_instances = ?, memory_mb = ?, disk_mb = COALESCE(?, disk_mb),
             push_settings = COALESCE(?, push_settings), state = 'started', updated_at = ? WHERE id = ?",
        )
        .bind(number)
        .bind(rev.desired_instances as i64)
        .bind(rev.memory_mb as i64)
        .bind(extra.disk_mb.map(|d| d as i64))
        .bind(&extra.push_settings)
        .bind(now)
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(number)
    }

    async fn app_revisions(&self, app_id: &str) -> StoreResult<Vec<RevisionRecord>> {
        let rows = sqlx::query("SELECT * FROM revisions WHERE app_id = ? ORDER BY number DESC")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(revision_from_row).collect()
    }

    async fn app_push_settings(&self, app_id: &str) -> StoreResult<String> {
        let s: Option<String> = sqlx::query_scalar("SELECT push_settings FROM apps WHERE id = ?")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        s.ok_or_else(|| StoreError::NotFound("app".into()))
    }

    async fn known_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<Vec<String>> {
        let mut known = Vec::new();
        // Chunks keep each statement under SQLite's bound-parameter limit.
        for chunk in files.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!("SELECT sha256, size FROM file_cache WHERE owner = ? AND sha256 IN ({placeholders})");
            let mut q = sqlx::query(&sql).bind(owner);
            for (sha, _) in chunk {
                q = q.bind(sha);
            }
            let sizes: std::collections::HashMap<String, i64> = q
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok::<_, sqlx::Error>((r.try_get::<String, _>("sha256")?, r.try_get::<i64, _>("size")?)))
                .collect::<Result<_, _>>()?;
            known.extend(chunk.iter().filter(|(sha, size)| sizes.get(sha) == Some(&(*size as i64))).map(|(sha, _)| sha.clone()));
        }
        Ok(known)
    }

    async fn remember_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<()> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await?;
        for (sha, size) in files {
            sqlx::query("INSERT OR IGNORE INTO file_cache (owner, sha256, size, created_at) VALUES (?, ?, ?, ?)")
                .bind(owner)
                .bind(sha)
                .bind(*size as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn cached_file_blobs(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT sha256 FROM file_cache").fetch_all(&self.pool).await?)
    }
}
