//! Log lines across controllers (issue 20): a role trait of its own, a supertrait of
//! [`super::Store`]. With several controllers on one PostgreSQL, a line reaches the controller
//! its agent (or router) talks to, while the user's `logs -f` or push may be held by another.
//! Ids come from one counter in the database, reserved a batch at a time, so every controller's
//! lines have distinct ids in arrival order; once a batch is stored, its controller announces the
//! runs of ids it wrote per app (`NOTIFY paas_logs`), and every other controller with a live
//! subscriber to that app reads those rows and hands them to its subscribers. SQLite has one
//! controller: no reservation, no announcement.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{PgStore, SqliteStore, StoreResult};

/// Consecutive ids `lo..=hi` of one app's lines, all written by one controller in one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRun {
    pub app_id: String,
    pub lo: i64,
    pub hi: i64,
}

impl LogRun {
    /// The runs of a stored batch: (app id, line id) in the order written.
    pub fn of<'a>(lines: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<LogRun> {
        let mut runs: Vec<LogRun> = Vec::new();
        for (app, id) in lines {
            match runs.last_mut() {
                Some(r) if r.app_id == app && r.hi + 1 == id => r.hi = id,
                _ => runs.push(LogRun {
                    app_id: app.to_string(),
                    lo: id,
                    hi: id,
                }),
            }
        }
        runs
    }
}

#[async_trait]
pub trait LogFeedStore: Send + Sync + 'static {
    /// Reserves `n` consecutive line ids shared by every controller and returns the first;
    /// `None` when this controller is the only one (it counts on its own).
    async fn reserve_log_ids(&self, n: i64) -> StoreResult<Option<i64>>;
    /// Tells the other controllers these runs are stored.
    async fn announce_logs(&self, runs: &[LogRun]) -> StoreResult<()>;
    /// The runs the other controllers announce from now on; `None` when there are none.
    async fn follow_logs(&self) -> StoreResult<Option<mpsc::Receiver<LogRun>>>;
}

#[async_trait]
impl LogFeedStore for SqliteStore {
    async fn reserve_log_ids(&self, _n: i64) -> StoreResult<Option<i64>> {
        Ok(None)
    }

    async fn announce_logs(&self, _runs: &[LogRun]) -> StoreResult<()> {
        Ok(())
    }

    async fn follow_logs(&self) -> StoreResult<Option<mpsc::Receiver<LogRun>>> {
        Ok(None)
    }
}

const CHANNEL: &str = "paas_logs";
/// NOTIFY payloads must stay under 8000 bytes.
const PAYLOAD_MAX: usize = 7000;

#[derive(Serialize, Deserialize)]
struct Notice {
    /// The announcing store (one per controller process), so it skips its own.
    from: String,
    runs: Vec<LogRun>,
}

#[async_trait]
impl LogFeedStore for PgStore {
    async fn reserve_log_ids(&self, n: i64) -> StoreResult<Option<i64>> {
        // One row, updated in its own statement: the row lock is held for microseconds, and the
        // ids of a batch stay consecutive (so a run of router lines still packs into one row).
        let next: i64 = sqlx::query_scalar(
            "UPDATE log_ids SET next_id = next_id + $1 WHERE one RETURNING next_id - $1",
        )
        .bind(n)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(next))
    }

    async fn announce_logs(&self, runs: &[LogRun]) -> StoreResult<()> {
        let mut chunk: Vec<LogRun> = Vec::new();
        let mut size = 0;
        for r in runs {
            let len = r.app_id.len() + 48;
            if size + len > PAYLOAD_MAX && !chunk.is_empty() {
                self.notify(std::mem::take(&mut chunk)).await?;
                size = 0;
            }
            size += len;
            chunk.push(r.clone());
        }
        if !chunk.is_empty() {
            self.notify(chunk).await?;
        }
        Ok(())
    }

    async fn follow_logs(&self) -> StoreResult<Option<mpsc::Receiver<LogRun>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let (tx, rx) = mpsc::channel(4096);
        let me = self.origin.clone();
        tokio::spawn(async move {
            loop {
                // On a lost connection `recv` reconnects (announcements meanwhile are missed:
                // a live view shows a gap, the stored lines are all there).
                match listener.recv().await {
                    Ok(n) => {
                        let Ok(notice) = serde_json::from_str::<Notice>(n.payload()) else {
                            tracing::warn!(payload = n.payload(), "unreadable log announcement");
                            continue;
                        };
                        if notice.from == me {
                            continue;
                        }
                        for r in notice.runs {
                            if tx.send(r).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "log announcements: listening failed, retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }
}

impl PgStore {
    async fn notify(&self, runs: Vec<LogRun>) -> StoreResult<()> {
        let payload = serde_json::to_string(&Notice {
            from: self.origin.clone(),
            runs,
        })
        .map_err(|e| super::StoreError::Corrupt(e.to_string()))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_consecutive_ids_of_one_app() {
        let runs = LogRun::of([("a", 5), ("a", 6), ("b", 7), ("a", 8), ("a", 9), ("a", 11)]);
        let r = |a: &str, lo, hi| LogRun {
            app_id: a.into(),
            lo,
            hi,
        };
        assert_eq!(
            runs,
            [r("a", 5, 6), r("b", 7, 7), r("a", 8, 9), r("a", 11, 11)]
        );
    }
}
