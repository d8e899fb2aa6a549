//! Issue 21's store part, on both backends (see `store_support`): whether an app and its space
//! allow `paas ssh`, and the session offers relayed between controllers.

use paas_server::store::{Event, Store};

mod store_support;

store_suite!(
    ssh_switches_are_per_app_and_per_space,
    a_relayed_offer_goes_to_its_node_once,
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

async fn ssh_switches_are_per_app_and_per_space(store: &dyn Store) {
    let space = store.space("org", "dev", true).await.unwrap().unwrap();
    let other = store.space("org", "prod", true).await.unwrap().unwrap();
    // Allowed until turned off.
    assert_eq!(
        store.ssh_settings("app-1", &space.id).await.unwrap(),
        (true, true)
    );
    store
        .set_app_ssh("app-1", false, &ev("app.ssh_setting"))
        .await
        .unwrap();
    assert_eq!(
        store.ssh_settings("app-1", &space.id).await.unwrap(),
        (false, true)
    );
    assert_eq!(
        store.ssh_settings("app-2", &space.id).await.unwrap(),
        (true, true),
        "one app's switch"
    );
    store
        .set_space_ssh(&space.id, false, &ev("space.ssh_setting"))
        .await
        .unwrap();
    assert_eq!(
        store.ssh_settings("app-2", &space.id).await.unwrap(),
        (true, false)
    );
    assert_eq!(
        store.ssh_settings("app-2", &other.id).await.unwrap(),
        (true, true),
        "one space's switch"
    );
    // Set again: replaced, not duplicated.
    store
        .set_app_ssh("app-1", true, &ev("app.ssh_setting"))
        .await
        .unwrap();
    store
        .set_space_ssh(&space.id, true, &ev("space.ssh_setting"))
        .await
        .unwrap();
    assert_eq!(
        store.ssh_settings("app-1", &space.id).await.unwrap(),
        (true, true)
    );
}

async fn a_relayed_offer_goes_to_its_node_once(store: &dyn Store) {
    store.add_ssh_offer("s1", "n1", "{\"a\":1}").await.unwrap();
    store.add_ssh_offer("s2", "n1", "{\"b\":2}").await.unwrap();
    store.add_ssh_offer("s3", "n2", "{\"c\":3}").await.unwrap();
    assert!(store.take_ssh_offers("n9").await.unwrap().is_empty());
    let mut got = store.take_ssh_offers("n1").await.unwrap();
    got.sort();
    assert_eq!(got, ["{\"a\":1}", "{\"b\":2}"]);
    assert!(
        store.take_ssh_offers("n1").await.unwrap().is_empty(),
        "taken once"
    );
    // A withdrawn offer (the client gave up) is never handed out.
    store.delete_ssh_offer("s3").await.unwrap();
    assert!(store.take_ssh_offers("n2").await.unwrap().is_empty());
}
