//! Tenancy and CI tokens: `paas tokens create|list|revoke`, `paas users`, `paas add-user`,
//! `paas set-role`, `paas spaces`, `paas create-space`, `paas space-quota`, `paas target`.

use crate::client::Client;
use crate::config::{Config, Env};
use crate::output::table;
use anyhow::{bail, Context};
use paas_common::api::{
    CreateSpaceRequest, CreateUserRequest, SetRoleRequest, SigningKeyList, SpaceInfo, SpaceList,
    SpaceQuota, SpaceQuotaInfo, TokenCreateRequest, TokenCreated, TokenList, UserInfo, UserList,
};

#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// Create an API token for CI; prints the token once, on stdout.
    Create {
        /// A name to recognise the token by
        name: String,
        /// What the token may do: read, deploy or admin
        #[arg(long, default_value = "deploy")]
        scope: String,
        /// Restrict the token to one app
        #[arg(long)]
        app: Option<String>,
        /// Lifetime, e.g. 30d, 12h, 90m
        #[arg(long, default_value = "30d")]
        expires: String,
    },
    /// List your API tokens (never the tokens themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token by id; its next use is refused.
    Revoke { id: String },
}

pub fn tokens(cmd: TokensCmd, client: &Client) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create {
            name,
            scope,
            app,
            expires,
        } => {
            let created: TokenCreated = client.post_json(
                "/v1/tokens",
                &TokenCreateRequest {
                    name,
                    scope,
                    app,
                    expires_in: Some(expires),
                },
            )?;
            eprintln!(
                "Created token {} ({} scope{}, expires {}). It is shown only now:",
                created.info.id,
                created.info.scope,
                created
                    .info
                    .app
                    .as_deref()
                    .map(|a| format!(", app {a}"))
                    .unwrap_or_default(),
                created.info.expires_at.format("%Y-%m-%d %H:%M UTC")
            );
            println!("{}", created.token);
        }
        TokensCmd::List { json } => {
            let list: TokenList = client.get_all("/v1/tokens", "tokens")?.value;
            if json {
                println!("{}", serde_json::to_string_pretty(&list.tokens)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        t.scope.clone(),
                        t.app.clone().unwrap_or_else(|| "-".into()),
                        t.expires_at.format("%Y-%m-%d").to_string(),
                        t.last_used_at
                            .map_or("never".into(), |d| d.format("%Y-%m-%d %H:%M").to_string()),
                        if t.revoked {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "ID",
                        "NAME",
                        "SCOPE",
                        "APP",
                        "EXPIRES",
                        "LAST USED",
                        "STATE"
                    ],
                    &rows
                )
            );
        }
        TokensCmd::Revoke { id } => {
            client.delete_path(&format!("/v1/tokens/{id}"))?;
            println!("Revoked token {id}");
        }
    }
    Ok(())
}

pub fn users(json: bool, client: &Client) -> anyhow::Result<()> {
    let list: UserList = client.get_all("/v1/users", "users")?.value;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.users)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .users
        .iter()
        .map(|u| {
            let roles: Vec<String> = u
                .roles
                .iter()
                .map(|r| format!("{}:{}", r.space, r.role))
                .collect();
            vec![
                u.username.clone(),
                if u.operator {
                    "yes".into()
                } else {
                    "no".into()
                },
                if roles.is_empty() {
                    "-".into()
                } else {
                    roles.join(", ")
                },
            ]
        })
        .collect();
    print!("{}", table(&["USER", "OPERATOR", "ROLES"], &rows));
    Ok(())
}

pub fn add_user(
    username: String,
    password: Option<String>,
    operator: bool,
    client: &Client,
) -> anyhow::Result<()> {
    let password = match password {
        Some(p) => p,
        None => super::read_line()?
            .filter(|p| !p.is_empty())
            .context("no password given: pass -p or one line on stdin")?,
    };
    let u: UserInfo = client.post_json(
        "/v1/users",
        &CreateUserRequest {
            username,
            password,
            operator,
        },
    )?;
    println!(
        "Created user {}{}",
        u.username,
        if u.operator { " (operator)" } else { "" }
    );
    Ok(())
}

pub fn set_role(
    username: String,
    role: String,
    space: Option<String>,
    org: Option<String>,
    client: &Client,
) -> anyhow::Result<()> {
    let role = (role != "none").then_some(role);
    let (space, where_) = match &org {
        Some(o) => (String::new(), format!("org {o}")),
        None => {
            let s = space.unwrap_or_else(|| "default/default".into());
            (s.clone(), s)
        }
    };
    let u: UserInfo = client.put_json(
        &format!("/v1/users/{username}/roles"),
        &SetRoleRequest {
            space,
            org,
            role: role.clone(),
        },
    )?;
    let space = where_;
    match role {
        Some(r) => println!("{} is now {r} in {space}", u.username),
        None => println!("{} has no role in {space} any more", u.username),
    }
    Ok(())
}

pub fn spaces(client: &Client) -> anyhow::Result<()> {
    let list: SpaceList = client.get_all("/v1/spaces", "spaces")?.value;
    for s in list.spaces {
        println!("{}/{}", s.org, s.name);
    }
    Ok(())
}

pub fn create_space(space: String, client: &Client) -> anyhow::Result<()> {
    let Some((org, name)) = space.split_once('/') else {
        bail!("name the space as ORG/SPACE")
    };
    let s: SpaceInfo = client.post_json(
        "/v1/spaces",
        &CreateSpaceRequest {
            org: org.into(),
            name: name.into(),
        },
    )?;
    println!("Created space {}/{}", s.org, s.name);
    Ok(())
}

/// `paas target [ORG/SPACE]`: shows or sets the space commands act in.
pub fn target(space: Option<String>, env: &Env) -> anyhow::Result<()> {
    let cfg: Config = env
        .load()?
        .context("not logged in: run `paas login URL` first")?;
    let Some(space) = space else {
        println!(
            "API:   {}\nSpace: {}",
            cfg.api,
            cfg.space.as_deref().unwrap_or("default/default")
        );
        return Ok(());
    };
    if space
        .split_once('/')
        .is_none_or(|(o, s)| o.is_empty() || s.is_empty())
    {
        bail!("name the space as ORG/SPACE");
    }
    let client = Client::from_config(Some(cfg.clone()))?;
    let list: SpaceList = client.get_all("/v1/spaces", "spaces")?.value;
    if !list
        .spaces
        .iter()
        .any(|s| format!("{}/{}", s.org, s.name) == space)
    {
        bail!("space {space} not found (space_not_found)");
    }
    if env.api.is_some() && env.token.is_some() {
        bail!("PAAS_API and PAAS_TOKEN are set: set PAAS_SPACE instead of `paas target`");
    }
    env.save(&Config {
        space: Some(space.clone()),
        ..cfg
    })?;
    println!("Targeting {space}");
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// List the signing keys: the active one and retired ones still verifying tokens.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a new active signing key. Tokens signed by the old one keep working for one token
    /// lifetime (CI tokens: until they expire), then the old key is dropped.
    Rotate,
}

pub fn keys(cmd: KeysCmd, client: &Client) -> anyhow::Result<()> {
    let (list, json): (SigningKeyList, bool) = match cmd {
        KeysCmd::List { json } => (client.get_json("/v1/admin/keys")?, json),
        KeysCmd::Rotate => {
            let list: SigningKeyList =
                client.post_json("/v1/admin/keys/rotate", &serde_json::json!({}))?;
            if let Some(k) = list.keys.iter().find(|k| k.active) {
                println!("Rotated: new tokens are signed by key {}", k.kid);
            }
            (list, false)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .keys
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                if k.active { "active" } else { "retired" }.to_string(),
                k.created_at.to_rfc3339(),
                k.retired_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", table(&["KID", "STATE", "CREATED", "RETIRED"], &rows));
    Ok(())
}

/// `paas space-quota ORG/SPACE [--memory 2G] [--instances 10] [--apps 5] [--routes 10]`: with
/// no limit given, shows the quota and usage; each limit given replaces that one (`unlimited`
/// removes it), the others stay.
#[derive(Debug, clap::Args)]
pub struct QuotaArgs {
    /// ORG/SPACE
    pub space: String,
    /// Memory of all started instances together, e.g. 2G or 512M, or unlimited
    #[arg(long)]
    pub memory: Option<String>,
    /// Started instances (every process type), or unlimited
    #[arg(long)]
    pub instances: Option<String>,
    /// Apps, started or stopped, or unlimited
    #[arg(long)]
    pub apps: Option<String>,
    /// Routes (default and mapped), or unlimited
    #[arg(long)]
    pub routes: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// A limit from the command line: `None` for `unlimited`.
fn limit(
    flag: &str,
    v: &str,
    parse: impl Fn(&str) -> Result<u64, String>,
) -> anyhow::Result<Option<u64>> {
    if v.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    parse(v)
        .map(Some)
        .map_err(|m| anyhow::anyhow!("--{flag} {v:?}: {m} (or unlimited)"))
}

fn count(v: &str) -> Result<u64, String> {
    v.trim()
        .parse()
        .map_err(|_| "not a whole number".to_string())
}

pub fn space_quota(args: QuotaArgs, client: &Client) -> anyhow::Result<()> {
    if args
        .space
        .split_once('/')
        .is_none_or(|(o, s)| o.is_empty() || s.is_empty())
    {
        bail!("name the space as ORG/SPACE");
    }
    let path = format!("/v1/spaces/{}/quota", args.space);
    let mut info: SpaceQuotaInfo = client.get_json(&path)?;
    let changes = [
        ("memory", &args.memory),
        ("instances", &args.instances),
        ("apps", &args.apps),
        ("routes", &args.routes),
    ];
    if changes.iter().any(|(_, v)| v.is_some()) {
        let mut q: SpaceQuota = info.quota.clone();
        if let Some(v) = &args.memory {
            q.memory_mb = limit("memory", v, paas_common::domain::parse_memory_mb)?;
        }
        if let Some(v) = &args.instances {
            q.instances = limit("instances", v, count)?;
        }
        if let Some(v) = &args.apps {
            q.apps = limit("apps", v, count)?;
        }
        if let Some(v) = &args.routes {
            q.routes = limit("routes", v, count)?;
        }
        info = client.put_json(&path, &q)?;
        if !args.json {
            println!("Set the quota of {}", info.space);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let shown = |v: Option<u64>, unit: &str| {
        v.map_or_else(|| "unlimited".to_string(), |n| format!("{n}{unit}"))
    };
    let rows = vec![
        vec![
            "memory".to_string(),
            format!("{} MB", info.usage.memory_mb),
            shown(info.quota.memory_mb, " MB"),
        ],
        vec![
            "instances".to_string(),
            info.usage.instances.to_string(),
            shown(info.quota.instances, ""),
        ],
        vec![
            "apps".to_string(),
            info.usage.apps.to_string(),
            shown(info.quota.apps, ""),
        ],
        vec![
            "routes".to_string(),
            info.usage.routes.to_string(),
            shown(info.quota.routes, ""),
        ],
    ];
    println!("Space {}", info.space);
    print!("{}", table(&["RESOURCE", "IN USE", "QUOTA"], &rows));
    Ok(())
}
