//! `/v1/openapi.json` against the real server: served without a token, and every operation it
//! documents is routed by the server (it answers 401 without a token, never `no such endpoint`).

use paas_e2e::{Options, Platform};

#[test]
fn openapi_is_public_and_every_documented_operation_exists() {
    let p = Platform::start_server(Options::default()).expect("server");
    let http = reqwest::blocking::Client::new();
    let res = http
        .get(format!("{}/v1/openapi.json", p.api_url()))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let doc: serde_json::Value = res.json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "only {} paths documented", paths.len());
    let mut checked = 0;
    for (path, ops) in paths {
        let url = format!(
            "{}{}",
            p.api_url(),
            path.replace("{name}", "x")
                .replace("{index}", "0")
                .replace("{id}", "x")
                .replace("{org}", "x")
                .replace("{space}", "x")
        );
        for (method, op) in ops.as_object().unwrap() {
            let public = op
                .get("security")
                .is_some_and(|s| s == &serde_json::json!([{}]));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = http
                .request(m, &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .unwrap();
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().unwrap_or_default();
            assert_ne!(
                body["code"], "not_found",
                "{method} {path} is documented but not routed"
            );
            if public {
                assert_ne!(status, 401, "{method} {path} is documented as public");
            } else {
                assert_eq!(status, 401, "{method} {path} without a token: {body}");
                assert_eq!(body["code"], "unauthorized", "{method} {path}: {body}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 34, "{checked} operations checked");
}
