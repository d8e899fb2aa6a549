//! docs/CI.md's deploy script, run as written against a real platform with a scoped token, so
//! the documented pipeline keeps working.

use paas_e2e::{example, unique, Platform};

fn doc_script() -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CI.md"),
    )
    .unwrap();
    let start = doc
        .find("```sh ci-deploy\n")
        .expect("the ci-deploy block in docs/CI.md")
        + "```sh ci-deploy\n".len();
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_string()
}

#[test]
fn documented_ci_deploy_works_with_a_scoped_token() {
    let p = Platform::start().expect("platform");
    let app = unique("ci");
    let out = p.cli(&[
        "tokens",
        "create",
        "pipeline",
        "--scope",
        "deploy",
        "--app",
        &app,
        "--expires",
        "1d",
    ]);
    assert!(out.ok(), "{out:?}");
    let token = out.stdout.trim().to_string();
    let run_in = |name: &str, dir: &std::path::Path| {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(doc_script())
            .env("PAAS_API", p.api_url())
            .env("PAAS_TOKEN", &token)
            .env("APP_DIR", dir)
            .env("APP_NAME", name)
            .output()
            .unwrap()
    };
    let run = |name: &str| run_in(name, &example("python-app"));
    let out = run(&app);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{app} is running")));
    assert_eq!(p.get_app(&app, "/").unwrap().0, 200);
    // The same token cannot deploy another app: to it, no other app exists.
    let out = run(&unique("other"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("app_not_found"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A push whose instances cannot start: the stream's last line says failed, and the script
    // fails on it, naming the code.
    let crashy = tempfile::tempdir().unwrap();
    std::fs::write(
        crashy.path().join("Procfile"),
        "web: python3 -c 'import sys; sys.exit(3)'\n",
    )
    .unwrap();
    std::fs::write(crashy.path().join("app.py"), "print('unused')\n").unwrap();
    let out = run_in(&app, crashy.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("deploy failed: start_failed"),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}
