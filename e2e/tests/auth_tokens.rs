//! Issue 7, tokens: refresh tokens (single use, replay revokes the login, logout), the CLI's
//! transparent refresh, and signing-key rotation (old tokens verify for one token lifetime, CI
//! tokens while they live, a dropped key verifies nothing), against the real server and CLI.

use paas_e2e::{unique, wait_for, Options, Platform};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn post(p: &Platform, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut rb = client().post(format!("{}{path}", p.api_url())).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let res = rb.send().unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or_default())
}

fn get_status(p: &Platform, path: &str, token: &str) -> u16 {
    client()
        .get(format!("{}{path}", p.api_url()))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn login(p: &Platform) -> Value {
    let (status, body) = post(
        p,
        "/v1/auth/login",
        None,
        json!({"username": "admin", "password": p.admin_password}),
    );
    assert_eq!(status, 200, "{body}");
    body
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[test]
fn refresh_tokens_are_single_use_and_a_replay_revokes_the_login() {
    let p = Platform::start_server(Options::default()).expect("server");
    let first = login(&p);
    let access = first["token"].as_str().unwrap().to_string();
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    assert!(first["refresh_expires_at"].is_string(), "{first}");
    // The access token is short-lived by default (15 minutes).
    let exp = chrono::DateTime::parse_from_rfc3339(first["expires_at"].as_str().unwrap()).unwrap();
    let left = exp.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((800..=900).contains(&left), "access token lives {left} s");
    assert_eq!(get_status(&p, "/v1/apps", &access), 200);

    // A refresh gives a new working access token and a new refresh token.
    let (status, second) = post(&p, "/v1/auth/refresh", None, json!({"refresh_token": r1}));
    assert_eq!(status, 200, "{second}");
    let access2 = second["token"].as_str().unwrap().to_string();
    let r2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(access2, access);
    assert_ne!(r2, r1);
    assert_eq!(get_status(&p, "/v1/apps", &access2), 200);

    // Reusing the used one is refused, and revokes its successor too: one of the two holders
    // stole it.
    let (status, body) = post(&p, "/v1/auth/refresh", None, json!({"refresh_token": r1}));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");
    let (status, body) = post(&p, "/v1/auth/refresh", None, json!({"refresh_token": r2}));
    assert_eq!(
        status, 401,
        "successor of a replayed token still works: {body}"
    );
    // Unknown and malformed tokens alike.
    let (status, body) = post(
        &p,
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": "paasr_nope"}),
    );
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, body) = post(&p, "/v1/auth/refresh", None, json!({"nope": 1}));
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));

    // Logout revokes: the refresh token no longer works.
    let third = login(&p);
    let r3 = third["refresh_token"].as_str().unwrap();
    let (status, _) = post(&p, "/v1/auth/logout", None, json!({"refresh_token": r3}));
    assert_eq!(status, 204);
    let (status, _) = post(&p, "/v1/auth/refresh", None, json!({"refresh_token": r3}));
    assert_eq!(status, 401);

    // The audit trail has the logins, the replay and the logout.
    let res = client()
        .get(format!("{}/v1/events", p.api_url()))
        .bearer_auth(&access2)
        .send()
        .unwrap();
    let events: Value = res.json().unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in ["login", "auth.refresh_reuse", "logout"] {
        assert!(kinds.contains(&k), "{k} missing: {events}");
    }
}

#[test]
fn the_cli_renews_an_expired_access_token_by_itself() {
    // Access tokens of 2 s: every command finds its token expired (or within the CLI's margin).
    let p = Platform::start_server(Options {
        server_env: vec![("PAAS_ACCESS_TOKEN_TTL_SECS".into(), "2".into())],
        ..Options::default()
    })
    .expect("server");
    p.login().unwrap();
    let cfg_path = p.dir.path().join("cli-home/config.json");
    let read =
        || -> Value { serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap() };
    let before = read();
    assert!(before["refresh_token"].is_string(), "{before}");
    // Past its expiry (and the server's 5 s leeway) the saved token itself is refused...
    let old = before["token"].as_str().unwrap().to_string();
    wait_for(
        Duration::from_secs(20),
        "the access token to expire",
        || (get_status(&p, "/v1/apps", &old) == 401).then_some(()),
    )
    .unwrap();
    // ...and the CLI still works: it renewed the login and saved the new pair.
    let out = p.cli(&["apps"]);
    assert!(out.ok(), "{out:?}");
    let after = read();
    assert_ne!(after["token"], before["token"]);
    assert_ne!(after["refresh_token"], before["refresh_token"]);
    // Commands side by side renew one at a time (a refresh token is single-use, and a replay
    // would revoke the login): all succeed.
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..4).map(|_| s.spawn(|| p.cli(&["apps"]))).collect();
        for r in runs {
            let out = r.join().unwrap();
            assert!(out.ok(), "{out:?}");
        }
    });
    assert!(p.cli(&["apps"]).ok());
    // `paas logout` revokes the refresh token on the server.
    let refresh = read()["refresh_token"].as_str().unwrap().to_string();
    let out = p.cli(&["logout"]);
    assert!(out.ok(), "{out:?}");
    assert!(!cfg_path.exists());
    let (status, _) = post(
        &p,
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    );
    assert_eq!(status, 401);
    let out = p.cli(&["apps"]);
    assert!(out.stderr.contains("not logged in"), "{out:?}");
}

/// A login token signed with `secret` under key id `kid`, as someone holding that key would make.
fn forge(secret: &[u8], kid: &str, sub: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        &json!({"sub": sub, "iss": "paas", "aud": "paas-api", "exp": now + 3600, "iat": now, "jti": unique("j")}),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn key_rotation_keeps_old_tokens_for_one_lifetime_then_drops_the_key() {
    // Login tokens of 3 s: a retired key verifies them for 3 s + 5 s leeway.
    let p = Platform::start_server(Options {
        server_env: vec![
            ("PAAS_TOKEN_TTL_SECS".into(), "3".into()),
            ("PAAS_ACCESS_TOKEN_TTL_SECS".into(), "3".into()),
        ],
        ..Options::default()
    })
    .expect("server");
    // The first key is the data dir's jwt-secret, as before keys were stored; holding it, we can
    // sign tokens that do not expire for an hour, which only the key's retirement can stop.
    let secret = std::fs::read_to_string(p.data_dir().join("jwt-secret")).unwrap();
    let secret = secret.trim().as_bytes().to_vec();
    let k1 = hex::encode(Sha256::digest(hex::encode(&secret).as_bytes()))[..16].to_string();
    let forged = forge(&secret, &k1, "admin");
    let admin = login(&p)["token"].as_str().unwrap().to_string();
    assert_eq!(kid(&admin), k1);
    assert_eq!(get_status(&p, "/v1/apps", &forged), 200);
    let (status, ci) = post(
        &p,
        "/v1/tokens",
        Some(&admin),
        json!({"name": "ci", "scope": "read", "expires_in": "1d"}),
    );
    assert_eq!(status, 201, "{ci}");
    let ci_token = ci["token"].as_str().unwrap().to_string();
    let ci_id = ci["id"].as_str().unwrap().to_string();
    assert_eq!(kid(&ci_token), k1);

    // Rotation is for operators only.
    let (status, _) = post(&p, "/v1/admin/keys/rotate", Some(&ci_token), json!({}));
    assert_eq!(status, 403);
    let (status, keys) = post(&p, "/v1/admin/keys/rotate", Some(&admin), json!({}));
    assert_eq!(status, 201, "{keys}");
    let active: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["active"] == true)
        .collect();
    assert_eq!(active.len(), 1, "{keys}");
    let k2 = active[0]["kid"].as_str().unwrap().to_string();
    assert_ne!(k2, k1);
    // Old tokens still verify; new ones carry the new kid.
    assert_eq!(get_status(&p, "/v1/apps", &admin), 200);
    assert_eq!(get_status(&p, "/v1/apps", &forged), 200);
    let fresh = login(&p)["token"].as_str().unwrap().to_string();
    assert_eq!(kid(&fresh), k2);
    assert_eq!(get_status(&p, "/v1/apps", &fresh), 200);

    // One token lifetime later, no login token of the old key is accepted, however far its own
    // `exp`; the CI token it signed keeps working while it lives.
    wait_for(
        Duration::from_secs(30),
        "the old key to stop verifying",
        || (get_status(&p, "/v1/apps", &forged) == 401).then_some(()),
    )
    .unwrap();
    assert_eq!(get_status(&p, "/v1/apps", &ci_token), 200);
    let admin = login(&p)["token"].as_str().unwrap().to_string();
    let listed = |token: &str| -> Vec<String> {
        let v: Value = client()
            .get(format!("{}/v1/admin/keys", p.api_url()))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    // A rotation prunes: the old key stays while the CI token lives...
    assert_eq!(
        post(&p, "/v1/admin/keys/rotate", Some(&admin), json!({})).0,
        201
    );
    assert!(listed(&admin).contains(&k1));
    // ...and is dropped once nothing live needs it.
    let res = client()
        .delete(format!("{}/v1/tokens/{ci_id}", p.api_url()))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(
        post(&p, "/v1/admin/keys/rotate", Some(&admin), json!({})).0,
        201
    );
    let kids = listed(&admin);
    assert!(!kids.contains(&k1), "{kids:?}");
    let forged_again = forge(&secret, &k1, "admin");
    let res = client()
        .get(format!("{}/v1/apps", p.api_url()))
        .bearer_auth(&forged_again)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let body: Value = res.json().unwrap();
    assert_eq!(body["code"], "unauthorized");
    // The same through the CLI.
    p.login().unwrap();
    let out = p.cli(&["keys", "rotate"]);
    assert!(out.ok() && out.stdout.contains("Rotated"), "{out:?}");
    let out = p.cli(&["keys", "list", "--json"]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("\"active\": true"), "{out:?}");
}
