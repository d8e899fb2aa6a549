//! The store's auth part on a real SQLite file: signing keys (one active, retired ones dropped
//! only when nothing live needs them), refresh tokens (single use, families), and the event list
//! (filters, actor through a token, keyset pages).

use chrono::{Duration, SubsecRound, Utc};
use paas_server::store::{
    Event, EventFilter, RefreshRecord, SigningKeyRecord, Store, TokenRecord, User,
};

mod store_support;

store_suite!(
    keys_retire_on_rotation_and_drop_only_when_no_live_token_needs_them,
    refresh_tokens_are_used_once_and_revoked_by_family,
    events_filter_by_app_and_actor_and_page_by_id,
);

fn ev(app: Option<&str>, actor: &str, kind: &str) -> Event {
    Event {
        app_name: app.map(str::to_string),
        app_id: app.map(|a| format!("id-{a}")),
        actor: actor.into(),
        kind: kind.into(),
        message: kind.into(),
    }
}

async fn user(store: &dyn Store, name: &str) -> User {
    let u = User {
        id: format!("u-{name}"),
        username: name.into(),
        password_hash: "x".into(),
        created_at: Utc::now(),
        operator: false,
    };
    assert!(store.create_user_if_missing(&u).await.unwrap());
    u
}

fn key(kid: &str, at: chrono::DateTime<Utc>) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        secret: format!("sealed-{kid}"),
        created_at: at,
        retired_at: None,
    }
}

async fn keys_retire_on_rotation_and_drop_only_when_no_live_token_needs_them(store: &dyn Store) {
    let alice = user(store, "alice").await;
    // Microseconds: what PostgreSQL keeps of a time.
    let t0 = Utc::now().trunc_subsecs(6) - Duration::hours(3);
    store
        .add_signing_key(&key("k1", t0), &ev(None, "platform", "key.create"))
        .await
        .unwrap();
    let t1 = t0 + Duration::hours(1);
    store
        .add_signing_key(&key("k2", t1), &ev(None, "admin", "key.rotate"))
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].retired_at, Some(t1), "k1 retired when k2 came");
    assert!(keys[1].retired_at.is_none());
    // A live CI token signed by k1 keeps it.
    let now = Utc::now().trunc_subsecs(6);
    let token = TokenRecord {
        id: "jti-1".into(),
        user_id: alice.id.clone(),
        name: "ci".into(),
        scope: "deploy".into(),
        app_name: None,
        app_id: None,
        token_hash: "h".into(),
        created_at: t0,
        expires_at: now + Duration::days(1),
        last_used_at: None,
        revoked_at: None,
        kid: Some("k1".into()),
    };
    store.insert_token(&token).await.unwrap();
    assert!(store.drop_signing_keys(now, now).await.unwrap().is_empty());
    // Retired too recently: kept.
    assert!(store
        .drop_signing_keys(t1 - Duration::minutes(1), now)
        .await
        .unwrap()
        .is_empty());
    // Revoked: nothing needs k1 any more; the active key is never dropped.
    assert!(store.revoke_token("jti-1", &alice.id).await.unwrap());
    assert_eq!(store.drop_signing_keys(now, now).await.unwrap(), vec!["k1"]);
    let left: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(left, vec!["k2"]);
    // The same kid twice is a conflict, not a second active key.
    assert!(store
        .add_signing_key(&key("k2", now), &ev(None, "admin", "key.rotate"))
        .await
        .is_err());
    assert_eq!(store.signing_keys().await.unwrap().len(), 1);
}

async fn refresh_tokens_are_used_once_and_revoked_by_family(store: &dyn Store) {
    let alice = user(store, "alice").await;
    let now = Utc::now().trunc_subsecs(6);
    let rec = |id: &str, family: &str, expires| RefreshRecord {
        id: id.into(),
        family: family.into(),
        user_id: alice.id.clone(),
        token_hash: format!("hash-{id}"),
        created_at: now,
        expires_at: expires,
        used_at: None,
        revoked_at: None,
    };
    store
        .insert_refresh_token(&rec("r1", "f1", now + Duration::days(1)))
        .await
        .unwrap();
    store
        .insert_refresh_token(&rec("r2", "f1", now + Duration::days(1)))
        .await
        .unwrap();
    store
        .insert_refresh_token(&rec("r3", "f2", now - Duration::hours(1)))
        .await
        .unwrap();
    assert!(store.use_refresh_token("r1", now).await.unwrap());
    assert!(
        !store.use_refresh_token("r1", now).await.unwrap(),
        "used twice"
    );
    let r1 = store
        .refresh_token_by_hash("hash-r1")
        .await
        .unwrap()
        .unwrap();
    assert!(r1.used_at.is_some());
    assert_eq!(store.revoke_refresh_family("f1", now).await.unwrap(), 2);
    assert!(
        !store.use_refresh_token("r2", now).await.unwrap(),
        "revoked"
    );
    assert_eq!(store.delete_expired_refresh_tokens(now).await.unwrap(), 1);
    assert!(store
        .refresh_token_by_hash("hash-r3")
        .await
        .unwrap()
        .is_none());
    assert!(store.refresh_token_by_hash("nope").await.unwrap().is_none());
}

async fn events_filter_by_app_and_actor_and_page_by_id(store: &dyn Store) {
    for i in 0..5 {
        store
            .add_event(&ev(Some("web"), "a_b", &format!("web.{i}")))
            .await
            .unwrap();
    }
    store
        .add_event(&ev(Some("api"), "a_b (token ci)", "api.push"))
        .await
        .unwrap();
    // `_` is a LIKE wildcard: "axb" must not match a_b's pattern.
    store
        .add_event(&ev(None, "axb (token ci)", "other"))
        .await
        .unwrap();
    store.add_event(&ev(None, "a_b", "login")).await.unwrap();

    let web = EventFilter {
        app_id: Some("id-web".into()),
        actor: None,
        since_id: None,
    };
    assert_eq!(store.count_events(&web).await.unwrap(), 5);
    let first = store.list_events(&web, None, 2).await.unwrap();
    let kinds = |rows: &[paas_server::store::EventRow]| -> Vec<String> {
        rows.iter().map(|r| r.event.kind.clone()).collect()
    };
    assert_eq!(kinds(&first), vec!["web.0", "web.1"]);
    let second = store.list_events(&web, Some(first[1].id), 2).await.unwrap();
    assert_eq!(kinds(&second), vec!["web.2", "web.3"]);

    let mine = EventFilter {
        app_id: None,
        actor: Some("a_b".into()),
        since_id: None,
    };
    let rows = store.list_events(&mine, None, 100).await.unwrap();
    assert_eq!(rows.len(), 7, "{:?}", kinds(&rows));
    assert!(rows.iter().all(|r| r.event.actor.starts_with("a_b")));
    assert_eq!(store.count_events(&mine).await.unwrap(), 7);
    assert_eq!(
        store.count_events(&EventFilter::default()).await.unwrap(),
        8
    );
}
