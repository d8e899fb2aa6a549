//! Manifests with the real CLI and platform: a Cloud Foundry `manifest.yml` with two apps pushes
//! both, each with its manifest env and settings; flags override it for one app; a bad manifest
//! is refused before anything is uploaded, with the field and the line.

use paas_e2e::{example, unique, wait_for, Platform};
use std::path::Path;
use std::time::Duration;

fn copy_example(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(example("python-app").join("app.py"), to.join("app.py")).unwrap();
}

#[test]
fn cloud_foundry_manifest_with_two_apps() {
    let p = Platform::start().expect("platform");
    let (one, two) = (unique("mf-one"), unique("mf-two"));
    let dir = tempfile::tempdir().unwrap();
    copy_example(&dir.path().join("one"));
    copy_example(&dir.path().join("two"));
    let manifest = format!(
        "---
applications:
- name: {one}
  path: one
  memory: 128M
  instances: 1
  buildpacks:
  - python_buildpack
  env:
    GREETING: Hi from one
  routes:
  - route: {one}.example.com
  health-check-type: http
  health-check-http-endpoint: /
  stack: cflinuxfs4
- name: {two}
  path: two
  memory: 96M
  env:
    GREETING: Hi from two
"
    );
    std::fs::write(dir.path().join("manifest.yml"), manifest).unwrap();

    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    // `stack: cflinuxfs4` is Cloud Foundry's name for the current stack: taken, not warned about.
    assert!(!out.stderr.contains("stack"), "{out:?}");
    for (app, want, mem) in [(&one, "Hi from one!", 128), (&two, "Hi from two!", 96)] {
        let body = wait_for(Duration::from_secs(30), "the app to serve", || {
            let (s, b) = p.get_app(app, "/").ok()?;
            (s == 200).then_some(b)
        })
        .unwrap();
        assert!(body.contains(want), "{app}: {body}");
        assert_eq!(p.app_json(app).unwrap()["memory_mb"], mem);
    }
    // The manifest's health check is the web process's check.
    let v = p.app_json(&one).unwrap();
    assert_eq!(v["processes"][0]["health_check"], "http /", "{v}");
    assert_eq!(
        p.app_json(&two).unwrap()["processes"][0]["health_check"],
        "port"
    );

    // `paas push NAME` pushes just that app; flags override the manifest.
    let out = p.cli_in(&["push", &two, "-m", "112M"], Some(dir.path()));
    assert!(out.ok(), "{out:?}");
    assert!(!out.stdout.contains(&one), "only {two} is pushed: {out:?}");
    let v = p.app_json(&two).unwrap();
    assert_eq!(v["memory_mb"], 112);
    assert_eq!(v["revision"]["number"], 2);
    assert_eq!(p.app_json(&one).unwrap()["revision"]["number"], 1);
    // Flags with several apps are ambiguous.
    let out = p.cli_in(&["push", "-m", "64M"], Some(dir.path()));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("give its NAME"), "{out:?}");
}

#[test]
fn bad_manifests_are_refused_with_field_and_line() {
    let p = Platform::start().expect("platform");
    let app = unique("badmf");
    let cases = [
        (
            format!("applications:\n- name: {app}\n  memory: lots\n"),
            "line 3",
            "memory",
        ),
        (
            format!("applications:\n- name: {app}\n  instances: -2\n"),
            "line 3",
            "instances",
        ),
        (
            format!("applications:\n- name: {app}\n  instances: many\n"),
            "line 3",
            "instances",
        ),
        (
            format!("applications:\n- name: {app}\n  buildpacks: [cobol_buildpack]\n"),
            "line 3",
            "unknown buildpack",
        ),
        (
            format!("applications:\n- name: {app}\n  env: [A]\n"),
            "line 3",
            "env",
        ),
    ];
    for (text, line, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_example(dir.path());
        std::fs::write(dir.path().join("manifest.yml"), &text).unwrap();
        let out = p.cli_in(&["push"], Some(dir.path()));
        assert_eq!(out.code, 1, "{text}: {out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
        assert!(
            out.stderr.contains("manifest.yml")
                && out.stderr.contains(line)
                && out.stderr.contains(field),
            "{text}: {out:?}"
        );
        assert!(
            !out.stdout.contains("Uploading"),
            "nothing uploaded: {out:?}"
        );
    }
    let out = p.cli(&["app", &app]);
    assert!(out.stderr.contains("app_not_found"), "{out:?}");
}
