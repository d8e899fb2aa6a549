//! `paas ssh NAME [-i INDEX] [--process TYPE] [-c COMMAND]`, and the ssh settings
//! (`enable-ssh`, `disable-ssh`, `ssh-enabled`, `allow-space-ssh`, `disallow-space-ssh`).
//! The session is a WebSocket to the controller (protocol: `paas_common::ssh`); an interactive
//! one puts the terminal in raw mode and follows its size. The remote exit status becomes this
//! process's.

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use paas_common::ssh::{frame, Control, SshSetting, SshStatus, STDERR, STDIN, STDOUT};
use std::io::{IsTerminal, Read, Write};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{error_from_body, seg, Client};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name
    pub name: String,
    /// Which instance
    #[arg(short = 'i', long = "index", default_value_t = 0)]
    pub index: u32,
    /// Which process type
    #[arg(long, default_value = "web")]
    pub process: String,
    /// Run this command (through /bin/sh -c) instead of an interactive shell
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// Allocate a terminal even for a command
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Never allocate a terminal
    #[arg(short = 'T', long = "disable-pseudo-tty", conflicts_with = "tty")]
    pub no_tty: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The app's name
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct SpaceArgs {
    /// ORG/SPACE
    pub space: String,
}

/// The remote command's exit status, for `main` to exit with (nothing printed).
#[derive(Debug, thiserror::Error)]
#[error("the remote command exited with status {0}")]
pub struct RemoteExit(pub i64);

/// Puts the terminal back however the session ends.
struct RawMode;

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tty = !args.no_tty && (args.tty || (args.command.is_none() && interactive));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = rt.block_on(session(&args, client, tty))?;
    if code == 0 {
        Ok(())
    } else {
        Err(RemoteExit(code).into())
    }
}

fn ws_url(client: &Client, args: &Args, size: Option<(u16, u16)>) -> anyhow::Result<String> {
    let api = client.api().trim_end_matches('/');
    let base = match api.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", api.trim_start_matches("http://")),
    };
    let mut url = reqwest::Url::parse(&format!("{base}/v1/apps/{}/ssh", seg(&args.name)))
        .context("building the session URL")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("index", &args.index.to_string());
        q.append_pair("process", &args.process);
        q.append_pair("tty", if size.is_some() { "true" } else { "false" });
        if let Some((cols, rows)) = size {
            q.append_pair("cols", &cols.to_string());
            q.append_pair("rows", &rows.to_string());
        }
        if let Some(c) = &args.command {
            q.append_pair("command", c);
        }
    }
    Ok(url.to_string())
}

/// Reads stdin on a thread of its own (a blocking read cannot be cancelled) into `tx`.
fn read_stdin(tx: mpsc::Sender<Option<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 8192];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

async fn session(args: &Args, client: &Client, tty: bool) -> anyhow::Result<i64> {
    let size = if tty {
        Some(crossterm::terminal::size().unwrap_or((80, 24)))
    } else {
        None
    };
    let url = ws_url(client, args, size)?;
    let mut req = url.as_str().into_client_request()?;
    if let Some(t) = client.token() {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse()?);
    }
    if let Some(s) = client.space() {
        req.headers_mut().insert("x-paas-space", s.parse()?);
    }
    let ws = match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => ws,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .to_string();
            let status = reqwest::StatusCode::from_u16(resp.status().as_u16())
                .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error_from_body(client.api(), status, &body).into());
        }
        Err(e) => bail!("cannot open the ssh session at {}: {e}", client.api()),
    };
    let (mut tx, mut rx) = ws.split();
    let _raw = if tty {
        crossterm::terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        Some(RawMode)
    } else {
        None
    };
    let (in_tx, mut in_rx) = mpsc::channel(16);
    read_stdin(in_tx);
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdin_open = true;
    let mut exit = None;
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    let Some((&channel, data)) = b.split_first() else { continue };
                    if channel == STDERR {
                        let mut e = std::io::stderr().lock();
                        e.write_all(data)?;
                        e.flush()?;
                    } else if channel == STDOUT {
                        let mut o = std::io::stdout().lock();
                        o.write_all(data)?;
                        o.flush()?;
                    }
                }
                Some(Ok(Message::Text(t))) => match Control::parse(&t) {
                    Some(Control::Exit { code }) => exit = Some(code),
                    Some(Control::Error { code, message }) => {
                        bail!("{message} ({code})");
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("the ssh session broke: {e}"),
            },
            d = in_rx.recv(), if stdin_open => match d {
                Some(Some(bytes)) => {
                    tx.send(Message::Binary(frame(STDIN, &bytes))).await?;
                }
                Some(None) | None => {
                    stdin_open = false;
                    tx.send(Message::Text(Control::Eof.to_text())).await?;
                }
            },
            _ = winch.recv(), if tty => {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    tx.send(Message::Text(Control::Resize { cols, rows }.to_text())).await?;
                }
            }
        }
    }
    exit.ok_or_else(|| anyhow::anyhow!("the ssh session closed without an exit status"))
}

fn app_path(name: &str) -> String {
    format!("/v1/apps/{}/ssh-enabled", seg(name))
}

fn space_path(space: &str) -> anyhow::Result<String> {
    match space.split_once('/') {
        Some((o, s)) if !o.is_empty() && !s.is_empty() => {
            Ok(format!("/v1/spaces/{}/{}/ssh-allowed", seg(o), seg(s)))
        }
        _ => bail!("name the space as ORG/SPACE"),
    }
}

/// `paas enable-ssh` / `paas disable-ssh`.
pub fn set_app(args: NameArgs, enabled: bool, client: &Client) -> anyhow::Result<()> {
    let st: SshStatus = client.put_json(&app_path(&args.name), &SshSetting { enabled })?;
    println!(
        "{} ssh to {}",
        if enabled { "Enabled" } else { "Disabled" },
        args.name
    );
    if enabled && !st.space_allowed {
        println!("(its space does not allow ssh: see `paas allow-space-ssh`)");
    }
    Ok(())
}

/// `paas ssh-enabled NAME`.
pub fn status(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    let st: SshStatus = client.get_json(&app_path(&args.name))?;
    if st.enabled {
        println!("ssh is enabled for {}", args.name);
    } else if !st.app_enabled {
        println!("ssh is disabled for {}", args.name);
    } else {
        println!(
            "ssh is disabled for {}: its space does not allow it",
            args.name
        );
    }
    Ok(())
}

/// `paas allow-space-ssh` / `paas disallow-space-ssh`.
pub fn set_space(args: SpaceArgs, allowed: bool, client: &Client) -> anyhow::Result<()> {
    let _: SshSetting =
        client.put_json(&space_path(&args.space)?, &SshSetting { enabled: allowed })?;
    println!(
        "{} ssh in space {}",
        if allowed { "Allowed" } else { "Disallowed" },
        args.space
    );
    Ok(())
}
