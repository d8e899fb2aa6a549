//! The store's autoscaling methods on both backends (issue 23): a policy per app, replaced
//! keeping its cooldowns' clocks, decisions recorded with their event (fenced), removal, and
//! the policy going with its app.

use chrono::{Duration, Utc};
use paas_common::api::AppState;
use paas_server::store::{
    AppRecord, AutoscaleRecord, Event, Fence, ScaleDirection, Store, StoreError,
};

mod store_support;

store_suite!(policies_keep_their_clocks_and_record_decisions,);

fn ev(kind: &str, message: &str) -> Event {
    Event {
        app_name: Some("web".into()),
        app_id: Some("app-1".into()),
        actor: "autoscaler".into(),
        kind: kind.into(),
        message: message.into(),
    }
}

fn policy(min: u32, max: u32) -> AutoscaleRecord {
    AutoscaleRecord {
        app_id: "app-1".into(),
        min_instances: min,
        max_instances: max,
        cpu_percent: None,
        rps_per_instance: Some(200),
        p99_ms: Some(300),
        scale_out_cooldown_secs: 60,
        scale_in_cooldown_secs: 300,
        last_scale_out_at: None,
        last_scale_in_at: None,
        last_decision: None,
        updated_by: "admin".into(),
        updated_at: Utc::now(),
    }
}

async fn policies_keep_their_clocks_and_record_decisions(store: &dyn Store) {
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
                current_revision: None,
                created_at: now,
                updated_at: now,
                space_id: space.id.clone(),
                host: None,
            },
            &ev("app.create", "created"),
        )
        .await
        .unwrap();
    assert_eq!(store.autoscale("app-1").await.unwrap(), None);
    assert!(!store
        .remove_autoscale("app-1", &ev("app.autoscale.off", "off"))
        .await
        .unwrap());

    store
        .set_autoscale(&policy(1, 3), &ev("app.autoscale.set", "set"))
        .await
        .unwrap();
    let read = store.autoscale("app-1").await.unwrap().unwrap();
    assert_eq!((read.min_instances, read.max_instances), (1, 3));
    assert_eq!(
        (read.cpu_percent, read.rps_per_instance, read.p99_ms),
        (None, Some(200), Some(300))
    );

    // A scale-out sets its clock and the reason, with the event.
    let at = now - Duration::seconds(5);
    store
        .record_autoscale(
            None,
            "app-1",
            Some(ScaleDirection::Out),
            at,
            &ev("app.autoscale", "scaled out 1 -> 3: requests"),
        )
        .await
        .unwrap();
    // A held decision changes the reason only.
    store
        .record_autoscale(
            None,
            "app-1",
            None,
            now,
            &ev("app.autoscale", "held at 3 by the space's instance quota 3"),
        )
        .await
        .unwrap();
    let read = store.autoscale("app-1").await.unwrap().unwrap();
    assert_eq!(
        read.last_scale_out_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    assert_eq!(read.last_scale_in_at, None);
    assert_eq!(
        read.last_decision.as_deref(),
        Some("held at 3 by the space's instance quota 3")
    );

    // A stale fence writes nothing.
    let stale = Fence {
        name: "scheduler".into(),
        holder: "gone".into(),
        epoch: 7,
    };
    assert!(matches!(
        store
            .record_autoscale(
                Some(&stale),
                "app-1",
                Some(ScaleDirection::In),
                now,
                &ev("app.autoscale", "scaled in 3 -> 2"),
            )
            .await,
        Err(StoreError::Fenced(_))
    ));
    assert_eq!(
        store
            .autoscale("app-1")
            .await
            .unwrap()
            .unwrap()
            .last_scale_in_at,
        None
    );

    // Replacing the policy keeps the clocks, so a change cannot make it flap.
    store
        .set_autoscale(
            &AutoscaleRecord {
                cpu_percent: Some(70),
                rps_per_instance: None,
                ..policy(2, 5)
            },
            &ev("app.autoscale.set", "set again"),
        )
        .await
        .unwrap();
    let read = store.autoscale("app-1").await.unwrap().unwrap();
    assert_eq!((read.min_instances, read.max_instances), (2, 5));
    assert_eq!((read.cpu_percent, read.rps_per_instance), (Some(70), None));
    assert!(read.last_scale_out_at.is_some());
    assert_eq!(store.autoscale_policies().await.unwrap().len(), 1);

    let kinds: Vec<String> = store
        .recent_events("app-1", 20)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "app.autoscale").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "app.autoscale.set").count(),
        2,
        "{kinds:?}"
    );

    assert!(store
        .remove_autoscale("app-1", &ev("app.autoscale.off", "off"))
        .await
        .unwrap());
    assert_eq!(store.autoscale("app-1").await.unwrap(), None);

    // The policy goes with its app.
    store
        .set_autoscale(&policy(1, 3), &ev("app.autoscale.set", "set"))
        .await
        .unwrap();
    store
        .delete_app("app-1", &ev("app.delete", "deleted"))
        .await
        .unwrap();
    assert!(store.autoscale_policies().await.unwrap().is_empty());
}
