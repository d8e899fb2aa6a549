//! Issue 22's store part for services, on both backends (see `store_support`): registered
//! brokers, service instances (unique per space, states), bindings, and the refusals decided in
//! the write transaction: deleting a bound instance or a broker with instances, binding an
//! instance that is not ready, binding twice.

use chrono::Utc;
use paas_common::api::AppState;
use paas_server::store::{
    service_state, AppRecord, BindingRecord, BrokerRecord, Event, ServiceInstanceRecord, Store,
    StoreError, KIND_MANAGED,
};

mod store_support;

store_suite!(
    brokers_are_unique_and_kept_while_their_instances_live,
    instances_are_per_space_and_bound_ones_are_not_deleted,
);

fn ev(kind: &str) -> Event {
    Event {
        app_name: None,
        app_id: None,
        actor: "test".into(),
        kind: kind.into(),
        message: kind.into(),
    }
}

fn broker(name: &str) -> BrokerRecord {
    BrokerRecord {
        name: name.into(),
        url: "http://broker.example".into(),
        username: "u".into(),
        password: "paas-secret:v1:00".into(),
        space_id: None,
        catalog: Some(r#"{"services":[]}"#.into()),
        created_at: Utc::now(),
    }
}

fn instance(id: &str, name: &str, space_id: &str, state: &str) -> ServiceInstanceRecord {
    ServiceInstanceRecord {
        id: id.into(),
        name: name.into(),
        space_id: space_id.into(),
        kind: KIND_MANAGED.into(),
        broker: Some("b1".into()),
        service_id: "svc".into(),
        plan_id: "plan".into(),
        label: "testdb".into(),
        plan: "small".into(),
        tags: vec!["postgresql".into()],
        credentials: None,
        syslog_drain_url: None,
        dashboard_url: None,
        state: state.into(),
        operation: Some("op-1".into()),
        description: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn brokers_are_unique_and_kept_while_their_instances_live(store: &dyn Store) {
    let space = store.space("org", "dev", true).await.unwrap().unwrap();
    store.create_broker(&broker("b1")).await.unwrap();
    assert!(matches!(
        store.create_broker(&broker("b1")).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .set_broker_catalog("b1", r#"{"services":[{"x":1}]}"#)
        .await
        .unwrap();
    let list = store.list_brokers().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].catalog.as_deref(),
        Some(r#"{"services":[{"x":1}]}"#)
    );
    store
        .create_service_instance(&instance("i1", "db", &space.id, service_state::SUCCEEDED))
        .await
        .unwrap();
    assert!(matches!(
        store.delete_broker("b1").await,
        Err(StoreError::Conflict(_))
    ));
    store.delete_service_instance("i1").await.unwrap();
    store.delete_broker("b1").await.unwrap();
    assert!(matches!(
        store.delete_broker("b1").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn instances_are_per_space_and_bound_ones_are_not_deleted(store: &dyn Store) {
    let now = Utc::now();
    let dev = store.space("org", "dev", true).await.unwrap().unwrap();
    let prod = store.space("org", "prod", true).await.unwrap().unwrap();
    store
        .create_service_instance(&instance("i1", "db", &dev.id, service_state::CREATING))
        .await
        .unwrap();
    // One name per space; the same name in another space is another instance.
    assert!(matches!(
        store
            .create_service_instance(&instance("i2", "db", &dev.id, service_state::CREATING))
            .await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_service_instance(&instance("i3", "db", &prod.id, service_state::SUCCEEDED))
        .await
        .unwrap();
    assert_eq!(
        store
            .service_instance_by_name(&dev.id, "db")
            .await
            .unwrap()
            .unwrap()
            .id,
        "i1"
    );
    assert_eq!(
        store.service_instances(Some(&prod.id)).await.unwrap().len(),
        1
    );
    assert_eq!(store.service_instances(None).await.unwrap().len(), 2);
    let progress = store.services_in_progress().await.unwrap();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].operation.as_deref(), Some("op-1"));
    assert_eq!(progress[0].tags, vec!["postgresql".to_string()]);

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
                space_id: dev.id.clone(),
                host: None,
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    let binding = |id: &str, instance: &str| BindingRecord {
        id: id.into(),
        app_id: "app-1".into(),
        instance_id: instance.into(),
        credentials: "paas-secret:v1:00".into(),
        syslog_drain_url: None,
        created_at: now,
    };
    // Not ready yet: no binding.
    assert!(matches!(
        store.create_binding(&binding("b1", "i1")).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .set_service_state("i1", service_state::SUCCEEDED, None, Some("done"))
        .await
        .unwrap();
    let i1 = store.service_instance("i1").await.unwrap().unwrap();
    assert_eq!(
        (i1.state.as_str(), i1.operation, i1.description.as_deref()),
        (service_state::SUCCEEDED, None, Some("done"))
    );
    assert!(store.services_in_progress().await.unwrap().is_empty());
    store.create_binding(&binding("b1", "i1")).await.unwrap();
    assert!(matches!(
        store.create_binding(&binding("b2", "i1")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.bindings_of_app("app-1").await.unwrap().len(), 1);
    assert_eq!(store.bindings_of_instance("i1").await.unwrap()[0].id, "b1");

    // Bound: neither deleted nor marked for deletion.
    assert!(matches!(
        store.begin_service_delete("i1").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_service_instance("i1").await,
        Err(StoreError::Conflict(_))
    ));
    store.delete_binding("b1").await.unwrap();
    store.begin_service_delete("i1").await.unwrap();
    assert_eq!(
        store.service_instance("i1").await.unwrap().unwrap().state,
        service_state::DELETING
    );
    // Being deleted: no new binding.
    assert!(matches!(
        store.create_binding(&binding("b3", "i1")).await,
        Err(StoreError::Conflict(_))
    ));
    store.delete_service_instance("i1").await.unwrap();
    assert!(store.service_instance("i1").await.unwrap().is_none());
    assert!(store.bindings_of_app("app-1").await.unwrap().is_empty());
}
