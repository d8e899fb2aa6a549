//! `paas base-images`, `paas allow-base-image NAME`, `paas disallow-base-image NAME` (issue 18):
//! the images a Dockerfile may build on besides the stack image. Operators only.

use crate::client::{seg, Client};
use crate::output::table;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the list as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// Image name, REPOSITORY[:TAG] (no id or digest; no tag means :latest)
    pub name: String,
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    let fetched =
        client.get_all::<paas_common::api::BaseImageList>("/v1/base-images", "base_images")?;
    if args.json {
        println!("{}", fetched.raw.trim_end());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = fetched
        .value
        .base_images
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.created_by.clone(),
                b.created_at.to_rfc3339(),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "ALLOWED BY", "SINCE"], &rows));
    Ok(())
}

pub fn allow(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    let added: paas_common::api::BaseImageInfo = client.post_json(
        "/v1/base-images",
        &paas_common::api::AllowBaseImage { name: args.name },
    )?;
    println!("Allowed base image {}", added.name);
    Ok(())
}

pub fn disallow(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    client.delete_path(&format!("/v1/base-images/{}", seg(&args.name)))?;
    println!("Disallowed base image {}", args.name);
    Ok(())
}
