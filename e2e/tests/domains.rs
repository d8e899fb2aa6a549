//! Domains owned by spaces, manifest routes and certificates through the API (issue 22), with the
//! real binaries: a space's private domain keeps every other space out of its hosts; a
//! certificate set with `paas set-cert` is served by SNI with no file on the router; manifest
//! `routes:`, `random-route` and `no-route` shape an app's routes on push; a route can redirect
//! plain HTTP to HTTPS and send HSTS.

use paas_e2e::{
    call, create_space, unique, user_with_role, wait_for, zip_of, Options, Platform,
    StandaloneRouter,
};
use reqwest::Method;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PLAIN_APP: &[(&str, &[u8], u32)] = &[("app.py", b"print('hi')", 0o644)];

/// Two spaces with a developer each (API tokens), and the operator's token.
struct Tenants {
    p: Platform,
    admin: String,
    mine: String,
    me: String,
    theirs: String,
    them: String,
}

fn tenants(p: Platform) -> Tenants {
    let admin = p.admin_token().unwrap();
    let mut out = Vec::new();
    for prefix in ["mine", "theirs"] {
        let space = format!("{}/prod", unique(prefix));
        create_space(&p, &admin, &space);
        let role = serde_json::json!({"space": space, "role": "developer"});
        let (_, token, _) = user_with_role(&p, &admin, "dev", role);
        out.push((space, token));
    }
    let (theirs, them) = out.pop().unwrap();
    let (mine, me) = out.pop().unwrap();
    Tenants {
        p,
        admin,
        mine,
        me,
        theirs,
        them,
    }
}

/// A push through the API with extra form fields; answers the status and the body.
fn push_api(
    p: &Platform,
    token: &str,
    app: &str,
    space: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip_of(PLAIN_APP)).file_name("app.zip"),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .header("X-Paas-Space", space)
        .multipart(form)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.text().unwrap())
}

fn map(t: &Tenants, token: &str, app: &str, route: &str) -> (u16, serde_json::Value) {
    call(
        &t.p,
        token,
        Method::POST,
        &format!("/v1/apps/{app}/routes"),
        Some(serde_json::json!({ "route": route })),
        None,
    )
}

fn code(v: &serde_json::Value) -> Option<&str> {
    v["code"].as_str()
}

#[test]
fn private_domains_belong_to_their_space() {
    let t = tenants(Platform::start_server(Options::default()).expect("server"));
    let domain = format!("{}.test", unique("shop"));
    let create = |token: &str, space: &str, name: &str| {
        call(
            &t.p,
            token,
            Method::POST,
            "/v1/domains",
            Some(serde_json::json!({ "name": name })),
            Some(space),
        )
    };
    let (s, b) = create(&t.me, &t.mine, &domain);
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["space"], t.mine.as_str());
    // The same domain, one under it, or one above it: not for another space.
    let (s, b) = create(&t.them, &t.theirs, &domain);
    assert_eq!((s, code(&b)), (409, Some("conflict")), "{b}");
    let (s, b) = create(&t.them, &t.theirs, &format!("api.{domain}"));
    assert_eq!((s, code(&b)), (409, Some("domain_not_owned")), "{b}");
    // ... nor in a space where the caller has no role, nor over the shared apps domain.
    let (s, b) = create(&t.them, &t.mine, &format!("x-{domain}"));
    assert_eq!((s, code(&b)), (404, Some("space_not_found")), "{b}");
    let (s, b) = create(&t.them, &t.theirs, "a.localhost");
    assert_eq!((s, code(&b)), (409, Some("domain_not_owned")), "{b}");

    // A viewer of the owning space sees the domain but may not change it.
    let role = serde_json::json!({"space": t.mine, "role": "viewer"});
    let (_, viewer_token, _) = user_with_role(&t.p, &t.admin, "viewer", role);
    let viewer_token = viewer_token.as_str();
    let (_, list) = call(&t.p, viewer_token, Method::GET, "/v1/domains", None, None);
    assert!(list.to_string().contains(&domain), "{list}");
    let (s, b) = call(
        &t.p,
        viewer_token,
        Method::DELETE,
        &format!("/v1/domains/{domain}"),
        None,
        None,
    );
    assert_eq!((s, code(&b)), (403, Some("forbidden")), "{b}");
    let (s, b) = create(viewer_token, &t.mine, &format!("v-{domain}"));
    assert_eq!((s, code(&b)), (403, Some("forbidden")), "{b}");
    // ACME cannot be turned on where the operator has not configured it (e2e/tests/acme.rs has
    // the rest): refused with the reason, not left waiting silently.
    let acme = serde_json::json!({"enabled": true});
    let acme_path = format!("/v1/domains/{domain}/acme");
    let (s, b) = call(
        &t.p,
        viewer_token,
        Method::PUT,
        &acme_path,
        Some(acme.clone()),
        None,
    );
    assert_eq!((s, code(&b)), (403, Some("forbidden")), "{b}");
    let (s, b) = call(
        &t.p,
        &t.them,
        Method::PUT,
        &acme_path,
        Some(acme.clone()),
        None,
    );
    assert_eq!((s, code(&b)), (404, Some("not_found")), "{b}");
    let (s, b) = call(&t.p, &t.me, Method::PUT, &acme_path, Some(acme), None);
    assert_eq!((s, code(&b)), (409, Some("conflict")), "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("PAAS_ACME_DIRECTORY"),
        "{b}"
    );

    // Lists: the shared domain and the caller's own.
    let (_, list) = call(&t.p, &t.them, Method::GET, "/v1/domains", None, None);
    assert!(!list.to_string().contains(&domain), "{list}");
    assert_eq!(list["domains"][0]["shared"], true, "{list}");
    let (_, list) = call(&t.p, &t.me, Method::GET, "/v1/domains", None, None);
    assert!(list.to_string().contains(&domain), "{list}");

    let shop = unique("shop");
    let evil = unique("evil");
    assert_eq!(push_api(&t.p, &t.me, &shop, &t.mine, &[]).0, 201);
    assert_eq!(push_api(&t.p, &t.them, &evil, &t.theirs, &[]).0, 201);
    let www = format!("www.{domain}");
    let (s, b) = map(&t, &t.me, &shop, &www);
    assert_eq!(s, 201, "{b}");
    // Another space maps no host under the domain, the mapped one included, with any path.
    for route in [
        format!("api.{domain}"),
        domain.clone(),
        www.clone(),
        format!("{www}/admin"),
    ] {
        let (s, b) = map(&t, &t.them, &evil, &route);
        assert_eq!(
            (s, code(&b)),
            (409, Some("domain_not_owned")),
            "{route}: {b}"
        );
    }
    // A manifest route under the domain refuses the push before anything changes.
    let newbie = unique("newbie");
    let routes = serde_json::json!([format!("ok-{newbie}.other.test"), format!("x.{domain}")]);
    let (s, b) = push_api(
        &t.p,
        &t.them,
        &newbie,
        &t.theirs,
        &[("routes", &routes.to_string())],
    );
    assert_eq!(s, 409, "{b}");
    assert!(
        b.contains("domain_not_owned") && b.contains(&format!("x.{domain}")),
        "the error names the route: {b}"
    );
    let (s, _) = call(
        &t.p,
        &t.them,
        Method::GET,
        &format!("/v1/apps/{newbie}"),
        None,
        Some(&t.theirs),
    );
    assert_eq!(s, 404, "the refused push created no app");

    // The owner may not delete a domain in use; another space may not see it at all.
    let path = format!("/v1/domains/{domain}");
    let (s, b) = call(&t.p, &t.them, Method::DELETE, &path, None, None);
    assert_eq!((s, code(&b)), (404, Some("not_found")), "{b}");
    let (s, b) = call(&t.p, &t.me, Method::DELETE, &path, None, None);
    assert_eq!((s, code(&b)), (409, Some("conflict")), "{b}");
    assert!(b["message"].as_str().unwrap().contains(&www), "{b}");
    // A certificate that does not cover the domain is refused with the reason.
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere.test".to_string()]).unwrap();
    let cert_body = serde_json::json!({
        "certificate": other.cert.pem(),
        "private_key": other.key_pair.serialize_pem(),
    });
    let cert_path = format!("/v1/domains/{domain}/certificate");
    let (s, b) = call(
        &t.p,
        &t.me,
        Method::PUT,
        &cert_path,
        Some(cert_body.clone()),
        None,
    );
    assert_eq!((s, code(&b)), (400, Some("invalid_certificate")), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("cover neither"),
        "{b}"
    );
    let (s, b) = call(
        &t.p,
        &t.them,
        Method::PUT,
        &cert_path,
        Some(cert_body),
        None,
    );
    assert_eq!((s, code(&b)), (404, Some("not_found")), "{b}");

    // Unmapped, the domain can go; then its hosts are first come again.
    let (s, _) = call(
        &t.p,
        &t.me,
        Method::DELETE,
        &format!("/v1/apps/{shop}/routes?route={www}"),
        None,
        None,
    );
    assert_eq!(s, 204);
    let (s, b) = call(&t.p, &t.me, Method::DELETE, &path, None, None);
    assert_eq!(s, 204, "{b}");
    let (s, b) = map(&t, &t.them, &evil, &format!("api.{domain}"));
    assert_eq!(s, 201, "{b}");
    // Now another space serves a host under it: the domain cannot be created over it.
    let (s, b) = create(&t.me, &t.mine, &domain);
    assert_eq!((s, code(&b)), (409, Some("domain_not_owned")), "{b}");
    // Operators see every domain.
    let (_, list) = call(&t.p, &t.admin, Method::GET, "/v1/domains", None, None);
    assert_eq!(list["domains"][0]["shared"], true, "{list}");
}

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join("probe")
}

/// A folder with the probe app and a `paas.yml` of `manifest`.
fn app_dir(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(probe().join("app.py"), dir.path().join("app.py")).unwrap();
    std::fs::write(dir.path().join("paas.yml"), manifest).unwrap();
    dir
}

fn push_dir(p: &Platform, dir: &Path) {
    let out = p.cli_in(&["push"], Some(dir));
    assert!(out.ok(), "push: {out:?}{}", p.logs());
}

/// A CA and a leaf for `*.DOMAIN` and `DOMAIN` it signed: (CA PEM, leaf PEM, leaf key PEM, leaf
/// DER).
fn issue(domain: &str) -> (String, String, String, Vec<u8>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "paas e2e test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![format!("*.{domain}"), domain.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (
        ca.pem(),
        leaf.pem(),
        leaf_key.serialize_pem(),
        leaf.der().to_vec(),
    )
}

fn routes_of(p: &Platform, app: &str) -> serde_json::Value {
    let out = p.cli(&["routes", "--app", app, "--json"]);
    assert!(out.ok(), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn https_by_api_certificate_manifest_routes_redirect_and_hsts() {
    // TLS with no certificate folder: every certificate comes through the API.
    let mut p =
        Platform::start_server_env(Options::default(), &[("PAAS_TLS_LISTEN", "127.0.0.1:0")])
            .expect("server");
    p.start_agent(&unique("e2e-dom"), "zone-a").unwrap();
    p.login().unwrap();
    let tls_addr: std::net::SocketAddr =
        std::fs::read_to_string(p.data_dir().join("tls-listen-addr"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let domain = format!("{}.test", unique("acme"));
    let out = p.cli(&["create-domain", &domain, "--space", "default/default"]);
    assert!(out.ok(), "{out:?}");
    let out = p.cli(&["domains"]);
    assert!(out.ok() && out.stdout.contains(&domain), "{out:?}");

    // Manifest routes: a host under the private domain, and a path on another host.
    let app = unique("web");
    let www = format!("www.{domain}");
    let dir = app_dir(&format!(
        "applications:\n- name: {app}\n  memory: 64M\n  routes:\n  - route: {www}\n  - route: {app}.localhost\n  - route: api.{domain}/v1\n"
    ));
    push_dir(&p, dir.path());
    let routes = routes_of(&p, &app);
    let hosts: Vec<String> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}{}",
                r["host"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        hosts.contains(&www)
            && hosts.contains(&format!("api.{domain}/v1"))
            && hosts.contains(&format!("{app}.localhost")),
        "{hosts:?}"
    );
    // A second push keeps them (mapping what the app has is a no-op).
    push_dir(&p, dir.path());
    assert_eq!(routes_of(&p, &app), routes);

    // The certificate, set through the API; no file anywhere on the router.
    let (ca, leaf, key, leaf_der) = issue(&domain);
    let files = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (files.path().join("c.pem"), files.path().join("k.pem"));
    std::fs::write(&cert_file, &leaf).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let out = p.cli(&[
        "set-cert",
        &domain,
        "--cert",
        cert_file.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains(&format!("*.{domain}")), "{out:?}");
    // A key of another certificate is refused, naming the reason.
    let (_, _, other_key, _) = issue(&domain);
    std::fs::write(&key_file, &other_key).unwrap();
    let out = p.cli(&[
        "set-cert",
        &domain,
        "--cert",
        cert_file.to_str().unwrap(),
        "--key",
        key_file.to_str().unwrap(),
    ]);
    assert!(
        !out.ok() && out.stderr.contains("does not match"),
        "{out:?}"
    );

    let https = |h: &str| {
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none())
            .resolve(h, tls_addr)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let served = |r: &reqwest::blocking::Response| {
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(<[u8]>::to_vec)
    };
    let r = wait_for(
        Duration::from_secs(60),
        "HTTPS on the private domain",
        || {
            let r = https(&www)
                .get(format!("https://{www}:{}/", tls_addr.port()))
                .send()
                .ok()?;
            (r.status() == 200).then_some(r)
        },
    )
    .unwrap();
    assert_eq!(
        served(&r),
        Some(leaf_der.clone()),
        "SNI picks the domain's certificate"
    );
    assert!(r.headers().get("strict-transport-security").is_none());
    let h = r.json::<serde_json::Value>().unwrap()["headers"].clone();
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    // The path route under the wildcard, the same certificate.
    let api = format!("api.{domain}");
    let r = https(&api)
        .get(format!("https://{api}:{}/v1/x", tls_addr.port()))
        .send()
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), served(&r)),
        (200, Some(leaf_der.clone()))
    );
    // A standalone router serves the same certificate, from its table follow (no file).
    let router =
        StandaloneRouter::start_env(&p, &p.api_url(), &[("PAAS_TLS_LISTEN", "127.0.0.1:0")]);
    let router_tls: std::net::SocketAddr = wait_for(
        Duration::from_secs(20),
        "the standalone router's TLS listener",
        || {
            std::fs::read_to_string(router.data_dir().join("tls-listen-addr"))
                .ok()?
                .trim()
                .parse()
                .ok()
        },
    )
    .unwrap();
    let via_router = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .tls_info(true)
        .resolve(&www, router_tls)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = wait_for(
        Duration::from_secs(30),
        "HTTPS through the standalone router",
        || {
            let r = via_router
                .get(format!("https://{www}:{}/", router_tls.port()))
                .send()
                .ok()?;
            (r.status() == 200).then_some(r)
        },
    )
    .unwrap();
    assert_eq!(served(&r), Some(leaf_der.clone()));
    drop(router);
    // A name no certificate covers fails the handshake.
    let none = format!("{}.localhost", app);
    assert!(https(&none)
        .get(format!("https://{none}:{}/", tls_addr.port()))
        .send()
        .is_err());

    // Redirect and HSTS on a route that asks for them.
    let secure = format!("secure.{domain}");
    let out = p.cli(&["map-route", &app, &secure, "--https-redirect", "--hsts"]);
    assert!(out.ok(), "{out:?}");
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&secure, p.addr)
        .resolve(&www, p.addr)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = plain
        .post(format!("http://{secure}:{}/pay?x=1", p.addr.port()))
        .body("card")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("https://{secure}:{}/pay?x=1", tls_addr.port())
    );
    let r = https(&secure)
        .get(format!("https://{secure}:{}/", tls_addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"].to_str().unwrap(),
        "max-age=31536000"
    );
    // Routes that did not ask keep plain HTTP.
    let r = plain
        .get(format!("http://{www}:{}/", p.addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Mapping it again with other options changes them; with the same ones is a conflict.
    let out = p.cli(&["map-route", &app, &www, "--https-redirect"]);
    assert!(out.ok(), "{out:?}");
    let r = plain
        .get(format!("http://{www}:{}/", p.addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    let out = p.cli(&["map-route", &app, &www, "--https-redirect"]);
    assert!(!out.ok() && out.stderr.contains("(conflict)"), "{out:?}");
    // A push keeps a route's options.
    push_dir(&p, dir.path());
    let r = plain
        .get(format!("http://{www}:{}/", p.addr.port()))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);

    // random-route: a generated default host, kept by the next push.
    let rnd = unique("rnd");
    let dir = app_dir(&format!(
        "applications:\n- name: {rnd}\n  memory: 64M\n  random-route: true\n"
    ));
    push_dir(&p, dir.path());
    let host = routes_of(&p, &rnd)[0]["host"].as_str().unwrap().to_string();
    assert!(
        host.starts_with(&format!("{rnd}-")) && host.ends_with(".localhost"),
        "{host}"
    );
    push_dir(&p, dir.path());
    assert_eq!(routes_of(&p, &rnd)[0]["host"], host.as_str());
    let label = host.trim_end_matches(".localhost");
    assert_eq!(p.get_app(label, "/").unwrap().0, 200);

    // no-route: the app runs but NAME.localhost reaches nothing; an existing app pushed with
    // no-route loses its default route.
    let quiet = unique("quiet");
    push_dir(
        &p,
        app_dir(&format!(
            "applications:\n- name: {quiet}\n  memory: 64M\n  no-route: true\n"
        ))
        .path(),
    );
    assert_eq!(routes_of(&p, &quiet), serde_json::json!([]));
    assert_eq!(p.get_app(&quiet, "/").unwrap().0, 404);
    push_dir(
        &p,
        app_dir(&format!(
            "applications:\n- name: {rnd}\n  memory: 64M\n  no-route: true\n"
        ))
        .path(),
    );
    assert_eq!(routes_of(&p, &rnd), serde_json::json!([]));
    assert_eq!(p.get_app(label, "/").unwrap().0, 404);
}
