//! The store's task methods on both backends (issue 21): per-app sequence numbers, placement
//! once and never again (also when fenced off), reports that move a task forward only, and a
//! finished task that nothing changes any more.

use chrono::Utc;
use paas_common::agent::TaskReport;
use paas_common::api::{AppState, TaskState};
use paas_server::store::{AppRecord, Event, Fence, NewTask, Store, StoreError};

mod store_support;

store_suite!(
    tasks_are_numbered_placed_once_and_end_once,
    cron_entries_are_due_recorded_and_never_renumbered,
);

fn ev(kind: &str) -> Event {
    Event {
        app_name: Some("web".into()),
        app_id: Some("app-1".into()),
        actor: "admin".into(),
        kind: kind.into(),
        message: "ran it".into(),
    }
}

fn new_task(command: &str) -> NewTask {
    NewTask {
        app_id: "app-1".into(),
        name: None,
        kind: "task".into(),
        command: command.into(),
        droplet: "d1".into(),
        revision: 1,
        env: [("K".to_string(), "v".to_string())].into(),
        memory_mb: 64,
        disk_mb: 128,
        created_by: "admin".into(),
    }
}

fn report(id: &str, exit_code: Option<i64>) -> TaskReport {
    TaskReport {
        task_id: id.into(),
        exit_code,
        failure: None,
    }
}

/// App `app-1` ("web") in the default space, which both tests' rows belong to.
async fn create_app(store: &dyn Store, now: chrono::DateTime<Utc>) {
    let space = store
        .space("default", "default", true)
        .await
        .unwrap()
        .unwrap();
    store
        .create_app(
            &AppRecord {
                id: "app-1".into(),
                name: "web".into(),
                state: AppState::Started,
                desired_instances: 1,
                memory_mb: 128,
                disk_mb: 256,
                current_revision: None,
                created_at: now,
                updated_at: now,
                space_id: space.id.clone(),
                host: None,
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
}

async fn tasks_are_numbered_placed_once_and_end_once(store: &dyn Store) {
    let now = Utc::now();
    create_app(store, now).await;

    let a = store
        .create_task(&new_task("echo a"), &ev("task.create"))
        .await
        .unwrap();
    let b = store
        .create_task(
            &NewTask {
                name: Some("report".into()),
                ..new_task("echo b")
            },
            &ev("task.create"),
        )
        .await
        .unwrap();
    assert_eq!((a.sequence, a.name.as_str()), (1, "1"));
    assert_eq!((b.sequence, b.name.as_str()), (2, "report"));
    assert_eq!(a.state, TaskState::Pending);
    let read = store.app_task("app-1", 1).await.unwrap().unwrap();
    assert_eq!(read.env.get("K").map(String::as_str), Some("v"));
    assert_eq!(read.command, "echo a");

    // A stale fence writes nothing.
    let stale = Fence {
        name: "scheduler".into(),
        holder: "gone".into(),
        epoch: 7,
    };
    assert!(matches!(
        store
            .place_task(Some(&stale), &a.id, Some("n1"), None)
            .await,
        Err(StoreError::Fenced(_))
    ));
    // Waiting records why; placing takes it once, never again.
    assert!(store
        .place_task(None, &a.id, None, Some("no node is available"))
        .await
        .unwrap());
    assert!(store
        .place_task(None, &a.id, Some("n1"), None)
        .await
        .unwrap());
    assert!(!store
        .place_task(None, &a.id, Some("n2"), None)
        .await
        .unwrap());
    assert_eq!(
        store
            .task(&a.id)
            .await
            .unwrap()
            .unwrap()
            .node_name
            .as_deref(),
        Some("n1")
    );

    // Only its node reports it; reports move it forward.
    assert!(store
        .report_task("n2", &report(&a.id, None))
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.app_of_task(&a.id, "n2").await.unwrap(), None);
    assert_eq!(
        store.app_of_task(&a.id, "n1").await.unwrap().as_deref(),
        Some("app-1")
    );
    let running = store
        .report_task("n1", &report(&a.id, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.state, TaskState::Running);
    assert!(store
        .report_task("n1", &report(&a.id, None))
        .await
        .unwrap()
        .is_none());
    let failed = store
        .report_task("n1", &report(&a.id, Some(3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (failed.state, failed.exit_code, failed.reason.as_deref()),
        (TaskState::Failed, Some(3), Some("exited with code 3"))
    );
    // Ended: nothing changes it.
    assert!(store
        .report_task("n1", &report(&a.id, Some(0)))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .fail_task(None, &a.id, "terminated", "admin")
        .await
        .unwrap()
        .is_none());
    let active: Vec<u64> = store
        .active_tasks()
        .await
        .unwrap()
        .iter()
        .map(|t| t.sequence)
        .collect();
    assert_eq!(active, [2]);

    // Terminated before it was placed: it never will be.
    let t = store
        .fail_task(None, &b.id, "terminated", "admin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.state, TaskState::Failed);
    assert!(!store
        .place_task(None, &b.id, Some("n1"), None)
        .await
        .unwrap());
    assert!(store.active_tasks().await.unwrap().is_empty());

    let kinds: Vec<String> = store
        .recent_events("app-1", 50)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "task.create").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "task.failed").count(), 2);
    assert_eq!(store.app_tasks("app-1").await.unwrap().len(), 2);
}

async fn cron_entries_are_due_recorded_and_never_renumbered(store: &dyn Store) {
    let now = Utc::now();
    create_app(store, now).await;
    let soon = now + chrono::Duration::seconds(1);
    let later = now + chrono::Duration::hours(1);
    let a = store
        .add_cron(
            "app-1",
            "* * * * * *",
            "echo a",
            soon,
            "admin",
            &ev("cron.add"),
        )
        .await
        .unwrap();
    let b = store
        .add_cron(
            "app-1",
            "@hourly",
            "echo b",
            later,
            "admin",
            &ev("cron.add"),
        )
        .await
        .unwrap();
    assert_eq!((a.sequence, b.sequence), (1, 2));
    let due: Vec<u64> = store
        .due_crons(now + chrono::Duration::seconds(2))
        .await
        .unwrap()
        .iter()
        .map(|c| c.sequence)
        .collect();
    assert_eq!(due, [1]);
    store
        .record_cron_run(None, &a.id, Some("task-1"), soon, later)
        .await
        .unwrap();
    let read = &store.app_crons("app-1").await.unwrap()[0];
    assert_eq!(read.last_task_id.as_deref(), Some("task-1"));
    assert_eq!(read.next_run_at.timestamp(), later.timestamp());
    let stale = Fence {
        name: "scheduler".into(),
        holder: "gone".into(),
        epoch: 7,
    };
    assert!(matches!(
        store
            .record_cron_run(Some(&stale), &a.id, None, now, now)
            .await,
        Err(StoreError::Fenced(_))
    ));

    // Removed: no longer listed nor due, and its number is not given again.
    assert!(store
        .remove_cron("app-1", 2, &ev("cron.remove"))
        .await
        .unwrap());
    assert!(!store
        .remove_cron("app-1", 2, &ev("cron.remove"))
        .await
        .unwrap());
    let c = store
        .add_cron("app-1", "@daily", "echo c", later, "admin", &ev("cron.add"))
        .await
        .unwrap();
    assert_eq!(c.sequence, 3);
    let listed: Vec<u64> = store
        .app_crons("app-1")
        .await
        .unwrap()
        .iter()
        .map(|c| c.sequence)
        .collect();
    assert_eq!(listed, [1, 3]);
}
