//! The built-in PostgreSQL and Redis brokers (issue 22), driven through the controller's OSB
//! endpoint (`/broker/v2`) against a real agent and the real Docker engine: service containers
//! placed and reserved on a node, per-binding credentials that work and stop working on unbind,
//! data that survives a crash of the container and a restart of the agent, and deprovision
//! removing container and volume.

use anyhow::{bail, Context, Result};
use paas_e2e::{psql_binding as psql, unique, wait_for, Options, OsbClient, Platform};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;

const BROKER_PASSWORD: &str = "e2e-broker-secret";

fn platform() -> Result<(Platform, OsbClient, String)> {
    let mut p = Platform::start_server_env(
        Options::default(),
        &[("PAAS_BUILTIN_BROKER_PASSWORD", BROKER_PASSWORD)],
    )?;
    let node = unique("svc-node");
    p.start_agent(&node, "zone-a")?;
    let osb = OsbClient::new(&p, "broker", BROKER_PASSWORD);
    Ok((p, osb, node))
}

fn uuid() -> String {
    let a = unique("x").replace("x-", "");
    let b = unique("x").replace("x-", "");
    format!("{a}-{}-{}-{}-{b}{a}", &b[..4], &b[4..], &a[..4])
}

fn provision(osb: &OsbClient, id: &str, service: &str, plan: &str) -> Result<()> {
    let (status, body) = osb.call(
        Method::PUT,
        &format!("/service_instances/{id}?accepts_incomplete=true"),
        Some(json!({
            "service_id": service, "plan_id": plan,
            "organization_guid": "org", "space_guid": "space",
            "context": {"platform": "paas"},
        })),
    )?;
    if status != 202 {
        bail!("provision answered {status} {body}");
    }
    assert_eq!(body["operation"], "provision");
    let state = osb.wait_operation(id, Duration::from_secs(180))?;
    assert_eq!(state, "succeeded");
    Ok(())
}

fn bind(osb: &OsbClient, id: &str, binding: &str) -> Result<Value> {
    let (status, body) = osb.call(
        Method::PUT,
        &format!("/service_instances/{id}/service_bindings/{binding}"),
        Some(json!({"service_id": "x", "plan_id": "x", "bind_resource": {"app_guid": "a"}})),
    )?;
    if status != 201 {
        bail!("bind answered {status} {body}");
    }
    Ok(body["credentials"].clone())
}

fn unbind(osb: &OsbClient, id: &str, binding: &str) -> Result<()> {
    let (status, body) = osb.call(
        Method::DELETE,
        &format!("/service_instances/{id}/service_bindings/{binding}?service_id=x&plan_id=x"),
        None,
    )?;
    if status != 200 {
        bail!("unbind answered {status} {body}");
    }
    Ok(())
}

fn deprovision(osb: &OsbClient, id: &str) -> Result<()> {
    let (status, body) = osb.call(
        Method::DELETE,
        &format!("/service_instances/{id}?service_id=x&plan_id=x&accepts_incomplete=true"),
        None,
    )?;
    if status != 202 {
        bail!("deprovision answered {status} {body}");
    }
    assert_eq!(osb.wait_operation(id, Duration::from_secs(90))?, "gone");
    Ok(())
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn service_container(id: &str) -> String {
    docker(&["ps", "-aq", "--filter", &format!("label=paas.service={id}")])
}

fn node_info(p: &Platform, node: &str) -> Result<Value> {
    let token = p.admin_token()?;
    let v: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/nodes", p.api_url()))
        .bearer_auth(token)
        .send()?
        .json()?;
    v["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == node).cloned())
        .context("node not listed")
}

#[test]
fn postgresql_provision_bind_unbind_survive_restarts_and_deprovision() -> Result<()> {
    let (mut p, osb, node) = platform()?;

    // Basic auth is required; the catalog lists both services with their plans.
    let anonymous = OsbClient::new(&p, "broker", "wrong");
    assert_eq!(anonymous.call(Method::GET, "/catalog", None)?.0, 401);
    let (status, catalog) = osb.call(Method::GET, "/catalog", None)?;
    assert_eq!(status, 200, "{catalog}");
    let services = catalog["services"].as_array().context("services")?;
    let pg = services
        .iter()
        .find(|s| s["name"] == "postgresql")
        .context("postgresql")?;
    let plans: Vec<&str> = pg["plans"]
        .as_array()
        .context("plans")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(plans, ["small", "medium"]);
    assert!(services.iter().any(|s| s["name"] == "redis"));
    let (service_id, plan_id) = (
        pg["id"].as_str().unwrap(),
        pg["plans"][0]["id"].as_str().unwrap(),
    );

    // Synchronous provisioning is refused: this broker is asynchronous.
    let id = uuid();
    let (status, body) = osb.call(
        Method::PUT,
        &format!("/service_instances/{id}"),
        Some(json!({"service_id": service_id, "plan_id": plan_id, "organization_guid": "o", "space_guid": "s"})),
    )?;
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("AsyncRequired"))
    );

    provision(&osb, &id, service_id, plan_id)?;

    // Its container is reserved on the node like an instance, and sandboxed.
    let info = node_info(&p, &node)?;
    assert_eq!(info["services"], 1, "{info}");
    assert_eq!(info["services_memory_mb"], 256, "{info}");
    assert!(info["memory_used_mb"].as_u64() >= Some(256), "{info}");
    let container = service_container(&id);
    assert!(!container.is_empty());
    let inspect = docker(&[
        "inspect",
        "--format",
        "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}}",
        &container,
    ]);
    assert_eq!(
        inspect,
        format!(
            "postgres true [ALL] [no-new-privileges] {}",
            256 * 1024 * 1024
        )
    );

    // Two bindings, two roles, one shared database.
    let (b1, b2) = (uuid(), uuid());
    let c1 = bind(&osb, &id, &b1)?;
    let c2 = bind(&osb, &id, &b2)?;
    assert_ne!(c1["username"], c2["username"]);
    assert_ne!(c1["password"], c2["password"]);
    let uri = c1["uri"].as_str().unwrap_or_default();
    assert!(
        uri.starts_with("postgres://") && uri.ends_with("/db"),
        "{uri}"
    );
    assert!(c1["jdbcUrl"]
        .as_str()
        .unwrap_or_default()
        .starts_with("jdbc:postgresql://"));
    psql(
        &c1,
        "CREATE TABLE notes (v text); INSERT INTO notes VALUES ('hello')",
    )
    .map_err(anyhow::Error::msg)?;
    assert_eq!(
        psql(&c2, "SELECT v FROM notes").map_err(anyhow::Error::msg)?,
        "hello"
    );
    psql(&c2, "INSERT INTO notes VALUES ('world')").map_err(anyhow::Error::msg)?;

    // Unbind: the first binding's login is refused, the second still works.
    unbind(&osb, &id, &b1)?;
    let refused = psql(&c1, "SELECT 1").expect_err("an unbound role must not log in");
    assert!(
        refused.contains("authentication failed") || refused.contains("does not exist"),
        "{refused}"
    );
    assert_eq!(
        psql(&c2, "SELECT string_agg(v, ',' ORDER BY v) FROM notes").map_err(anyhow::Error::msg)?,
        "hello,world"
    );
    // Unbinding again: the broker no longer knows it.
    let (status, _) = osb.call(
        Method::DELETE,
        &format!("/service_instances/{id}/service_bindings/{b1}?service_id=x&plan_id=x"),
        None,
    )?;
    assert_eq!(status, 410);

    // The container crashes: the agent starts it again, the data is on its volume.
    docker(&["kill", &container]);
    wait_for(Duration::from_secs(60), "the row after a crash", || {
        psql(&c2, "SELECT count(*) FROM notes")
            .ok()
            .filter(|n| n == "2")
    })?;
    // The agent restarts: the same container keeps running with the same data.
    p.restart_agent(0)?;
    wait_for(
        Duration::from_secs(60),
        "the row after an agent restart",
        || {
            psql(&c2, "SELECT count(*) FROM notes")
                .ok()
                .filter(|n| n == "2")
        },
    )?;
    assert_eq!(service_container(&id), container);

    // Backup, drop the table, restore: the rows are back.
    let backup = run_job(&osb, &id, "backups", None)?;
    psql(&c2, "DROP TABLE notes").map_err(anyhow::Error::msg)?;
    assert!(psql(&c2, "SELECT 1 FROM notes").is_err());
    run_job(&osb, &id, "restore", Some(json!({ "backup": backup })))?;
    assert_eq!(
        psql(&c2, "SELECT string_agg(v, ',' ORDER BY v) FROM notes").map_err(anyhow::Error::msg)?,
        "hello,world"
    );
    let (status, list) = osb.call(
        Method::GET,
        &format!("/service_instances/{id}/backups"),
        None,
    )?;
    assert_eq!(status, 200);
    let kinds: Vec<(&str, &str)> = list
        .as_array()
        .context("jobs")?
        .iter()
        .map(|j| {
            (
                j["kind"].as_str().unwrap_or(""),
                j["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, [("backup", "done"), ("restore", "done")]);

    // Deprovision: container, then volume, go; the node no longer reserves anything for it.
    deprovision(&osb, &id)?;
    wait_for(
        Duration::from_secs(30),
        "the container and volume to go",
        || {
            let volumes = docker(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name=paas-svc-{id}"),
            ]);
            (service_container(&id).is_empty() && volumes.is_empty()).then_some(())
        },
    )?;
    let info = node_info(&p, &node)?;
    assert_eq!(
        (info["services"].as_u64(), info["memory_used_mb"].as_u64()),
        (Some(0), Some(0)),
        "{info}"
    );
    Ok(())
}

/// Starts a backup or restore and waits for it to be done; its id.
fn run_job(osb: &OsbClient, id: &str, what: &str, body: Option<Value>) -> Result<String> {
    let (status, job) = osb.call(
        Method::POST,
        &format!("/service_instances/{id}/{what}"),
        body,
    )?;
    if status != 202 {
        bail!("{what} answered {status} {job}");
    }
    let job_id = job["id"].as_str().context("job id")?.to_string();
    let state = wait_for(Duration::from_secs(120), "the service job", || {
        let (_, list) = osb
            .call(
                Method::GET,
                &format!("/service_instances/{id}/backups"),
                None,
            )
            .ok()?;
        let j = list
            .as_array()?
            .iter()
            .find(|j| j["id"] == job_id.as_str())?
            .clone();
        (j["state"] != "pending").then_some(j)
    })?;
    if state["state"] != "done" {
        bail!("{what} ended {state}");
    }
    Ok(job_id)
}

/// One RESP command; the reply's first line.
fn redis_cmd(conn: &mut BufReader<std::net::TcpStream>, args: &[&str]) -> Result<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(req.as_bytes())?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    if let Some(n) = line.strip_prefix('$') {
        let n: i64 = n.trim().parse()?;
        if n >= 0 {
            let mut value = String::new();
            conn.read_line(&mut value)?;
            return Ok(value.trim_end().to_string());
        }
    }
    Ok(line.trim_end().to_string())
}

fn redis_login(creds: &Value) -> Result<(BufReader<std::net::TcpStream>, String)> {
    let addr = format!(
        "{}:{}",
        creds["external_hostname"].as_str().unwrap_or_default(),
        creds["external_port"]
    );
    let stream = std::net::TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut conn = BufReader::new(stream);
    let auth = redis_cmd(
        &mut conn,
        &[
            "AUTH",
            creds["username"].as_str().unwrap_or_default(),
            creds["password"].as_str().unwrap_or_default(),
        ],
    )?;
    Ok((conn, auth))
}

#[test]
fn redis_provision_bind_set_get_unbind_and_deprovision() -> Result<()> {
    let (p, osb, node) = platform()?;
    let id = uuid();
    provision(&osb, &id, "redis", "small")?;
    let info = node_info(&p, &node)?;
    assert_eq!(
        (
            info["services"].as_u64(),
            info["services_memory_mb"].as_u64()
        ),
        (Some(1), Some(128)),
        "{info}"
    );

    let (b1, b2) = (uuid(), uuid());
    let c1 = bind(&osb, &id, &b1)?;
    let c2 = bind(&osb, &id, &b2)?;
    assert_ne!(c1["username"], c2["username"]);
    assert!(c1["uri"]
        .as_str()
        .unwrap_or_default()
        .starts_with("redis://"));
    let (mut conn, auth) = redis_login(&c1)?;
    assert_eq!(auth, "+OK");
    assert_eq!(redis_cmd(&mut conn, &["SET", "greeting", "hello"])?, "+OK");
    let (mut other, _) = redis_login(&c2)?;
    assert_eq!(redis_cmd(&mut other, &["GET", "greeting"])?, "hello");
    // Administration is not a binding's business.
    assert!(redis_cmd(&mut other, &["CONFIG", "GET", "dir"])?.starts_with("-NOPERM"));

    unbind(&osb, &id, &b1)?;
    let (_, auth) = redis_login(&c1)?;
    assert!(auth.starts_with("-WRONGPASS"), "{auth}");
    let (mut other, auth) = redis_login(&c2)?;
    assert_eq!(auth, "+OK");
    assert_eq!(redis_cmd(&mut other, &["GET", "greeting"])?, "hello");

    deprovision(&osb, &id)?;
    wait_for(
        Duration::from_secs(30),
        "the container and volume to go",
        || {
            let volumes = docker(&[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name=paas-svc-{id}"),
            ]);
            (service_container(&id).is_empty() && volumes.is_empty()).then_some(())
        },
    )?;
    Ok(())
}
