//! `paas ssh` (issue 21) on the real engine: a command with the app's env, its stdout and
//! stderr apart and its exit status; an interactive session over a pty driven by a WebSocket
//! client (resize, output, exit status); who is refused; the app and space switches; the audit
//! event; and a session that ends when the app stops.

use futures_util::{SinkExt, StreamExt};
use paas_common::ssh::{frame, Control, STDIN, STDOUT};
use paas_e2e::{call, example, unique, wait_for, Platform};
use std::path::Path;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn app_dir(dir: &Path, app: &str) {
    let public = dir.join("public");
    std::fs::create_dir_all(&public).unwrap();
    let src = example("procfile-app");
    std::fs::copy(src.join("Procfile"), dir.join("Procfile")).unwrap();
    std::fs::copy(src.join("public/index.html"), public.join("index.html")).unwrap();
    std::fs::write(
        dir.join("manifest.yml"),
        format!("applications:\n- name: {app}\n  memory: 128M\n  env:\n    X: hello-from-x\n"),
    )
    .unwrap();
}

/// Opens a session as `token` (none: anonymous); an HTTP refusal comes back as its status.
async fn open(p: &Platform, token: Option<&str>, app: &str, query: &str) -> Result<Ws, u16> {
    let url = format!(
        "{}/v1/apps/{app}/ssh?{query}",
        p.api_url().replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// Reads until the exit message (or the socket closes): (stdout, exit code).
async fn drain(ws: &mut Ws, within: Duration) -> (String, Option<i64>) {
    drain_until(ws, within, None).await
}

/// Reads until the exit message, the socket closes or stdout contains `until`.
async fn drain_until(ws: &mut Ws, within: Duration, until: Option<&str>) -> (String, Option<i64>) {
    let mut out = Vec::new();
    let mut exit = None;
    let read = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Binary(b)) if b.first() == Some(&STDOUT) => {
                    out.extend_from_slice(&b[1..])
                }
                Ok(Message::Text(t)) => {
                    if let Some(Control::Exit { code }) = Control::parse(&t) {
                        exit = Some(code);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
            if until.is_some_and(|u| String::from_utf8_lossy(&out).contains(u)) {
                break;
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .expect("the session to end in time");
    (String::from_utf8_lossy(&out).into_owned(), exit)
}

fn events(p: &Platform, token: &str, app: &str) -> Vec<String> {
    let (s, body) = call(
        p,
        token,
        reqwest::Method::GET,
        &format!("/v1/apps/{app}/events"),
        None,
        None,
    );
    assert_eq!(s, 200, "{body}");
    body["events"]
        .as_array()
        .or_else(|| body["items"].as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["kind"] == "app.ssh")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn ssh_into_an_instance() {
    let p = Platform::start().expect("platform");
    let app = unique("ssh");
    let dir = tempfile::tempdir().unwrap();
    app_dir(dir.path(), &app);
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let admin = p.admin_token().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // One command: the app's env, stdout and stderr apart, the exit status passed on.
    let out = p.cli(&["ssh", &app, "-c", "echo $X; echo err >&2; exit 7"]);
    assert_eq!(out.code, 7, "{out:?}{}", p.logs());
    assert_eq!(out.stdout, "hello-from-x\n", "{out:?}");
    assert_eq!(out.stderr, "err\n", "{out:?}");
    // As the instance's unprivileged user, in its working directory, with what it runs with.
    let out = p.cli(&[
        "ssh",
        &app,
        "-c",
        "id -u; pwd; echo $PORT; test -n \"$VCAP_APPLICATION\" && echo vcap",
    ]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.stdout, "2000\n/app\n8080\nvcap\n", "{out:?}");

    // An interactive session over a pty, driven by a WebSocket client.
    rt.block_on(async {
        let mut ws = open(
            &p,
            Some(&admin),
            &app,
            "index=0&process=web&tty=true&cols=80&rows=24",
        )
        .await
        .expect("session");
        ws.send(Message::Text(
            Control::Resize {
                cols: 101,
                rows: 33,
            }
            .to_text(),
        ))
        .await
        .unwrap();
        ws.send(Message::Binary(frame(
            STDIN,
            b"stty size; echo \"x=$X\"; exit 3\n",
        )))
        .await
        .unwrap();
        let (out, exit) = drain(&mut ws, Duration::from_secs(30)).await;
        assert_eq!(exit, Some(3), "{out}");
        assert!(out.contains("33 101"), "{out}");
        assert!(out.contains("x=hello-from-x"), "{out}");
    });

    // Refused: anonymous (before the upgrade), a developer of another space (the app does not
    // exist for them), a viewer of the app's own space.
    rt.block_on(async {
        assert_eq!(open(&p, None, &app, "").await.err(), Some(401));
    });
    let other_home = tempfile::tempdir().unwrap();
    let viewer_home = tempfile::tempdir().unwrap();
    let other_space = format!("{}/dev", unique("ssh-org"));
    assert!(p.cli(&["create-space", &other_space]).ok());
    for (user, role, space, home) in [
        (
            unique("ssh-other"),
            "developer",
            other_space.as_str(),
            &other_home,
        ),
        (
            unique("ssh-viewer"),
            "viewer",
            "default/default",
            &viewer_home,
        ),
    ] {
        assert!(p.cli(&["add-user", &user, "-p", "password-123"]).ok());
        let out = p.cli(&["set-role", &user, role, "--space", space]);
        assert!(out.ok(), "{out:?}");
        let out = p.cli_as(
            home.path(),
            &[],
            &["login", &p.api_url(), "-u", &user, "-p", "password-123"],
        );
        assert!(out.ok(), "{out:?}");
    }
    let out = p.cli_as(other_home.path(), &[], &["ssh", &app, "-c", "echo no"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("app_not_found"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = p.cli_as(viewer_home.path(), &[], &["ssh", &app, "-c", "echo no"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("forbidden"), "{out:?}");
    // A viewer may not switch ssh back on either.
    let out = p.cli_as(viewer_home.path(), &[], &["enable-ssh", &app]);
    assert!(out.stderr.contains("forbidden"), "{out:?}");

    // Turned off for the app, then for its space; each refuses with `ssh_disabled`.
    assert!(p.cli(&["disable-ssh", &app]).ok());
    let out = p.cli(&["ssh-enabled", &app]);
    assert!(out.stdout.contains("disabled"), "{out:?}");
    let out = p.cli(&["ssh", &app, "-c", "true"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("ssh_disabled"), "{out:?}");
    assert!(p.cli(&["enable-ssh", &app]).ok());
    let out = p.cli(&["ssh", &app, "-c", "true"]);
    assert!(out.ok(), "{out:?}");
    assert!(p.cli(&["disallow-space-ssh", "default/default"]).ok());
    let out = p.cli(&["ssh", &app, "-c", "true"]);
    assert!(out.stderr.contains("ssh_disabled"), "{out:?}");
    let out = p.cli(&["ssh-enabled", &app]);
    assert!(out.stdout.contains("its space"), "{out:?}");
    assert!(p.cli(&["allow-space-ssh", "default/default"]).ok());
    assert!(p.cli(&["ssh", &app, "-c", "true"]).ok());

    // The audit trail: who, which instance, and at the end how long and how it ended.
    let ssh_events = events(&p, &admin, &app);
    assert!(
        ssh_events
            .iter()
            .any(|m| m.contains("started") && m.contains("web/0 (instance ")),
        "{ssh_events:?}"
    );
    assert!(
        ssh_events.iter().any(|m| m.contains("ended after")
            && m.contains(" s, exit code 7")
            && m.contains("admin")),
        "{ssh_events:?}"
    );
    let out = p.cli(&["events", &app]);
    assert!(out.stdout.contains("app.ssh"), "{out:?}");

    // Stopping the app ends an open session.
    rt.block_on(async {
        let mut ws = open(&p, Some(&admin), &app, "tty=true&cols=80&rows=24")
            .await
            .expect("session");
        ws.send(Message::Binary(frame(STDIN, b"echo re''ady\n")))
            .await
            .unwrap();
        let (out, exit) = drain_until(&mut ws, Duration::from_secs(30), Some("ready")).await;
        assert!(out.contains("ready") && exit.is_none(), "{out}");
        let stop = {
            let p_api = p.api_url();
            let admin = admin.clone();
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                reqwest::blocking::Client::new()
                    .post(format!("{p_api}/v1/apps/{app}/stop"))
                    .bearer_auth(admin)
                    .json(&serde_json::json!({}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        };
        let (out, exit) = drain(&mut ws, Duration::from_secs(90)).await;
        assert_eq!(stop.await.unwrap(), 200);
        assert!(exit.is_some_and(|c| c != 0), "{exit:?} {out}");
    });
    wait_for(
        Duration::from_secs(30),
        "the app's containers to go",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap();
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

/// A session whose node never dials back (its agent is dead) fails after the pickup time with
/// `ssh_unavailable`, before any upgrade.
#[test]
fn a_session_no_node_takes_up_fails_clearly() {
    let mut p = Platform::start().expect("platform");
    let app = unique("ssh-gone");
    let dir = tempfile::tempdir().unwrap();
    app_dir(dir.path(), &app);
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let node = p.node_names()[0].clone();
    p.kill_agent(0);
    let started = std::time::Instant::now();
    let out = p.cli(&["ssh", &app, "-c", "true"]);
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("ssh_unavailable"), "{out:?}");
    assert!(out.stderr.contains(&node), "{out:?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(30),
        "{took:?}"
    );
    p.remove_node_containers(&node);
    p.expect_unconverged("the only node's agent was killed");
}
