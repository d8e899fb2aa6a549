//! Automatic certificates by ACME HTTP-01 (issue 22), with the real binaries and a real RFC 8555
//! server (`paas_e2e::acme_server`: HTTPS with its own CA, JWS checked, the challenge fetched
//! from the router): a space's domain opts in, a host mapped under it gets a certificate the
//! router serves by SNI; a host no route maps is never ordered; a failed validation backs off and
//! succeeds on a later try; a short-lived certificate is renewed, validated through a standalone
//! router this time.

use paas_e2e::acme_server::AcmeServer;
use paas_e2e::{call, unique, wait_for, Options, Platform, StandaloneRouter};
use reqwest::Method;
use std::path::PathBuf;
use std::time::Duration;

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join("probe")
}

fn domain_info(p: &Platform, token: &str, name: &str) -> serde_json::Value {
    let (s, b) = call(p, token, Method::GET, "/v1/domains", None, None);
    assert_eq!(s, 200, "{b}");
    b["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn acme_certificates_for_mapped_hosts_with_backoff_and_renewal() {
    // Certificates live 60 s: renewed when a third (20 s) is left.
    let acme = AcmeServer::start(Duration::from_secs(60)).expect("ACME server");
    let directory = acme.directory_url();
    let ca_file = acme.ca_file().to_str().unwrap().to_string();
    let mut p = Platform::start_server_env(
        Options::default(),
        &[
            ("PAAS_TLS_LISTEN", "127.0.0.1:0"),
            ("PAAS_ACME_DIRECTORY", &directory),
            ("PAAS_ACME_CA_FILE", &ca_file),
            ("PAAS_ACME_EMAIL", "ops@example.test"),
            ("PAAS_ACME_BACKOFF_SECS", "3"),
            ("PAAS_ACME_CHECK_SECS", "1"),
        ],
    )
    .expect("server");
    acme.set_router(p.addr);
    p.start_agent(&unique("e2e-acme"), "zone-a").unwrap();
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    let tls_addr: std::net::SocketAddr =
        std::fs::read_to_string(p.data_dir().join("tls-listen-addr"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();

    // Two domains opt in; only one gets a mapped host.
    let domain = format!("{}.test", unique("shop"));
    let idle = format!("{}.test", unique("idle"));
    for d in [&domain, &idle] {
        let out = p.cli(&["create-domain", d, "--space", "default/default", "--acme"]);
        assert!(out.ok() && out.stdout.contains("ACME"), "{out:?}");
    }
    // The first validation fails: the platform backs off and tries again.
    acme.fail_validations(1);
    let app = unique("web");
    let www = format!("www.{domain}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(probe().join("app.py"), dir.path().join("app.py")).unwrap();
    std::fs::write(
        dir.path().join("paas.yml"),
        format!("applications:\n- name: {app}\n  memory: 64M\n  routes:\n  - route: {www}\n"),
    )
    .unwrap();
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());

    // The failure is visible, with the CA's problem and when it is tried again.
    let failed = wait_for(Duration::from_secs(60), "the failed ACME attempt", || {
        let d = domain_info(&p, &admin, &domain);
        d["acme_error"].is_string().then_some(d)
    })
    .unwrap();
    assert!(
        failed["acme_error"]
            .as_str()
            .unwrap()
            .contains("told to fail"),
        "{failed}"
    );
    assert!(failed["acme_retry_at"].is_string(), "{failed}");
    assert_eq!(acme.validations().first().map(|v| v.1), Some(false));

    // Then the certificate, issued by the test CA, for the mapped host.
    let issued = wait_for(Duration::from_secs(90), "the ACME certificate", || {
        let d = domain_info(&p, &admin, &domain);
        (d["certificate"]["source"] == "acme").then_some(d)
    })
    .unwrap();
    assert_eq!(issued["certificate"]["covers"], serde_json::json!([www]));
    assert!(
        issued["certificate"]["issuer"]
            .as_str()
            .unwrap_or_default()
            .contains("paas test ACME CA"),
        "{issued}"
    );
    assert!(issued["acme_error"].is_null(), "{issued}");
    let out = p.cli(&["domains"]);
    assert!(out.ok() && out.stdout.contains("acme, until"), "{out:?}");

    // A real HTTPS client trusting only the test CA, SNI = the host: the app answers, with the
    // certificate the CA issued.
    // A new client per request: no pooled connection or resumed session hides a new certificate.
    let https = || {
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(acme.ca_pem.as_bytes()).unwrap())
            .tls_info(true)
            .resolve(&www, tls_addr)
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
    let leaf_of = leaf_der;
    let first_leaf = leaf_of(&acme.issued().last().unwrap().1);
    let r = wait_for(
        Duration::from_secs(60),
        "HTTPS with the ACME certificate",
        || {
            let r = https()
                .get(format!("https://{www}:{}/", tls_addr.port()))
                .send()
                .ok()?;
            (r.status() == 200).then_some(r)
        },
    )
    .unwrap();
    assert_eq!(served(&r), Some(first_leaf.clone()));
    assert_eq!(r.headers()["x-paas-app"], app.as_str());

    // Only the mapped host was ever ordered: nothing under the idle domain, nothing else under
    // the used one.
    let orders = acme.orders();
    assert!(orders.iter().all(|o| o == &vec![www.clone()]), "{orders:?}");

    // Renewal: with a third of the 60 s left, a new certificate is ordered and served. The CA
    // now validates through a standalone router, which answers from its table follow.
    let router = StandaloneRouter::start(&p, &p.api_url());
    acme.set_router(router.addr);
    wait_for(Duration::from_secs(120), "the renewed certificate", || {
        (acme.issued().len() >= 2).then_some(())
    })
    .unwrap();
    let renewed = leaf_of(&acme.issued().last().unwrap().1);
    assert_ne!(renewed, first_leaf);
    assert_eq!(
        acme.validations().last(),
        Some(&(www.clone(), true)),
        "validated through the standalone router"
    );
    wait_for(
        Duration::from_secs(30),
        "the renewed certificate served",
        || {
            let r = https()
                .get(format!("https://{www}:{}/", tls_addr.port()))
                .send()
                .ok()?;
            (served(&r) == Some(renewed.clone())).then_some(())
        },
    )
    .unwrap();
    assert!(acme.orders().iter().all(|o| o == &vec![www.clone()]));

    // The history: the failure with the CA's reason, then the issues.
    let (s, ev) = call(&p, &admin, Method::GET, "/v1/events?limit=1000", None, None);
    assert_eq!(s, 200, "{ev}");
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"domain.certificate_failed"), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .filter(|k| **k == "domain.certificate_issued")
            .count()
            >= 2,
        "{kinds:?}"
    );
}

/// The DER of the first certificate in a PEM chain.
fn leaf_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}
