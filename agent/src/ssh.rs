//! The node's half of `paas ssh` (issue 21). The agent listens on no port, so it long-polls the
//! controller for sessions waiting for this node and, for each, dials back a WebSocket with its
//! node credential and runs an exec in the instance's container: the same container, so the same
//! sandbox (its capabilities, no-new-privileges, limits, seccomp), as the container's user and
//! with the container's env and working directory, which is what the app runs with (app env,
//! `PORT`, `VCAP_*`). Frames: `paas_common::ssh`. The exec's output ends when its process exits
//! or the container stops; then the exit status goes to the client and the socket closes.

use bollard::container::LogOutput;
use bollard::container::{InspectContainerOptions, ListContainersOptions};
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::{SinkExt, StreamExt};
use paas_common::labels;
use paas_common::ssh::{frame, Control, SessionOffer, STDERR, STDIN, STDOUT};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{ControllerClient, RETRY_MAX, RETRY_MIN};

/// The user an exec runs as when the container names none: the instances' unprivileged user.
const APP_USER: &str = "2000:2000";
/// Largest data frame sent to the controller.
const CHUNK: usize = 32 * 1024;

/// Serves the sessions offered to this node, forever.
pub async fn run(client: Arc<ControllerClient>, docker: Docker, node: String) {
    let mut delay = RETRY_MIN;
    loop {
        match client.ssh_sessions().await {
            Ok(offers) => {
                delay = RETRY_MIN;
                for offer in offers.sessions {
                    let (client, docker, node) = (client.clone(), docker.clone(), node.clone());
                    tokio::spawn(async move {
                        let id = offer.session_id.clone();
                        if let Err(e) = serve(&client, &docker, &node, offer).await {
                            tracing::warn!(session = %id, error = %e, "ssh session failed");
                        }
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot fetch ssh sessions");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn dial(client: &ControllerClient, offer: &SessionOffer) -> anyhow::Result<Ws> {
    let url = match &offer.dial {
        Some(u) => ws_url(u),
        None => client.ssh_url(&offer.session_id),
    };
    let mut req = url.as_str().into_client_request()?;
    let token = client.node_token().await?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token.expose()).parse()?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await?;
    Ok(ws)
}

/// A controller's `http(s)://` URL as the WebSocket scheme the dial-back needs.
fn ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_string()
    }
}

/// The running container of `instance` on this node.
async fn container_of(docker: &Docker, node: &str, instance: &str) -> anyhow::Result<String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={node}", labels::NODE),
            format!("{}={instance}", labels::INSTANCE),
        ],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            filters,
            ..Default::default()
        }))
        .await?;
    // The instance's own container, not one of its sidecars (they carry its instance label too).
    list.into_iter()
        .filter(|c| {
            !c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(labels::SIDECAR))
        })
        .find_map(|c| c.id)
        .ok_or_else(|| anyhow::anyhow!("instance {instance} has no running container on this node"))
}

struct Exec {
    id: String,
    output: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

async fn start(docker: &Docker, node: &str, offer: &SessionOffer) -> anyhow::Result<Exec> {
    let container = container_of(docker, node, &offer.instance_id).await?;
    let info = docker
        .inspect_container(&container, None::<InspectContainerOptions>)
        .await?;
    let config = info.config.unwrap_or_default();
    // The container's own user, never root: an instance always runs as an unprivileged user.
    let user = config
        .user
        .filter(|u| !u.is_empty() && u != "root" && u != "0" && !u.starts_with("0:"))
        .unwrap_or_else(|| APP_USER.into());
    let cmd = match &offer.command {
        Some(c) => vec!["/bin/sh".to_string(), "-c".into(), c.clone()],
        None => vec![
            "/bin/sh".to_string(),
            "-c".into(),
            "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi".into(),
        ],
    };
    let exec = docker
        .create_exec(
            &container,
            CreateExecOptions {
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(offer.tty),
                env: config.env,
                cmd: Some(cmd),
                privileged: Some(false),
                user: Some(user),
                working_dir: config.working_dir.filter(|w| !w.is_empty()),
                ..Default::default()
            },
        )
        .await?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: offer.tty,
                output_capacity: Some(CHUNK),
            }),
        )
        .await?;
    let StartExecResults::Attached { output, input } = started else {
        anyhow::bail!("the engine detached the exec");
    };
    if let (true, Some(cols), Some(rows)) = (offer.tty, offer.cols, offer.rows) {
        resize(docker, &exec.id, cols, rows).await;
    }
    Ok(Exec {
        id: exec.id,
        output,
        input,
    })
}

async fn resize(docker: &Docker, exec: &str, cols: u16, rows: u16) {
    if cols == 0 || rows == 0 {
        return;
    }
    let size = ResizeExecOptions {
        height: rows,
        width: cols,
    };
    if let Err(e) = docker.resize_exec(exec, size).await {
        tracing::debug!(error = %e, "cannot resize an ssh terminal");
    }
}

/// One session: dial back, exec, copy both ways, send the exit status.
async fn serve(
    client: &ControllerClient,
    docker: &Docker,
    node: &str,
    offer: SessionOffer,
) -> anyhow::Result<()> {
    let ws = dial(client, &offer).await?;
    let (mut tx, mut rx) = ws.split();
    let mut exec = match start(docker, node, &offer).await {
        Ok(e) => e,
        Err(e) => {
            let msg = Control::Error {
                code: "ssh_unavailable".into(),
                message: format!("{e:#}"),
            };
            tx.send(Message::Text(msg.to_text())).await?;
            close(tx, rx).await;
            return Err(e);
        }
    };
    tracing::info!(session = %offer.session_id, instance = %offer.instance_id, "ssh session started");
    let mut client_open = true;
    loop {
        tokio::select! {
            m = rx.next(), if client_open => match m {
                Some(Ok(Message::Binary(b))) => {
                    if b.first() == Some(&STDIN) && exec.input.write_all(&b[1..]).await.is_ok() {
                        let _ = exec.input.flush().await;
                    }
                }
                Some(Ok(Message::Text(t))) => match Control::parse(&t) {
                    Some(Control::Resize { cols, rows }) => resize(docker, &exec.id, cols, rows).await,
                    Some(Control::Eof) => {
                        let _ = exec.input.shutdown().await;
                    }
                    _ => {}
                },
                Some(Ok(_)) => {}
                // The client went away: end the exec's input, so a shell reading it exits.
                Some(Err(_)) | None => {
                    client_open = false;
                    let _ = exec.input.shutdown().await;
                }
            },
            o = exec.output.next() => match o {
                Some(Ok(out)) => {
                    let (channel, bytes) = match out {
                        LogOutput::StdErr { message } => (STDERR, message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            (STDOUT, message)
                        }
                        LogOutput::StdIn { .. } => continue,
                    };
                    for chunk in bytes.chunks(CHUNK) {
                        if client_open && tx.send(Message::Binary(frame(channel, chunk))).await.is_err() {
                            client_open = false;
                        }
                    }
                }
                Some(Err(_)) | None => break,
            },
        }
    }
    let code = exit_code(docker, &exec.id).await;
    tracing::info!(session = %offer.session_id, exit = code, "ssh session ended");
    if client_open {
        tx.send(Message::Text(Control::Exit { code }.to_text()))
            .await?;
        close(tx, rx).await;
    }
    Ok(())
}

/// The closing handshake: our close frame, then the controller's, before the TCP connection
/// goes. Dropping the connection right after the last frames loses them: the controller's
/// WebSocket reader (actix-ws) reports an early end of a connection as an error and drops what
/// it had buffered but not yet decoded.
async fn close(
    mut tx: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: futures_util::stream::SplitStream<Ws>,
) {
    let _ = tx.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = rx.next().await {}
    })
    .await;
}

/// The exec's exit status once the engine has it; a process killed with its container (the app
/// stopped) reports 137 as a shell would.
async fn exit_code(docker: &Docker, exec: &str) -> i64 {
    for _ in 0..20 {
        match docker.inspect_exec(exec).await {
            Ok(i) if i.running != Some(true) => return i.exit_code.unwrap_or(137),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => return 137,
        }
    }
    137
}
