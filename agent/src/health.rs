//! One health check attempt against one instance (port, http or process). When to check and what
//! a failure means is the reconciler's business.
//!
//! The port check connects to the container's own address when known: a connect to the published
//! host port on loopback is accepted by Docker's userland proxy even while nothing listens inside,
//! so it would pass before the app is up. The HTTP check goes through the published port, the way
//! the router will reach the instance (the proxy closes the connection there if the app is down).

use paas_common::agent::HealthCheck;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HealthError {
    #[error("the process is not running")]
    NotRunning,
    #[error("no published port")]
    NoPort,
    #[error("connection to {0} failed: {1}")]
    Connect(String, String),
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("GET {0} answered {1}")]
    Status(String, u16),
}

/// Where one instance can be reached.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The node address the instance is published on.
    pub address: &'a str,
    pub host_port: Option<u16>,
    /// The container's address on its network and the port the app listens on there.
    pub container: Option<(&'a str, u16)>,
}

/// Runs one attempt; `running` is what the engine last said about the container.
pub async fn check(
    http: &reqwest::Client,
    check: &HealthCheck,
    target: Target<'_>,
    running: bool,
    timeout: Duration,
) -> Result<(), HealthError> {
    if !running {
        return Err(HealthError::NotRunning);
    }
    let Target {
        address,
        host_port,
        container,
    } = target;
    match check {
        HealthCheck::Process => Ok(()),
        HealthCheck::Port => {
            let target = match container {
                Some((ip, port)) => format!("{ip}:{port}"),
                None => format!("{address}:{}", host_port.ok_or(HealthError::NoPort)?),
            };
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&target)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(HealthError::Connect(target, e.to_string())),
                Err(_) => Err(HealthError::Timeout(target, timeout)),
            }
        }
        HealthCheck::Http { endpoint } => {
            let port = host_port.ok_or(HealthError::NoPort)?;
            let path = if endpoint.starts_with('/') {
                endpoint.clone()
            } else {
                format!("/{endpoint}")
            };
            let url = format!("http://{address}:{port}{path}");
            match http.get(&url).timeout(timeout).send().await {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(resp) => Err(HealthError::Status(url, resp.status().as_u16())),
                Err(e) if e.is_timeout() => Err(HealthError::Timeout(url, timeout)),
                Err(e) => Err(HealthError::Connect(url, e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_and_http_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Nope"
                };
                let _ = sock
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let http = reqwest::Client::new();
        let t = Duration::from_secs(2);
        let published = Target {
            address: "127.0.0.1",
            host_port: Some(port),
            container: None,
        };
        let direct = Target {
            address: "127.0.0.1",
            host_port: None,
            container: Some(("127.0.0.1", port)),
        };
        let nowhere = Target {
            address: "127.0.0.1",
            host_port: None,
            container: None,
        };
        assert_eq!(
            check(&http, &HealthCheck::Port, published, true, t).await,
            Ok(())
        );
        assert_eq!(
            check(&http, &HealthCheck::Port, direct, true, t).await,
            Ok(())
        );
        let ok = HealthCheck::Http {
            endpoint: "/ok".into(),
        };
        assert_eq!(check(&http, &ok, published, true, t).await, Ok(()));
        let bad = HealthCheck::Http {
            endpoint: "bad".into(),
        };
        assert!(matches!(
            check(&http, &bad, published, true, t).await,
            Err(HealthError::Status(_, 503))
        ));
        assert_eq!(
            check(&http, &HealthCheck::Port, published, false, t).await,
            Err(HealthError::NotRunning)
        );
        assert_eq!(
            check(&http, &HealthCheck::Port, nowhere, true, t).await,
            Err(HealthError::NoPort)
        );
        assert_eq!(
            check(&http, &HealthCheck::Process, nowhere, true, t).await,
            Ok(())
        );
        // Nothing listens on a port we just closed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = Target {
            address: "127.0.0.1",
            host_port: Some(closed),
            container: None,
        };
        assert!(matches!(
            check(&http, &HealthCheck::Port, refused, true, t).await,
            Err(HealthError::Connect(..))
        ));
    }
}
