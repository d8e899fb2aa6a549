//! Issue 18's authorization matrix, against the real server (no agent, no Docker): every
//! operation of `/v1/openapi.json` (plus the routed but undocumented operator ones) × every kind
//! of caller × every spelling of the names in the path, each asserted allowed or denied.
//!
//! A new operation without a row in [`class_of`] fails the test, so the matrix grows with the API.
//!
//! The oracle: a denial is exactly the status and stable code the caller's class gets (401
//! `unauthorized`, 403 `forbidden`, 404 `app_not_found`, or for a push by a caller who reaches no
//! app of that name and has no role in the space it would be created in, 404 `space_not_found`);
//! an allowed request gets none of those codes. Request bodies are
//! deliberately minimal (`{}`), so an allowed request may well fail its own validation: that
//! still shows the authorizer let it through.

use paas_e2e::{unique, wait_for, Options, Platform};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    AnyUser,
    AppViewer,
    AppDeveloper,
    /// A push: like AppDeveloper; a caller who reaches no app of that name would create one in
    /// the target space (the default one here, where they hold no role).
    Push,
    Operator,
    /// Spaces and roles: operators, and managers of the org (the handler checks which org).
    OrgAdmin,
    /// Managing one's own API tokens: a login or an unrestricted admin token.
    OwnTokens,
    /// Reading a space's own settings (its quota): a role there (not through a token made for
    /// one app), its org's managers and auditors, operators; others do not learn it exists.
    SpaceReader,
    /// An app's settings only its space's admins change (ssh): operators, org managers, space
    /// admins.
    AppAdmin,
    /// A space's settings its admins change (ssh): operators, org managers, space admins; others
    /// with a role there are refused, the rest do not learn it exists.
    SpaceAdmin,
    /// A space's resources its developers change (service instances): operators, org managers,
    /// space admins and developers; viewers and auditors are refused, the rest do not learn the
    /// space exists.
    SpaceDeveloper,
}

/// Every documented operation's class. Adding an operation to the API without a row here fails
/// the test: decide who may call it.
fn class_of(method: &str, path: &str) -> Option<Class> {
    use Class::*;
    Some(match (method, path) {
        ("post", "/v1/auth/login" | "/v1/auth/refresh" | "/v1/auth/logout") => Public,
        ("get", "/v1/openapi.json") => Public,
        // Which controller this is and whether it leads the scheduler (issue 20).
        ("get", "/v1/info") => Public,
        ("get", "/v1/admin/keys") | ("post", "/v1/admin/keys/rotate") => Operator,
        ("get", "/v1/apps" | "/v1/events" | "/v1/nodes" | "/v1/routes" | "/v1/spaces") => AnyUser,
        ("get", "/v1/buildpacks") => AnyUser,
        // The platform CA of instance identity certificates (issue 25): public material.
        ("get", "/v1/instance-identity/ca.pem") => AnyUser,
        ("post", "/v1/resources/match") => AnyUser,
        ("post", "/v1/apps/{name}/push") => Push,
        (
            "get",
            "/v1/apps/{name}"
            | "/v1/apps/{name}/logs"
            | "/v1/apps/{name}/logs/stream"
            | "/v1/apps/{name}/events"
            | "/v1/apps/{name}/metrics"
            | "/v1/apps/{name}/env"
            | "/v1/apps/{name}/revisions"
            | "/v1/apps/{name}/routes"
            | "/v1/apps/{name}/log-drains"
            | "/v1/apps/{name}/tasks"
            | "/v1/apps/{name}/tasks/{id}"
            | "/v1/apps/{name}/cron"
            | "/v1/apps/{name}/autoscale"
            | "/v1/apps/{name}/deployment",
        ) => AppViewer,
        ("delete" | "patch", "/v1/apps/{name}") => AppDeveloper,
        ("patch", "/v1/apps/{name}/env") => AppDeveloper,
        (
            "post",
            "/v1/apps/{name}/restart"
            | "/v1/apps/{name}/stop"
            | "/v1/apps/{name}/start"
            | "/v1/apps/{name}/rollback"
            | "/v1/apps/{name}/instances/{index}/restart"
            | "/v1/apps/{name}/tasks"
            | "/v1/apps/{name}/tasks/{id}/cancel"
            | "/v1/apps/{name}/cron"
            | "/v1/apps/{name}/deployment/continue"
            | "/v1/apps/{name}/deployment/cancel",
        ) => AppDeveloper,
        // ssh (issue 21): a WebSocket upgrade, refused like any app change before it.
        ("get", "/v1/apps/{name}/ssh") => AppDeveloper,
        ("get", "/v1/apps/{name}/ssh-enabled") => AppViewer,
        ("put", "/v1/apps/{name}/ssh-enabled") => AppAdmin,
        ("get", "/v1/spaces/{org}/{space}/ssh-allowed") => SpaceReader,
        ("put", "/v1/spaces/{org}/{space}/ssh-allowed") => SpaceAdmin,
        ("delete", "/v1/apps/{name}/cron/{id}") => AppDeveloper,
        // Autoscaling (issue 23): a developer sets or removes the policy.
        ("put" | "delete", "/v1/apps/{name}/autoscale") => AppDeveloper,
        ("post" | "delete", "/v1/apps/{name}/routes" | "/v1/apps/{name}/log-drains") => {
            AppDeveloper
        }
        ("get" | "post", "/v1/tokens") | ("delete", "/v1/tokens/{id}") => OwnTokens,
        ("get" | "post", "/v1/users") => Operator,
        ("put", "/v1/users/{name}/roles") | ("post", "/v1/spaces") => OrgAdmin,
        ("post", "/v1/nodes/{name}/drain") => Operator,
        ("get", "/v1/nodes/metrics") => Operator,
        ("get", "/v1/spaces/{org}/{space}/quota") => SpaceReader,
        ("put", "/v1/spaces/{org}/{space}/quota") => OrgAdmin,
        // `paas apply` (issue 25): a document changes the space's apps and services.
        ("post", "/v1/spaces/{org}/{space}/apply") => SpaceDeveloper,
        ("post", "/v1/buildpacks") | ("delete", "/v1/buildpacks/{name}") => Operator,
        ("get" | "post", "/v1/base-images") | ("delete", "/v1/base-images/{name}") => Operator,
        // Domains (issue 22): the list shows what the caller's roles reach; the handlers decide
        // on the domain's space (a developer there), and a domain outside the caller's reach is
        // 404 `not_found`, as a missing one (e2e/tests/domains.rs).
        ("get" | "post", "/v1/domains") => AnyUser,
        ("delete", "/v1/domains/{domain}") | ("put", "/v1/domains/{domain}/certificate") => AnyUser,
        ("put", "/v1/domains/{domain}/acme") => AnyUser,
        // Network policies (issue 25): the list shows what the caller sees; the handlers need a
        // developer of both apps' spaces to change one (e2e/tests/network.rs).
        ("get" | "post", "/v1/network-policies") | ("delete", "/v1/network-policies/{id}") => {
            AnyUser
        }
        // Services (issue 22): brokers are the operators'; the marketplace and instances are the
        // target space's (`?space=`), bindings the app's (e2e/tests/services.rs).
        ("get" | "post", "/v1/service-brokers") | ("delete", "/v1/service-brokers/{broker}") => {
            Operator
        }
        ("get", "/v1/marketplace" | "/v1/services" | "/v1/services/{service}") => SpaceReader,
        ("get", "/v1/services/{service}/backups") => SpaceReader,
        ("post", "/v1/services") | ("patch" | "delete", "/v1/services/{service}") => SpaceDeveloper,
        ("post", "/v1/services/{service}/backups" | "/v1/services/{service}/restore") => {
            SpaceDeveloper
        }
        ("get", "/v1/apps/{name}/bindings") => AppViewer,
        ("post", "/v1/apps/{name}/bindings") | ("delete", "/v1/apps/{name}/bindings/{service}") => {
            AppDeveloper
        }
        _ => return None,
    })
}

/// Operations routed but left out of the OpenAPI document (multipart or issue 3's operator
/// buildpacks): checked all the same.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("get", "/v1/buildpacks"),
    ("post", "/v1/buildpacks"),
    ("delete", "/v1/buildpacks/{name}"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Operator,
    /// Manager of the victim space's org (admin in each of its spaces).
    OrgManager,
    /// Auditor of the victim space's org (viewer in each of its spaces).
    OrgAuditor,
    SpaceAdmin,
    Developer,
    Viewer,
    OtherSpaceDeveloper,
    NoRole,
    /// A deploy token of the victim space's developer, restricted to another app.
    TokenForOtherApp,
    Expired,
    Revoked,
    Anonymous,
}

const EVERYONE: [Who; 12] = [
    Who::Operator,
    Who::OrgManager,
    Who::OrgAuditor,
    Who::SpaceAdmin,
    Who::Developer,
    Who::Viewer,
    Who::OtherSpaceDeveloper,
    Who::NoRole,
    Who::TokenForOtherApp,
    Who::Expired,
    Who::Revoked,
    Who::Anonymous,
];

/// `None`: allowed; `Some((status, code))`: the denial expected.
fn expected(class: Class, who: Who) -> Option<(u16, &'static str)> {
    use Who::*;
    const UNAUTHORIZED: Option<(u16, &str)> = Some((401, "unauthorized"));
    const FORBIDDEN: Option<(u16, &str)> = Some((403, "forbidden"));
    const NOT_FOUND: Option<(u16, &str)> = Some((404, "app_not_found"));
    if class == Class::Public {
        return None;
    }
    if matches!(who, Expired | Revoked | Anonymous) {
        return UNAUTHORIZED;
    }
    match class {
        Class::Public | Class::AnyUser => None,
        Class::AppViewer => match who {
            Operator | OrgManager | OrgAuditor | SpaceAdmin | Developer | Viewer => None,
            _ => NOT_FOUND,
        },
        Class::AppDeveloper => match who {
            Operator | OrgManager | SpaceAdmin | Developer => None,
            Viewer | OrgAuditor => FORBIDDEN,
            _ => NOT_FOUND,
        },
        Class::Push => match who {
            Operator | OrgManager | SpaceAdmin | Developer => None,
            Viewer | OrgAuditor => FORBIDDEN,
            TokenForOtherApp => NOT_FOUND,
            // Names are per space: another space's app is not seen; the push would create an
            // app in the default space, where these callers have no role.
            _ => Some((404, "space_not_found")),
        },
        Class::Operator => match who {
            Operator => None,
            _ => FORBIDDEN,
        },
        Class::OrgAdmin => match who {
            Operator | OrgManager => None,
            _ => FORBIDDEN,
        },
        Class::OwnTokens => match who {
            TokenForOtherApp => FORBIDDEN,
            _ => None,
        },
        Class::SpaceReader => match who {
            Operator | OrgManager | OrgAuditor | SpaceAdmin | Developer | Viewer => None,
            _ => Some((404, "space_not_found")),
        },
        Class::AppAdmin => match who {
            Operator | OrgManager | SpaceAdmin => None,
            Developer | Viewer | OrgAuditor => FORBIDDEN,
            _ => NOT_FOUND,
        },
        Class::SpaceAdmin => match who {
            Operator | OrgManager | SpaceAdmin => None,
            Developer | Viewer | OrgAuditor => FORBIDDEN,
            _ => Some((404, "space_not_found")),
        },
        Class::SpaceDeveloper => match who {
            Operator | OrgManager | SpaceAdmin | Developer => None,
            Viewer | OrgAuditor => FORBIDDEN,
            _ => Some((404, "space_not_found")),
        },
    }
}

const DENY_CODES: &[&str] = &[
    "unauthorized",
    "forbidden",
    "app_not_found",
    "space_not_found",
];

struct World {
    p: Platform,
    http: Client,
    admin: String,
    space: String,
    app: String,
    tokens: BTreeMap<&'static str, Option<String>>,
}

impl World {
    fn token(&self, who: Who) -> Option<String> {
        self.tokens[format!("{who:?}").as_str()].clone()
    }

    fn call(&self, method: &str, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut rb = self
            .http
            .request(m, format!("{}{path_and_query}", self.p.api_url()))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let res = rb.send().unwrap();
        let status = res.status().as_u16();
        let json = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/json"));
        // A log stream that was allowed would never end: its status is the answer.
        let body = if json {
            res.json().unwrap_or_default()
        } else {
            Value::Null
        };
        (status, body)
    }

    /// Puts the victim app back if an allowed DELETE removed it.
    fn ensure_app(&self) {
        let (status, _) = self.call("get", &format!("/v1/apps/{}", self.app), Some(&self.admin));
        if status == 404 {
            push(&self.p, &self.admin, &self.space, &self.app);
        }
    }
}

fn push(p: &Platform, token: &str, space: &str, app: &str) {
    let zip = paas_e2e::zip_of(&[("app.py", b"print('hi')", 0o644)]);
    let form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
    );
    let res = Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .header("X-Paas-Space", space)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().unwrap());
}

fn admin_call(
    p: &Platform,
    admin: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let res = Client::new()
        .request(method, format!("{}{path}", p.api_url()))
        .bearer_auth(admin)
        .json(&body)
        .send()
        .unwrap();
    let status = res.status();
    let body: Value = res.json().unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn login(p: &Platform, user: &str, password: &str) -> String {
    let res: Value = Client::new()
        .post(format!("{}/v1/auth/login", p.api_url()))
        .json(&json!({"username": user, "password": password}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    res["token"].as_str().unwrap().to_string()
}

fn setup() -> World {
    let p = Platform::start_server(Options::default()).expect("server");
    let admin = p.admin_token().unwrap();
    let org = unique("victim");
    let space = format!("{org}/prod");
    let other = format!("{}/dev", unique("attacker"));
    use reqwest::Method;
    for s in [&space, &other] {
        let (o, n) = s.split_once('/').unwrap();
        admin_call(
            &p,
            &admin,
            Method::POST,
            "/v1/spaces",
            json!({"org": o, "name": n}),
        );
    }
    let mut users = BTreeMap::new();
    for (who, role, in_space) in [
        ("SpaceAdmin", Some("admin"), &space),
        ("Developer", Some("developer"), &space),
        ("Viewer", Some("viewer"), &space),
        ("OtherSpaceDeveloper", Some("developer"), &other),
        ("NoRole", None, &space),
        ("OrgManager", Some("manager"), &space),
        ("OrgAuditor", Some("auditor"), &space),
    ] {
        let name = unique(&who.to_lowercase());
        admin_call(
            &p,
            &admin,
            Method::POST,
            "/v1/users",
            json!({"username": name, "password": "password-123", "operator": false}),
        );
        match role {
            Some(role @ ("manager" | "auditor")) => {
                admin_call(
                    &p,
                    &admin,
                    Method::PUT,
                    &format!("/v1/users/{name}/roles"),
                    json!({"org": in_space.split_once('/').unwrap().0, "role": role}),
                );
            }
            Some(role) => {
                admin_call(
                    &p,
                    &admin,
                    Method::PUT,
                    &format!("/v1/users/{name}/roles"),
                    json!({"space": in_space, "role": role}),
                );
            }
            None => {}
        }
        users.insert(who, login(&p, &name, "password-123"));
    }
    // The name has an `o` (0x6f) so it can be spelled with lower and upper hex digits.
    let app = unique("shop");
    push(&p, &admin, &space, &app);
    let other_app = unique("other");
    push(&p, &admin, &space, &other_app);

    let mk_token = |owner: &str, body: Value| -> Value {
        admin_call(&p, owner, Method::POST, "/v1/tokens", body)
    };
    let for_other = mk_token(
        &users["Developer"],
        json!({"name": "ci", "scope": "deploy", "app": other_app, "expires_in": "1d"}),
    );
    let expired = mk_token(
        &users["Developer"],
        json!({"name": "short", "scope": "deploy", "expires_in": "1s"}),
    );
    let revoked = mk_token(
        &users["Developer"],
        json!({"name": "gone", "scope": "deploy", "expires_in": "1d"}),
    );
    admin_call(
        &p,
        &users["Developer"],
        Method::DELETE,
        &format!("/v1/tokens/{}", revoked["id"].as_str().unwrap()),
        json!({}),
    );
    let expired = expired["token"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), "the short token to expire", || {
        let s = Client::new()
            .get(format!("{}/v1/apps", p.api_url()))
            .bearer_auth(&expired)
            .send()
            .unwrap()
            .status()
            .as_u16();
        (s == 401).then_some(())
    })
    .unwrap();

    let mut tokens: BTreeMap<&'static str, Option<String>> = BTreeMap::new();
    tokens.insert("Operator", Some(admin.clone()));
    for (k, v) in users {
        tokens.insert(k, Some(v));
    }
    tokens.insert(
        "TokenForOtherApp",
        Some(for_other["token"].as_str().unwrap().to_string()),
    );
    tokens.insert("Expired", Some(expired));
    tokens.insert(
        "Revoked",
        Some(revoked["token"].as_str().unwrap().to_string()),
    );
    tokens.insert("Anonymous", None);
    World {
        p,
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        admin,
        space,
        app,
        tokens,
    }
}

/// The app name spelled every way a client could: plain, one character percent-encoded in lower
/// and in upper hex (the same app to the router, so the same decision), and the spellings that
/// name no app: mixed case, and a trailing slash the router matches no route with.
fn spellings(app: &str) -> Vec<(&'static str, String)> {
    let i = app.find('o').expect("an o in the name");
    let enc = |hex: &str| format!("{}%{hex}{}", &app[..i], &app[i + 1..]);
    vec![
        ("plain", app.to_string()),
        ("lower hex", enc("6f")),
        ("upper hex", enc("6F")),
        (
            "mixed case",
            format!("{}{}", app[..1].to_uppercase(), &app[1..]),
        ),
    ]
}

/// The path with a static segment's first letter percent-encoded (`/v1/%61pps/...`): the
/// router decodes it, so the authorizer must see the same route.
fn encode_static(path: &str) -> String {
    let rest = path.strip_prefix("/v1/").unwrap();
    let (seg, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let first = seg.as_bytes()[0];
    let sep = if tail.is_empty() { "" } else { "/" };
    format!("/v1/%{first:02x}{}{sep}{tail}", &seg[1..])
}

fn concrete(w: &World, template: &str, name: &str) -> String {
    let path = template
        .replace("{index}", "0")
        .replace("{id}", "no-such-token")
        .replace("{domain}", "no-such-domain.example")
        .replace("{broker}", "no-such-broker")
        .replace("{service}", "no-such-service")
        .replace("{org}/{space}", &w.space);
    let path = if template.starts_with("/v1/apps/{name}") {
        path.replace("{name}", name)
    } else if template.starts_with("/v1/users/") {
        path.replace("{name}", "no-such-user")
    } else if template.starts_with("/v1/base-images/") {
        path.replace("{name}", "no-such-image%3A1")
    } else {
        path.replace("{name}", "no-such-thing")
    };
    // Service instances and the marketplace are the target space's.
    if template.starts_with("/v1/services") || template == "/v1/marketplace" {
        return format!("{path}?space={}", w.space);
    }
    // The unmap route takes the route in the query.
    if template == "/v1/apps/{name}/routes" {
        return format!("{path}?route=nothing-here.{}.example", w.app);
    }
    path
}

fn check(w: &World, method: &str, path: &str, class: Class, who: Who, what: &str) -> usize {
    let token = w.token(who);
    let (status, body) = w.call(method, path, token.as_deref());
    let code = body["code"].as_str().unwrap_or_default();
    let ctx = format!("{method} {path} ({what}) as {who:?}: {status} {body}");
    match expected(class, who) {
        None => {
            assert!(
                !DENY_CODES.contains(&code) && status != 401 && status != 403,
                "should be allowed: {ctx}"
            );
        }
        Some((want_status, want_code)) => {
            assert_eq!(
                (status, code),
                (want_status, want_code),
                "should be denied: {ctx}"
            );
        }
    }
    if method == "delete" {
        w.ensure_app();
    }
    1
}

#[test]
fn every_route_every_caller_every_spelling() {
    let w = setup();
    let (status, doc) = w.call("get", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    let mut ops: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.clone(), path.clone()));
        }
    }
    assert!(ops.len() >= 40, "only {} operations documented", ops.len());
    for (m, p) in UNDOCUMENTED {
        ops.push((m.to_string(), p.to_string()));
    }
    let missing: Vec<String> = ops
        .iter()
        .filter(|(m, p)| class_of(m, p).is_none())
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "operations without a row in the authorization matrix: {missing:?}"
    );

    let mut checked = 0;
    for (method, template) in &ops {
        let class = class_of(method, template).unwrap();
        let app_route = template.starts_with("/v1/apps/{name}");
        for who in EVERYONE {
            if app_route {
                for (what, name) in spellings(&w.app) {
                    let path = concrete(&w, template, &name);
                    if what == "mixed case" {
                        // A display name of its own (issue 19: names keep their case), so it
                        // names no existing app, for anyone. A push of it would be a new app
                        // whose derived route host is the victim's: nobody gets one through
                        // (the host is taken, which the deploy layer says once the form is
                        // read: `tenancy.rs` `app_names_belong_to_their_space`; the others have
                        // no space to push into or a token for another app).
                        let (status, body) = w.call(method, &path, w.token(who).as_deref());
                        let code = body["code"].as_str().unwrap_or_default();
                        if matches!(who, Who::Expired | Who::Revoked | Who::Anonymous) {
                            assert_eq!(
                                (status, code),
                                (401, "unauthorized"),
                                "{method} {path} as {who:?}: {body}"
                            );
                        } else if class == Class::Push {
                            assert!(
                                (400..500).contains(&status),
                                "{method} {path} as {who:?}: {body}"
                            );
                        } else {
                            assert_eq!(
                                (status, code),
                                (404, "app_not_found"),
                                "{method} {path} as {who:?}: {body}"
                            );
                        }
                        checked += 1;
                        continue;
                    }
                    checked += check(&w, method, &path, class, who, what);
                }
                // A trailing slash matches no route, so it reaches nothing, whoever asks.
                let path = format!(
                    "{}/",
                    concrete(&w, template, &w.app).split('?').next().unwrap()
                );
                let (status, body) = w.call(method, &path, w.token(who).as_deref());
                let want = if class != Class::Public
                    && matches!(who, Who::Expired | Who::Revoked | Who::Anonymous)
                {
                    (401, "unauthorized")
                } else {
                    (404, "not_found")
                };
                assert_eq!(
                    (status, body["code"].as_str().unwrap_or_default()),
                    want,
                    "{method} {path} as {who:?}: {body}"
                );
                checked += 1;
            } else {
                let path = concrete(&w, template, "");
                checked += check(&w, method, &path, class, who, "plain");
            }
            let path = encode_static(&concrete(&w, template, &w.app));
            checked += check(&w, method, &path, class, who, "encoded static segment");
        }
    }
    assert!(checked > 1500, "{checked} requests checked");

    // Every refusal is counted.
    let metrics = w
        .http
        .get(format!("{}/metrics", w.p.api_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let denied: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("paas_authz_denied_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(denied > 500.0, "paas_authz_denied_total sums to {denied}");
}
