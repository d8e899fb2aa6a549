//! The HTTP client for the controller's agent API (`/v1/agent/*`, see `paas_common::agent`).
//! It owns the node credential: registers with the join token, sends the node token on every
//! later call, and registers again when the controller stops accepting it (401), e.g. after the
//! controller lost its database or revoked the node.

use crate::config::Secret;
use async_trait::async_trait;
use paas_common::agent::{
    AgentLogLine, Assignments, BuildResult, DropletUploaded, Heartbeat, HeartbeatResponse,
    LogBatch, RegisterRequest, RegisterResponse,
};
use paas_common::ApiError;
use reqwest::{RequestBuilder, Response, StatusCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, RwLock};

/// Longer than the controller's ~25 s long-poll hold, so a held request is not cut short.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("controller answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("invalid controller url: {0}")]
    Url(String),
    #[error("cannot encode the request: {0}")]
    Encode(#[from] serde_json::Error),
}

impl ClientError {
    /// Worth retrying later: the controller is down, overloaded or restarting.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Http(_) => true,
            ClientError::Status { status, .. } => status.is_server_error(),
            ClientError::Url(_) | ClientError::Encode(_) => false,
        }
    }
}

pub struct ControllerClient {
    http: reqwest::Client,
    /// Every controller this node may talk to (`PAAS_CONTROLLER=http://a,http://b`): calls go to
    /// the current one and move to the next when it cannot be reached, so a node follows the
    /// surviving controllers when one dies. Any controller on the shared database accepts the
    /// node's credential.
    bases: Vec<String>,
    current: AtomicUsize,
    join_token: Secret,
    request: RegisterRequest,
    node_token: RwLock<Option<Secret>>,
    registering: Mutex<()>,
}

impl ControllerClient {
    pub fn new(
        controller: &str,
        join_token: Secret,
        request: RegisterRequest,
    ) -> Result<Self, ClientError> {
        let bases: Vec<String> = controller
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            return Err(ClientError::Url(controller.to_string()));
        }
        if let Some(bad) = bases
            .iter()
            .find(|b| !(b.starts_with("http://") || b.starts_with("https://")))
        {
            return Err(ClientError::Url(bad.clone()));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("paas-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            bases,
            current: AtomicUsize::new(0),
            join_token,
            request,
            node_token: RwLock::new(None),
            registering: Mutex::new(()),
        })
    }

    fn base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// After a call to `failed` could not reach it, the next controller in the list takes over
    /// (once per failure, however many loops saw it fail).
    fn fail_over(&self, failed: usize) -> bool {
        if self.bases.len() < 2 {
            return false;
        }
        let next = (failed + 1) % self.bases.len();
        if self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::warn!(from = %self.bases[failed], to = %self.bases[next], "controller unreachable, moving to the next one");
        }
        true
    }

    /// Sends `build(url)` to the current controller, moving on to the next ones in turn while a
    /// controller cannot be reached (refused or timed-out connection).
    async fn send_any(
        &self,
        path: &str,
        build: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
        token: Option<&Secret>,
    ) -> Result<Response, ClientError> {
        let mut tries = 0;
        loop {
            let at = self.current.load(Ordering::Relaxed) % self.bases.len();
            let url = format!("{}/v1/agent{path}", self.bases[at]);
            let mut req = build(&self.http, &url);
            if let Some(t) = token {
                req = req.bearer_auth(t.expose());
            }
            match req.send().await {
                Err(e) if e.is_connect() && tries + 1 < self.bases.len() && self.fail_over(at) => {
                    tries += 1;
                }
                Err(e) => {
                    if e.is_connect() {
                        self.fail_over(at);
                    }
                    return Err(e.into());
                }
                Ok(r) => return Ok(r),
            }
        }
    }

    /// Registers, retrying with backoff for as long as the controller is unreachable or failing.
    /// A rejected join token is retried too (slowly): the operator may be fixing it.
    pub async fn register_until_ok(&self) -> RegisterResponse {
        let mut delay = RETRY_MIN;
        let mut attempt = 1u32;
        loop {
            match self.register().await {
                Ok(resp) => return resp,
                Err(e) if e.is_transient() => {
                    tracing::warn!(attempt, error = %e, retry_in_s = delay.as_secs(), "cannot register with the controller");
                }
                Err(e) => {
                    tracing::error!(attempt, error = %e, retry_in_s = delay.as_secs(), "controller refused registration");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_MAX);
            attempt += 1;
        }
    }

    pub async fn register(&self) -> Result<RegisterResponse, ClientError> {
        let resp = self
            .send_any(
                "/register",
                |http, url| http.post(url).json(&self.request),
                Some(&self.join_token),
            )
            .await?;
        let resp: RegisterResponse = check(resp).await?.json().await?;
        *self.node_token.write().await = Some(Secret::new(resp.node_token.clone()));
        tracing::info!(node = %resp.node_name, controller = %self.base(), "registered with the controller");
        Ok(resp)
    }

    /// Sends an authenticated request; on 401 registers once more and retries once.
    async fn send(
        &self,
        path: &str,
        build: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let current = self.node_token.read().await.clone();
        let token = match current {
            Some(t) => t,
            None => self.refresh_token(None).await?,
        };
        let resp = self.send_any(path, &build, Some(&token)).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return check(resp).await;
        }
        tracing::warn!("controller rejected the node token, registering again");
        let fresh = self.refresh_token(Some(&token)).await?;
        check(self.send_any(path, &build, Some(&fresh)).await?).await
    }

    /// Registers unless another task already replaced the `stale` token: the loops share one
    /// credential, and registering once per loop would make them invalidate each other's.
    async fn refresh_token(&self, stale: Option<&Secret>) -> Result<Secret, ClientError> {
        let _one_at_a_time = self.registering.lock().await;
        if let Some(current) = self.node_token.read().await.clone() {
            if Some(&current) != stale {
                return Ok(current);
            }
        }
        Ok(Secret::new(self.register().await?.node_token))
    }

    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatResponse, ClientError> {
        let path = "/heartbeat";
        Ok(self
            .send(path, |http, url| http.post(url).json(heartbeat))
            .await?
            .json()
            .await?)
    }

    /// Long-polls the assignment list; `after: None` asks for the current list at once.
    pub async fn assignments(&self, after: Option<u64>) -> Result<Assignments, ClientError> {
        let path = match after {
            Some(v) => format!("/assignments?after={v}"),
            None => "/assignments".to_string(),
        };
        Ok(self
            .send(&path, |http, url| http.get(url))
            .await?
            .json()
            .await?)
    }

    /// Has the controller sign an identity certificate for an instance assigned to this node
    /// (issue 25), on the key of `csr_pem`.
    pub async fn instance_identity(
        &self,
        instance_id: &str,
        csr_pem: &str,
    ) -> Result<paas_common::agent::IdentityResponse, ClientError> {
        let path = format!("/instances/{instance_id}/identity");
        let body = paas_common::agent::IdentityRequest {
            csr_pem: csr_pem.to_string(),
        };
        Ok(self
            .send(&path, |http, url| http.post(url).json(&body))
            .await?
            .json()
            .await?)
    }

    /// Long-polls the ssh sessions waiting for this node (`paas_common::ssh`).
    pub async fn ssh_sessions(&self) -> Result<paas_common::ssh::SessionOffers, ClientError> {
        Ok(self
            .send("/sessions", |http, url| http.get(url))
            .await?
            .json()
            .await?)
    }

    /// The WebSocket URL of a session's dial-back on this client's controller.
    pub fn ssh_url(&self, session_id: &str) -> String {
        let url = format!("{}/v1/agent/ssh/{session_id}", self.base());
        match url.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", url.trim_start_matches("http://")),
        }
    }

    /// The node credential, registering first when there is none yet.
    pub async fn node_token(&self) -> Result<Secret, ClientError> {
        let current = self.node_token.read().await.clone();
        match current {
            Some(t) => Ok(t),
            None => self.refresh_token(None).await,
        }
    }

    pub async fn droplet(&self, sha256: &str) -> Result<bytes::Bytes, ClientError> {
        let path = format!("/droplets/{sha256}");
        Ok(self
            .send(&path, |http, url| http.get(url))
            .await?
            .bytes()
            .await?)
    }

    /// The tar of an operator-added buildpack a build names.
    pub async fn buildpack(&self, sha256: &str) -> Result<bytes::Bytes, ClientError> {
        let path = format!("/buildpacks/{sha256}");
        Ok(self
            .send(&path, |http, url| http.get(url))
            .await?
            .bytes()
            .await?)
    }

    /// The source tar of a build assigned to this node.
    pub async fn build_source(&self, build_id: &str) -> Result<bytes::Bytes, ClientError> {
        let path = format!("/builds/{build_id}/source");
        Ok(self
            .send(&path, |http, url| http.get(url))
            .await?
            .bytes()
            .await?)
    }

    pub async fn build_logs(&self, build_id: &str, batch: &LogBatch) -> Result<(), ClientError> {
        let path = format!("/builds/{build_id}/logs");
        self.send(&path, |http, url| http.post(url).json(batch))
            .await?;
        Ok(())
    }

    pub async fn upload_build_droplet(
        &self,
        build_id: &str,
        tar: impl Into<bytes::Bytes>,
    ) -> Result<DropletUploaded, ClientError> {
        let path = format!("/builds/{build_id}/droplet");
        let body: bytes::Bytes = tar.into();
        Ok(self
            .send(&path, |http, url| {
                http.put(url)
                    .timeout(Duration::from_secs(600))
                    .body(body.clone())
            })
            .await?
            .json()
            .await?)
    }

    /// A service backup's dump (issue 22).
    pub async fn upload_service_dump(&self, job: &str, dump: Vec<u8>) -> Result<(), ClientError> {
        let path = format!("/service-jobs/{job}/dump");
        let body = bytes::Bytes::from(dump);
        self.send(&path, |http, url| {
            http.put(url)
                .timeout(Duration::from_secs(600))
                .body(body.clone())
        })
        .await?;
        Ok(())
    }

    /// The dump a service restore feeds to `pg_restore`.
    pub async fn service_dump(&self, job: &str) -> Result<bytes::Bytes, ClientError> {
        let path = format!("/service-jobs/{job}/dump");
        Ok(self
            .send(&path, |http, url| {
                http.get(url).timeout(Duration::from_secs(600))
            })
            .await?
            .bytes()
            .await?)
    }

    pub async fn service_job_result(
        &self,
        job: &str,
        result: &paas_common::agent::ServiceJobResult,
    ) -> Result<(), ClientError> {
        let path = format!("/service-jobs/{job}/result");
        self.send(&path, |http, url| http.post(url).json(result))
            .await?;
        Ok(())
    }

    pub async fn build_result(
        &self,
        build_id: &str,
        result: &BuildResult,
    ) -> Result<(), ClientError> {
        let path = format!("/builds/{build_id}/result");
        self.send(&path, |http, url| http.post(url).json(result))
            .await?;
        Ok(())
    }

    /// Sends lines in the compact framing of [`paas_common::logwire`], encoded once however many
    /// attempts it takes.
    pub async fn upload_logs(&self, lines: &[AgentLogLine]) -> Result<(), ClientError> {
        let path = "/logs";
        let mut body = Vec::new();
        paas_common::logwire::encode_batch(lines, &mut body);
        let body = bytes::Bytes::from(body);
        self.send(path, |http, url| {
            http.post(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    paas_common::logwire::LOG_BATCH_CONTENT_TYPE,
                )
                .body(body.clone())
        })
        .await?;
        Ok(())
    }
}

async fn check(resp: Response) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ApiError>(&body)
        .map(|e| e.to_string())
        .unwrap_or_else(|_| body.chars().take(300).collect());
    Err(ClientError::Status { status, message })
}

#[async_trait]
impl crate::runtime::DropletSource for ControllerClient {
    async fn fetch(&self, sha256: &str) -> Result<bytes::Bytes, String> {
        self.droplet(sha256).await.map_err(|e| e.to_string())
    }
}

#[async_trait]
impl crate::logs::LogUploader for ControllerClient {
    async fn upload(&self, lines: &[AgentLogLine]) -> Result<(), String> {
        self.upload_logs(lines).await.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paas_common::agent::NodeCapacity;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A controller that issues `node-N` on the N-th registration and accepts only the newest.
    async fn fake_controller() -> (String, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let registrations = Arc::new(AtomicU32::new(0));
        let count = registrations.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut len = 0;
                    // Requests here are small: read until the body has fully arrived.
                    loop {
                        let n = sock.read(&mut buf[len..]).await.unwrap_or(0);
                        len += n;
                        let text = String::from_utf8_lossy(&buf[..len]).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let want = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length: ")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            if body.len() >= want || n == 0 {
                                break;
                            }
                        }
                        if n == 0 {
                            break;
                        }
                    }
                    let req = String::from_utf8_lossy(&buf[..len]).to_string();
                    let auth = req
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("authorization: bearer ")
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    let current = format!("node-{}", count.load(Ordering::SeqCst));
                    let (status, body) = if req.starts_with("POST /v1/agent/register ") {
                        if auth != "join" {
                            (
                                "401 Unauthorized",
                                r#"{"code":"unauthorized","message":"bad join token"}"#.to_string(),
                            )
                        } else {
                            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                            (
                                "200 OK",
                                format!(
                                    r#"{{"node_name":"n1","node_token":"node-{n}","heartbeat_interval_secs":5}}"#
                                ),
                            )
                        }
                    } else if auth != current {
                        (
                            "401 Unauthorized",
                            r#"{"code":"unauthorized","message":"stale token"}"#.to_string(),
                        )
                    } else {
                        ("200 OK", r#"{"assignments_version":7}"#.to_string())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (url, registrations)
    }

    fn request() -> RegisterRequest {
        RegisterRequest {
            node_name: "n1".into(),
            address: "127.0.0.1".into(),
            zone: "default".into(),
            labels: Default::default(),
            capacity: NodeCapacity {
                memory_mb: 1,
                disk_mb: 1,
                instance_slots: 1,
            },
            subnet: None,
        }
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat {
            capacity: request().capacity,
            instances: vec![],
            tasks: vec![],
            services: vec![],
        }
    }

    #[tokio::test]
    async fn registers_lazily_and_again_after_401() {
        let (url, registrations) = fake_controller().await;
        let client = ControllerClient::new(&url, Secret::new("join"), request()).unwrap();
        // No token yet: the first call registers.
        assert_eq!(
            client
                .heartbeat(&heartbeat())
                .await
                .unwrap()
                .assignments_version,
            7
        );
        assert_eq!(registrations.load(Ordering::SeqCst), 1);
        // The controller forgets the node (e.g. lost its database): the token goes stale.
        registrations.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            client
                .heartbeat(&heartbeat())
                .await
                .unwrap()
                .assignments_version,
            7
        );
        assert_eq!(registrations.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rejected_join_token_is_not_transient() {
        let (url, _) = fake_controller().await;
        let client = ControllerClient::new(&url, Secret::new("wrong"), request()).unwrap();
        let err = client.register().await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("bad join token"), "{err}");
        let unreachable =
            ControllerClient::new("http://127.0.0.1:1", Secret::new("join"), request()).unwrap();
        assert!(unreachable.register().await.unwrap_err().is_transient());
        assert!(ControllerClient::new("ftp://x", Secret::new("join"), request()).is_err());
    }
}
