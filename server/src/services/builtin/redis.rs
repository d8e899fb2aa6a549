//! The built-in broker's side of a Redis service instance, in RESP over the published port
//! (the few commands it sends need no client library): the administrator is the `default` user;
//! each binding is an ACL user saved to the instance's ACL file on its volume.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Endpoint;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One reply, as far as these commands need: a status, an error, an integer or a bulk string.
#[derive(Debug, PartialEq)]
enum Reply {
    Ok(String),
    Err(String),
}

struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    async fn open(ep: &Endpoint) -> Result<Self, String> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect((ep.host.as_str(), ep.port)))
            .await
            .map_err(|_| "Redis not answering yet".to_string())?
            .map_err(|e| format!("Redis not accepting connections yet: {e}"))?;
        let mut c = Self {
            io: BufReader::new(stream),
        };
        c.ok(&["AUTH", "default", &ep.admin_password]).await?;
        Ok(c)
    }

    async fn call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        tokio::time::timeout(TIMEOUT, async {
            self.io.get_mut().write_all(&req).await?;
            let mut line = String::new();
            self.io.read_line(&mut line).await?;
            let line = line.trim_end().to_string();
            let (kind, rest) = line.split_at(line.len().min(1));
            Ok::<_, std::io::Error>(match kind {
                "+" | ":" => Reply::Ok(rest.to_string()),
                "-" => Reply::Err(rest.to_string()),
                "$" => {
                    let n: i64 = rest.parse().unwrap_or(-1);
                    if n < 0 {
                        Reply::Ok(String::new())
                    } else {
                        let mut buf = vec![0; usize::try_from(n).unwrap_or(0) + 2];
                        self.io.read_exact(&mut buf).await?;
                        buf.truncate(buf.len() - 2);
                        Reply::Ok(String::from_utf8_lossy(&buf).into_owned())
                    }
                }
                _ => Reply::Err(format!("unexpected reply {line:?}")),
            })
        })
        .await
        .map_err(|_| "Redis did not answer".to_string())?
        .map_err(|e| format!("Redis: {e}"))
    }

    async fn ok(&mut self, args: &[&str]) -> Result<String, String> {
        match self.call(args).await? {
            Reply::Ok(s) => Ok(s),
            Reply::Err(e) => Err(format!("Redis {}: {e}", args[0])),
        }
    }
}

pub(super) async fn ping(ep: &Endpoint) -> Result<(), String> {
    let mut c = Conn::open(ep).await?;
    c.ok(&["PING"]).await.map(|_| ())
}

/// An ACL user with every key and channel and the data commands (no administration).
pub(super) async fn add_user(ep: &Endpoint, user: &str, password: &str) -> Result<(), String> {
    let mut c = Conn::open(ep).await?;
    let pw = format!(">{password}");
    c.ok(&[
        "ACL",
        "SETUSER",
        user,
        "reset",
        "on",
        &pw,
        "~*",
        "&*",
        "+@all",
        "-@admin",
        "-@dangerous",
    ])
    .await?;
    c.ok(&["ACL", "SAVE"]).await.map(|_| ())
}

/// Removes the ACL user, which also closes its connections.
pub(super) async fn remove_user(ep: &Endpoint, user: &str) -> Result<(), String> {
    let mut c = Conn::open(ep).await?;
    c.ok(&["ACL", "DELUSER", user]).await?;
    c.ok(&["ACL", "SAVE"]).await.map(|_| ())
}
