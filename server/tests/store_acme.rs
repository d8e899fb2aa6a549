//! Issue 22's ACME state in the store, on both backends (see `store_support`): a domain's opt-in
//! and backoff, the certificate's source, pending challenges and the account per directory.

use paas_common::route::AcmeChallenge;
use paas_server::store::{Event, NewCertificate, Store, CERT_ACME, CERT_MANUAL};

mod store_support;

store_suite!(
    acme_state_follows_opt_in_failures_and_certificates,
    challenges_and_accounts,
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

async fn domain(store: &dyn Store, name: &str) -> paas_server::store::DomainRecord {
    store
        .list_domains()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap()
}

fn cert(source: &'static str) -> NewCertificate {
    NewCertificate {
        chain_pem: "PEM".into(),
        sealed_key: "sealed".into(),
        names: vec!["www.shop.test".into()],
        source,
    }
}

async fn acme_state_follows_opt_in_failures_and_certificates(store: &dyn Store) {
    let space = store.space("org", "dev", true).await.unwrap().unwrap();
    store
        .create_domain("shop.test", &space.id, &ev("domain.create"))
        .await
        .unwrap();
    let d = domain(store, "shop.test").await;
    assert!(!d.acme && d.cert_source.is_none() && d.acme_failures == 0);
    assert!(store
        .set_domain_acme("nope.test", true, &ev("domain.acme"))
        .await
        .is_err());
    store
        .set_domain_acme("shop.test", true, &ev("domain.acme"))
        .await
        .unwrap();
    assert!(domain(store, "shop.test").await.acme);

    // A failure is kept with its backoff (to the second: both backends round-trip it).
    let retry = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 60, 0).unwrap();
    store
        .record_acme_failure("shop.test", "CA said no", 2, retry, &ev("x"))
        .await
        .unwrap();
    let d = domain(store, "shop.test").await;
    assert_eq!(d.acme_error.as_deref(), Some("CA said no"));
    assert_eq!((d.acme_failures, d.acme_retry_at), (2, Some(retry)));

    // An ACME certificate clears the failure and keeps ACME on.
    store
        .set_domain_certificate("shop.test", &cert(CERT_ACME), &ev("x"))
        .await
        .unwrap();
    let d = domain(store, "shop.test").await;
    assert_eq!(d.cert_source.as_deref(), Some(CERT_ACME));
    assert!(d.acme && d.acme_error.is_none() && d.acme_failures == 0);
    assert!(d.acme_retry_at.is_none());
    assert_eq!(d.cert_names, ["www.shop.test"]);

    // A certificate set by hand turns ACME off: the user's certificate wins.
    store
        .set_domain_certificate("shop.test", &cert(CERT_MANUAL), &ev("x"))
        .await
        .unwrap();
    let d = domain(store, "shop.test").await;
    assert_eq!(d.cert_source.as_deref(), Some(CERT_MANUAL));
    assert!(!d.acme);
}

async fn challenges_and_accounts(store: &dyn Store) {
    let space = store.space("org", "dev", true).await.unwrap().unwrap();
    for d in ["a.test", "b.test"] {
        store
            .create_domain(d, &space.id, &ev("domain.create"))
            .await
            .unwrap();
    }
    let ch = |host: &str, token: &str| AcmeChallenge {
        host: host.into(),
        token: token.into(),
        key_authorization: format!("{token}.thumb"),
    };
    store
        .put_acme_challenge("a.test", &ch("www.a.test", "t1"))
        .await
        .unwrap();
    store
        .put_acme_challenge("b.test", &ch("www.b.test", "t2"))
        .await
        .unwrap();
    // The same token again replaces it.
    store
        .put_acme_challenge("a.test", &ch("api.a.test", "t1"))
        .await
        .unwrap();
    assert_eq!(
        store.list_acme_challenges().await.unwrap(),
        [ch("api.a.test", "t1"), ch("www.b.test", "t2")]
    );
    store.delete_acme_challenges("a.test").await.unwrap();
    assert_eq!(
        store.list_acme_challenges().await.unwrap(),
        [ch("www.b.test", "t2")]
    );

    // One account per directory: the first stored wins.
    let dir = "https://acme.test/directory";
    assert!(store.acme_account(dir).await.unwrap().is_none());
    assert_eq!(store.put_acme_account(dir, "first").await.unwrap(), "first");
    assert_eq!(
        store.put_acme_account(dir, "second").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.acme_account(dir).await.unwrap().as_deref(),
        Some("first")
    );
    assert!(store
        .acme_account("https://other.test/dir")
        .await
        .unwrap()
        .is_none());
}
