//! The whole controller on PostgreSQL (issue 20): the real `paas-server` binary with
//! `PAAS_DATABASE_URL=postgres://...` serves a login and creates and lists users, spaces and
//! tokens over HTTP; after a `kill -9` and a restart on the same database the same admin logs in
//! and everything is still there, with no SQLite file in the data dir all along.
//! Needs `PAAS_TEST_DATABASE_URL` (`export PAAS_TEST_DATABASE_URL=$(scripts/postgres)`).

mod server_support;
mod store_support;

use serde_json::{json, Value};
use server_support::Server;
use store_support::PgDatabase;

fn names(list: &Value, field: &str, key: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_postgres_and_keeps_its_data_across_a_restart() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let server = Server::start(&dir.path().join("first"), &url, &password);
        let token = server.login("admin", &password);

        let (status, body) =
            server.post(&token, "/v1/spaces", json!({"org": "acme", "name": "prod"}));
        assert!(status < 300, "create space: {status} {body}");
        let (status, body) = server.post(
            &token,
            "/v1/users",
            json!({"username": "carol", "password": "carol-secret-1", "operator": false}),
        );
        assert!(status < 300, "create user: {status} {body}");
        // The same name again is refused with a stable code, as on SQLite.
        let (status, body) = server.post(
            &token,
            "/v1/users",
            json!({"username": "carol", "password": "carol-secret-1", "operator": false}),
        );
        assert_eq!(status, 409, "{body}");
        assert!(body["code"].is_string(), "{body}");
        let (status, body) =
            server.post(&token, "/v1/tokens", json!({"name": "ci", "scope": "read"}));
        assert!(status < 300, "create token: {status} {body}");

        let spaces = names(&server.get(&token, "/v1/spaces"), "spaces", "name");
        assert!(spaces.contains(&"prod".to_string()), "{spaces:?}");
        let users = names(&server.get(&token, "/v1/users"), "users", "username");
        assert_eq!(users, ["admin", "carol"]);
        // The login and the creations are events in the database.
        let events = server.get(&token, "/v1/events");
        assert!(!events["events"].as_array().unwrap().is_empty(), "{events}");

        // kill -9, and a new server: what it finds, it finds in PostgreSQL.
        drop(server);
        let data = dir.path().join("first");
        assert!(!data.join("paas.db").exists(), "no SQLite file");
        let server = Server::start(&data, &url, "another-password");
        // The admin's password is the one in the database, not the new setting.
        let token = server.login("admin", &password);
        let users = names(&server.get(&token, "/v1/users"), "users", "username");
        assert_eq!(users, ["admin", "carol"]);
        let spaces = names(&server.get(&token, "/v1/spaces"), "spaces", "name");
        assert!(spaces.contains(&"prod".to_string()), "{spaces:?}");
        let tokens = names(&server.get(&token, "/v1/tokens"), "tokens", "name");
        assert_eq!(tokens, ["ci"]);
        server.login("carol", "carol-secret-1");
        assert!(!data.join("paas.db").exists(), "no SQLite file");
    })
    .await
    .unwrap();
    drop(db);
}
