//! The store's deployment methods on both backends (issue 23): a new deployment supersedes a
//! running one of the app, an update only moves a running deployment (so a cancel and the
//! leader's decision cannot both win), and a rollback sets the app's current revision back in
//! the same write as its event.

use chrono::Utc;
use paas_common::api::AppState;
use paas_common::deployment::{DeployStrategy, DeploymentState, StrategyKind};
use paas_server::store::{AppRecord, DeploymentChange, DeploymentRecord, Event, Store};

mod store_support;

store_suite!(deployments_supersede_end_once_and_roll_back_the_revision);

fn ev(kind: &str) -> Event {
    Event {
        app_name: Some("web".into()),
        app_id: Some("app-1".into()),
        actor: "platform".into(),
        kind: kind.into(),
        message: "rolled back: error rate".into(),
    }
}

fn dep(id: &str, old: i64, new: i64) -> DeploymentRecord {
    let now = Utc::now();
    DeploymentRecord {
        id: id.into(),
        app_id: "app-1".into(),
        strategy: DeployStrategy {
            kind: StrategyKind::Canary,
            steps: vec![10, 100],
            ..Default::default()
        },
        old_revision: old,
        new_revision: new,
        step: 0,
        step_started_at: None,
        state: DeploymentState::Active,
        reason: None,
        created_at: now,
        updated_at: now,
    }
}

async fn deployments_supersede_end_once_and_roll_back_the_revision(store: &dyn Store) {
    let now = Utc::now();
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
                current_revision: Some(3),
                created_at: now,
                updated_at: now,
                space_id: space.id.clone(),
                host: None,
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    assert!(store.app_deployment("app-1").await.unwrap().is_none());

    store.create_deployment(&dep("d1", 1, 2)).await.unwrap();
    let mut second = dep("d2", 2, 3);
    second.created_at = now + chrono::Duration::seconds(1);
    store.create_deployment(&second).await.unwrap();
    let running = store.running_deployments().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, "d2");
    assert_eq!(running[0].strategy.steps, [10, 100]);
    // The first one lost to the second.
    let mut first = dep("d1", 1, 2);
    first.state = DeploymentState::Promoted;
    assert!(!store
        .update_deployment(None, &first, DeploymentChange::default())
        .await
        .unwrap());

    // A step, then the rollback with its revision and event.
    let mut d = store.app_deployment("app-1").await.unwrap().unwrap();
    assert_eq!(d.id, "d2");
    d.step = 1;
    d.step_started_at = Some(Utc::now());
    assert!(store
        .update_deployment(None, &d, DeploymentChange::default())
        .await
        .unwrap());
    d.state = DeploymentState::RolledBack;
    d.reason = Some("error rate".into());
    let e = ev("deployment.rollback");
    assert!(store
        .update_deployment(
            None,
            &d,
            DeploymentChange {
                current_revision: Some(2),
                event: Some(&e),
            },
        )
        .await
        .unwrap());
    let read = store.app_deployment("app-1").await.unwrap().unwrap();
    assert_eq!(read.state, DeploymentState::RolledBack);
    assert_eq!(read.step, 1);
    assert!(read.step_started_at.is_some());
    assert_eq!(read.reason.as_deref(), Some("error rate"));
    assert_eq!(
        store
            .app_by_id("app-1")
            .await
            .unwrap()
            .unwrap()
            .current_revision,
        Some(2)
    );
    // Ended: a later cancel writes nothing, not even its revision.
    d.state = DeploymentState::Cancelled;
    assert!(!store
        .update_deployment(
            None,
            &d,
            DeploymentChange {
                current_revision: Some(3),
                event: None,
            },
        )
        .await
        .unwrap());
    assert_eq!(
        store
            .app_by_id("app-1")
            .await
            .unwrap()
            .unwrap()
            .current_revision,
        Some(2)
    );
    assert!(store.running_deployments().await.unwrap().is_empty());
}
