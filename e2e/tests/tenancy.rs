//! Tenancy, roles and CI tokens against the real server and CLI: each row of issue 7's access
//! checklist is an assertion here. No agent is needed: pushes are accepted (and stay pending).

use paas_e2e::{example, unique, zip_of, Options, Platform};
use std::path::Path;

fn api_push(p: &Platform, token: &str, app: &str) -> (u16, serde_json::Value) {
    let zip = zip_of(&[("app.py", b"print('hi')", 0o644)]);
    let form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
    );
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or_default())
}

fn api_get(p: &Platform, token: &str, path: &str) -> (u16, serde_json::Value) {
    let res = reqwest::blocking::Client::new()
        .get(format!("{}{path}", p.api_url()))
        .bearer_auth(token)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or_default())
}

fn login_as(p: &Platform, home: &Path, user: &str, password: &str) {
    let out = p.cli_as(
        home,
        &[],
        &["login", &p.api_url(), "-u", user, "-p", password],
    );
    assert!(out.ok(), "login {user}: {out:?}");
}

#[test]
fn roles_and_spaces() {
    let p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    let a = unique("app-a");
    assert_eq!(api_push(&p, &admin, &a).0, 201);

    // A viewer sees but cannot change.
    let viewer = unique("viewer");
    assert!(p.cli(&["add-user", &viewer, "-p", "viewer-password"]).ok());
    let out = p.cli(&["set-role", &viewer, "viewer"]);
    assert!(out.ok(), "{out:?}");
    let home = tempfile::tempdir().unwrap();
    login_as(&p, home.path(), &viewer, "viewer-password");
    let out = p.cli_as(home.path(), &[], &["app", &a, "--json"]);
    assert!(out.ok(), "a viewer reads: {out:?}");
    let out = p.cli_as(
        home.path(),
        &[],
        &["push", &a, "-p", example("python-app").to_str().unwrap()],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(forbidden)"), "{out:?}");
    let out = p.cli_as(home.path(), &[], &["delete", &a, "-f"]);
    assert!(out.stderr.contains("(forbidden)"), "{out:?}");
    let out = p.cli_as(home.path(), &[], &["users"]);
    assert!(
        out.stderr.contains("(forbidden)"),
        "users are for operators: {out:?}"
    );

    // A developer of another space neither sees nor touches the default space's apps, and pushes
    // into its own space.
    assert!(p.cli(&["create-space", "acme/prod"]).ok());
    let dev = unique("dev");
    assert!(p.cli(&["add-user", &dev, "-p", "developer-password"]).ok());
    assert!(p
        .cli(&["set-role", &dev, "developer", "--space", "acme/prod"])
        .ok());
    let home2 = tempfile::tempdir().unwrap();
    login_as(&p, home2.path(), &dev, "developer-password");
    let out = p.cli_as(home2.path(), &[], &["apps", "--json"]);
    assert!(out.ok(), "{out:?}");
    assert!(!out.stdout.contains(&a), "{out:?}");
    // An app outside the caller's reach is answered as one that does not exist.
    let out = p.cli_as(home2.path(), &[], &["app", &a]);
    assert!(out.stderr.contains("(app_not_found)"), "{out:?}");
    let out = p.cli_as(home2.path(), &[], &["target", "acme/prod"]);
    assert!(out.ok(), "{out:?}");
    let c = unique("app-c");
    let out = p.cli_as(
        home2.path(),
        &[],
        &[
            "push",
            &c,
            "-p",
            example("python-app").to_str().unwrap(),
            "--timeout",
            "1",
        ],
    );
    // No node runs here, so the push is accepted and then times out waiting: the app exists.
    assert!(out.stderr.contains("no node is available"), "{out:?}");
    let out = p.cli_as(home2.path(), &[], &["apps", "--json"]);
    assert!(out.stdout.contains(&c), "{out:?}");
    let out = p.cli(&["apps", "--json"]);
    assert!(
        out.stdout.contains(&c) && out.stdout.contains(&a),
        "the operator sees every space: {out:?}"
    );
    // ... but the viewer of the default space does not see acme/prod's app.
    let out = p.cli_as(home.path(), &[], &["apps", "--json"]);
    assert!(!out.stdout.contains(&c), "{out:?}");
}

#[test]
fn ci_tokens_are_scoped_and_revocable() {
    let p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    let a = unique("app-a");
    let b = unique("app-b");
    assert_eq!(api_push(&p, &admin, &a).0, 201);
    assert_eq!(api_push(&p, &admin, &b).0, 201);

    // A deploy token for app A deploys A and cannot touch B.
    let out = p.cli(&[
        "tokens",
        "create",
        "ci-a",
        "--scope",
        "deploy",
        "--app",
        &a,
        "--expires",
        "1d",
    ]);
    assert!(out.ok(), "{out:?}");
    let token_a = out.stdout.trim().to_string();
    assert!(token_a.split('.').count() == 3, "a JWT on stdout: {out:?}");
    assert_eq!(api_push(&p, &token_a, &a).0, 201);
    let (status, body) = api_push(&p, &token_a, &b);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "app_not_found");
    let ci_home = tempfile::tempdir().unwrap();
    let env = [("PAAS_API", p.api_url()), ("PAAS_TOKEN", token_a.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = p.cli_as(ci_home.path(), &env, &["app", &b]);
    assert!(out.stderr.contains("(app_not_found)"), "{out:?}");
    let out = p.cli_as(ci_home.path(), &env, &["app", &a, "--json"]);
    assert!(out.ok(), "{out:?}");
    let out = p.cli_as(ci_home.path(), &env, &["apps", "--json"]);
    assert!(
        out.stdout.contains(&a) && !out.stdout.contains(&b),
        "an app token lists its app only: {out:?}"
    );
    let (status, _) = api_get(&p, &token_a, "/v1/tokens");
    assert_eq!(status, 403, "a deploy token cannot mint tokens");

    // A read token reads and cannot deploy.
    let out = p.cli(&["tokens", "create", "reader", "--scope", "read"]);
    let reader = out.stdout.trim().to_string();
    assert_eq!(api_get(&p, &reader, &format!("/v1/apps/{b}")).0, 200);
    assert_eq!(api_push(&p, &reader, &b).0, 403);

    // Listing shows use, never the token; a revoked token gets 401 on its next use.
    let out = p.cli(&["tokens", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let ci = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci-a")
        .unwrap()
        .clone();
    assert!(!ci["last_used_at"].is_null(), "{ci}");
    assert!(!out.stdout.contains(&token_a));
    let out = p.cli(&["tokens", "revoke", ci["id"].as_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    let (status, body) = api_get(&p, &token_a, &format!("/v1/apps/{a}"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "unauthorized");
    let out = p.cli(&["tokens", "create", "bad", "--scope", "root"]);
    assert!(out.stderr.contains("(bad_request)"), "{out:?}");
}

#[test]
fn hostile_jwts_are_refused() {
    use base64::Engine;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use sha2::Digest;

    let p = Platform::start_server(Options::default()).expect("server");
    // Forge with the server's real key, so only the claim or header is wrong.
    let secret = std::fs::read_to_string(p.data_dir().join("jwt-secret"))
        .unwrap()
        .trim()
        .to_string();
    let kid = hex::encode(sha2::Sha256::digest(
        hex::encode(secret.as_bytes()).as_bytes(),
    ))[..16]
        .to_string();
    let now = chrono::Utc::now().timestamp();
    let good = serde_json::json!({"sub": "admin", "iss": "paas", "aud": "paas-api", "exp": now + 600, "iat": now, "jti": "x"});
    let forge = |alg: Algorithm, claims: &serde_json::Value| {
        let mut h = Header::new(alg);
        h.kid = Some(kid.clone());
        encode(&h, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    assert_eq!(
        api_get(&p, &forge(Algorithm::HS256, &good), "/v1/apps").0,
        200,
        "the forger's baseline works"
    );

    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let cases = [
        ("alg none", alg_none),
        ("wrong algorithm", forge(Algorithm::HS384, &good)),
        ("no exp", forge(Algorithm::HS256, &without("exp"))),
        (
            "wrong aud",
            forge(Algorithm::HS256, &with("aud", "other".into())),
        ),
        ("no aud", forge(Algorithm::HS256, &without("aud"))),
        (
            "wrong iss",
            forge(Algorithm::HS256, &with("iss", "evil".into())),
        ),
        (
            "expired",
            forge(Algorithm::HS256, &with("exp", (now - 3600).into())),
        ),
        (
            "unknown user",
            forge(Algorithm::HS256, &with("sub", "mallory".into())),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let (status, body) = api_get(&p, &token, "/v1/apps");
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], "unauthorized", "{what}");
    }
}

#[test]
fn login_attempts_are_rate_limited() {
    let p = Platform::start_server(Options::default()).expect("server");
    let client = reqwest::blocking::Client::new();
    let login = |password: &str| {
        client
            .post(format!("{}/v1/auth/login", p.api_url()))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for _ in 0..5 {
        assert_eq!(login("wrong"), 401);
    }
    assert_eq!(login("wrong"), 429);
    assert_eq!(
        login(&p.admin_password),
        429,
        "locked out even with the right password for a while"
    );
}
