//! `paas log-drain NAME [URL] [--delete]`: list an app's log drains, add one
//! (`syslog://host:port` or `http(s)://host/path`), or remove one.

use crate::client::Client;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Drain URL: syslog://host:port (RFC 5424 over TCP) or http(s)://host[:port]/path (JSON lines)
    pub url: Option<String>,
    /// Remove the drain instead of adding it
    #[arg(long, requires = "url")]
    pub delete: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    match &args.url {
        None => {
            for d in client.log_drains(&args.name)? {
                println!("{d}");
            }
        }
        Some(url) => {
            client.set_log_drain(&args.name, url, args.delete)?;
            if args.delete {
                println!("Removed log drain {url} from {}", args.name);
            } else {
                println!("Added log drain {url} to {}", args.name);
            }
        }
    }
    Ok(())
}
