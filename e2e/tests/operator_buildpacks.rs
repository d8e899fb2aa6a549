//! Operator buildpacks end to end on the real engine (issue 3): an operator adds a buildpack
//! that detects a `hello.txt` and serves it; a push of such a folder (which no built-in detects)
//! stages with it on the node and serves the file through the router; a developer cannot add one
//! (403); `paas buildpacks` lists the built-ins and the added one in detection order.

use paas_e2e::{unique, Platform};
use std::path::Path;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn operator_adds_a_buildpack_that_a_push_uses_and_a_developer_cannot_add_one() {
    let p = Platform::start().expect("platform");
    let bp = tempfile::tempdir().unwrap();
    write(
        &bp.path().join("bin/detect"),
        "#!/bin/sh\n[ -f \"$1/hello.txt\" ] || exit 1\necho hello\n",
    );
    write(
        &bp.path().join("bin/compile"),
        "#!/bin/sh\necho \"-----> hello buildpack compiling\"\n",
    );
    write(
        &bp.path().join("bin/release"),
        "#!/bin/sh\nprintf 'default_process_types:\\n  web: exec python3 -m http.server \"$PORT\"\\n'\n",
    );
    let name = unique("hello").replace('.', "-").to_lowercase();

    // A developer may not add a buildpack.
    let dev = unique("dev");
    assert!(p.cli(&["add-user", &dev, "-p", "developer-password"]).ok());
    assert!(p.cli(&["set-role", &dev, "developer"]).ok());
    let home = tempfile::tempdir().unwrap();
    let out = p.cli_as(
        home.path(),
        &[],
        &[
            "login",
            &p.api_url(),
            "-u",
            &dev,
            "-p",
            "developer-password",
        ],
    );
    assert!(out.ok(), "{out:?}");
    let out = p.cli_as(
        home.path(),
        &[],
        &["create-buildpack", &name, bp.path().to_str().unwrap()],
    );
    assert!(
        !out.ok() && out.stderr.contains("forbidden"),
        "a developer is refused: {out:?}"
    );

    // The operator adds it; it comes after the built-ins.
    let out = p.cli(&["create-buildpack", &name, bp.path().to_str().unwrap()]);
    assert!(out.ok() && out.stdout.contains("position 5"), "{out:?}");
    let list: serde_json::Value =
        serde_json::from_str(&p.cli(&["buildpacks", "--json"]).stdout).unwrap();
    let names: Vec<&str> = list["buildpacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["staticfile", "python", "node", "binary", name.as_str()]
    );
    // A buildpack without its three scripts is refused with a clear error.
    let broken = tempfile::tempdir().unwrap();
    write(&broken.path().join("bin/detect"), "#!/bin/sh\nexit 0\n");
    let out = p.cli(&[
        "create-buildpack",
        "broken",
        broken.path().to_str().unwrap(),
    ]);
    assert!(
        !out.ok() && out.stderr.contains("missing: bin/compile, bin/release"),
        "{out:?}"
    );

    // A folder only the added buildpack detects is staged with it and served.
    let app_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        app_dir.path().join("hello.txt"),
        "hello from an operator buildpack\n",
    )
    .unwrap();
    let app = unique("hi");
    let out = p.cli(&["push", &app, "-p", app_dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains("hello buildpack compiling"),
        "its compile output streams as STG lines: {out:?}"
    );
    assert_eq!(
        p.app_json(&app).unwrap()["revision"]["detected"],
        name.as_str()
    );
    let (status, body) = p.get_app(&app, "/hello.txt").unwrap();
    assert_eq!(
        (status, body.trim()),
        (200, "hello from an operator buildpack")
    );

    // Deleting it takes it out of the list.
    assert!(p.cli(&["delete-buildpack", &name]).ok());
    let list = p.cli(&["buildpacks"]).stdout;
    assert!(!list.contains(&name) && list.contains("binary"), "{list}");
}
