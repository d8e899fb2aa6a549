//! The store's source digests per droplet (`paas apply`, issue 25), on both backends: recorded by
//! a push, read back by the apply's diff, replaced when a droplet is recorded again.

use paas_server::store::Store;

mod store_support;

store_suite!(droplet_source_digests_are_kept_per_droplet,);

async fn droplet_source_digests_are_kept_per_droplet(store: &dyn Store) {
    assert_eq!(store.droplet_tree("d1").await.unwrap(), None);
    store.set_droplet_tree("d1", "tree-a").await.unwrap();
    store.set_droplet_tree("d2", "tree-b").await.unwrap();
    assert_eq!(
        store.droplet_tree("d1").await.unwrap().as_deref(),
        Some("tree-a")
    );
    assert_eq!(
        store.droplet_tree("d2").await.unwrap().as_deref(),
        Some("tree-b")
    );
    // The same droplet recorded again (a push reusing a cached build) keeps one row.
    store.set_droplet_tree("d1", "tree-c").await.unwrap();
    assert_eq!(
        store.droplet_tree("d1").await.unwrap().as_deref(),
        Some("tree-c")
    );
}
