//! Issue 7: `POST /v1/apps/NAME/push` with `Accept: application/x-ndjson` streams its progress
//! and ends with a `result` line that tells success from failure; errors found before the stream
//! starts stay ordinary 4xx JSON.

use paas_e2e::{example, unique, zip_dir, zip_of, Options, Platform};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::time::Instant;

/// Pushes `zip` asking for the stream; returns the status, content type and the lines, each
/// with the time it arrived since the request was sent.
fn stream_push(
    p: &Platform,
    token: &str,
    app: &str,
    zip: Vec<u8>,
) -> (u16, String, Vec<(f64, Value)>) {
    let form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
    );
    let started = Instant::now();
    let res = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .header("Accept", "application/x-ndjson")
        .multipart(form)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let mut lines = Vec::new();
    for line in BufReader::new(res).lines() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        lines.push((started.elapsed().as_secs_f64(), v));
    }
    (status, ctype, lines)
}

fn kinds(lines: &[(f64, Value)]) -> Vec<String> {
    lines
        .iter()
        .map(|(_, v)| v["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_push_that_cannot_start_streams_its_steps_and_ends_failed() {
    // No node: the revision is made, nothing is placed; the stream says so as soon as the
    // scheduler does, well before its start timeout.
    let p = Platform::start_server(Options {
        server_env: vec![("PAAS_PUSH_START_TIMEOUT_SECS".into(), "120".into())],
        ..Options::default()
    })
    .expect("server");
    let token = p.admin_token().unwrap();
    let app = unique("stream");
    let zip = zip_of(&[("app.py", b"print('hi')", 0o644)]);
    let size = zip.len() as u64;
    let (status, ctype, lines) = stream_push(&p, &token, &app, zip);
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/x-ndjson");
    let k = kinds(&lines);
    assert_eq!(k.first().map(String::as_str), Some("upload"), "{lines:?}");
    assert_eq!(lines[0].1["bytes"], size);
    for want in ["archive", "droplet", "revision", "instances", "instance"] {
        assert!(k.iter().any(|x| x == want), "{want} missing: {lines:?}");
    }
    let last = &lines.last().unwrap().1;
    assert_eq!(last["type"], "result", "{lines:?}");
    assert_eq!(last["status"], "failed");
    assert_eq!(last["code"], "no_node_available");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains("web #0 of revision 1 cannot be placed")
            && message.contains("no node has registered"),
        "{last}"
    );
    assert!(
        lines.last().unwrap().0 < 60.0,
        "not after the start timeout: {lines:?}"
    );
    // The row may be seen once before the scheduler has looked at it: the line with a reason.
    let pending = lines
        .iter()
        .find(|(_, v)| v["type"] == "instance" && v["reason"].is_string())
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("an instance line with the reason: {lines:?}"));
    assert_eq!(pending["process_type"], "web");
    assert_eq!(pending["index"], 0);
    assert_eq!(pending["state"], "pending");
    assert!(
        pending["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("no node is available")),
        "{pending}"
    );
    assert_eq!(last["app"]["name"], app.as_str());

    // Errors before the stream are plain JSON with their status.
    let bad = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(&token)
        .header("Accept", "application/x-ndjson")
        .multipart(reqwest::blocking::multipart::Form::new().part(
            "archive",
            reqwest::blocking::multipart::Part::bytes(b"not a zip".to_vec()).file_name("a.zip"),
        ))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let body: Value = bad.json().unwrap();
    assert_eq!(body["code"], "invalid_archive");
    let (status, _, lines) = stream_push(&p, "not-a-token", &app, zip_of(&[("a", b"", 0o644)]));
    assert_eq!(status, 401, "{lines:?}");
    // Without the header: the one-answer push as before.
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(&token)
        .multipart(
            reqwest::blocking::multipart::Form::new().part(
                "archive",
                reqwest::blocking::multipart::Part::bytes(zip_of(&[(
                    "app.py",
                    b"print(1)",
                    0o644,
                )]))
                .file_name("a.zip"),
            ),
        )
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
}

#[test]
fn a_push_streams_staging_live_and_ends_succeeded_or_failed() {
    let p = Platform::start().expect("platform");
    let token = p.admin_token().unwrap();
    let app = unique("live");
    let (status, _, lines) = stream_push(&p, &token, &app, zip_dir(&example("python-app")));
    assert_eq!(status, 200);
    let k = kinds(&lines);
    let last = &lines.last().unwrap().1;
    assert_eq!(last["status"], "succeeded", "{lines:?}");
    assert!(last["code"].is_null());
    let running = last["app"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running")
        .count();
    assert_eq!(running, 1, "{last}");
    // Staging output came as it was written, before the droplet and the result.
    let stg: Vec<&(f64, Value)> = lines
        .iter()
        .filter(|(_, v)| v["type"] == "log" && v["source"] == "STG")
        .collect();
    assert!(!stg.is_empty(), "no STG lines: {lines:?}");
    let droplet_at = k.iter().position(|x| x == "droplet").unwrap();
    let first_stg = k.iter().position(|x| x == "log").unwrap();
    assert!(first_stg < droplet_at, "{k:?}");
    assert!(
        stg[0].0 < lines.last().unwrap().0,
        "STG lines arrived with the result, not live"
    );
    assert_eq!(p.get_app(&app, "/").unwrap().0, 200);

    // An app whose web process exits: the last line says failed, with the reason.
    let bad = unique("crashy");
    let zip = zip_of(&[
        (
            "Procfile",
            b"web: python3 -c 'import sys; sys.exit(3)'\n",
            0o644,
        ),
        ("app.py", b"print('unused')", 0o644),
    ]);
    let (status, _, lines) = stream_push(&p, &token, &bad, zip);
    assert_eq!(status, 200);
    let last = &lines.last().unwrap().1;
    assert_eq!(last["status"], "failed", "{lines:?}");
    assert_eq!(last["code"], "start_failed");
    assert!(
        last["message"].as_str().unwrap().contains("crashed"),
        "{last}"
    );
}
