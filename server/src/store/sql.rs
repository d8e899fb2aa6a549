//! The SQL both backends share: every role of [`super::Store`] implemented once, in SQL that
//! SQLite and PostgreSQL both run (`$N` placeholders, `ON CONFLICT`, `RETURNING`, `IS DISTINCT
//! FROM`, TIMESTAMPTZ/TEXT times through chrono, BIGINT/INTEGER through i64, BOOLEAN/INTEGER
//! through bool). What must differ is the [`Dialect`] a backend implements: how a write
//! transaction takes the single-writer lock, which pool writes logs, a few function names.
//!
//! The implementation is a `macro_rules!` expanded once per backend rather than one impl generic
//! over the sqlx database: the generic form needs an `Encode + Type` bound per bound value type
//! and higher-ranked `Executor` bounds for pools, connections and transactions, which
//! `async_trait`'s boxed `Send` futures do not prove. Expanded for a concrete backend, the same
//! text type-checks as ordinary code.

use chrono::{DateTime, Utc};
use paas_common::api::{AppState, LogLine};
use std::collections::BTreeMap;

use super::{EventFilter, StoreError, StoreResult};

/// What differs between the backends, beyond the schema each one's migrations create.
pub(crate) trait Dialect {
    type Db: sqlx::Database;
    /// The position of a substring in a string, 0 when absent: `instr` / `strpos`.
    const CONTAINS: &'static str;
    /// The database clock's now, in milliseconds since the Unix epoch (lease times).
    const NOW_MS: &'static str;
    /// Whether several controllers may share the database ([`super::LeaseStore::shared`]).
    const SHARED: bool;
    /// `(aggregate, array)`: the functions that fold rows into one JSON array of arrays, as
    /// text (`json_group_array`/`json_array`, `json_agg`/`json_build_array`); see
    /// [`json_rows_sql`].
    const JSON_ROWS: (&'static str, &'static str);
    /// The pool log lines are written and trimmed through.
    fn log_pool(&self) -> &sqlx::Pool<Self::Db>;
    /// A transaction that holds the store's single writer lock from its start, so a
    /// read-modify-write inside it (the next revision number, a free host) cannot race another.
    fn write_tx(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send;
    /// The transaction a batch of log lines is written in.
    fn log_tx(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send;
}

/// A query that answers every row of `FROM_WHERE` as one JSON text: an array of arrays of
/// `columns`, in `order`. Large reads (every instance row, 10,000 at the control plane's goal)
/// go this way on SQLite because sqlx hands each row from the connection's thread to the
/// caller through a channel and copies every column value: 15 columns of 10,000 rows took
/// 60-75 ms as rows and 22-26 ms as one JSON text parsed by serde.
pub(super) fn json_rows_sql(
    (agg, array): (&str, &str),
    columns: &str,
    from_where: &str,
    order: &str,
) -> String {
    format!("SELECT CAST(COALESCE({agg}({array}({columns}) ORDER BY {order}), '[]') AS TEXT) FROM {from_where}")
}

/// A boolean column as JSON: SQLite stores 0/1, PostgreSQL `true`/`false`.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonBool(pub bool);

impl<'de> serde::Deserialize<'de> for JsonBool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            B(bool),
            I(i64),
        }
        Ok(JsonBool(match Either::deserialize(d)? {
            Either::B(b) => b,
            Either::I(i) => i != 0,
        }))
    }
}

/// A time column as JSON text: RFC 3339 as sqlx writes it (both backends), or SQLite's
/// `YYYY-MM-DD HH:MM:SS[.f]` of a value written by SQL itself.
pub(super) fn json_time(s: &str) -> StoreResult<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%F %T%.f%:z", "%F %T%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    chrono::NaiveDateTime::parse_from_str(s, "%F %T%.f")
        .map(|t| t.and_utc())
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

/// The columns of an instance row in [`InstanceJson`]'s order.
pub(super) const INSTANCE_JSON_COLUMNS: &str = "id, app_id, revision, process_type, idx, node_name, state, container_id, host_port, restarts, last_exit, placement_error, since, created_at, ready";

/// One instance row as [`json_rows_sql`] answers it with [`INSTANCE_JSON_COLUMNS`].
#[derive(serde::Deserialize)]
pub(super) struct InstanceJson(
    String,
    String,
    i64,
    String,
    i64,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
    JsonBool,
);

impl InstanceJson {
    pub(super) fn record(self) -> StoreResult<super::InstanceRecord> {
        use paas_common::api::InstanceState;
        let InstanceJson(
            id,
            app_id,
            revision,
            process_type,
            idx,
            node_name,
            state,
            container_id,
            host_port,
            restarts,
            last_exit,
            placement_error,
            since,
            created_at,
            ready,
        ) = self;
        Ok(super::InstanceRecord {
            state: InstanceState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("instance state {state:?}")))?,
            id,
            app_id,
            revision,
            process_type,
            index: idx as u32,
            node_name,
            container_id,
            host_port: host_port.map(|p| p as u16),
            restarts: restarts as u32,
            last_exit,
            placement_error,
            since: json_time(&since)?,
            created_at: json_time(&created_at)?,
            ready: ready.0,
        })
    }
}

pub(super) fn app_state(s: &str) -> StoreResult<AppState> {
    match s {
        "started" => Ok(AppState::Started),
        "stopped" => Ok(AppState::Stopped),
        other => Err(StoreError::Corrupt(format!("app state {other:?}"))),
    }
}

pub(super) fn json_map(s: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("json map: {e}")))
}

/// Most lines packed into one row.
pub(super) const LOG_PACK_MAX: usize = 1000;
/// Most time between the first and any other line of a packed row.
pub(super) const LOG_PACK_SPAN: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// One row to store: a line, or a run of lines packed.
pub(super) struct LogRow<'a> {
    pub(super) app: &'a str,
    pub(super) first: &'a LogLine,
    pub(super) lines: i64,
    pub(super) ts: i64,
    pub(super) message: std::borrow::Cow<'a, str>,
}

/// Groups lines into rows: a run of two or more of the router's lines (`RTR`) of one app with
/// consecutive ids, within [`LOG_PACK_SPAN`] of the first, none holding a line break, becomes
/// one row whose message is "<ns> <text>" per line, joined by line breaks (and whose time is the
/// newest, so age retention drops a run once all of it has expired). Other sources arrive at far
/// lower rates and keep a row per line.
pub(super) fn pack_logs(lines: &[(String, std::sync::Arc<LogLine>)]) -> Vec<LogRow<'_>> {
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (app, l) = &lines[i];
        let packable = |(a, m): &(String, std::sync::Arc<LogLine>), prev: &LogLine| {
            a == app
                && m.id == prev.id + 1
                && m.source == l.source
                && m.stream == l.stream
                && !m.message.contains('\n')
                && (m.timestamp - l.timestamp).abs() <= LOG_PACK_SPAN
        };
        let mut j = i + 1;
        if l.source == "RTR" && !l.message.contains('\n') {
            while j < lines.len() && j - i < LOG_PACK_MAX && packable(&lines[j], &lines[j - 1].1) {
                j += 1;
            }
        }
        if j - i == 1 {
            rows.push(LogRow {
                app,
                first: l,
                lines: 1,
                ts: log_ts(&l.timestamp),
                message: std::borrow::Cow::Borrowed(&l.message),
            });
        } else {
            use std::fmt::Write;
            let run = &lines[i..j];
            let mut message =
                String::with_capacity(run.iter().map(|(_, m)| m.message.len() + 21).sum());
            let mut newest = i64::MIN;
            for (k, (_, m)) in run.iter().enumerate() {
                let ts = log_ts(&m.timestamp);
                newest = newest.max(ts);
                if k > 0 {
                    message.push('\n');
                }
                let _ = write!(message, "{ts} {}", m.message);
            }
            rows.push(LogRow {
                app,
                first: l,
                lines: run.len() as i64,
                ts: newest,
                message: std::borrow::Cow::Owned(message),
            });
        }
        i = j;
    }
    rows
}

/// A line's time as stored: nanoseconds since the epoch (saturating past 2262).
pub(super) fn log_ts(t: &DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The columns a [`LogLine`] is read from.
pub(super) const LOG_COLUMNS: &str =
    "SELECT id, ts, source, stream, message, lines FROM log_entries";

/// The apps with stored lines, by hopping through the primary key from one name to the next (a
/// few lookups per app; `SELECT DISTINCT` would read every line's key).
pub(super) const LOG_APPS: &str = "WITH RECURSIVE a(name) AS (
       SELECT MIN(app_id) FROM log_entries
       UNION ALL
       SELECT (SELECT MIN(app_id) FROM log_entries WHERE app_id > a.name) FROM a
       WHERE a.name IS NOT NULL)";

/// Rows per INSERT statement: fewer statements per batch cost less (each is a round trip to the
/// connection's thread), and 7 columns x 500 rows stays far below SQLite's bound-variable limit.
pub(super) const LOG_INSERT_ROWS: usize = 500;

pub(super) fn before_differs(old: Option<i64>, new: Option<u64>) -> bool {
    old != new.map(|m| m as i64)
}

/// An optional value as JSON text for a nullable column.
/// The `apps.log_rate_limit` value of a limit: bytes/s, or -1 for the platform default.
pub(super) fn log_rate_column(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX))
}

pub(super) fn opt_json<T: serde::Serialize>(v: Option<&T>) -> StoreResult<Option<String>> {
    v.map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The LIKE pattern of a user's token-made events (`USER (token %`), wildcards escaped.
pub(super) fn token_actor_pattern(username: &str) -> String {
    let escaped = username
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped} (token %")
}

/// `WHERE` clause of an event filter and the number of its placeholders (`$1`...); binds follow
/// in the order app, actor, actor pattern, since.
pub(super) fn event_where(filter: &EventFilter) -> (String, usize) {
    let mut w = vec!["1 = 1".to_string()];
    let mut n = 0;
    if filter.app_id.is_some() {
        n += 1;
        w.push(format!("app_id = ${n}"));
    }
    if filter.actor.is_some() {
        w.push(format!(
            "(actor = ${} OR actor LIKE ${} ESCAPE '\\')",
            n + 1,
            n + 2
        ));
        n += 2;
    }
    if filter.since_id.is_some() {
        n += 1;
        w.push(format!("id >= ${n}"));
    }
    (w.join(" AND "), n)
}

/// Implements every role of [`super::Store`] for `$store`, a [`Dialect`] over the sqlx database
/// `$db` whose rows are `$row` and whose main pool is its field `pool`. Expanded in the backend's
/// module, which imports `super::*`,
/// `super::sql::*` and the traits `async_trait` and `sqlx::Row`.
macro_rules! sql_store {
    ($store:ty, $db:ty, $row:ty) => {
fn node_from_row(r: &$row) -> StoreResult<NodeRecord> {
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

fn app_from_row(r: &$row) -> StoreResult<AppRecord> {
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
        space_id: r.try_get("space_id")?,
        host: r.try_get("host")?,
    })
}

fn revision_from_row(r: &$row) -> StoreResult<RevisionRecord> {
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
        sidecars: serde_json::from_str(r.try_get("sidecars")?)
            .map_err(|e| StoreError::Corrupt(format!("revision sidecars: {e}")))?,
    })
}

fn instance_from_row(r: &$row) -> StoreResult<InstanceRecord> {
    let state: String = r.try_get("state")?;
    Ok(InstanceRecord {
        id: r.try_get("id")?,
        app_id: r.try_get("app_id")?,
        revision: r.try_get("revision")?,
        process_type: r.try_get("process_type")?,
        index: r.try_get::<i64, _>("idx")? as u32,
        node_name: r.try_get("node_name")?,
        state: InstanceState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("instance state {state:?}")))?,
        container_id: r.try_get("container_id")?,
        host_port: r.try_get::<Option<i64>, _>("host_port")?.map(|p| p as u16),
        restarts: r.try_get::<i64, _>("restarts")? as u32,
        last_exit: r.try_get("last_exit")?,
        placement_error: r.try_get("placement_error")?,
        since: r.try_get("since")?,
        created_at: r.try_get("created_at")?,
        ready: r.try_get("ready")?,
    })
}

fn user_from_row(r: &$row) -> StoreResult<User> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        created_at: r.try_get("created_at")?,
        operator: r.try_get("operator")?,
    })
}

fn space_from_row(r: &$row) -> StoreResult<SpaceRecord> {
    Ok(SpaceRecord {
        id: r.try_get("id")?,
        org: r.try_get("org")?,
        name: r.try_get("name")?,
    })
}

fn token_from_row(r: &$row) -> StoreResult<TokenRecord> {
    Ok(TokenRecord {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        scope: r.try_get("scope")?,
        app_name: r.try_get("app_name")?,
        app_id: r.try_get("app_id")?,
        token_hash: r.try_get("token_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
        kid: r.try_get("kid")?,
    })
}

fn log_from_row(r: &$row) -> StoreResult<LogLine> {
    Ok(LogLine {
        id: r.try_get("id")?,
        timestamp: DateTime::from_timestamp_nanos(r.try_get("ts")?),
        source: r.try_get("source")?,
        stream: r.try_get("stream")?,
        message: r.try_get("message")?,
    })
}

impl $store {
    /// The instance rows of `from_where` (`instances WHERE node_name = $1`, with `bind` as
    /// `$1`), ordered as every list of them is, read as one JSON text ([`json_rows_sql`]).
    async fn instances_where(
        &self,
        from_where: &str,
        bind: Option<&str>,
    ) -> StoreResult<Vec<InstanceRecord>> {
        let rows: Vec<InstanceJson> = fetch_json_rows(
            &self.pool,
            (INSTANCE_JSON_COLUMNS, from_where, "app_id, idx, created_at"),
            bind,
            "instance",
        )
        .await?;
        rows.into_iter().map(InstanceJson::record).collect()
    }

    /// One page of `app_id`'s rows that may hold lines matching `f`, newest first, older than
    /// id `before` if given.
    async fn query_log_rows(
        &self,
        app_id: &str,
        f: &LogQuery,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<$row>> {
        let mut q =
            sqlx::QueryBuilder::<$db>::new(format!("{LOG_COLUMNS} WHERE app_id = "));
        q.push_bind(app_id);
        if let Some(id) = before {
            q.push(" AND id < ").push_bind(id);
        }

        if !f.sources.is_empty() {
            q.push(" AND (");
            for (i, src) in f.sources.iter().enumerate() {
                if i > 0 {
                    q.push(" OR ");
                }
                // `APP` matches `APP/web/0`, `APP/web` matches `APP/web/1`.
                q.push("source = ")
                    .push_bind(src.clone())
                    .push(" OR source LIKE ")
                    .push_bind(format!("{src}/%"));
            }
            q.push(")");
        }
        if let Some(i) = f.instance {
            q.push(" AND instance_index = ").push_bind(i64::from(i));
        }
        if let Some(since) = f.since {
            q.push(" AND ts >= ").push_bind(log_ts(&since));
        }
        if let Some(g) = &f.grep {
            q.push(" AND ")
                .push(<$store as Dialect>::CONTAINS)
                .push("(message, ")
                .push_bind(g.clone())
                .push(") > 0");
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        Ok(q.build().fetch_all(&self.pool).await?)
    }
}

/// The lines of one stored row, oldest first: the row's own line, or each line of a packed run
/// (see [`pack_logs`]). Lines of a packed run that a filter would not select are dropped here, as
/// the row was selected for any of them.
fn logs_from_row(
    r: &$row,
    filter: Option<&LogQuery>,
    out: &mut Vec<LogLine>,
) -> StoreResult<()> {
    let n: i64 = r.try_get("lines")?;
    if n <= 1 {
        out.push(log_from_row(r)?);
        return Ok(());
    }
    let first: i64 = r.try_get("id")?;
    let source: String = r.try_get("source")?;
    let stream: String = r.try_get("stream")?;
    let packed: &str = r.try_get("message")?;
    for (k, part) in packed.split('\n').enumerate() {
        let (ts, message) = part.split_once(' ').unwrap_or(("0", part));
        let line = LogLine {
            id: first + k as i64,
            timestamp: DateTime::from_timestamp_nanos(ts.parse().unwrap_or(0)),
            source: source.clone(),
            stream: stream.clone(),
            message: message.to_string(),
        };
        if filter.is_none_or(|f| f.matches(&line)) {
            out.push(line);
        }
    }
    Ok(())
}


fn key_from_row(r: &$row) -> StoreResult<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.try_get("kid")?,
        secret: r.try_get("secret")?,
        created_at: r.try_get("created_at")?,
        retired_at: r.try_get("retired_at")?,
    })
}

fn refresh_from_row(r: &$row) -> StoreResult<RefreshRecord> {
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
async fn insert_instance_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    i: &InstanceRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO instances (id, app_id, revision, process_type, idx, node_name, state, container_id, host_port, restarts, last_exit, placement_error, since, created_at, ready)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
    .bind(i.ready)
    .execute(ex)
    .await?;
    Ok(())
}

async fn heartbeat_node_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    name: &str,
    c: &NodeCapacity,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE nodes SET memory_mb = $1, disk_mb = $2, instance_slots = $3, last_heartbeat = $4,
           state = CASE WHEN state = 'lost' THEN 'ready' ELSE state END WHERE name = $5",
    )
    .bind(c.memory_mb as i64)
    .bind(c.disk_mb as i64)
    .bind(c.instance_slots as i64)
    .bind(at)
    .bind(name)
    .execute(ex)
    .await?;
    Ok(())
}

/// An instance row as a heartbeat compares it with the node's report.
struct ReportedRow {
    before: ReportedBefore,
    container_id: Option<String>,
    since: DateTime<Utc>,
    ip: Option<String>,
}

/// What a heartbeat that would write nothing finds, read without a write transaction: `None`
/// when it must write (the node's row is missing, lost, of another capacity or last seen
/// `seen_every` ago or more; or a report changes its row). The write path reads again inside its
/// transaction, so a row changed between the two reads is compared there.
async fn heartbeat_unchanged_on(
    pool: &sqlx::Pool<$db>,
    node: &str,
    hb: &NodeHeartbeat<'_>,
) -> StoreResult<Option<HeartbeatApplied>> {
    let Some(row) = sqlx::query("SELECT * FROM nodes WHERE name = $1")
        .bind(node)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let n = node_from_row(&row)?;
    if n.state == "lost" || n.capacity != *hb.capacity || hb.at - n.last_heartbeat >= hb.seen_every
    {
        return Ok(None);
    }
    let rows = reported_rows_on(pool, node).await?;
    let mut out = HeartbeatApplied {
        apps: Vec::with_capacity(hb.reports.len()),
        ..Default::default()
    };
    for r in hb.reports {
        match rows.get(&r.instance_id) {
            None => out.apps.push(None),
            Some(row) if row.changed_by(r) => return Ok(None),
            Some(row) => out.apps.push(Some(row.before.app_id.clone())),
        }
    }
    Ok(Some(out))
}

/// The node's instance rows as a heartbeat compares them with its reports, by id.
/// Every row of `from_where` (with `bind` as its `$1`) as one JSON text ([`json_rows_sql`]),
/// each decoded as `T`, a tuple struct of `columns`.
async fn fetch_json_rows<'c, E, T>(
    ex: E,
    (columns, from_where, order): (&str, &str, &str),
    bind: Option<&str>,
    what: &str,
) -> StoreResult<Vec<T>>
where
    E: sqlx::Executor<'c, Database = $db>,
    T: serde::de::DeserializeOwned,
{
    let sql = json_rows_sql(<$store as Dialect>::JSON_ROWS, columns, from_where, order);
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    if let Some(b) = bind {
        q = q.bind(b);
    }
    serde_json::from_str(&q.fetch_one(ex).await?)
        .map_err(|e| StoreError::Corrupt(format!("{what} rows: {e}")))
}

async fn reported_rows_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    node: &str,
) -> StoreResult<HashMap<String, ReportedRow>> {
    // As one JSON text (see `json_rows_sql`): every heartbeat reads its node's rows.
    #[derive(serde::Deserialize)]
    struct Reported(
        String,
        String,
        Option<String>,
        Option<i64>,
        i64,
        Option<String>,
        String,
        JsonBool,
        Option<String>,
        i64,
        String,
        String,
    );
    let rows: Vec<Reported> = fetch_json_rows(
        ex,
        (
            "i.id, i.state, i.container_id, i.host_port, i.restarts, i.last_exit, i.since, i.ready, i.ip, i.idx, i.app_id, a.name",
            "instances i JOIN apps a ON a.id = i.app_id WHERE i.node_name = $1",
            "i.id",
        ),
        Some(node),
        "reported",
    )
    .await?;
    rows.into_iter()
        .map(|r| {
            let Reported(
                id,
                state,
                container_id,
                host_port,
                restarts,
                last_exit,
                since,
                ready,
                ip,
                idx,
                app_id,
                app_name,
            ) = r;
            let before = ReportedBefore {
                app_id,
                app_name,
                index: idx as u32,
                state: InstanceState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("instance state {state:?}")))?,
                host_port: host_port.map(|p| p as u16),
                restarts: restarts as u32,
                last_exit,
                ready: ready.0,
            };
            Ok((
                id,
                ReportedRow {
                    before,
                    container_id,
                    since: json_time(&since)?,
                    ip,
                },
            ))
        })
        .collect()
}

/// Stored usage samples by instance id; a sample that no longer parses is left out.
fn usage_by_id(rows: &[$row]) -> StoreResult<HashMap<String, InstanceUsage>> {
    let mut out = HashMap::new();
    for r in rows {
        let json: String = r.try_get("usage")?;
        if let Ok(u) = serde_json::from_str(&json) {
            out.insert(r.try_get("id")?, u);
        }
    }
    Ok(out)
}

impl ReportedRow {
    /// Whether writing `r` would change the row. `since` is compared to the microsecond, what
    /// PostgreSQL keeps of a time.
    fn changed_by(&self, r: &InstanceReport) -> bool {
        let b = &self.before;
        b.state != r.state
            || b.host_port != r.host_port
            || b.restarts != r.restarts
            || b.last_exit != r.last_exit
            || b.ready != r.ready
            || self.container_id != r.container_id
            || self.since.timestamp_micros() != r.since.timestamp_micros()
            || self.ip != r.ip
    }
}

async fn update_reported_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    node: &str,
    r: &InstanceReport,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE instances SET state = $1, container_id = $2, host_port = $3, restarts = $4, last_exit = $5, since = $6, ready = $7, ip = $10 WHERE id = $8 AND node_name = $9",
    )
    .bind(r.state.as_str())
    .bind(&r.container_id)
    .bind(r.host_port.map(i64::from))
    .bind(r.restarts as i64)
    .bind(&r.last_exit)
    .bind(r.since)
    .bind(r.ready)
    .bind(&r.instance_id)
    .bind(node)
    .bind(&r.ip)
    .execute(ex)
    .await?;
    Ok(())
}

/// Rows per multi-row statement of a pass: 15 values each for an instance, far below either
/// backend's bound-value limit.
const PASS_ROWS: usize = 500;

async fn insert_instances_on(
    tx: &mut sqlx::Transaction<'static, $db>,
    rows: &[InstanceRecord],
) -> StoreResult<()> {
    for chunk in rows.chunks(PASS_ROWS) {
        let mut q = sqlx::QueryBuilder::<$db>::new(
            "INSERT INTO instances (id, app_id, revision, process_type, idx, node_name, state, container_id, host_port, restarts, last_exit, placement_error, since, created_at, ready) ",
        );
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i.id.clone())
                .push_bind(i.app_id.clone())
                .push_bind(i.revision)
                .push_bind(i.process_type.clone())
                .push_bind(i.index as i64)
                .push_bind(i.node_name.clone())
                .push_bind(i.state.as_str())
                .push_bind(i.container_id.clone())
                .push_bind(i.host_port.map(i64::from))
                .push_bind(i.restarts as i64)
                .push_bind(i.last_exit.clone())
                .push_bind(i.placement_error.clone())
                .push_bind(i.since)
                .push_bind(i.created_at)
                .push_bind(i.ready);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn delete_instances_on(
    tx: &mut sqlx::Transaction<'static, $db>,
    ids: &[String],
) -> StoreResult<()> {
    for chunk in ids.chunks(PASS_ROWS) {
        let mut q = sqlx::QueryBuilder::<$db>::new("DELETE FROM instances WHERE id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.clone());
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_events_on(
    tx: &mut sqlx::Transaction<'static, $db>,
    events: &[Event],
) -> StoreResult<()> {
    let now = Utc::now();
    for chunk in events.chunks(PASS_ROWS) {
        let mut q = sqlx::QueryBuilder::<$db>::new(
            "INSERT INTO events (app_name, app_id, actor, kind, message, created_at) ",
        );
        q.push_values(chunk, |mut b, ev| {
            b.push_bind(ev.app_name.clone())
                .push_bind(ev.app_id.clone())
                .push_bind(ev.actor.clone())
                .push_bind(ev.kind.clone())
                .push_bind(ev.message.clone())
                .push_bind(now);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Usage samples per statement: 2 values each, far below either backend's bound-value limit.
const USAGE_ROWS: usize = 400;

/// Writes the usage samples of a node's instances, [`USAGE_ROWS`] rows per statement (one
/// `CASE` over the ids); returns the rows written.
async fn write_usage_on(
    tx: &mut sqlx::Transaction<'static, $db>,
    node: &str,
    samples: &[(&str, String)],
) -> StoreResult<u64> {
    let mut written = 0;
    for chunk in samples.chunks(USAGE_ROWS) {
        let mut sql = String::from("UPDATE instances SET usage = CASE id");
        for k in 0..chunk.len() {
            sql.push_str(&format!(" WHEN ${} THEN ${}", 2 * k + 1, 2 * k + 2));
        }
        sql.push_str(&format!(" END WHERE node_name = ${} AND id IN (", 2 * chunk.len() + 1));
        for k in 0..chunk.len() {
            if k > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", 2 * k + 1));
        }
        sql.push(')');
        let mut q = sqlx::query(&sql);
        for (id, json) in chunk {
            q = q.bind(*id).bind(json.as_str());
        }
        written += q.bind(node).execute(&mut **tx).await?.rows_affected();
    }
    Ok(written)
}

async fn delete_instance_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    id: &str,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM instances WHERE id = $1")
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

async fn place_instance_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    id: &str,
    node: Option<&str>,
    placement_error: Option<&str>,
) -> StoreResult<()> {
    sqlx::query("UPDATE instances SET node_name = $1, placement_error = $2, state = 'pending', since = $3 WHERE id = $4")
        .bind(node)
        .bind(placement_error)
        .bind(Utc::now())
        .bind(id)
        .execute(ex)
        .await?;
    Ok(())
}

async fn mark_lost_nodes_on<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    before: DateTime<Utc>,
) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("UPDATE nodes SET state = 'lost' WHERE state = 'ready' AND last_heartbeat < $1 RETURNING name")
        .bind(before)
        .fetch_all(ex)
        .await?;
    rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
}

async fn set_node_state_on(
    tx: &mut sqlx::Transaction<'static, $db>,
    name: &str,
    state: &str,
    event: &Event,
) -> StoreResult<()> {
    let res = sqlx::query("UPDATE nodes SET state = $1 WHERE name = $2")
        .bind(state)
        .bind(name)
        .execute(&mut **tx)
        .await?;
    if res.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("node {name:?} not found")));
    }
    insert_event(&mut **tx, event).await
}

fn lease_from_row(r: &$row) -> StoreResult<Lease> {
    Ok(Lease {
        name: r.try_get("name")?,
        holder: r.try_get("holder")?,
        epoch: r.try_get("epoch")?,
        expires_at_ms: r.try_get("expires_at")?,
    })
}

/// Refuses the write in `tx` unless `fence` still holds: run inside the write transaction,
/// after its single-writer lock, so no takeover can commit between the check and the write.
pub(crate) async fn check_fence(tx: &mut sqlx::Transaction<'static, $db>, f: &Fence) -> StoreResult<()> {
    let sql = format!(
        "SELECT 1 AS held FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > {}",
        <$store as Dialect>::NOW_MS
    );
    let held = sqlx::query(&sql)
        .bind(&f.name)
        .bind(&f.holder)
        .bind(f.epoch)
        .fetch_optional(&mut **tx)
        .await?;
    if held.is_none() {
        return Err(StoreError::Fenced(format!(
            "lease {:?} is no longer held by {} at epoch {}",
            f.name, f.holder, f.epoch
        )));
    }
    Ok(())
}

pub(crate) async fn insert_event<'c, E: sqlx::Executor<'c, Database = $db>>(
    ex: E,
    ev: &Event,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO events (app_name, app_id, actor, kind, message, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&ev.app_name)
    .bind(&ev.app_id)
    .bind(&ev.actor)
    .bind(&ev.kind)
    .bind(&ev.message)
    .bind(Utc::now())
    .execute(ex)
    .await?;
    Ok(())
}



        #[async_trait]
        impl AuthStore for $store {
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    async fn create_user_if_missing(&self, u: &User) -> StoreResult<bool> {
        let res = sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, operator) VALUES ($1, $2, $3, $4, $5) ON CONFLICT(username) DO NOTHING",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(u.created_at)
        .bind(u.operator)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn set_operator(&self, user_id: &str, operator: bool) -> StoreResult<()> {
        sqlx::query("UPDATE users SET operator = $1 WHERE id = $2")
            .bind(operator)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    async fn insert_token(&self, t: &TokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, scope, app_name, app_id, token_hash, created_at, expires_at, last_used_at, revoked_at, kid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.name)
        .bind(&t.scope)
        .bind(&t.app_name)
        .bind(&t.app_id)
        .bind(&t.token_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.last_used_at)
        .bind(t.revoked_at)
        .bind(&t.kid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self, user_id: &str) -> StoreResult<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM api_tokens WHERE user_id = $1 ORDER BY created_at")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str, user_id: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
            .bind(Utc::now())
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn add_signing_key(&self, key: &SigningKeyRecord, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, secret, created_at, retired_at) VALUES ($1, $2, $3, $4)",
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
        insert_event(&mut *tx, event).await?;
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
             WHERE retired_at IS NOT NULL AND retired_at < $1
               AND NOT EXISTS (SELECT 1 FROM api_tokens t
                               WHERE t.kid = k.kid AND t.revoked_at IS NULL AND t.expires_at > $2)",
        )
        .bind(retired_before)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for kid in &kids {
            sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                .bind(kid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(kids)
    }

    async fn backfill_token_kids(&self, kid: &str) -> StoreResult<u64> {
        let r = sqlx::query("UPDATE api_tokens SET kid = $1 WHERE kid IS NULL")
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    async fn insert_refresh_token(&self, t: &RefreshRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family, user_id, token_hash, created_at, expires_at, used_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.family)
        .bind(&t.user_id)
        .bind(&t.token_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn refresh_token_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>> {
        let row = sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }

    async fn use_refresh_token(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn revoke_refresh_family(&self, family: &str, at: DateTime<Utc>) -> StoreResult<u64> {
        let r = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn delete_expired_refresh_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
        }

        #[async_trait]
        impl SpaceStore for $store {
    async fn space(&self, org: &str, name: &str, create: bool) -> StoreResult<Option<SpaceRecord>> {
        const Q: &str = "SELECT s.id, o.name AS org, s.name FROM spaces s JOIN orgs o ON o.id = s.org_id WHERE o.name = $1 AND s.name = $2";
        if let Some(r) = sqlx::query(Q)
            .bind(org)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(Some(space_from_row(&r)?));
        }
        if !create {
            return Ok(None);
        }
        let now = Utc::now();
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT(name) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(org)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO spaces (id, org_id, name, created_at) SELECT $1, id, $2, $3 FROM orgs WHERE name = $4
             ON CONFLICT(org_id, name) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(name)
        .bind(now)
        .bind(org)
        .execute(&mut *tx)
        .await?;
        let r = sqlx::query(Q)
            .bind(org)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(space_from_row(&r)?))
    }

    async fn list_spaces(&self) -> StoreResult<Vec<SpaceRecord>> {
        let rows = sqlx::query("SELECT s.id, o.name AS org, s.name FROM spaces s JOIN orgs o ON o.id = s.org_id ORDER BY o.name, s.name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(space_from_row).collect()
    }

    async fn user_roles(&self, user_id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT space_id, role FROM space_roles WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("space_id")?, r.try_get("role")?)))
            .collect()
    }

    async fn set_role(&self, user_id: &str, space_id: &str, role: Option<&str>) -> StoreResult<()> {
        match role {
            Some(role) => {
                sqlx::query(
                    "INSERT INTO space_roles (user_id, space_id, role) VALUES ($1, $2, $3)
                     ON CONFLICT(user_id, space_id) DO UPDATE SET role = excluded.role",
                )
                .bind(user_id)
                .bind(space_id)
                .bind(role)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM space_roles WHERE user_id = $1 AND space_id = $2")
                    .bind(user_id)
                    .bind(space_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn user_org_roles(&self, user_id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT o.name, r.role FROM org_roles r JOIN orgs o ON o.id = r.org_id WHERE r.user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn set_org_role(&self, user_id: &str, org: &str, role: Option<&str>) -> StoreResult<()> {
        let org_id: Option<String> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(org)
            .fetch_optional(&self.pool)
            .await?;
        let Some(org_id) = org_id else {
            return Err(StoreError::NotFound(format!("org {org} not found")));
        };
        match role {
            Some(role) => {
                sqlx::query(
                    "INSERT INTO org_roles (user_id, org_id, role) VALUES ($1, $2, $3)
                     ON CONFLICT(user_id, org_id) DO UPDATE SET role = excluded.role",
                )
                .bind(user_id)
                .bind(&org_id)
                .bind(role)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM org_roles WHERE user_id = $1 AND org_id = $2")
                    .bind(user_id)
                    .bind(&org_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }
        }

        #[async_trait]
        impl NodeStore for $store {
    async fn upsert_node(&self, n: &NodeRecord) -> StoreResult<()> {
        let labels =
            serde_json::to_string(&n.labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO nodes (name, address, zone, labels, memory_mb, disk_mb, instance_slots, token_hash, state, last_heartbeat, registered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT(name) DO UPDATE SET address = excluded.address, zone = excluded.zone, labels = excluded.labels,
               memory_mb = excluded.memory_mb, disk_mb = excluded.disk_mb, instance_slots = excluded.instance_slots,
               token_hash = excluded.token_hash, last_heartbeat = excluded.last_heartbeat,
               state = CASE WHEN nodes.state IN ('draining', 'drained') THEN nodes.state ELSE excluded.state END",
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
        let row = sqlx::query("SELECT * FROM nodes WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    async fn heartbeat_node(
        &self,
        name: &str,
        c: &NodeCapacity,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        heartbeat_node_on(&self.pool, name, c, at).await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn mark_lost_nodes(&self, before: DateTime<Utc>) -> StoreResult<Vec<String>> {
        mark_lost_nodes_on(&self.pool, before).await
    }

    async fn set_node_state(&self, name: &str, state: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        set_node_state_on(&mut tx, name, state, event).await?;
        tx.commit().await?;
        Ok(())
    }
        }

        #[async_trait]
        impl AppStore for $store {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn app_in_space(&self, space_id: &str, name: &str) -> StoreResult<Option<AppRecord>> {
        let row = sqlx::query("SELECT * FROM apps WHERE space_id = $1 AND name = $2")
            .bind(space_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(app_from_row).transpose()
    }

    async fn apps_named(&self, name: &str) -> StoreResult<Vec<AppRecord>> {
        let rows = sqlx::query("SELECT * FROM apps WHERE name = $1 ORDER BY created_at, id")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(app_from_row).collect()
    }

    async fn app_by_id(&self, id: &str) -> StoreResult<Option<AppRecord>> {
        let row = sqlx::query("SELECT * FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(app_from_row).transpose()
    }

    async fn app_by_host(&self, host: &str) -> StoreResult<Option<AppRecord>> {
        let row = sqlx::query("SELECT * FROM apps WHERE host = $1")
            .bind(host)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(app_from_row).transpose()
    }

    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        // As one JSON text (see `json_rows_sql`): every pass, route rebuild and list reads it.
        #[derive(serde::Deserialize)]
        struct App(
            String,
            String,
            String,
            i64,
            i64,
            i64,
            Option<i64>,
            String,
            String,
            String,
            Option<String>,
        );
        let rows: Vec<App> = fetch_json_rows(
            &self.pool,
            (
                "id, name, state, desired_instances, memory_mb, disk_mb, current_revision, created_at, updated_at, space_id, host",
                "apps",
                "name",
            ),
            None,
            "app",
        )
        .await?;
        rows.into_iter()
            .map(|App(id, name, state, desired, memory, disk, current, created, updated, space_id, host)| {
                Ok(AppRecord {
                    id,
                    name,
                    state: app_state(&state)?,
                    desired_instances: desired as u32,
                    memory_mb: memory as u64,
                    disk_mb: disk as u64,
                    current_revision: current,
                    created_at: json_time(&created)?,
                    updated_at: json_time(&updated)?,
                    space_id,
                    host,
                })
            })
            .collect()
    }

    async fn create_app(&self, a: &AppRecord, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        if let Some(host) = &a.host {
            // Mapped routes on that host are the deploy layer's check (it knows the domain).
            let taken: Option<String> = sqlx::query_scalar("SELECT name FROM apps WHERE host = $1")
                .bind(host)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!("the host {host} is taken")));
            }
        }
        let res = sqlx::query(
            "INSERT INTO apps (id, name, state, desired_instances, memory_mb, disk_mb, current_revision, created_at, updated_at, space_id, host)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT(space_id, name) DO NOTHING",
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
        .bind(&a.space_id)
        .bind(&a.host)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "app {} already exists in its space",
                a.name
            )));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_app(&self, app_id: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let gone = sqlx::query("DELETE FROM apps WHERE id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(StoreError::NotFound("app".into()));
        }
        sqlx::query("DELETE FROM log_entries WHERE app_id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM log_drains WHERE app_id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM app_metrics WHERE app_id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn app_space(&self, app_id: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT space_id FROM apps WHERE id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }

    async fn app_spaces(&self) -> StoreResult<HashMap<String, String>> {
        let rows = sqlx::query("SELECT id, space_id FROM apps WHERE space_id IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("space_id")?)))
            .collect()
    }

    async fn app_lifecycles(&self) -> StoreResult<HashMap<String, AppLifecycle>> {
        let rows = sqlx::query(
            "SELECT id, max_in_flight, health, placement_labels, log_rate_limit FROM apps",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let health: Option<String> = r.try_get("health")?;
            let health = health
                .map(|h| {
                    serde_json::from_str(&h)
                        .map_err(|e| StoreError::Corrupt(format!("health json: {e}")))
                })
                .transpose()?;
            out.insert(
                r.try_get("id")?,
                AppLifecycle {
                    max_in_flight: r.try_get::<i64, _>("max_in_flight")?.max(1) as u32,
                    health,
                    placement_labels: json_map(r.try_get("placement_labels")?)?,
                    log_rate_limit_bytes: u64::try_from(r.try_get::<i64, _>("log_rate_limit")?)
                        .ok(),
                },
            );
        }
        Ok(out)
    }

    async fn update_app(&self, app_id: &str, u: &AppUpdate, event: &Event) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let current: Option<(i64, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT memory_mb, health, placement_labels FROM apps WHERE id = $1")
                .bind(app_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((current, current_health, current_labels)) = current else {
            return Err(StoreError::NotFound("app".into()));
        };
        let current_health: paas_common::agent::HealthSettings = current_health
            .map(|h| {
                serde_json::from_str(&h)
                    .map_err(|e| StoreError::Corrupt(format!("health json: {e}")))
            })
            .transpose()?
            .unwrap_or_default();
        let health = opt_json(u.health.as_ref())?;
        let labels = opt_json(u.placement_labels.as_ref())?;
        sqlx::query(
            "UPDATE apps SET desired_instances = COALESCE($1, desired_instances), memory_mb = COALESCE($2, memory_mb),
               state = COALESCE($3, state), max_in_flight = COALESCE($4, max_in_flight), health = COALESCE($5, health),
               placement_labels = COALESCE($6, placement_labels), log_rate_limit = COALESCE($7, log_rate_limit),
               updated_at = $8 WHERE id = $9",
        )
        .bind(u.desired_instances.map(i64::from))
        .bind(u.memory_mb.map(|m| m as i64))
        .bind(u.state.map(AppState::as_str))
        .bind(u.max_in_flight.map(i64::from))
        .bind(health)
        .bind(labels)
        .bind(u.log_rate_limit.map(log_rate_column))
        .bind(Utc::now())
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        let current_labels = json_map(current_labels.as_deref().unwrap_or("{}"))?;
        // A container's memory limit and its agent's health check are fixed at start; new
        // placement labels move the instances (a rolling move, placed by the new labels).
        let redeploy = u.memory_mb.is_some_and(|m| m as i64 != current)
            || u.health.as_ref().is_some_and(|h| *h != current_health)
            || u.placement_labels
                .as_ref()
                .is_some_and(|l| *l != current_labels);
        if redeploy {
            sqlx::query("UPDATE instances SET retire = TRUE WHERE app_id = $1")
                .bind(app_id)
                .execute(&mut *tx)
                .await?;
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(redeploy)
    }

    async fn app_push_settings(&self, app_id: &str) -> StoreResult<String> {
        let s: Option<String> = sqlx::query_scalar("SELECT push_settings FROM apps WHERE id = $1")
            .bind(app_id)
            .fetch_optional(&self.pool)
            .await?;
        s.ok_or_else(|| StoreError::NotFound("app".into()))
    }

    async fn app_processes(&self) -> StoreResult<HashMap<String, Vec<ProcessRecord>>> {
        let rows: Vec<(String, String, i64, Option<i64>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT app_id, process_type, instances, memory_mb, command, health FROM app_processes ORDER BY app_id, process_type",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<ProcessRecord>> = HashMap::new();
        for (app_id, process_type, instances, memory_mb, command, health) in rows {
            let health = health
                .map(|h| {
                    serde_json::from_str(&h)
                        .map_err(|e| StoreError::Corrupt(format!("process health json: {e}")))
                })
                .transpose()?;
            out.entry(app_id).or_default().push(ProcessRecord {
                process_type,
                instances: instances as u32,
                memory_mb: memory_mb.map(|m| m as u64),
                command,
                health,
            });
        }
        Ok(out)
    }

    async fn upsert_process(
        &self,
        app_id: &str,
        p: &ProcessRecord,
        event: &Event,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let before: Option<(Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT memory_mb, health FROM app_processes WHERE app_id = $1 AND process_type = $2",
        )
        .bind(app_id)
        .bind(&p.process_type)
        .fetch_optional(&mut *tx)
        .await?;
        let health = opt_json(p.health.as_ref())?;
        sqlx::query(
            "INSERT INTO app_processes (app_id, process_type, instances, memory_mb, command, health) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (app_id, process_type) DO UPDATE SET instances = excluded.instances, memory_mb = excluded.memory_mb,
               command = excluded.command, health = excluded.health",
        )
        .bind(app_id)
        .bind(&p.process_type)
        .bind(i64::from(p.instances))
        .bind(p.memory_mb.map(|m| m as i64))
        .bind(&p.command)
        .bind(&health)
        .execute(&mut *tx)
        .await?;
        // A container's memory limit, command and health check are fixed at start.
        let (old_mem, old_health) = before.unwrap_or((None, None));
        let redeploy = before_differs(old_mem, p.memory_mb) || old_health != health;
        if redeploy {
            sqlx::query("UPDATE instances SET retire = TRUE WHERE app_id = $1 AND process_type = $2")
                .bind(app_id)
                .bind(&p.process_type)
                .execute(&mut *tx)
                .await?;
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(redeploy)
    }
        }

        #[async_trait]
        impl RevisionStore for $store {
    async fn deploy_revision(
        &self,
        app_id: &str,
        rev: &NewRevision,
        event: &Event,
    ) -> StoreResult<i64> {
        let mut tx = self.write_tx().await?;
        let number: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE app_id = $1",
        )
        .bind(app_id)
        .fetch_one(&mut *tx)
        .await?;
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO revisions (app_id, number, package, droplet, command, detected, env, created_at) VALUES ($1, $2, $3, $4, $5, $6, '{}', $7)",
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
            "UPDATE apps SET current_revision = $1, desired_instances = $2, memory_mb = $3, state = 'started', updated_at = $4 WHERE id = $5",
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

    async fn deploy_revision_with(
        &self,
        app_id: &str,
        rev: &NewRevision,
        extra: &RevisionExtra,
        event: &Event,
    ) -> StoreResult<i64> {
        let env =
            serde_json::to_string(&extra.env).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let health = opt_json(extra.health.as_ref())?;
        let labels = opt_json(extra.placement_labels.as_ref())?;
        let sidecars = serde_json::to_string(&extra.sidecars)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        let number: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE app_id = $1",
        )
        .bind(app_id)
        .fetch_one(&mut *tx)
        .await?;
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO revisions (app_id, number, package, droplet, command, detected, env, created_at, created_by, description, sidecars)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
        .bind(&sidecars)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE apps SET current_revision = $1, desired_instances = $2, memory_mb = $3, disk_mb = COALESCE($4, disk_mb),
             push_settings = COALESCE($5, push_settings), health = COALESCE($6, health),
             placement_labels = COALESCE($7, placement_labels), log_rate_limit = COALESCE($8, log_rate_limit),
             state = $9, updated_at = $10 WHERE id = $11",
        )
        .bind(number)
        .bind(rev.desired_instances as i64)
        .bind(rev.memory_mb as i64)
        .bind(extra.disk_mb.map(|d| d as i64))
        .bind(&extra.push_settings)
        .bind(health)
        .bind(labels)
        .bind(extra.log_rate_limit.map(log_rate_column))
        .bind(if extra.no_start { "stopped" } else { "started" })
        .bind(now)
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(number)
    }

    async fn revision(&self, app_id: &str, number: i64) -> StoreResult<Option<RevisionRecord>> {
        let row = sqlx::query("SELECT * FROM revisions WHERE app_id = $1 AND number = $2")
            .bind(app_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    async fn list_revisions(&self) -> StoreResult<Vec<RevisionRecord>> {
        let rows = sqlx::query("SELECT * FROM revisions ORDER BY app_id, number")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(revision_from_row).collect()
    }

    async fn current_revisions(&self) -> StoreResult<Vec<RevisionRecord>> {
        let rows = sqlx::query(
            "SELECT r.* FROM revisions r JOIN apps a ON a.id = r.app_id AND a.current_revision = r.number",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(revision_from_row).collect()
    }

    async fn app_revisions(&self, app_id: &str) -> StoreResult<Vec<RevisionRecord>> {
        let rows = sqlx::query("SELECT * FROM revisions WHERE app_id = $1 ORDER BY number DESC")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(revision_from_row).collect()
    }
        }

        #[async_trait]
        impl InstanceStore for $store {
    async fn list_instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        self.instances_where("instances", None).await
    }

    async fn running_counts(&self) -> StoreResult<HashMap<String, u32>> {
        let rows = sqlx::query(
            "SELECT app_id, COUNT(*) AS n FROM instances WHERE state = 'running' GROUP BY app_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("app_id")?, r.try_get::<i64, _>("n")? as u32)))
            .collect()
    }

    async fn node_instances(&self, node: &str) -> StoreResult<Vec<InstanceRecord>> {
        self.instances_where("instances WHERE node_name = $1", Some(node))
            .await
    }

    async fn app_instances(&self, app_id: &str) -> StoreResult<Vec<InstanceRecord>> {
        let rows = sqlx::query("SELECT * FROM instances WHERE app_id = $1 ORDER BY idx, created_at")
            .bind(app_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance_from_row).collect()
    }

    async fn insert_instance(&self, i: &InstanceRecord) -> StoreResult<()> {
        insert_instance_on(&self.pool, i).await
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<()> {
        delete_instance_on(&self.pool, id).await
    }

    async fn place_instance(
        &self,
        id: &str,
        node: Option<&str>,
        placement_error: Option<&str>,
    ) -> StoreResult<()> {
        place_instance_on(&self.pool, id, node, placement_error).await
    }

    async fn report_instance(
        &self,
        node: &str,
        r: &InstanceReport,
    ) -> StoreResult<Option<ReportedBefore>> {
        let before = sqlx::query(
            "SELECT i.state, i.host_port, i.restarts, i.last_exit, i.ready, i.idx, i.app_id, a.name AS app_name
             FROM instances i JOIN apps a ON a.id = i.app_id WHERE i.id = $1 AND i.node_name = $2",
        )
        .bind(&r.instance_id)
        .bind(node)
        .fetch_optional(&self.pool)
        .await?;
        let Some(before) = before else {
            return Ok(None);
        };
        let state: String = before.try_get("state")?;
        let before = ReportedBefore {
            app_id: before.try_get("app_id")?,
            app_name: before.try_get("app_name")?,
            index: before.try_get::<i64, _>("idx")? as u32,
            state: InstanceState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("instance state {state:?}")))?,
            host_port: before
                .try_get::<Option<i64>, _>("host_port")?
                .map(|p| p as u16),
            restarts: before.try_get::<i64, _>("restarts")? as u32,
            last_exit: before.try_get("last_exit")?,
            ready: before.try_get("ready")?,
        };
        update_reported_on(&self.pool, node, r).await?;
        Ok(Some(before))
    }

    async fn write_pass(&self, fence: Option<&Fence>, w: &PassWrites) -> StoreResult<()> {
        if w.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        if let Some(f) = fence {
            check_fence(&mut tx, f).await?;
        }
        delete_instances_on(&mut tx, &w.delete).await?;
        insert_instances_on(&mut tx, &w.insert).await?;
        for (id, node, error) in &w.place {
            place_instance_on(&mut *tx, id, node.as_deref(), error.as_deref()).await?;
        }
        insert_events_on(&mut tx, &w.events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_heartbeat(
        &self,
        node: &str,
        hb: &NodeHeartbeat<'_>,
        events: ReportEvents<'_>,
    ) -> StoreResult<HeartbeatApplied> {
        if !hb.write_usage {
            if let Some(out) = heartbeat_unchanged_on(&self.pool, node, hb).await? {
                return Ok(out);
            }
        }
        let mut tx = self.write_tx().await?;
        heartbeat_node_on(&mut *tx, node, hb.capacity, hb.at).await?;
        let rows = reported_rows_on(&mut *tx, node).await?;
        let mut out = HeartbeatApplied {
            apps: Vec::with_capacity(hb.reports.len()),
            node_written: true,
            ..Default::default()
        };
        let mut usage: Vec<(&str, String)> = Vec::new();
        for (k, r) in hb.reports.iter().enumerate() {
            let Some(row) = rows.get(&r.instance_id) else {
                out.apps.push(None);
                continue;
            };
            out.apps.push(Some(row.before.app_id.clone()));
            if hb.write_usage {
                if let Some(u) = &r.usage {
                    let json =
                        serde_json::to_string(u).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    usage.push((r.instance_id.as_str(), json));
                }
            }
            if !row.changed_by(r) {
                continue;
            }
            update_reported_on(&mut *tx, node, r).await?;
            out.rows_written += 1;
            for ev in events(r, &row.before) {
                insert_event(&mut *tx, &ev).await?;
                out.rows_written += 1;
            }
            out.changed.push((k, row.before.clone()));
        }
        if !usage.is_empty() {
            out.rows_written += write_usage_on(&mut tx, node, &usage).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn app_of_instance(&self, instance_id: &str, node: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT app_id FROM instances WHERE id = $1 AND node_name = $2")
                .bind(instance_id)
                .bind(node)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn retire_instances(
        &self,
        app_id: &str,
        target: Option<(&str, u32)>,
        event: &Event,
    ) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let (process, index) = target.unzip();
        let res = sqlx::query(
            "UPDATE instances SET retire = TRUE WHERE app_id = $1 \
             AND ($2 IS NULL OR (process_type = $3 AND idx = $4))",
        )
        .bind(app_id)
        .bind(process)
        .bind(process)
        .bind(index.map(i64::from))
        .execute(&mut *tx)
        .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(res.rows_affected())
    }

    async fn retiring_instances(&self) -> StoreResult<HashSet<String>> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM instances WHERE retire = TRUE")
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().collect())
    }

    async fn record_usage(
        &self,
        node: &str,
        instance_id: &str,
        usage: &InstanceUsage,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(usage).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("UPDATE instances SET usage = $1 WHERE id = $2 AND node_name = $3")
            .bind(json)
            .bind(instance_id)
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn app_usage(&self, app_id: &str) -> StoreResult<HashMap<String, InstanceUsage>> {
        let rows =
            sqlx::query("SELECT id, usage FROM instances WHERE app_id = $1 AND usage IS NOT NULL")
                .bind(app_id)
                .fetch_all(&self.pool)
                .await?;
        usage_by_id(&rows)
    }

    async fn all_usage(&self) -> StoreResult<HashMap<String, InstanceUsage>> {
        let rows = sqlx::query("SELECT id, usage FROM instances WHERE usage IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        usage_by_id(&rows)
    }
        }

        #[async_trait]
        impl EventStore for $store {
    async fn add_event(&self, event: &Event) -> StoreResult<()> {
        insert_event(&self.pool, event).await
    }

    async fn recent_events(
        &self,
        app_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<(DateTime<Utc>, Event)>> {
        let rows = sqlx::query("SELECT * FROM events WHERE app_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(app_id)
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
                        app_id: r.try_get("app_id")?,
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

    async fn list_events(
        &self,
        filter: &EventFilter,
        after_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<EventRow>> {
        let (w, n) = event_where(filter);
        let sql = format!(
            "SELECT * FROM events WHERE {w} AND id > ${} ORDER BY id LIMIT ${}",
            n + 1,
            n + 2
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
            .fetch_all(&self.pool)
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

    async fn count_events(&self, filter: &EventFilter) -> StoreResult<u64> {
        let sql = format!("SELECT COUNT(*) FROM events WHERE {}", event_where(filter).0);
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
        Ok(q.fetch_one(&self.pool).await? as u64)
    }

    async fn app_created_event(&self, app_id: &str) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(id) FROM events WHERE app_id = $1 AND kind = 'app.create'",
        )
        .bind(app_id)
        .fetch_one(&self.pool)
        .await?)
    }
        }

        #[async_trait]
        impl LogStore for $store {
    async fn append_logs(&self, lines: &[(String, std::sync::Arc<LogLine>)]) -> StoreResult<()> {
        // Multi-row statements: one statement per row costs most of the time at high rates.
        let rows = pack_logs(lines);
        let mut tx = self.log_tx().await?;
        for chunk in rows.chunks(LOG_INSERT_ROWS) {
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO log_entries (app_id, id, ts, source, stream, message, instance_index, lines) ",
            );
            q.push_values(chunk, |mut b, r| {
                let (_, index) = crate::loghub::split_app_source(&r.first.source);
                b.push_bind(r.app)
                    .push_bind(r.first.id)
                    .push_bind(r.ts)
                    .push_bind(&r.first.source)
                    .push_bind(&r.first.stream)
                    .push_bind(r.message.as_ref())
                    .push_bind(index.map(i64::from))
                    .push_bind(r.lines);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn logs_in_range(&self, app_id: &str, lo: i64, hi: i64) -> StoreResult<Vec<LogLine>> {
        let rows = sqlx::query(&format!(
            "{LOG_COLUMNS} WHERE app_id = $1 AND id >= $2 AND id <= $3 ORDER BY id"
        ))
        .bind(app_id)
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            logs_from_row(r, None, &mut out)?;
        }
        Ok(out)
    }

    async fn recent_logs(&self, app_id: &str, limit: i64) -> StoreResult<Vec<LogLine>> {
        let rows = sqlx::query(&format!(
            "{LOG_COLUMNS} WHERE app_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(app_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        // Newest rows first; each row's lines oldest first. Packed rows give more lines than
        // rows: the newest `limit` lines are kept.
        let mut out = Vec::new();
        for r in rows.iter().rev() {
            logs_from_row(r, None, &mut out)?;
        }
        let extra = out.len().saturating_sub(limit.max(0) as usize);
        out.drain(..extra);
        Ok(out)
    }

    async fn trim_logs(&self, keep: i64) -> StoreResult<()> {
        // Per app, through the (app_id, id) key: find the newest line beyond `keep` and delete
        // it and everything older. A window function over the whole table instead read and sorted
        // every stored line while holding the write lock, stalling log inserts for as long.
        let apps: Vec<String> = sqlx::query_scalar(&format!(
            "{LOG_APPS} SELECT name FROM a WHERE name IS NOT NULL"
        ))
        .fetch_all(self.log_pool())
        .await?;
        for app in apps {
            // The newest row all of whose lines lie beyond the newest `keep` (a packed row that
            // straddles the line is kept whole), and every older row. Every row holds a line at
            // least, so that row is among the newest `keep + 1`: only those are read.
            sqlx::query(
                "DELETE FROM log_entries WHERE app_id = $1 AND id <= (
                   SELECT id FROM (
                     SELECT id, lines, SUM(lines) OVER (ORDER BY id DESC) AS newer
                     FROM (SELECT id, lines FROM log_entries WHERE app_id = $1
                           ORDER BY id DESC LIMIT $2 + 1) AS recent) AS counted
                   WHERE newer - lines >= $2 ORDER BY id DESC LIMIT 1)",
            )
            .bind(&app)
            .bind(keep.max(0))
            .execute(self.log_pool())
            .await?;
        }
        Ok(())
    }

    async fn query_logs(
        &self,
        app_id: &str,
        f: &LogQuery,
        limit: i64,
    ) -> StoreResult<Vec<LogLine>> {
        // A packed row is selected when any of its lines may match (its time is its newest
        // line's, its text all of theirs); its lines are then filtered one by one, so a page of
        // rows may give fewer lines than asked for: older pages are read until `limit` lines
        // match or none are left.
        let limit = limit.max(0);
        let mut newest_first: Vec<LogLine> = Vec::new();
        let mut before: Option<i64> = None;
        while (newest_first.len() as i64) < limit {
            let rows = self.query_log_rows(app_id, f, before, limit).await?;
            let mut page = Vec::new();
            for r in &rows {
                let start = page.len();
                logs_from_row(r, Some(f), &mut page)?;
                page[start..].reverse();
            }
            newest_first.extend(page);
            match rows.last() {
                Some(r) if (rows.len() as i64) == limit => before = Some(r.try_get("id")?),
                _ => break,
            }
        }
        newest_first.truncate(limit as usize);
        newest_first.reverse();
        Ok(newest_first)
    }

    async fn max_log_id(&self) -> StoreResult<i64> {
        // The newest id of each app through the key: the table has no index on id alone. A
        // packed row's last line is its id + lines - 1.
        let id: Option<i64> = sqlx::query_scalar(&format!(
            "{LOG_APPS} SELECT MAX((SELECT id + lines - 1 FROM log_entries WHERE app_id = a.name
                                    ORDER BY id DESC LIMIT 1))
             FROM a WHERE name IS NOT NULL"
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(id.unwrap_or(0))
    }

    async fn trim_logs_before(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        // Lines are stored in arrival order (the hub stamps rising ids), so the expired ones are the
        // oldest ids: delete up to the first line still inside the window. That line is the first
        // inside the window of some app, so it is the smallest of each app's first; reading each
        // app in id order stops there, so this costs about the lines it deletes, without an index
        // on time (which cost every insert). A line that arrived late with an older time (a spool
        // sent after an outage, a node's clock behind) goes when the lines before it do; size
        // retention bounds it meanwhile.
        let before = log_ts(&before);
        let first_kept: Option<i64> = sqlx::query_scalar(&format!(
            "{LOG_APPS} SELECT MIN((SELECT id FROM log_entries WHERE app_id = a.name AND ts >= $1
                                     ORDER BY id LIMIT 1))
             FROM a WHERE name IS NOT NULL"
        ))
        .bind(before)
        .fetch_one(self.log_pool())
        .await?;
        let r = match first_kept {
            Some(id) => {
                sqlx::query(&format!(
                    "{LOG_APPS}, d(name) AS (SELECT name FROM a WHERE name IS NOT NULL)
                     DELETE FROM log_entries WHERE app_id IN (SELECT name FROM d) AND id < $1"
                ))
                .bind(id)
                .execute(self.log_pool())
                .await?
            }
            // Nothing inside the window: everything has expired.
            None => {
                sqlx::query("DELETE FROM log_entries")
                    .execute(self.log_pool())
                    .await?
            }
        };
        Ok(r.rows_affected())
    }

    async fn add_log_drain(&self, app_id: &str, url: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO log_drains (app_id, url, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(app_id)
            .bind(url)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_log_drain(&self, app_id: &str, url: &str, event: &Event) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query("DELETE FROM log_drains WHERE app_id = $1 AND url = $2")
            .bind(app_id)
            .bind(url)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() > 0 {
            insert_event(&mut *tx, event).await?;
        }
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_log_drains(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT app_id, url FROM log_drains ORDER BY app_id, url")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("app_id")?, r.try_get("url")?)))
            .collect()
    }
        }

        #[async_trait]
        impl RouteStore for $store {
    async fn list_routes(&self) -> StoreResult<Vec<RouteRecord>> {
        let rows = sqlx::query(
            "SELECT r.host, r.path, r.app_id, a.name, r.https_redirect, r.hsts FROM routes r JOIN apps a ON a.id = r.app_id ORDER BY r.host, r.path",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RouteRecord {
                    host: r.try_get(0)?,
                    path: r.try_get(1)?,
                    app_id: r.try_get(2)?,
                    app_name: r.try_get(3)?,
                    https_redirect: r.try_get(4)?,
                    hsts: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn add_route(
        &self,
        app_id: &str,
        host: &str,
        path: &str,
        event: &Event,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        // Checked in the transaction that inserts, so two spaces cannot both claim a free host.
        let foreign: Option<String> = sqlx::query_scalar(
            "SELECT a.name FROM routes r JOIN apps a ON a.id = r.app_id
             WHERE r.host = $1 AND a.space_id IS DISTINCT FROM (SELECT space_id FROM apps WHERE id = $2) LIMIT 1",
        )
        .bind(host)
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await?;
        if foreign.is_some() {
            return Err(StoreError::Conflict(format!(
                "host {host} belongs to another space: map a route under a host of your own"
            )));
        }
        // A private domain's hosts are its space's only (issue 22); checked again here, after
        // the writer lock, so a domain created meanwhile cannot be crossed.
        let domain: Option<String> = sqlx::query_scalar(
            "SELECT d.name FROM domains d
             WHERE ($1 = d.name OR $1 LIKE ('%.' || d.name))
               AND d.space_id IS DISTINCT FROM (SELECT space_id FROM apps WHERE id = $2) LIMIT 1",
        )
        .bind(host)
        .bind(app_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(d) = domain {
            return Err(StoreError::Conflict(format!(
                "domain {d} belongs to another space: route {host}{path} cannot be mapped here"
            )));
        }
        let done = sqlx::query("INSERT INTO routes (host, path, app_id, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(host)
            .bind(path)
            .bind(app_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "route {host}{path} is already mapped"
            )));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_route(
        &self,
        app_id: &str,
        host: &str,
        path: &str,
        event: &Event,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM routes WHERE host = $1 AND path = $2 AND app_id = $3")
            .bind(host)
            .bind(path)
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "route {host}{path} is not mapped to this app"
            )));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }
        }

        #[async_trait]
        impl BuildStore for $store {
    async fn list_buildpacks(&self) -> StoreResult<Vec<BuildpackRecord>> {
        let rows: Vec<(String, i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT name, position, blob, created_by, created_at FROM buildpacks ORDER BY position",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, position, blob, created_by, created_at)| BuildpackRecord {
                    name,
                    position,
                    blob,
                    created_by,
                    created_at,
                },
            )
            .collect())
    }

    async fn add_buildpack(
        &self,
        name: &str,
        blob: &str,
        created_by: &str,
        event: &Event,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO buildpacks (name, position, blob, created_by, created_at)
             VALUES ($1, (SELECT COALESCE(MAX(position), 0) + 1 FROM buildpacks), $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(blob)
        .bind(created_by)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "a buildpack named {name:?} exists"
            )));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_buildpack(&self, name: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM buildpacks WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no buildpack named {name:?}")));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_base_images(&self) -> StoreResult<Vec<BaseImageRecord>> {
        let rows =
            sqlx::query("SELECT name, created_by, created_at FROM base_images ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(BaseImageRecord {
                    name: r.try_get("name")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn add_base_image(&self, name: &str, created_by: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO base_images (name, created_by, created_at) VALUES ($1, $2, $3) ON CONFLICT(name) DO NOTHING",
        )
        .bind(name)
        .bind(created_by)
        .bind(Utc::now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            insert_event(&mut *tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_base_image(&self, name: &str, event: &Event) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM base_images WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "base image {name:?} is not allowed"
            )));
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_droplet_processes(
        &self,
        droplet: &str,
        processes: &BTreeMap<String, String>,
    ) -> StoreResult<()> {
        let json =
            serde_json::to_string(processes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO droplet_processes (droplet, processes) VALUES ($1, $2) ON CONFLICT (droplet) DO UPDATE SET processes = excluded.processes")
            .bind(droplet)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn droplet_processes(&self) -> StoreResult<HashMap<String, BTreeMap<String, String>>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT droplet, processes FROM droplet_processes")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(d, p)| {
                let p = serde_json::from_str(&p)
                    .map_err(|e| StoreError::Corrupt(format!("droplet processes json: {e}")))?;
                Ok((d, p))
            })
            .collect()
    }

    async fn set_droplet_image(
        &self,
        droplet: &str,
        image: &paas_common::agent::DropletImage,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO droplet_images (droplet, image_id, port, run_user) VALUES ($1, $2, $3, $4) ON CONFLICT (droplet) DO UPDATE SET image_id = excluded.image_id, port = excluded.port, run_user = excluded.run_user")
            .bind(droplet)
            .bind(&image.id)
            .bind(i64::from(image.port))
            .bind(&image.user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn droplet_images(
        &self,
    ) -> StoreResult<HashMap<String, paas_common::agent::DropletImage>> {
        let rows: Vec<(String, String, i64, String)> =
            sqlx::query_as("SELECT droplet, image_id, port, run_user FROM droplet_images")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(d, id, port, user)| {
                let port = u16::try_from(port)
                    .map_err(|_| StoreError::Corrupt(format!("droplet image port {port}")))?;
                Ok((d, paas_common::agent::DropletImage { id, port, user }))
            })
            .collect()
    }

    async fn set_droplet_tree(&self, droplet: &str, tree: &str) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT INTO droplet_trees (droplet, tree) VALUES ($1, $2) ON CONFLICT (droplet) DO UPDATE SET tree = excluded.tree")
            .bind(droplet)
            .bind(tree)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn droplet_tree(&self, droplet: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT tree FROM droplet_trees WHERE droplet = $1")
                .bind(droplet)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn known_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<Vec<String>> {
        let mut known = Vec::new();
        // Chunks keep each statement under SQLite's bound-parameter limit.
        for chunk in files.chunks(500) {
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "SELECT sha256, size FROM file_cache WHERE owner = ",
            );
            q.push_bind(owner).push(" AND sha256 IN (");
            let mut list = q.separated(", ");
            for (sha, _) in chunk {
                list.push_bind(sha);
            }
            q.push(")");
            let sizes: std::collections::HashMap<String, i64> = q
                .build()
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok::<_, sqlx::Error>((
                        r.try_get::<String, _>("sha256")?,
                        r.try_get::<i64, _>("size")?,
                    ))
                })
                .collect::<Result<_, _>>()?;
            known.extend(
                chunk
                    .iter()
                    .filter(|(sha, size)| sizes.get(sha) == Some(&(*size as i64)))
                    .map(|(sha, _)| sha.clone()),
            );
        }
        Ok(known)
    }

    async fn remember_files(&self, owner: &str, files: &[(String, u64)]) -> StoreResult<()> {
        let now = Utc::now();
        let mut tx = self.write_tx().await?;
        for (sha, size) in files {
            sqlx::query("INSERT INTO file_cache (owner, sha256, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
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
        Ok(sqlx::query_scalar("SELECT DISTINCT sha256 FROM file_cache")
            .fetch_all(&self.pool)
            .await?)
    }
        }

        #[async_trait]
        impl MetricStore for $store {
    async fn add_app_metrics(&self, rows: &[MetricRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        // 10 columns per row, far below SQLite's bound-variable limit per statement.
        for chunk in rows.chunks(500) {
            let mut q = sqlx::QueryBuilder::<$db>::new(
                "INSERT INTO app_metrics (app_id, ts, requests, errors, p50_ms, p99_ms, memory_bytes, cpu_percent, restarts, instances) ",
            );
            q.push_values(chunk, |mut b, r| {
                let instances = serde_json::to_string(&r.instances).unwrap_or_else(|_| "[]".into());
                b.push_bind(&r.app_id)
                    .push_bind(r.ts)
                    .push_bind(r.requests as i64)
                    .push_bind(r.errors as i64)
                    .push_bind(r.p50_ms)
                    .push_bind(r.p99_ms)
                    .push_bind(r.memory_bytes as i64)
                    .push_bind(r.cpu_percent)
                    .push_bind(r.restarts as i64)
                    .push_bind(instances);
            });
            q.push(
                " ON CONFLICT (app_id, ts) DO UPDATE SET requests = excluded.requests, errors = excluded.errors,
                  p50_ms = excluded.p50_ms, p99_ms = excluded.p99_ms, memory_bytes = excluded.memory_bytes,
                  cpu_percent = excluded.cpu_percent, restarts = excluded.restarts, instances = excluded.instances",
            );
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn app_metrics(&self, app_id: &str, since: i64) -> StoreResult<Vec<MetricRow>> {
        let rows =
            sqlx::query("SELECT * FROM app_metrics WHERE app_id = $1 AND ts >= $2 ORDER BY ts")
                .bind(app_id)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let instances: String = r.try_get("instances")?;
                Ok(MetricRow {
                    app_id: r.try_get("app_id")?,
                    ts: r.try_get("ts")?,
                    requests: r.try_get::<i64, _>("requests")? as u64,
                    errors: r.try_get::<i64, _>("errors")? as u64,
                    p50_ms: r.try_get("p50_ms")?,
                    p99_ms: r.try_get("p99_ms")?,
                    memory_bytes: r.try_get::<i64, _>("memory_bytes")? as u64,
                    cpu_percent: r.try_get("cpu_percent")?,
                    restarts: r.try_get::<i64, _>("restarts")? as u64,
                    instances: serde_json::from_str(&instances)
                        .map_err(|e| StoreError::Corrupt(format!("metric instances: {e}")))?,
                })
            })
            .collect()
    }

    async fn trim_app_metrics(&self, before: i64) -> StoreResult<u64> {
        let r = sqlx::query("DELETE FROM app_metrics WHERE ts < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
        }

        #[async_trait]
        impl LeaseStore for $store {
    fn shared(&self) -> bool {
        <$store as Dialect>::SHARED
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreResult<Option<Lease>> {
        let now = <$store as Dialect>::NOW_MS;
        // One statement: insert it, or take it over when expired (next epoch), or renew it when
        // ours (same epoch); when none applies the WHERE leaves the row alone and nothing returns.
        let sql = format!(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, {now} + $3)
             ON CONFLICT (name) DO UPDATE SET
                 epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END,
                 holder = excluded.holder,
                 expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= {now}
             RETURNING name, holder, epoch, expires_at"
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // Under the writer lock: a fenced write checks the lease with a plain read and writes
        // after it, so a takeover must not commit between the two; holding the same lock, it
        // waits for that write's commit.
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(&sql)
            .bind(name)
            .bind(holder)
            .bind(ttl_ms)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
        let res = sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>> {
        let row = sqlx::query("SELECT * FROM leases WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    async fn fenced_mark_lost_nodes(
        &self,
        fence: &Fence,
        before: DateTime<Utc>,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.write_tx().await?;
        check_fence(&mut tx, fence).await?;
        let lost = mark_lost_nodes_on(&mut *tx, before).await?;
        tx.commit().await?;
        Ok(lost)
    }

    async fn fenced_set_node_state(
        &self,
        fence: &Fence,
        name: &str,
        state: &str,
        event: &Event,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        check_fence(&mut tx, fence).await?;
        set_node_state_on(&mut tx, name, state, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fenced_insert_instance(
        &self,
        fence: &Fence,
        inst: &InstanceRecord,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        check_fence(&mut tx, fence).await?;
        insert_instance_on(&mut *tx, inst).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fenced_delete_instance(&self, fence: &Fence, id: &str) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        check_fence(&mut tx, fence).await?;
        delete_instance_on(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fenced_place_instance(
        &self,
        fence: &Fence,
        id: &str,
        node: Option<&str>,
        placement_error: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        check_fence(&mut tx, fence).await?;
        place_instance_on(&mut *tx, id, node, placement_error).await?;
        tx.commit().await?;
        Ok(())
    }
        }

    };
}
pub(crate) use sql_store;
