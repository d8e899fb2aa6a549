//! `paas domains`, `paas create-domain DOMAIN [--space ORG/SPACE]`, `paas delete-domain DOMAIN`,
//! `paas set-cert DOMAIN --cert FILE --key FILE` (issue 22): private domains owned by a space,
//! and the certificate every router serves for them; `paas domain-acme DOMAIN on|off` (or
//! `create-domain --acme`): certificates by ACME for the hosts mapped under the domain.

use std::path::PathBuf;

use anyhow::Context;
use paas_common::route::{CreateDomain, DomainInfo, DomainList, SetAcme, SetCertificate};

use crate::client::{seg, Client};
use crate::output::table;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the list as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The domain, e.g. example.com: hosts under it can then be mapped by this space only
    pub domain: String,
    /// The owning space, ORG/SPACE (default: the target space, `paas target`)
    #[arg(long, value_name = "ORG/SPACE")]
    pub space: Option<String>,
    /// Obtain certificates by ACME (HTTP-01) for the hosts mapped under it, and renew them
    #[arg(long)]
    pub acme: bool,
}

#[derive(Debug, clap::Args)]
pub struct AcmeArgs {
    /// The domain
    pub domain: String,
    /// `on`: certificates by ACME for every host mapped under the domain; `off`: no more orders
    #[arg(value_parser = ["on", "off"])]
    pub state: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The domain (refused while a route uses it)
    pub domain: String,
}

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// The domain the certificate is for (its names must cover DOMAIN or *.DOMAIN)
    pub domain: String,
    /// PEM certificate chain, leaf first
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// PEM private key of the leaf
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    if args.json {
        let v: serde_json::Value = client.get_json("/v1/domains")?;
        println!("{}", serde_json::to_string_pretty(&v["domains"])?);
        return Ok(());
    }
    let list: DomainList = client.get_json("/v1/domains")?;
    let rows: Vec<Vec<String>> = list
        .domains
        .iter()
        .map(|d| {
            vec![
                d.name.clone(),
                if d.shared {
                    "shared".into()
                } else {
                    d.space.clone().unwrap_or_default()
                },
                d.certificate.as_ref().map_or_else(
                    || "-".into(),
                    |c| {
                        let source = if c.source.is_empty() {
                            "manual"
                        } else {
                            &c.source
                        };
                        match &c.not_after {
                            Some(t) => format!("{} ({source}, until {t})", c.covers.join(", ")),
                            None => format!("{} ({source})", c.covers.join(", ")),
                        }
                    },
                ),
                match (d.acme, &d.acme_error) {
                    (false, _) => "-".into(),
                    (true, None) => "on".into(),
                    (true, Some(e)) => format!(
                        "on, failing (retry {}): {e}",
                        d.acme_retry_at.as_deref().unwrap_or("soon")
                    ),
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["DOMAIN", "OWNER", "CERTIFICATE", "ACME"], &rows)
    );
    Ok(())
}

pub fn create(args: CreateArgs, client: &Client) -> anyhow::Result<()> {
    let client = match &args.space {
        Some(s) => client.in_space(s),
        None => client.clone(),
    };
    let d: DomainInfo = client.post_json(
        "/v1/domains",
        &CreateDomain {
            name: args.domain.clone(),
            acme: args.acme,
        },
    )?;
    println!(
        "Created domain {} in {}{}",
        d.name,
        d.space.unwrap_or_default(),
        if d.acme {
            " (certificates by ACME for its mapped hosts)"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn acme(args: AcmeArgs, client: &Client) -> anyhow::Result<()> {
    let enabled = args.state == "on";
    let d: DomainInfo = client.put_json(
        &format!("/v1/domains/{}/acme", seg(&args.domain)),
        &SetAcme { enabled },
    )?;
    if enabled {
        println!(
            "ACME on for {}: every host mapped under it gets a certificate",
            d.name
        );
    } else {
        println!("ACME off for {}", d.name);
    }
    Ok(())
}

pub fn delete(args: DeleteArgs, client: &Client) -> anyhow::Result<()> {
    client.delete_path(&format!("/v1/domains/{}", seg(&args.domain)))?;
    println!("Deleted domain {}", args.domain);
    Ok(())
}

pub fn set_cert(args: CertArgs, client: &Client) -> anyhow::Result<()> {
    let certificate = std::fs::read_to_string(&args.cert)
        .with_context(|| format!("reading {}", args.cert.display()))?;
    let private_key = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let d: DomainInfo = client.put_json(
        &format!("/v1/domains/{}/certificate", seg(&args.domain)),
        &SetCertificate {
            certificate,
            private_key,
        },
    )?;
    println!(
        "Set the certificate of {} (covers {})",
        d.name,
        d.certificate
            .map(|c| c.covers.join(", "))
            .unwrap_or_default()
    );
    Ok(())
}
