//! `paas buildpacks`, `paas create-buildpack NAME PATH`, `paas delete-buildpack NAME` (issue 3):
//! operator buildpacks. PATH is a folder (zipped like an app) or a `.zip`; either must hold
//! `bin/detect`, `bin/compile` and `bin/release` at its top, which the server checks.

use crate::client::Client;
use crate::output::table;
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the list as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Buildpack name (a-z, 0-9, - and _)
    pub name: String,
    /// A folder or a .zip with bin/detect, bin/compile and bin/release
    pub path: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Buildpack name
    pub name: String,
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    let fetched = client.list_buildpacks()?;
    if args.json {
        println!("{}", fetched.raw.trim_end());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = fetched
        .value
        .buildpacks
        .iter()
        .map(|b| {
            vec![
                b.position.to_string(),
                b.name.clone(),
                if b.builtin {
                    "built-in".into()
                } else {
                    format!("added by {}", b.created_by.as_deref().unwrap_or("?"))
                },
            ]
        })
        .collect();
    print!("{}", table(&["POSITION", "NAME", "SOURCE"], &rows));
    Ok(())
}

pub fn create(args: CreateArgs, client: &Client) -> anyhow::Result<()> {
    let added = if args.path.is_file() {
        let file = std::fs::File::open(&args.path)
            .with_context(|| format!("cannot open {}", args.path.display()))?;
        let len = file.metadata()?.len();
        client.create_buildpack(&args.name, file, len)?
    } else {
        let archive = crate::archive::build(&args.path)?;
        client.create_buildpack(&args.name, archive.file, archive.size)?
    };
    println!(
        "Added buildpack {} at position {}",
        added.name, added.position
    );
    Ok(())
}

pub fn delete(args: DeleteArgs, client: &Client) -> anyhow::Result<()> {
    client.delete_buildpack(&args.name)?;
    println!("Deleted buildpack {}", args.name);
    Ok(())
}
