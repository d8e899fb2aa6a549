//! The platform CA of instance identity on both backends (issue 25): made once, the first
//! stored wins a race, and every controller loading it gets the same CA.

use paas_server::identity::PlatformCa;
use paas_server::secrets::SecretBox;
use paas_server::store::{CaRecord, Store};

mod store_support;

store_suite!(the_first_ca_stored_wins_and_loads_the_same_everywhere,);

async fn the_first_ca_stored_wins_and_loads_the_same_everywhere(store: &dyn Store) {
    assert!(store
        .platform_ca("instance-identity")
        .await
        .unwrap()
        .is_none());
    let first = CaRecord {
        name: "other".into(),
        certificate: "cert-1".into(),
        sealed_key: "key-1".into(),
    };
    assert_eq!(store.add_platform_ca(&first).await.unwrap(), first);
    let second = CaRecord {
        certificate: "cert-2".into(),
        sealed_key: "key-2".into(),
        ..first.clone()
    };
    assert_eq!(
        store.add_platform_ca(&second).await.unwrap(),
        first,
        "a second controller gets the stored one"
    );

    let dir = tempfile::tempdir().unwrap();
    let secrets = SecretBox::load_or_create(&dir.path().join("secret-key")).unwrap();
    let a = PlatformCa::load_or_create(store, &secrets).await.unwrap();
    let b = PlatformCa::load_or_create(store, &secrets).await.unwrap();
    assert_eq!(a.pem(), b.pem());
    let row = store
        .platform_ca("instance-identity")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !row.sealed_key.contains("PRIVATE KEY"),
        "the key is sealed at rest"
    );
}
