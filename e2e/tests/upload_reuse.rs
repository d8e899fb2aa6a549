//! Incremental upload and hostile archives, with the real CLI and server: an unchanged re-push
//! uploads no file content, a one-file change uploads one file, and links out of the tree, zip
//! bombs and file lists naming files the caller never uploaded are refused with clear errors; a
//! re-push that changed only app code reuses the staged layers (issue 24), one that adds a file,
//! a Procfile or changes requirements.txt stages in full.

use paas_e2e::{example, unique, wait_for, zip_of, Platform};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::time::Duration;

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The push's `Phases:` line (upload, stage, start, health, route as the controller measured
/// them), which also says what staging reused.
fn phases(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.starts_with("Phases: upload "))
        .unwrap_or_else(|| panic!("no Phases line in {stdout}"))
}

#[test]
fn incremental_upload_and_hostile_archives() {
    // One test in this binary, so this setting reaches only its own server.
    std::env::set_var("PAAS_MAX_UNPACKED_MB", "8");
    let p = Platform::start().expect("platform");
    let app = unique("incr");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example("python-wheels"), dir.path());
    // Incompressible, so an upload of it would show in the zip size.
    let big: Vec<u8> = (0..62_500u32)
        .flat_map(|i| Sha256::digest(i.to_le_bytes()))
        .collect();
    std::fs::write(dir.path().join("data.bin"), &big).unwrap();
    let path = dir.path().to_str().unwrap();

    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains(" 4 files)") && !out.stdout.contains("already"),
        "{out:?}"
    );
    assert!(
        !phases(&out.stdout).contains("reused"),
        "a first push stages: {out:?}"
    );

    // Unchanged: every file is matched, the zip carries directories only.
    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("0 files; 4 files, 1.9 MiB, already on the server"),
        "{out:?}"
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Uploading"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(" B, 0 files;"),
        "only a few hundred bytes of zip go up: {line}"
    );
    // Nothing staged again: the push's phases say the build cache gave the droplet (issue 24).
    assert!(phases(&out.stdout).contains("(droplet reused)"), "{out:?}");

    // One changed file is the only one uploaded, and the app runs the new code with the old files.
    let code = std::fs::read_to_string(dir.path().join("app.py"))
        .unwrap()
        .replace("greetlib.greet(\"paas\")", "greetlib.greet(\"again\")");
    std::fs::write(dir.path().join("app.py"), code).unwrap();
    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(out.stdout.contains("1 files; 3 files,"), "{out:?}");
    // Only the app's code changed since an additive staging (issue 24): the node put the new
    // files on the layers that staging added, and no staging container ran (its driver's
    // "-----> python buildpack" line is the first thing a staging container prints).
    assert!(
        phases(&out.stdout).contains("(staged layers reused)"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("reused the layers the python buildpack staged before")
            && !out.stdout.contains("-----> python buildpack"),
        "{out:?}"
    );
    wait_for(Duration::from_secs(30), "the changed app to serve", || {
        let (s, b) = p.get_app(&app, "/").ok()?;
        (s == 200 && b.contains("Greetings, again, from a vendored wheel")).then_some(())
    })
    .unwrap();
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["detected"], "python", "{v}");

    // A file added changes what the buildpack may see: staged again, with the same
    // requirements.txt, so the dependency layer is the node's cached one, not installed anew.
    std::fs::write(dir.path().join("notes.txt"), "more\n").unwrap();
    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        phases(&out.stdout).contains("(dependencies reused)")
            && out.stdout.contains("-----> python buildpack"),
        "{out:?}"
    );
    // ... after which a code change reuses the layers of that staging.
    let code = std::fs::read_to_string(dir.path().join("app.py"))
        .unwrap()
        .replace("greetlib.greet(\"again\")", "greetlib.greet(\"layers\")");
    std::fs::write(dir.path().join("app.py"), code).unwrap();
    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        phases(&out.stdout).contains("(staged layers reused)"),
        "{out:?}"
    );
    wait_for(
        Duration::from_secs(30),
        "the re-layered app to serve",
        || {
            let (s, b) = p.get_app(&app, "/").ok()?;
            (s == 200 && b.contains("Greetings, layers, from a vendored wheel")).then_some(())
        },
    )
    .unwrap();

    // A Procfile decides the processes: staged in full.
    std::fs::write(dir.path().join("Procfile"), "web: exec python3 app.py\n").unwrap();
    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        !phases(&out.stdout).contains("(staged layers reused)")
            && out.stdout.contains("-----> python buildpack"),
        "{out:?}"
    );
    // Changed dependencies: staged in full, installed anew (from the vendored wheel).
    let reqs = std::fs::read_to_string(dir.path().join("requirements.txt")).unwrap();
    std::fs::write(
        dir.path().join("requirements.txt"),
        format!("{reqs}# changed\n"),
    )
    .unwrap();
    let out = p.cli(&["push", &app, "-p", path]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        !phases(&out.stdout).contains("reused")
            && out
                .stdout
                .contains("Installing dependencies from requirements.txt"),
        "{out:?}"
    );
    wait_for(Duration::from_secs(30), "the restaged app to serve", || {
        let (s, b) = p.get_app(&app, "/").ok()?;
        (s == 200 && b.contains("Greetings, layers, from a vendored wheel")).then_some(())
    })
    .unwrap();

    // Hostile input straight at the API.
    let token = p.admin_token().unwrap();
    let client = reqwest::blocking::Client::new();
    let push = |name: &str, zip: Vec<u8>, resources: Option<String>| {
        let mut form = reqwest::blocking::multipart::Form::new().part(
            "archive",
            reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
        );
        if let Some(r) = resources {
            form = form.text("resources", r);
        }
        let res = client
            .post(format!("{}/v1/apps/{name}/push", p.api_url()))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .unwrap();
        (
            res.status().as_u16(),
            res.json::<serde_json::Value>().unwrap(),
        )
    };

    // A symbolic link out of the tree.
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        w.start_file("app.py", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"print(1)").unwrap();
        w.add_symlink(
            "secrets",
            "../../../etc/shadow",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.finish().unwrap();
    }
    let (status, body) = push(&unique("link"), buf.into_inner(), None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    assert!(
        body["message"].as_str().unwrap().contains("symbolic link"),
        "{body}"
    );

    // A bomb: 20 MB of zeros in a few KB, against an 8 MB unpack limit.
    let zeros = vec![0u8; 20 << 20];
    let bomb = zip_of(&[("app.py", b"print(1)", 0o644), ("zeros", &zeros, 0o644)]);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let (status, body) = push(&unique("bomb"), bomb, None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    assert!(
        body["message"].as_str().unwrap().contains("zip bomb"),
        "{body}"
    );

    // A file list naming content this user never uploaded gets nothing.
    let other = hex::encode(Sha256::digest(b"someone else's secret"));
    let list = format!(r#"[{{"path":"secret.txt","sha256":"{other}","size":21}}]"#);
    let (status, body) = push(
        &unique("guess"),
        zip_of(&[("app.py", b"print(1)", 0o644)]),
        Some(list),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not hold it for you"),
        "{body}"
    );

    // A held file placed out of the tree is refused like any unsafe path.
    let held = hex::encode(Sha256::digest(&big));
    let list = format!(
        r#"[{{"path":"../../outside.bin","sha256":"{held}","size":{}}}]"#,
        big.len()
    );
    let (status, body) = push(
        &unique("escape"),
        zip_of(&[("app.py", b"print(1)", 0o644)]),
        Some(list),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    assert!(
        body["message"].as_str().unwrap().contains("unsafe path"),
        "{body}"
    );
}
