//! `paas apply -f platform.yml [--dry-run] [--prune] [--yes] [--json]`: makes a space match a
//! document ([`paas_common::apply`]). The document is read and checked here, each app's `path`
//! digested as a push would send it ([`crate::archive::scan`]), and the whole sent as JSON to
//! `POST /v1/spaces/{org}/{space}/apply`; the answer is the plan, printed as a diff (`+` new,
//! `~` changed, `-` removed). The controller makes every change but the source: new apps and
//! apps whose folder changed are pushed from here afterwards, through the ordinary push.
//!
//! `--prune` asks first (it deletes apps): a dry run shows what would go, then a y/N question,
//! unless `--yes`.

use crate::archive;
use crate::client::{seg, Client};
use anyhow::{anyhow, bail, Context};
use paas_common::apply::{ApplyPlan, ChangeKind};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The document: `space`, `applications` (as in a manifest, each with its `path`),
    /// `services`
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// Print the changes without making them
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the space's apps the document does not name (and unmap routes its apps no
    /// longer list)
    #[arg(long)]
    pub prune: bool,
    /// Prune without asking
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait, once staged, for a pushed app's instances to run
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let parsed =
        paas_common::apply::parse(&text).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    for w in &parsed.warnings {
        eprintln!("warning: {}: {w}", args.file.display());
    }
    let doc = &parsed.document;
    let space = doc
        .space
        .clone()
        .or_else(|| client.space().map(str::to_string))
        .unwrap_or_else(|| "default/default".into());
    let (org, name) = space
        .split_once('/')
        .ok_or_else(|| anyhow!("space {space:?} must be ORG/SPACE"))?;
    let client = client.in_space(&space);
    let base = args
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut sources = std::collections::BTreeMap::new();
    let mut folders = std::collections::BTreeMap::new();
    for a in &doc.applications {
        let Some(app) = &a.name else { continue };
        let path = base.join(a.path.clone().unwrap_or_default());
        archive::check_root(&path).with_context(|| format!("application {app}"))?;
        let files = archive::scan(&path)?;
        let digest = paas_common::apply::source_digest(
            files
                .iter()
                .map(|f| (f.path.as_str(), f.sha256.as_str(), f.executable)),
        );
        sources.insert(app.to_string(), digest);
        folders.insert(app.to_string(), path);
    }
    // The file's own mapping (so the controller reads what the user wrote) plus the digests.
    let body = paas_common::apply::to_json(&text, sources)
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let url = |dry_run: bool| {
        format!(
            "/v1/spaces/{}/{}/apply?dry_run={dry_run}&prune={}",
            seg(org),
            seg(name),
            args.prune
        )
    };

    if args.prune && !args.dry_run && !args.yes {
        let plan: ApplyPlan = client.post_json(&url(true), &body)?;
        let gone: Vec<&str> = plan
            .changes
            .iter()
            .filter(|c| c.kind.sign() == '-')
            .map(|c| c.app.as_deref().unwrap_or_default())
            .collect();
        if !gone.is_empty() && !confirm(&plan, &space)? {
            println!("Nothing changed.");
            return Ok(());
        }
    }
    let plan: ApplyPlan = client.post_json(&url(args.dry_run), &body)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_plan(&plan);
    }
    if args.dry_run {
        return Ok(());
    }
    let timeout = Duration::from_secs(args.timeout);
    for app in &plan.push {
        let a = doc
            .applications
            .iter()
            .find(|a| a.name.as_ref().is_some_and(|n| n.as_str() == app))
            .ok_or_else(|| anyhow!("the plan pushes {app}, which the document does not list"))?;
        let (Some(name), Some(path)) = (a.name.clone(), folders.get(app)) else {
            continue;
        };
        super::push::push_manifest_app(&client, a, name, path.clone(), timeout)?;
    }
    // Policies naming an app this apply created wait for its push: applying again adds them
    // (and changes nothing else, the rest being done).
    let waiting = plan
        .changes
        .iter()
        .any(|c| c.kind == ChangeKind::AddPolicy && !c.applied);
    if waiting {
        let then: ApplyPlan = client.post_json(&url(false), &body)?;
        if then.changes.is_empty() {
        } else if args.json {
            println!("{}", serde_json::to_string_pretty(&then)?);
        } else {
            print_plan(&then);
        }
    }
    Ok(())
}

/// The plan as a diff, one change a line.
fn print_plan(plan: &ApplyPlan) {
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    if plan.changes.is_empty() {
        println!("{}: no changes", plan.space);
        return;
    }
    let what = if plan.dry_run {
        "would change"
    } else {
        "changes"
    };
    println!("{} {what}:", plan.space);
    for c in &plan.changes {
        println!("  {}", c.line());
    }
}

/// Asks whether to go on with a plan that deletes apps.
fn confirm(plan: &ApplyPlan, space: &str) -> anyhow::Result<bool> {
    print_plan(plan);
    if !std::io::stdin().is_terminal() {
        bail!("refusing to prune {space} without confirmation: stdin is not a terminal; use --yes");
    }
    eprint!("Delete what the plan removes? [y/N] ");
    std::io::stderr().flush()?;
    let answer = super::read_line()?.unwrap_or_default();
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
