//! The Dockerfile lifecycle on the real engine (issue 3): `examples/dockerfile-app` (FROM the
//! local stack image, a python3 server COPYied in, an ENV, EXPOSE 8000 and an exec-form CMD) is
//! built on the node and serves through the router as an unprivileged user in the full sandbox.
//! Its image is removed from the engine, and the restarted app comes up again from the image the
//! agent loaded from the blobstore. A Dockerfile FROM an image the node lacks fails the push with
//! its STG lines and leaves the running revision serving; `-c` replaces the image's CMD. A
//! name for uid 0 still runs as uid 2000, and a build over the time limit is stopped.

use paas_e2e::{example, unique, wait_for, Options, Platform};
use std::process::Command;
use std::time::Duration;

fn serves(p: &Platform, app: &str, path: &str, want: &str) -> String {
    wait_for(
        Duration::from_secs(60),
        &format!("{app}{path} to serve {want:?}"),
        || {
            let (status, body) = p.get_app(app, path).ok()?;
            (status == 200 && body.contains(want)).then_some(body)
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()))
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().expect("docker");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Full ids of the platform's droplet images of `app` on the engine.
fn images_of(app: &str) -> Vec<String> {
    let (_, out) = docker(&[
        "images",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=paas.app={app}"),
        "--filter",
        "label=paas.image=droplet",
    ]);
    let mut ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    ids.dedup();
    ids
}

/// Removes the test's images even when an assertion failed, so nothing is left behind: first
/// the app's containers (the app name is the test's own), which would keep an image in use.
struct Images(String);

impl Drop for Images {
    fn drop(&mut self) {
        let (_, ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=paas.app={}", self.0),
        ]);
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        for id in images_of(&self.0) {
            let _ = docker(&["rmi", "-f", &id]);
        }
    }
}

#[test]
fn a_dockerfile_app_is_built_on_the_node_and_reloaded_from_the_blobstore() {
    let p = Platform::start().expect("platform");
    let app = unique("dockerfile");
    let _cleanup = Images(app.clone());

    let out = p.cli(&[
        "push",
        &app,
        "-p",
        example("dockerfile-app").to_str().unwrap(),
    ]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains("Building the Dockerfile on node") && shown.contains("Step 1/"),
        "the build's STG lines are shown: {shown}"
    );

    // What the image's ENV says, through the router, as an unprivileged user on its own port.
    let body = serves(&p, &app, "/", "Hello from a Dockerfile");
    assert!(body.contains("(uid 2000)"), "{body}");
    let who: serde_json::Value = serde_json::from_str(&serves(&p, &app, "/whoami", "uid")).unwrap();
    assert_ne!(who["uid"], 0, "{who}");
    assert_eq!(
        (who["port"].as_u64(), who["cwd"].as_str()),
        (Some(8000), Some("/srv")),
        "PORT is the image's EXPOSE, the WORKDIR is kept: {who}"
    );

    let d = p.app_json(&app).unwrap();
    assert_eq!(
        d["processes"][0]["command"], "python3 /srv/server.py",
        "the image's CMD is the web command: {d}"
    );

    // The same sandbox as buildpack instances.
    let containers = p.containers_of(&app);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let (ok, sandbox) = docker(&[
        "inspect",
        "-f",
        "{{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.Tmpfs}}",
        &containers[0],
    ]);
    assert!(ok, "{sandbox}");
    for want in ["2000:2000", "[ALL]", "no-new-privileges", "true", "/tmp:"] {
        assert!(sandbox.contains(want), "{want} in {sandbox}");
    }
    assert!(
        !sandbox.contains(" 0 "),
        "memory and pids limits: {sandbox}"
    );

    // The image is labelled as the platform's; remove it from the engine.
    let images = images_of(&app);
    assert_eq!(images.len(), 1, "{images:?}");
    let out = p.cli(&["stop", &app]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the stopped app's container to go",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap();
    let (ok, msg) = docker(&["rmi", "-f", &images[0]]);
    assert!(ok, "{msg}");
    assert!(images_of(&app).is_empty());

    // Started again, the agent loads the image from the droplet in the blobstore.
    let out = p.cli(&["start", &app]);
    assert!(out.ok(), "{out:?}");
    serves(&p, &app, "/", "Hello from a Dockerfile");
    assert_eq!(images_of(&app), images, "the very image, loaded again");
    let cell = p.cli(&["logs", &app, "--recent", "--source", "CELL"]);
    assert!(
        cell.stdout.contains("Loaded image") && cell.stdout.contains("this engine did not have it"),
        "{cell:?}"
    );

    // A base image no operator allowed is refused before the build (issue 18); once allowed,
    // one the node does not have fails the push with its STG lines, nothing pulled, and
    // revision 1 keeps serving.
    let bad = tempfile::tempdir().unwrap();
    let missing = format!("paas-no-such-base-{}:1", &app[app.len() - 8..]);
    std::fs::write(
        bad.path().join("Dockerfile"),
        format!("FROM {missing}\nCMD [\"true\"]\n"),
    )
    .unwrap();
    let out = p.cli(&["push", &app, "-p", bad.path().to_str().unwrap()]);
    assert!(!out.ok(), "{out:?}");
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains(&format!("base image {missing} is not allowed")),
        "{shown}"
    );
    let out = p.cli(&["allow-base-image", &missing]);
    assert!(out.ok(), "{out:?}");
    let out = p.cli(&["push", &app, "-p", bad.path().to_str().unwrap()]);
    assert!(!out.ok(), "{out:?}");
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains(&format!("base image {missing} is not on node"))
            && shown.contains("nothing is pulled"),
        "{shown}"
    );
    let (ok, _) = docker(&["image", "inspect", &missing]);
    assert!(!ok, "nothing was pulled");
    let out = p.cli(&["disallow-base-image", &missing]);
    assert!(out.ok(), "{out:?}");
    let revisions = p.cli(&["revisions", &app, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&revisions.stdout).unwrap();
    assert_eq!(v["revisions"].as_array().unwrap().len(), 1, "{v}");
    serves(&p, &app, "/", "Hello from a Dockerfile");

    // A command given at push replaces the image's CMD, through the shell.
    let command = "GREETING='Overridden by -c' exec python3 /srv/server.py";
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        example("dockerfile-app").to_str().unwrap(),
        "-c",
        command,
    ]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    let body = serves(&p, &app, "/", "Overridden by -c");
    assert!(body.contains("(uid 2000)"), "{body}");
    assert_eq!(
        p.app_json(&app).unwrap()["processes"][0]["command"],
        command
    );

    let out = p.cli(&["delete", &app, "--force"]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the deleted app's container to go",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap();
}

/// `USER` naming a user the image's own `/etc/passwd` maps to uid 0 is root all the same: the
/// instance runs as the platform's unprivileged user. Without EXPOSE the app gets port 8080.
#[test]
fn a_user_name_for_uid_0_still_runs_unprivileged() {
    let p = Platform::start().expect("platform");
    let app = unique("dockeruser");
    let _cleanup = Images(app.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example("dockerfile-app").join("server.py"),
        dir.path().join("server.py"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM paas-stack:bookworm\nCOPY server.py /srv/server.py\nRUN echo 'toor:x:0:0:root by another name:/root:/bin/sh' >> /etc/passwd\nUSER toor\nCMD [\"python3\", \"/srv/server.py\"]\n",
    )
    .unwrap();
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let who: serde_json::Value = serde_json::from_str(&serves(&p, &app, "/whoami", "uid")).unwrap();
    assert_eq!(
        (
            who["uid"].as_u64(),
            who["gid"].as_u64(),
            who["port"].as_u64()
        ),
        (Some(2000), Some(2000), Some(8080)),
        "{who}"
    );
    let out = p.cli(&["delete", &app, "--force"]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the deleted app's container to go",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap();
}

/// A build over the staging time limit is stopped: the push fails saying so, and the engine
/// cancelled the build (its `RUN` container does not keep running).
#[test]
fn a_dockerfile_build_over_the_time_limit_is_stopped() {
    let mut p =
        Platform::start_server_env(Options::default(), &[("PAAS_STAGING_TIMEOUT_SECS", "5")])
            .expect("platform");
    p.start_agent(&unique("e2e-node"), "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("dockerslow");
    let _cleanup = Images(app.clone());
    let dir = tempfile::tempdir().unwrap();
    // The app's name in the RUN line gives this build its own cache key and findable container.
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM paas-stack:bookworm\nRUN echo {app} && sleep 120\nCMD [\"true\"]\n"),
    )
    .unwrap();
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr
            .contains("staging exceeded its time limit of 5 s"),
        "{out:?}"
    );
    wait_for(
        Duration::from_secs(30),
        "the build's RUN container to go",
        || {
            let (_, all) = docker(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
            (!all.contains(&app)).then_some(())
        },
    )
    .unwrap();
    assert!(images_of(&app).is_empty(), "no image from a stopped build");
}

/// Issue 18, finding 4: a Dockerfile of another space names a prefix of a tenant's droplet image
/// id (`FROM b6`): the engine would resolve it to that image, built with the tenant's code. It is
/// refused before the build with the same words as a prefix nothing has, so the refusal is no
/// oracle; an operator cannot allow an id either, only names.
#[test]
fn a_dockerfile_cannot_build_on_another_tenants_image_by_id() {
    let p = Platform::start().expect("platform");
    let victim = unique("dockervictim");
    let _cleanup = Images(victim.clone());
    let out = p.cli(&[
        "push",
        &victim,
        "-p",
        example("dockerfile-app").to_str().unwrap(),
    ]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let id = images_of(&victim)
        .first()
        .cloned()
        .expect("the victim's droplet image");
    let prefix = id.trim_start_matches("sha256:")[..4].to_string();
    let (ok, _) = docker(&["image", "inspect", &prefix]);
    assert!(
        ok,
        "the engine resolves the prefix {prefix}: the attack would work"
    );

    // The attacker: a developer of another space, logged in with its own home.
    assert!(p.cli(&["create-space", "attackers/dev"]).ok());
    let user = unique("attacker");
    assert!(p.cli(&["add-user", &user, "-p", "attacker-password"]).ok());
    assert!(p
        .cli(&["set-role", &user, "developer", "--space", "attackers/dev"])
        .ok());
    let home = tempfile::tempdir().unwrap();
    let out = p.cli_as(
        home.path(),
        &[],
        &[
            "login",
            &p.api_url(),
            "-u",
            &user,
            "-p",
            "attacker-password",
        ],
    );
    assert!(out.ok(), "{out:?}");
    assert!(p
        .cli_as(home.path(), &[], &["target", "attackers/dev"])
        .ok());

    // A prefix of a real image, a hex word no image starts with, and COPY --from by id.
    let nothing = if prefix.starts_with('0') {
        "ffff"
    } else {
        "0000"
    };
    let mut messages = Vec::new();
    for dockerfile in [
        format!("FROM {prefix}\nCMD [\"true\"]\n"),
        format!("FROM {nothing}\nCMD [\"true\"]\n"),
        format!("FROM paas-stack:bookworm\nCOPY --from={prefix} /srv /srv\nCMD [\"true\"]\n"),
        format!("FROM {id}\nCMD [\"true\"]\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), &dockerfile).unwrap();
        let app = unique("thief");
        let _cleanup = Images(app.clone());
        let out = p.cli_as(
            home.path(),
            &[],
            &["push", &app, "-p", dir.path().to_str().unwrap()],
        );
        assert!(!out.ok(), "{dockerfile}: {out:?}");
        let shown = format!("{}{}", out.stdout, out.stderr);
        // From "base image" on: the line's time differs.
        let line = shown
            .lines()
            .find_map(|l| l.find("base image ").map(|i| l[i..].to_string()))
            .filter(|l| l.contains("is not allowed"))
            .unwrap_or_else(|| panic!("{dockerfile}: {shown}"));
        assert!(!shown.contains("Step 1/"), "nothing was built: {shown}");
        assert!(images_of(&app).is_empty());
        messages.push(
            line.replace(&id, "IMAGE")
                .replace(&prefix, "IMAGE")
                .replace(nothing, "IMAGE"),
        );
    }
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "one message whether or not the image exists: {messages:#?}"
    );
    // Ids and digests cannot be allowed, only names.
    for name in [prefix.as_str(), id.as_str()] {
        let out = p.cli(&["allow-base-image", name]);
        assert!(out.stderr.contains("(invalid_name)"), "{out:?}");
    }
}
