//! Issue 7, REST API: every list paginates (`limit`, `page_token`, `Link: rel="next"`,
//! `X-Total-Count`) and the CLI follows the pages; issue 6, audit: rollbacks, logins and what a
//! CI token did are events, per app and in the platform list (`GET /v1/events`).

use paas_e2e::{unique, zip_of, Options, Platform};
use serde_json::{json, Value};
use std::collections::HashSet;

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// GET `url`: status, `Link` next URL, `X-Total-Count`, body.
fn get_page(url: &str, token: &str) -> (u16, Option<String>, Option<u64>, Value) {
    let res = client().get(url).bearer_auth(token).send().unwrap();
    let status = res.status().as_u16();
    let next = res
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_string())
        .map(|v| {
            assert!(v.ends_with("; rel=\"next\""), "{v}");
            v[v.find('<').unwrap() + 1..v.find('>').unwrap()].to_string()
        });
    let total = res
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, next, total, res.json().unwrap_or_default())
}

/// Walks every page from `path`; returns the items under `field` and the number of pages.
fn walk(p: &Platform, token: &str, path: &str, field: &str) -> (Vec<Value>, usize, u64) {
    let mut url = format!("{}{path}", p.api_url());
    let mut items = Vec::new();
    let mut pages = 0;
    let mut total = None;
    loop {
        let (status, next, count, body) = get_page(&url, token);
        assert_eq!(status, 200, "{url}: {body}");
        pages += 1;
        let count = count.expect("X-Total-Count");
        // The total is the same on every page.
        assert_eq!(*total.get_or_insert(count), count);
        items.extend(body[field].as_array().unwrap().iter().cloned());
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    (items, pages, total.unwrap_or(0))
}

fn create_token(p: &Platform, admin: &str, name: &str, scope: &str, app: Option<&str>) -> Value {
    let res = client()
        .post(format!("{}/v1/tokens", p.api_url()))
        .bearer_auth(admin)
        .json(&json!({"name": name, "scope": scope, "app": app, "expires_in": "1d"}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    res.json().unwrap()
}

#[test]
fn lists_paginate_and_the_cli_follows_the_pages() {
    let p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    // More than one default page (100).
    let mut created = HashSet::new();
    for i in 0..105 {
        let t = create_token(&p, &admin, &format!("tok-{i:03}"), "read", None);
        created.insert(t["id"].as_str().unwrap().to_string());
    }

    // Walked 25 at a time: 5 pages, every token once.
    let (items, pages, total) = walk(&p, &admin, "/v1/tokens?limit=25", "tokens");
    assert_eq!((pages, total), (5, 105));
    let ids: Vec<String> = items
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 105, "repeated or missing tokens");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), created);
    // Without a limit: the default page of 100, then the rest.
    let (status, next, _, body) = get_page(&format!("{}/v1/tokens", p.api_url()), &admin);
    assert_eq!(status, 200);
    assert_eq!(body["tokens"].as_array().unwrap().len(), 100);
    let (_, last, _, body) = get_page(&next.expect("a next page"), &admin);
    assert_eq!(body["tokens"].as_array().unwrap().len(), 5);
    assert!(last.is_none());

    // Events: oldest first, across pages, none repeated (105 token.create + the logins).
    let (events, pages, total) = walk(&p, &admin, "/v1/events?limit=40", "events");
    assert_eq!(events.len() as u64, total);
    assert!(pages >= 3, "{pages}");
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "not oldest first");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "token.create")
            .count(),
        105
    );

    // The CLI shows everything, following the pages.
    let out = p.cli(&["tokens", "list", "--json"]);
    assert!(out.ok(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 105, "{v}");
    let out = p.cli(&["events", "--json"]);
    assert!(out.ok(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len() as u64, total);

    // Bad parameters: 400 with a stable code, on every list.
    for path in [
        "/v1/tokens",
        "/v1/apps",
        "/v1/events",
        "/v1/users",
        "/v1/nodes",
    ] {
        for (query, code) in [
            ("limit=0", "invalid_limit"),
            ("limit=1001", "invalid_limit"),
            ("limit=ten", "invalid_limit"),
            ("page_token=not-ours", "invalid_page_token"),
        ] {
            let (status, _, _, body) = get_page(&format!("{}{path}?{query}", p.api_url()), &admin);
            assert_eq!(status, 400, "{path}?{query}: {body}");
            assert_eq!(body["code"], code, "{path}?{query}");
            assert!(body["message"].is_string());
        }
    }
    let (status, _, total, body) = get_page(&format!("{}/v1/apps?limit=1000", p.api_url()), &admin);
    assert_eq!((status, total), (200, Some(0)), "{body}");
}

fn push(p: &Platform, token: &str, app: &str) -> u16 {
    let zip = zip_of(&[("app.py", b"print('hi')", 0o644)]);
    let form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
    );
    client()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn events_name_the_token_and_record_rollbacks_and_logins() {
    let p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    let app = unique("audited");
    let ci = create_token(&p, &admin, "deployer", "deploy", Some(&app));
    let ci_token = ci["token"].as_str().unwrap();
    assert_eq!(push(&p, ci_token, &app), 201);
    assert_eq!(push(&p, ci_token, &app), 201);
    let res = client()
        .post(format!("{}/v1/apps/{app}/rollback", p.api_url()))
        .bearer_auth(ci_token)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let (events, _, _) = walk(&p, &admin, &format!("/v1/apps/{app}/events"), "events");
    let by_token = "admin (token deployer)";
    for kind in ["app.create", "app.push", "app.rollback"] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == kind && e["actor"] == by_token),
            "{kind} by {by_token} missing: {events:?}"
        );
    }
    let out = p.cli(&["events", &app]);
    assert!(out.ok() && out.stdout.contains(by_token), "{out:?}");

    // Logins are platform events: a user sees their own, an operator everyone's.
    let user = unique("auditor");
    assert!(p.cli(&["add-user", &user, "-p", "auditor-password"]).ok());
    let res = client()
        .post(format!("{}/v1/auth/login", p.api_url()))
        .json(&json!({"username": user, "password": "auditor-password"}))
        .send()
        .unwrap();
    let user_token = res.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (own, _, _) = walk(&p, &user_token, "/v1/events", "events");
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e["actor"] == user.as_str()), "{own:?}");
    assert!(own.iter().any(|e| e["kind"] == "login"), "{own:?}");
    let (theirs, _, _) = walk(&p, &admin, &format!("/v1/events?actor={user}"), "events");
    assert_eq!(theirs.len(), own.len());
    // Admin's own list includes what its token did, with the app named.
    let (mine, _, _) = walk(&p, &admin, "/v1/events?actor=admin", "events");
    assert!(
        mine.iter()
            .any(|e| e["kind"] == "app.rollback" && e["app"] == app.as_str()),
        "{mine:?}"
    );
    let out = p.cli(&["events"]);
    assert!(out.ok() && out.stdout.contains("APP"), "{out:?}");
    assert!(
        out.stdout.contains("login") && out.stdout.contains(&app),
        "{out:?}"
    );
}
