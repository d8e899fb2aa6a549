//! Tenancy, roles and CI tokens against the real server and CLI: each row of issue 7's access
//! checklist is an assertion here. No agent is needed: pushes are accepted (and stay pending).

use paas_e2e::{
    call, create_space, example, unique, user_with_role, wait_for, zip_of, Options, Platform,
};
use std::path::Path;
use std::time::Duration;

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
    let earlier = p.admin_token().unwrap();
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
    // The lockout is an event of the account.
    let (s, events) = api_get(&p, &earlier, "/v1/events?actor=admin");
    assert_eq!(s, 200);
    assert!(events.to_string().contains("login.locked"), "{events}");
}

/// Issue 18: one source spraying many accounts is held back too, with the stable code.
#[test]
fn one_source_guessing_many_accounts_is_rate_limited() {
    // A small limit, so the failures fit in the minute even with slow (debug) password hashing.
    let p = Platform::start_server_env(Options::default(), &[("PAAS_LOGIN_FAILURES_PER_KEY", "6")])
        .expect("server");
    let client = reqwest::blocking::Client::new();
    let login = |user: &str| {
        let res = client
            .post(format!("{}/v1/auth/login", p.api_url()))
            .json(&serde_json::json!({"username": user, "password": "guess"}))
            .send()
            .unwrap();
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().unwrap_or_default();
        (
            status,
            body["code"].as_str().unwrap_or_default().to_string(),
        )
    };
    // Fewer than any per-account limit on each account, 6 in all from this source.
    for i in 0..2 {
        let user = unique(&format!("u{i}"));
        for _ in 0..3 {
            assert_eq!(login(&user).0, 401);
        }
    }
    assert_eq!(
        login(&unique("fresh")),
        (429, "too_many_requests".to_string())
    );
}

// --- Issue 18: a developer of another space attacks, and every attack is refused. ---

/// A push of `files`; `stream` asks for the NDJSON answer. Answers the status and the body text.
fn push_files(
    p: &Platform,
    token: &str,
    app: &str,
    space: &str,
    files: &[(&str, &[u8], u32)],
    stream: bool,
) -> (u16, String) {
    push_with(p, token, app, space, files, stream, &[])
}

/// [`push_files`] with extra form fields (`random_route`, `hostname`, ...).
fn push_with(
    p: &Platform,
    token: &str,
    app: &str,
    space: &str,
    files: &[(&str, &[u8], u32)],
    stream: bool,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip_of(files)).file_name("app.zip"),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let mut rb = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .header("X-Paas-Space", space)
        .multipart(form);
    if stream {
        rb = rb.header("Accept", "application/x-ndjson");
    }
    let res = rb.send().unwrap();
    let status = res.status().as_u16();
    // A streamed push runs on after its client goes (with no node it waits for instances up to
    // the start timeout): its status is the answer.
    if stream && status == 200 {
        return (status, String::new());
    }
    (status, res.text().unwrap())
}

/// Two spaces, a developer in each (logged in through the API), and the operator's token.
struct Tenants {
    p: Platform,
    admin: String,
    victim_space: String,
    victim: String,
    attacker_space: String,
    attacker: String,
}

fn tenants() -> Tenants {
    let p = Platform::start_server(Options::default()).expect("server");
    let admin = p.admin_token().unwrap();
    let victim_space = format!("{}/prod", unique("victim"));
    let attacker_space = format!("{}/dev", unique("attacker"));
    let mut tokens = Vec::new();
    for space in [&victim_space, &attacker_space] {
        create_space(&p, &admin, space);
        let role = serde_json::json!({"space": space, "role": "developer"});
        tokens.push(user_with_role(&p, &admin, "dev", role).1);
    }
    let attacker = tokens.pop().unwrap();
    let victim = tokens.pop().unwrap();
    Tenants {
        p,
        admin,
        victim_space,
        victim,
        attacker_space,
        attacker,
    }
}

const PLAIN_APP: &[(&str, &[u8], u32)] = &[("app.py", b"print('hi')", 0o644)];

/// Finding 1: a name spelled with percent-escapes is the same app to the authorizer as to the
/// handler, so another space's developer reads, changes and pushes to nothing.
#[test]
fn encoded_names_reach_nothing_outside_the_callers_space() {
    use reqwest::Method;
    let t = tenants();
    let app = unique("shop");
    assert_eq!(
        push_files(&t.p, &t.victim, &app, &t.victim_space, PLAIN_APP, false).0,
        201
    );
    let (s, _) = call(
        &t.p,
        &t.victim,
        Method::PATCH,
        &format!("/v1/apps/{app}/env"),
        Some(serde_json::json!({"set": {"DB_PASSWORD": "hunter2"}, "secret": ["DB_PASSWORD"]})),
        None,
    );
    assert_eq!(s, 200);
    let i = app.find('o').unwrap();
    for hex in ["6f", "6F"] {
        let spelled = format!("{}%{hex}{}", &app[..i], &app[i + 1..]);
        let attacks: Vec<(Method, String, Option<serde_json::Value>)> = vec![
            (
                Method::GET,
                format!("/v1/apps/{spelled}/env?reveal=true"),
                None,
            ),
            (Method::GET, format!("/v1/apps/{spelled}/logs"), None),
            (
                Method::PATCH,
                format!("/v1/apps/{spelled}/env"),
                Some(serde_json::json!({"set": {"EVIL": "1"}})),
            ),
            (Method::POST, format!("/v1/apps/{spelled}/restart"), None),
            (
                Method::POST,
                format!("/v1/apps/{spelled}/log-drains"),
                Some(serde_json::json!({"url": "syslog://127.0.0.1:9"})),
            ),
            (Method::DELETE, format!("/v1/apps/{spelled}"), None),
        ];
        for (m, path, body) in attacks {
            let (s, b) = call(&t.p, &t.attacker, m.clone(), &path, body, None);
            assert_eq!(
                (s, b["code"].as_str()),
                (404, Some("app_not_found")),
                "{m} {path}: {b}"
            );
        }
        // Pushing its own code into the victim's app.
        let (s, b) = push_files(
            &t.p,
            &t.attacker,
            &spelled,
            &t.attacker_space,
            PLAIN_APP,
            false,
        );
        // Names are per space: the push would make the attacker's own app of that name, whose
        // default route the victim's app holds.
        assert_eq!(s, 409, "{b}");
        assert!(b.contains("route_taken"), "{b}");
    }
    // The victim's app is as it was: one push, one env change, no drain, nothing from the attacker.
    let (_, env) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{app}/env"),
        None,
        None,
    );
    assert!(env["env"].get("EVIL").is_none(), "{env}");
    let (_, revs) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{app}/revisions"),
        None,
        None,
    );
    assert_eq!(revs["revisions"].as_array().unwrap().len(), 2, "{revs}");
    let (_, drains) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{app}/log-drains"),
        None,
        None,
    );
    assert_eq!(drains["drains"], serde_json::json!([]), "{drains}");
    // The same spelling from the app's own developer reaches it.
    let (s, _) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{}%6F{}", &app[..i], &app[i + 1..]),
        None,
        None,
    );
    assert_eq!(s, 200);
}

/// Finding 2: an app is in its space from the moment it exists. A first push that fails after
/// the app was created (a Dockerfile with no node to build it) and a streamed push both leave an
/// app only its own space reaches.
#[test]
fn apps_from_failed_and_streamed_first_pushes_belong_to_their_space() {
    use reqwest::Method;
    let t = tenants();
    let failed = unique("failed");
    let (s, b) = push_files(
        &t.p,
        &t.victim,
        &failed,
        &t.victim_space,
        &[("Dockerfile", b"FROM paas-stack:bookworm\n", 0o644)],
        false,
    );
    assert_eq!(s, 422, "the build cannot run without a node: {b}");
    assert!(b.contains("staging_failed"), "{b}");
    let streamed = unique("streamed");
    let (s, b) = push_files(&t.p, &t.victim, &streamed, &t.victim_space, PLAIN_APP, true);
    assert_eq!(s, 200, "{b}");
    // The answer began before the task created the app: wait until it exists.
    wait_for(Duration::from_secs(30), "the streamed push's app", || {
        let (s, _) = call(
            &t.p,
            &t.admin,
            Method::GET,
            &format!("/v1/apps/{streamed}"),
            None,
            None,
        );
        (s == 200).then_some(())
    })
    .unwrap();

    for app in [&failed, &streamed] {
        // The owner's space has it ...
        let (s, b) = call(
            &t.p,
            &t.victim,
            Method::GET,
            &format!("/v1/apps/{app}"),
            None,
            None,
        );
        assert_eq!(s, 200, "{app}: {b}");
        // ... and nobody else reaches it.
        for (m, path) in [
            (Method::GET, format!("/v1/apps/{app}")),
            (Method::GET, format!("/v1/apps/{app}/env")),
            (Method::POST, format!("/v1/apps/{app}/stop")),
            (Method::DELETE, format!("/v1/apps/{app}")),
        ] {
            let (s, b) = call(&t.p, &t.attacker, m.clone(), &path, None, None);
            assert_eq!(
                (s, b["code"].as_str()),
                (404, Some("app_not_found")),
                "{m} {path}: {b}"
            );
        }
        let (s, b) = push_files(&t.p, &t.attacker, app, &t.attacker_space, PLAIN_APP, false);
        assert_eq!(s, 409, "{b}");
        let (_, list) = call(&t.p, &t.attacker, Method::GET, "/v1/apps", None, None);
        assert!(!list.to_string().contains(app.as_str()), "{list}");
        let (_, list) = call(&t.p, &t.victim, Method::GET, "/v1/apps", None, None);
        assert!(list.to_string().contains(app.as_str()), "{list}");
    }
}

/// Finding 3: a host belongs to one space. Another space maps neither a path under an app's
/// default host nor anything under a custom host someone else serves, and cannot push an app
/// whose default host another space already serves paths on.
#[test]
fn hosts_and_paths_under_them_belong_to_one_space() {
    use reqwest::Method;
    let t = tenants();
    let shop = unique("shop");
    let evil = unique("evil");
    assert_eq!(
        push_files(&t.p, &t.victim, &shop, &t.victim_space, PLAIN_APP, false).0,
        201
    );
    assert_eq!(
        push_files(
            &t.p,
            &t.attacker,
            &evil,
            &t.attacker_space,
            PLAIN_APP,
            false
        )
        .0,
        201
    );
    let custom = format!("{}.example.com", unique("pay"));
    let (s, b) = call(
        &t.p,
        &t.victim,
        Method::POST,
        &format!("/v1/apps/{shop}/routes"),
        Some(serde_json::json!({"route": custom})),
        None,
    );
    assert_eq!(s, 201, "{b}");
    let future = unique("future");
    let (s, b) = call(
        &t.p,
        &t.victim,
        Method::POST,
        &format!("/v1/apps/{shop}/routes"),
        Some(serde_json::json!({"route": format!("{future}.localhost/api")})),
        None,
    );
    assert_eq!(s, 201, "a host nobody serves yet is first come: {b}");
    for route in [
        format!("{shop}.localhost/checkout"),
        custom.clone(),
        format!("{custom}/admin"),
        format!("{future}.localhost/"),
        format!("{future}.localhost/other"),
    ] {
        let (s, b) = call(
            &t.p,
            &t.attacker,
            Method::POST,
            &format!("/v1/apps/{evil}/routes"),
            Some(serde_json::json!({"route": route})),
            None,
        );
        assert_eq!(
            (s, b["code"].as_str()),
            (409, Some("route_taken")),
            "{route}: {b}"
        );
    }
    // A new app whose default route another space serves paths on is refused with a clear error.
    let (s, b) = push_files(
        &t.p,
        &t.attacker,
        &future,
        &t.attacker_space,
        PLAIN_APP,
        false,
    );
    assert_eq!(s, 409, "{b}");
    assert!(
        b.contains("route_taken") && b.contains("another space"),
        "{b}"
    );
    // The owner's space maps under its own host.
    let (s, b) = call(
        &t.p,
        &t.victim,
        Method::POST,
        &format!("/v1/apps/{shop}/routes"),
        Some(serde_json::json!({"route": format!("{shop}.localhost/checkout")})),
        None,
    );
    assert_eq!(s, 201, "{b}");
    // Finding 5: the route list shows only the caller's own.
    let (_, routes) = call(&t.p, &t.attacker, Method::GET, "/v1/routes", None, None);
    let text = routes.to_string();
    assert!(
        text.contains(&evil) && !text.contains(&shop) && !text.contains(&custom),
        "{text}"
    );
    let (_, routes) = call(&t.p, &t.admin, Method::GET, "/v1/routes", None, None);
    assert!(
        routes.to_string().contains(&custom),
        "operators see every route"
    );
}

/// Finding 5: spaces and events are scoped; an app token (and its event) needs a role on the
/// app.
#[test]
fn lists_tokens_and_events_stay_inside_the_callers_reach() {
    use reqwest::Method;
    let t = tenants();
    let shop = unique("shop");
    assert_eq!(
        push_files(&t.p, &t.victim, &shop, &t.victim_space, PLAIN_APP, false).0,
        201
    );
    let (_, spaces) = call(&t.p, &t.attacker, Method::GET, "/v1/spaces", None, None);
    let list = spaces["spaces"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{spaces}");
    assert_eq!(
        format!(
            "{}/{}",
            list[0]["org"].as_str().unwrap(),
            list[0]["name"].as_str().unwrap()
        ),
        t.attacker_space
    );
    let (_, spaces) = call(&t.p, &t.admin, Method::GET, "/v1/spaces", None, None);
    assert!(spaces["spaces"].as_array().unwrap().len() >= 3, "{spaces}");

    // A token "for" the victim's app is made like one for an app that does not exist yet (CI
    // creates its token before the first push), writes nothing into the victim's audit log and
    // reaches nothing.
    let (s, b) = call(
        &t.p,
        &t.attacker,
        Method::POST,
        "/v1/tokens",
        Some(serde_json::json!({"name": "mine", "scope": "deploy", "app": shop})),
        None,
    );
    assert_eq!(s, 201, "{b}");
    let stolen = b["token"].as_str().unwrap().to_string();
    for path in [format!("/v1/apps/{shop}"), format!("/v1/apps/{shop}/env")] {
        let (s, b) = call(&t.p, &stolen, Method::GET, &path, None, None);
        assert_eq!(
            (s, b["code"].as_str()),
            (404, Some("app_not_found")),
            "{path}: {b}"
        );
    }
    let (_, events) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{shop}/events"),
        None,
        None,
    );
    assert!(
        !events.to_string().contains("token.create"),
        "no event of the attacker in the victim's app: {events}"
    );
    // A push into a space the caller has no role in is a space that does not exist for it.
    let (s, b) = push_files(
        &t.p,
        &t.attacker,
        &unique("x"),
        &t.victim_space,
        PLAIN_APP,
        false,
    );
    assert_eq!(s, 404, "{b}");
    assert!(b.contains("space_not_found"), "{b}");

    // Squatting a name: the attacker creates an app with a drain to its own sink and deletes
    // it; the victim's later app of that name gets neither the drain nor the attacker's history.
    let squat = unique("squat");
    assert_eq!(
        push_files(
            &t.p,
            &t.attacker,
            &squat,
            &t.attacker_space,
            PLAIN_APP,
            false
        )
        .0,
        201
    );
    let (s, _) = call(
        &t.p,
        &t.attacker,
        Method::POST,
        &format!("/v1/apps/{squat}/log-drains"),
        Some(serde_json::json!({"url": "syslog://127.0.0.1:9"})),
        None,
    );
    assert_eq!(s, 201);
    let (s, _) = call(
        &t.p,
        &t.attacker,
        Method::DELETE,
        &format!("/v1/apps/{squat}"),
        None,
        None,
    );
    assert_eq!(s, 204);
    assert_eq!(
        push_files(&t.p, &t.victim, &squat, &t.victim_space, PLAIN_APP, false).0,
        201
    );
    let (_, drains) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{squat}/log-drains"),
        None,
        None,
    );
    assert_eq!(drains["drains"], serde_json::json!([]), "{drains}");
    let (_, events) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{squat}/events"),
        None,
        None,
    );
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"app.create"), "{events}");
    assert!(
        !kinds.contains(&"app.log_drain.add") && !kinds.contains(&"app.delete"),
        "{events}"
    );
}

/// Issue 18 basics: the dashboard's cookies are HttpOnly and SameSite=Strict, and Secure when
/// the request came over TLS (not over plain HTTP, where the browser would drop a Secure one).
#[test]
fn session_cookies_are_httponly_strict_and_secure_behind_tls() {
    let certs = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(
        certs.path().join("localhost.key"),
        c.key_pair.serialize_pem(),
    )
    .unwrap();
    std::fs::write(certs.path().join("localhost.crt"), c.cert.pem()).unwrap();
    let p = Platform::start_server_env(
        Options::default(),
        &[
            ("PAAS_TLS_LISTEN", "127.0.0.1:0"),
            ("PAAS_TLS_CERT_DIR", certs.path().to_str().unwrap()),
        ],
    )
    .expect("server");
    let tls_addr: std::net::SocketAddr =
        wait_for(Duration::from_secs(10), "the TLS listener", || {
            std::fs::read_to_string(p.data_dir().join("tls-listen-addr"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();
    let https = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(c.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", tls_addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = |res: &reqwest::blocking::Response, name: &str| -> String {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", res.headers()))
            .to_string()
    };
    for (base, client, tls) in [
        (
            format!("https://localhost:{}", tls_addr.port()),
            &https,
            true,
        ),
        (p.api_url(), &http, false),
    ] {
        let form = client.get(format!("{base}/login")).send().unwrap();
        assert_eq!(form.status().as_u16(), 200);
        let csrf_cookie = cookie(&form, "paas_login_csrf");
        let html = form.text().unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("the form's csrf")
            .to_string();
        let res = client
            .post(format!("{base}/login"))
            .header("cookie", csrf_cookie.split(';').next().unwrap().to_string())
            .form(&[
                ("username", "admin"),
                ("password", p.admin_password.as_str()),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 303, "{base}");
        let session = cookie(&res, "paas_session");
        for c in [&csrf_cookie, &session] {
            assert!(c.contains("HttpOnly"), "{c}");
            assert!(c.contains("SameSite=Strict"), "{c}");
            assert_eq!(c.contains("Secure"), tls, "{base}: {c}");
        }
    }
}

/// Spaces own their names, as in Cloud Foundry: two spaces each have an app called the same; the
/// target space says which one a request means, each keeps its own env, events and default
/// route, and a default route that is taken asks for `--hostname` or `--random-route`.
#[test]
fn app_names_belong_to_their_space() {
    use reqwest::Method;
    let t = tenants();
    let app = unique("web");
    let (s, b) = push_files(&t.p, &t.victim, &app, &t.victim_space, PLAIN_APP, false);
    assert_eq!(s, 201, "{b}");
    let victims: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(
        victims["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{app}.localhost")),
        "{victims}"
    );
    // The same name in another space: its default route is taken, and the error says what to do.
    let (s, b) = push_files(&t.p, &t.attacker, &app, &t.attacker_space, PLAIN_APP, false);
    assert_eq!(s, 409, "{b}");
    assert!(
        b.contains("route_taken") && b.contains("--hostname") && b.contains("--random-route"),
        "{b}"
    );
    // Nothing was made by the refused push.
    let (s, _) = call(
        &t.p,
        &t.attacker,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!(s, 404);
    let (s, b) = push_with(
        &t.p,
        &t.attacker,
        &app,
        &t.attacker_space,
        PLAIN_APP,
        false,
        &[("random_route", "true")],
    );
    assert_eq!(s, 201, "{b}");
    let mine: serde_json::Value = serde_json::from_str(&b).unwrap();
    let url = mine["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{app}-")), "{mine}");
    assert_ne!(url, victims["url"].as_str().unwrap());

    // Each developer reaches their own app, with or without naming the space.
    for (who, space, want) in [
        (&t.victim, &t.victim_space, &victims),
        (&t.attacker, &t.attacker_space, &mine),
    ] {
        for named in [None, Some(space.as_str())] {
            let (s, b) = call(
                &t.p,
                who,
                Method::GET,
                &format!("/v1/apps/{app}"),
                None,
                named,
            );
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["url"], want["url"], "{b}");
        }
    }
    // A change to one is not a change to the other.
    let (s, b) = call(
        &t.p,
        &t.attacker,
        Method::PATCH,
        &format!("/v1/apps/{app}/env"),
        Some(serde_json::json!({"set": {"MINE": "1"}})),
        None,
    );
    assert!(s < 300, "{s} {b}");
    let (_, env) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{app}/env"),
        None,
        None,
    );
    assert!(env["env"].get("MINE").is_none(), "{env}");
    let (_, ev) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{app}/events"),
        None,
        None,
    );
    assert!(!ev.to_string().contains("MINE"), "{ev}");
    assert!(
        !ev.to_string().contains(&mine["url"].as_str().unwrap()[7..]),
        "{ev}"
    );

    // The operator reaches both: the name alone is ambiguous and says where to look.
    let (s, b) = call(
        &t.p,
        &t.admin,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (409, Some("ambiguous_app")), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains(&t.victim_space)
            && b["message"].as_str().unwrap().contains(&t.attacker_space),
        "{b}"
    );
    let (s, b) = call(
        &t.p,
        &t.admin,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        Some(&t.attacker_space),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["url"], mine["url"]);
    let (_, list) = call(&t.p, &t.admin, Method::GET, "/v1/apps", None, None);
    let named = list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == app.as_str())
        .count();
    assert_eq!(named, 2, "{list}");

    // A token made for the app is pinned to the creator's app.
    let (s, b) = call(
        &t.p,
        &t.attacker,
        Method::POST,
        "/v1/tokens",
        Some(serde_json::json!({"name": "ci", "scope": "deploy", "app": app})),
        None,
    );
    assert_eq!(s, 201, "{b}");
    let token = b["token"].as_str().unwrap().to_string();
    let (s, b) = call(
        &t.p,
        &token,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["url"], mine["url"]);

    // Deleting one leaves the other.
    let (s, _) = call(
        &t.p,
        &t.attacker,
        Method::DELETE,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!(s, 204);
    let (s, b) = call(
        &t.p,
        &t.victim,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["url"], victims["url"]);
    // The pinned token does not reach an app made later under the same name.
    let (s, b) = call(
        &t.p,
        &token,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (404, Some("app_not_found")), "{b}");
    let (s, b) = push_with(
        &t.p,
        &token,
        &app,
        &t.attacker_space,
        PLAIN_APP,
        false,
        &[("hostname", &format!("{app}-again"))],
    );
    assert_eq!(s, 404, "a token for a deleted app creates nothing: {b}");
    // A hostname of one's own works for a new app; a bad one is refused with the field named.
    let (s, b) = push_with(
        &t.p,
        &t.attacker,
        &app,
        &t.attacker_space,
        PLAIN_APP,
        false,
        &[("hostname", "Not A Label")],
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("invalid hostname"), "{b}");
    let (s, b) = push_with(
        &t.p,
        &t.attacker,
        &app,
        &t.attacker_space,
        PLAIN_APP,
        false,
        &[("hostname", &format!("{app}-again"))],
    );
    assert_eq!(s, 201, "{b}");
    assert!(b.contains(&format!("http://{app}-again.localhost")), "{b}");
}

/// Cloud Foundry's org roles: a manager makes spaces in its org and gives roles there, and is
/// admin in each of its spaces (those made later too); an auditor reads them; neither reaches
/// another org.
#[test]
fn org_managers_run_their_org_and_nothing_else() {
    use reqwest::Method;
    let t = tenants();
    let (org, _) = t.victim_space.split_once('/').unwrap();
    let (other_org, _) = t.attacker_space.split_once('/').unwrap();
    let mut users = Vec::new();
    for role in ["manager", "auditor"] {
        let (user, token, roles) = user_with_role(
            &t.p,
            &t.admin,
            role,
            serde_json::json!({"org": org, "role": role}),
        );
        assert_eq!(roles["org_roles"][0]["role"], role, "{roles}");
        users.push((user, token));
    }
    let (manager, auditor) = (&users[0].1, &users[1].1);
    let auditor_name = users[1].0.clone();
    // A space made later in the org: the manager makes it and is admin there.
    let (s, b) = call(
        &t.p,
        manager,
        Method::POST,
        "/v1/spaces",
        Some(serde_json::json!({"org": org, "name": "staging"})),
        None,
    );
    assert_eq!(s, 201, "{b}");
    let staging = format!("{org}/staging");
    let app = unique("web");
    let (s, b) = push_files(&t.p, manager, &app, &staging, PLAIN_APP, false);
    assert_eq!(s, 201, "{b}");
    // The auditor reads it and changes nothing.
    let (s, b) = call(
        &t.p,
        auditor,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &t.p,
        auditor,
        Method::POST,
        &format!("/v1/apps/{app}/restart"),
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "{b}");
    let (_, spaces) = call(&t.p, auditor, Method::GET, "/v1/spaces", None, None);
    assert!(spaces.to_string().contains("staging"), "{spaces}");
    assert!(!spaces.to_string().contains(other_org), "{spaces}");
    // The manager gives roles in its org's spaces, not elsewhere, and makes no space elsewhere.
    let (s, b) = call(
        &t.p,
        manager,
        Method::PUT,
        &format!("/v1/users/{auditor_name}/roles"),
        Some(serde_json::json!({"space": staging, "role": "developer"})),
        None,
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &t.p,
        auditor,
        Method::POST,
        &format!("/v1/apps/{app}/restart"),
        None,
        None,
    );
    assert_ne!(s, 403, "a developer of the space now: {b}");
    for (path, body) in [
        (
            format!("/v1/users/{auditor_name}/roles"),
            serde_json::json!({"space": t.attacker_space, "role": "developer"}),
        ),
        (
            format!("/v1/users/{auditor_name}/roles"),
            serde_json::json!({"org": other_org, "role": "manager"}),
        ),
    ] {
        let (s, b) = call(&t.p, manager, Method::PUT, &path, Some(body), None);
        assert_eq!(
            (s, b["code"].as_str()),
            (403, Some("forbidden")),
            "{path}: {b}"
        );
    }
    let (s, b) = call(
        &t.p,
        manager,
        Method::POST,
        "/v1/spaces",
        Some(serde_json::json!({"org": other_org, "name": "mine"})),
        None,
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "{b}");
    // The other org's apps stay out of reach.
    let other_app = unique("api");
    let (s, b) = push_files(
        &t.p,
        &t.attacker,
        &other_app,
        &t.attacker_space,
        PLAIN_APP,
        false,
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &t.p,
        manager,
        Method::GET,
        &format!("/v1/apps/{other_app}"),
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (404, Some("app_not_found")), "{b}");
    // An auditor cannot make spaces even in its own org.
    let (s, b) = call(
        &t.p,
        auditor,
        Method::POST,
        "/v1/spaces",
        Some(serde_json::json!({"org": org, "name": "nope"})),
        None,
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "{b}");
}
