//! Instance identity (issue 25): every instance gets a short-lived certificate and key naming
//! its app, space and instance, signed by the platform CA, in `CF_INSTANCE_CERT` /
//! `CF_INSTANCE_KEY`, renewed before expiry without a restart; apps do mutual TLS with them; the
//! router passes a verified client certificate on as `X-Forwarded-Client-Cert` and drops a
//! client's own; a node gets certificates for its own instances only.

use paas_e2e::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::PathBuf;
use std::time::Duration;
use x509_parser::prelude::*;

fn identity_app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join("identity")
}

fn get_json(p: &Platform, app: &str, path: &str) -> Option<serde_json::Value> {
    let (status, body) = p.get_app(app, path).ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

fn serial_of(der: &[u8]) -> String {
    let (_, c) = X509Certificate::from_der(der).expect("a certificate");
    hex::encode(c.raw_serial())
}

/// The subject's attributes and the SAN entries, as text (`OU=app:...`, `URI(...)`).
fn names_of(der: &[u8]) -> (String, Vec<String>) {
    let (_, c) = X509Certificate::from_der(der).expect("a certificate");
    let san = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    (c.subject().to_string(), san)
}

fn not_after(der: &[u8]) -> i64 {
    let (_, c) = X509Certificate::from_der(der).expect("a certificate");
    c.validity().not_after.timestamp()
}

#[test]
fn instances_get_rotated_identity_certificates_the_router_forwards() {
    let certs = tempfile::tempdir().unwrap();
    let app = unique("ident");
    let host = format!("{app}.localhost");
    // The TLS listener's own certificate for the app's host (any; the client trusts it).
    let server_cert = rcgen::generate_simple_self_signed(vec![host.clone()]).unwrap();
    std::fs::write(
        certs.path().join(format!("{host}.crt")),
        server_cert.cert.pem(),
    )
    .unwrap();
    std::fs::write(
        certs.path().join(format!("{host}.key")),
        server_cert.key_pair.serialize_pem(),
    )
    .unwrap();
    let mut p = Platform::start_server_env(
        Options::default(),
        &[
            // Short, so a renewal happens within the test (at two thirds: ~20 s).
            ("PAAS_INSTANCE_CERT_TTL_SECS", "30"),
            ("PAAS_TLS_LISTEN", "127.0.0.1:0"),
            ("PAAS_TLS_CERT_DIR", certs.path().to_str().unwrap()),
        ],
    )
    .expect("server");
    p.start_agent(&unique("e2e-id"), "zone-a").unwrap();
    p.login().unwrap();
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        identity_app().to_str().unwrap(),
        "-m",
        "64M",
    ]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());

    // The platform CA, from the API (any logged-in user).
    let admin = p.admin_token().unwrap();
    let http = reqwest::blocking::Client::new();
    let ca_pem = http
        .get(format!("{}/v1/instance-identity/ca.pem", p.api_url()))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let ca = chain(&ca_pem);
    assert_eq!(ca.len(), 1, "{ca_pem}");
    let anonymous = http
        .get(format!("{}/v1/instance-identity/ca.pem", p.api_url()))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // The instance sees its two files where the env says, and can read the key as its user.
    let id = wait_for(Duration::from_secs(60), "the instance's identity", || {
        get_json(&p, &app, "/identity").filter(|j| j["cert"].is_string())
    })
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    assert_eq!(
        id["cert_path"], "/etc/cf-instance-credentials/instance.crt",
        "{id}"
    );
    assert_eq!(
        id["key_path"], "/etc/cf-instance-credentials/instance.key",
        "{id}"
    );
    assert_eq!(id["uid"], 2000, "{id}");
    assert_eq!(id["key_owner"]["uid"], 2000, "{id}");
    assert_eq!(id["key_owner"]["mode"], "0o400", "{id}");
    assert_eq!(id["ca"].as_str(), Some(ca_pem.as_str()), "{id}");
    let first = chain(id["cert"].as_str().unwrap());
    assert_eq!(first.len(), 2, "leaf then CA: {id}");
    assert_eq!(first[1], ca[0], "the chain ends in the API's CA");

    // It chains to the platform CA: the router's client verifier is webpki, so check with a
    // rustls server verifier built on the same CA, as a peer app would.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&first[0], &[], rustls_pki_types::UnixTime::now())
        .expect("the instance certificate verifies against the platform CA");

    // It names the instance, its app and its space (as VCAP_APPLICATION states them).
    let vcap = &id["vcap"];
    let guid = id["instance_guid"].as_str().unwrap();
    let (subject, san) = names_of(&first[0]);
    assert!(subject.contains(&format!("CN={guid}")), "{subject}");
    assert!(
        subject.contains(&format!(
            "OU=app:{}",
            vcap["application_id"].as_str().unwrap()
        )),
        "{subject}"
    );
    assert!(
        subject.contains(&format!("OU=space:{}", vcap["space_id"].as_str().unwrap())),
        "{subject}"
    );
    assert!(
        subject.contains(&format!(
            "O=organization:{}",
            vcap["organization_id"].as_str().unwrap()
        )),
        "{subject}"
    );
    assert!(
        san.contains(&format!(
            "URI(spiffe://paas/space/{}/app/{})",
            vcap["space_id"].as_str().unwrap(),
            vcap["application_id"].as_str().unwrap()
        )),
        "{san:?}"
    );
    assert!(san.contains(&format!("DNSName({guid})")), "{san:?}");

    // The key is the certificate's.
    let key = rcgen::KeyPair::from_pem(id["key"].as_str().unwrap()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&first[0]).unwrap();
    assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());

    // Mutual TLS with the files: the instance's own server and client, each verifying the
    // other with the platform CA and the client checking the server's name.
    let m = get_json(&p, &app, "/mtls").expect("mtls answer");
    assert_eq!(m["ok"], true, "{m}");
    let saw = |side: &str| m[side]["subject"].to_string();
    assert!(
        saw("client_saw").contains(&format!("app:{}", vcap["application_id"].as_str().unwrap())),
        "{m}"
    );
    assert!(
        saw("server_saw").contains(&format!("commonName={guid}")),
        "{m}"
    );

    // The router: a TLS client presenting the instance certificate; the app sees it in
    // X-Forwarded-Client-Cert (base64 DER), and a forged one from a client is replaced.
    let tls_addr = p.tls_addr().unwrap();
    let mut identity_pem = id["key"].as_str().unwrap().to_string();
    identity_pem.push_str(id["cert"].as_str().unwrap());
    let https_at = |addr: std::net::SocketAddr, identity: Option<&str>| {
        let mut b = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(server_cert.cert.pem().as_bytes()).unwrap(),
            )
            .resolve(&host, addr)
            .timeout(Duration::from_secs(20));
        if let Some(pem) = identity {
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let https = |identity: Option<&str>| https_at(tls_addr, identity);
    let url = format!("https://{host}:{}/headers", tls_addr.port());
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(first[0].as_ref());
    let h: serde_json::Value = https(Some(&identity_pem))
        .get(&url)
        .header("X-Forwarded-Client-Cert", "forged")
        .send()
        .unwrap_or_else(|e| panic!("mTLS request: {e}{}", p.logs()))
        .json()
        .unwrap();
    assert_eq!(
        h["x-forwarded-client-cert"].as_str(),
        Some(expected.as_str()),
        "{h}"
    );
    // No client certificate (a browser): served, and a forged header does not get through.
    let h: serde_json::Value = https(None)
        .get(&url)
        .header("X-Forwarded-Client-Cert", "forged")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(h.get("x-forwarded-client-cert").is_none(), "{h}");
    // Plain HTTP: the same.
    let h: serde_json::Value = reqwest::blocking::Client::builder()
        .resolve(&host, p.addr)
        .build()
        .unwrap()
        .get(format!("http://{host}:{}/headers", p.addr.port()))
        .header("X-Forwarded-Client-Cert", "forged")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(h.get("x-forwarded-client-cert").is_none(), "{h}");
    // A client certificate the platform CA did not sign fails the handshake.
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger".to_string()]).unwrap();
    let stranger_pem = format!(
        "{}{}",
        stranger.key_pair.serialize_pem(),
        stranger.cert.pem()
    );
    assert!(https(Some(&stranger_pem)).get(&url).send().is_err());

    // Rotation: before the first certificate expires the files hold a new one (a new key too),
    // and the instance was not restarted for it.
    let containers = p.containers_of(&app);
    let first_serial = serial_of(&first[0]);
    let first_expiry = not_after(&first[0]);
    let renewed = wait_for(Duration::from_secs(60), "a renewed certificate", || {
        let j = get_json(&p, &app, "/identity")?;
        let c = chain(j["cert"].as_str()?);
        (serial_of(&c[0]) != first_serial).then_some((j, chrono::Utc::now().timestamp()))
    })
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    let (j, seen_at) = renewed;
    assert!(
        seen_at < first_expiry,
        "renewed before the old one expired ({seen_at} vs {first_expiry})"
    );
    let second = chain(j["cert"].as_str().unwrap());
    let key2 = rcgen::KeyPair::from_pem(j["key"].as_str().unwrap()).unwrap();
    let (_, leaf2) = X509Certificate::from_der(&second[0]).unwrap();
    assert_eq!(leaf2.public_key().raw, key2.public_key_der().as_slice());
    assert_ne!(key2.public_key_der(), key.public_key_der(), "a new key");
    assert_eq!(p.containers_of(&app), containers, "same container");
    let detail = p.app_json(&app).unwrap();
    assert_eq!(detail["instances"][0]["restarts"], 0, "{detail}");
    // The renewed files work for mutual TLS at once.
    let m = get_json(&p, &app, "/mtls").expect("mtls answer");
    assert_eq!(m["ok"], true, "{m}");

    // A standalone router learns the CA with the route table and forwards the same way.
    let router = StandaloneRouter::start_env(
        &p,
        &p.api_url(),
        &[
            ("PAAS_TLS_LISTEN", "127.0.0.1:0"),
            ("PAAS_TLS_CERT_DIR", certs.path().to_str().unwrap()),
        ],
    );
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
    let j = get_json(&p, &app, "/identity").expect("identity");
    let current = chain(j["cert"].as_str().unwrap());
    let pem = format!(
        "{}{}",
        j["key"].as_str().unwrap(),
        j["cert"].as_str().unwrap()
    );
    let expected = base64::engine::general_purpose::STANDARD.encode(current[0].as_ref());
    wait_for(
        Duration::from_secs(30),
        "X-Forwarded-Client-Cert from the standalone router",
        || {
            let h: serde_json::Value = https_at(router_tls, Some(&pem))
                .get(format!("https://{host}:{}/headers", router_tls.port()))
                .send()
                .ok()?
                .json()
                .ok()?;
            (h["x-forwarded-client-cert"].as_str() == Some(expected.as_str())).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    drop(router);

    // The folder goes with the instance.
    let agent_dir = p.dir.path().join(format!("agent-{}", p.node_names()[0]));
    let folder = agent_dir.join("identity").join(guid);
    assert!(folder.exists(), "{}", folder.display());
    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(90),
        "the identity folder removed",
        || (!folder.exists()).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
}

#[test]
fn a_node_gets_certificates_for_its_own_instances_only() {
    let p = Platform::start().expect("platform");
    let app = unique("ident-own");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        identity_app().to_str().unwrap(),
        "-m",
        "64M",
    ]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let id = wait_for(Duration::from_secs(60), "the instance's identity", || {
        get_json(&p, &app, "/identity").filter(|j| j["cert"].is_string())
    })
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    let guid = id["instance_guid"].as_str().unwrap().to_string();

    // Another node, with its own valid credential, asks for that instance's certificate.
    let intruder = unique("e2e-intruder");
    let token = p.register_bare_node(&intruder).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(vec![guid.clone()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let ask = |token: Option<&str>, instance: &str, csr: &str| {
        let mut r = reqwest::blocking::Client::new()
            .post(format!(
                "{}/v1/agent/instances/{instance}/identity",
                p.api_url()
            ))
            .json(&paas_common::agent::IdentityRequest {
                csr_pem: csr.to_string(),
            });
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let res = r.send().unwrap();
        let status = res.status().as_u16();
        (status, res.json::<serde_json::Value>().unwrap_or_default())
    };
    let (status, body) = ask(Some(&token), &guid, &csr);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "forbidden", "{body}");
    let (status, body) = ask(Some(&token), "no-such-instance", &csr);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    // Without a node credential, or with a user's token, nothing is signed either.
    let (status, _) = ask(None, &guid, &csr);
    assert_eq!(status, 401);
    let (status, _) = ask(Some(&p.admin_token().unwrap()), &guid, &csr);
    assert_eq!(status, 401);
    assert!(
        p.logs().contains("not assigned to it") || server_log(&p).contains("not assigned to it"),
        "the refusal is logged"
    );
}

fn server_log(p: &Platform) -> String {
    std::fs::read_to_string(p.dir.path().join("server.log")).unwrap_or_default()
}
