//! The typed HTTP client for the paas REST API (`/v1`). It owns the bearer token, the mapping of
//! every failure to a [`ClientError`], and nothing else: commands decide what to print.
//!
//! Non-2xx answers carry the shared [`ApiError`] JSON; its `Display` ("message (code)") is the
//! user-facing text. A body that is not that JSON becomes [`ClientError::Status`] with an excerpt.

use paas_common::api::{
    AppDetail, AppEnv, AppList, EnvUpdate, EventList, LogLine, LogList, LoginRequest,
    LoginResponse, NodeList, PushProgress, PushSettings, ResourceMatch, ResourceMatchResult,
    RevisionList, RollbackRequest,
};
use paas_common::ApiError;
use reqwest::blocking::{multipart, RequestBuilder, Response};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::io::Read;
use std::time::Duration;

/// How long a plain API call may take. Pushes get [`UPLOAD_TIMEOUT`], because the controller may
/// stream a large archive to the blobstore before it answers.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const NDJSON: &str = "application/x-ndjson";

/// What a push answered: its event stream, or (from a server without the stream) the app.
pub enum PushAnswer {
    Stream(Box<PushLines>),
    Plain(Box<AppDetail>),
}

/// The lines of a streamed push, decoded; ends after the `result` line. Lines of a type this
/// client does not know (a newer server) are skipped.
pub struct PushLines {
    api: String,
    reader: std::io::BufReader<Response>,
    ended: bool,
}

impl Iterator for PushLines {
    type Item = Result<PushProgress, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::BufRead;
        let mut line = String::new();
        while !self.ended {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => {
                    self.ended = true;
                    return Some(Err(ClientError::Decode {
                        api: self.api.clone(),
                        cause: "the push stream ended without a result".into(),
                    }));
                }
                Ok(_) => {}
                Err(e) => {
                    self.ended = true;
                    return Some(Err(ClientError::Transport {
                        api: self.api.clone(),
                        cause: e.to_string(),
                    }));
                }
            }
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            match decode_progress(text) {
                Ok(Some(p)) => {
                    self.ended = matches!(p, PushProgress::Result(_));
                    return Some(Ok(p));
                }
                Ok(None) => continue,
                Err(cause) => {
                    self.ended = true;
                    return Some(Err(ClientError::Decode {
                        api: self.api.clone(),
                        cause,
                    }));
                }
            }
        }
        None
    }
}

/// One stream line: `None` for a well-formed line of a type this client does not know.
fn decode_progress(text: &str) -> Result<Option<PushProgress>, String> {
    match serde_json::from_str::<PushProgress>(text) {
        Ok(p) => Ok(Some(p)),
        Err(e) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.get("type").is_some_and(|t| t != "result") => Ok(None),
            _ => Err(format!("{e}: {}", excerpt(text))),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("not logged in: run `paas login URL` or set PAAS_API and PAAS_TOKEN")]
    NotLoggedIn,
    /// The API answered with its error JSON.
    #[error("{error}")]
    Api { status: StatusCode, error: ApiError },
    /// A non-2xx answer without the error JSON (a proxy, a crash, a wrong URL).
    #[error("the paas API at {api} answered {status}: {excerpt}")]
    Status {
        api: String,
        status: StatusCode,
        excerpt: String,
    },
    #[error("cannot reach the paas API at {api}: {cause}")]
    Connect { api: String, cause: String },
    #[error("the paas API at {api} did not answer in time")]
    Timeout { api: String },
    #[error("unexpected answer from the paas API at {api}: {cause}")]
    Decode { api: String, cause: String },
    #[error("request to the paas API at {api} failed: {cause}")]
    Transport { api: String, cause: String },
    #[error("invalid API URL {0:?}: use e.g. http://127.0.0.1:8080")]
    InvalidUrl(String),
}

impl ClientError {
    /// The API's error code, when the API sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// A decoded answer together with the body exactly as received (for `--json`).
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    pub value: T,
    pub raw: String,
}

#[derive(Clone)]
pub struct Client {
    api: String,
    token: Option<String>,
    space: Option<String>,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for `api` (e.g. `http://127.0.0.1:8080`), authenticated when `token` is given.
    pub fn new(api: &str, token: Option<String>) -> Result<Self, ClientError> {
        let api = crate::config::normalize_api(api);
        if !(api.starts_with("http://") || api.starts_with("https://"))
            || reqwest::Url::parse(&api).is_err()
        {
            return Err(ClientError::InvalidUrl(api));
        }
        let http = reqwest::blocking::Client::builder()
            .user_agent(concat!("paas-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport {
                api: api.clone(),
                cause: root_cause(&e),
            })?;
        Ok(Client {
            api,
            token,
            space: None,
            http,
        })
    }

    /// A client from the saved login, or [`ClientError::NotLoggedIn`].
    pub fn from_config(cfg: Option<crate::config::Config>) -> Result<Self, ClientError> {
        let cfg = cfg.ok_or(ClientError::NotLoggedIn)?;
        let mut c = Client::new(&cfg.api, Some(cfg.token))?;
        c.space = cfg.space;
        Ok(c)
    }

    pub fn api(&self) -> &str {
        &self.api
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The target space (`ORG/SPACE`) sent with each request, if any.
    pub fn space(&self) -> Option<&str> {
        self.space.as_deref()
    }

    /// `POST /v1/auth/login`.
    pub fn login(&self, req: &LoginRequest) -> Result<LoginResponse, ClientError> {
        let rb = self.http.post(self.url("/v1/auth/login")).json(req);
        self.json(self.send(rb)?)
    }

    /// `POST /v1/auth/refresh`: a new access token and refresh token for a (single-use) refresh
    /// token.
    pub fn refresh(&self, refresh_token: &str) -> Result<LoginResponse, ClientError> {
        let rb =
            self.http
                .post(self.url("/v1/auth/refresh"))
                .json(&paas_common::api::RefreshRequest {
                    refresh_token: refresh_token.to_string(),
                });
        self.json(self.send(rb)?)
    }

    /// `POST /v1/auth/logout`: revokes the refresh token (and its login).
    pub fn logout(&self, refresh_token: &str) -> Result<(), ClientError> {
        let rb =
            self.http
                .post(self.url("/v1/auth/logout"))
                .json(&paas_common::api::RefreshRequest {
                    refresh_token: refresh_token.to_string(),
                });
        self.send(rb).map(drop)
    }

    /// `GET /v1/apps`.
    pub fn list_apps(&self) -> Result<AppList, ClientError> {
        Ok(self.get_all("/v1/apps", "apps")?.value)
    }

    /// `GET /v1/apps/NAME`.
    pub fn get_app(&self, name: &str) -> Result<AppDetail, ClientError> {
        Ok(self.get_app_raw(name)?.value)
    }

    /// `GET /v1/apps/NAME`, keeping the body as received.
    pub fn get_app_raw(&self, name: &str) -> Result<Fetched<AppDetail>, ClientError> {
        let rb = self.authed(self.http.get(self.url(&format!("/v1/apps/{}", seg(name)))));
        self.fetched(self.send(rb)?)
    }

    /// `DELETE /v1/apps/NAME` (204).
    pub fn delete_app(&self, name: &str) -> Result<(), ClientError> {
        let rb = self.authed(
            self.http
                .delete(self.url(&format!("/v1/apps/{}", seg(name)))),
        );
        self.send(rb).map(drop)
    }

    /// `GET /v1/apps/NAME/logs?recent=true&limit=N`.
    pub fn recent_logs(&self, name: &str, limit: u32) -> Result<LogList, ClientError> {
        let url = self.url(&format!(
            "/v1/apps/{}/logs?recent=true&limit={limit}",
            seg(name)
        ));
        let rb = self.authed(self.http.get(url));
        self.json(self.send(rb)?)
    }

    /// `GET /v1/apps/NAME/logs` with filters (`source`, `instance`, `since`, `grep`, `limit`).
    pub fn query_logs(
        &self,
        name: &str,
        filters: &[(&str, String)],
    ) -> Result<LogList, ClientError> {
        let url = self.url(&format!("/v1/apps/{}/logs", seg(name)));
        let rb = self.authed(self.http.get(url).query(filters));
        self.json(self.send(rb)?)
    }

    /// `GET /v1/apps/NAME/logs/stream` (Server-Sent Events): calls `on_line` for every line
    /// (recent, then live) and `on_dropped` when the server says this client missed lines.
    /// Returns when the server ends the stream or `on_line` answers false.
    pub fn stream_logs(
        &self,
        name: &str,
        filters: &[(&str, String)],
        mut on_line: impl FnMut(LogLine) -> bool,
        mut on_dropped: impl FnMut(u64),
    ) -> Result<(), ClientError> {
        use std::io::BufRead;
        let url = self.url(&format!("/v1/apps/{}/logs/stream", seg(name)));
        // A stream stays open as long as the user watches.
        let rb = self
            .authed(self.http.get(url).query(filters))
            .timeout(STREAM_TIMEOUT);
        let resp = self.send(rb)?;
        let mut reader = std::io::BufReader::new(resp);
        let mut event = String::new();
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| ClientError::Transport {
                    api: self.api.clone(),
                    cause: e.to_string(),
                })?;
            if n == 0 {
                return Ok(());
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l.is_empty() {
                // End of one event.
                if event == "dropped" {
                    let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                    on_dropped(v["dropped"].as_u64().unwrap_or(0));
                } else if !data.is_empty() {
                    match serde_json::from_str::<LogLine>(&data) {
                        Ok(ll) => {
                            if !on_line(ll) {
                                return Ok(());
                            }
                        }
                        Err(e) => {
                            return Err(ClientError::Decode {
                                api: self.api.clone(),
                                cause: format!("{e}: {}", excerpt(&data)),
                            })
                        }
                    }
                }
                event.clear();
                data.clear();
            } else if let Some(v) = l.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if let Some(v) = l.strip_prefix("event:") {
                event = v.trim().to_string();
            }
            // `id:` and `: comments` need nothing: ids are in the JSON too.
        }
    }

    /// `GET /v1/apps/NAME/events`.
    pub fn events(&self, name: &str) -> Result<EventList, ClientError> {
        Ok(self
            .get_all(&format!("/v1/apps/{}/events", seg(name)), "events")?
            .value)
    }

    /// `GET /v1/events` (every page): the caller's own events, or for an operator all of them
    /// (or those of `actor`).
    pub fn all_events(&self, actor: Option<&str>) -> Result<EventList, ClientError> {
        let path = match actor {
            Some(a) => format!("/v1/events?actor={}", seg(a)),
            None => "/v1/events".to_string(),
        };
        Ok(self.get_all(&path, "events")?.value)
    }

    /// `GET /v1/apps/NAME/log-drains` -> the drain URLs.
    pub fn log_drains(&self, name: &str) -> Result<Vec<String>, ClientError> {
        let v: serde_json::Value = self
            .get_all(&format!("/v1/apps/{}/log-drains", seg(name)), "drains")?
            .value;
        Ok(v["drains"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect())
    }

    /// `POST` (add) or `DELETE` (remove) `/v1/apps/NAME/log-drains` with `{"url": URL}`.
    pub fn set_log_drain(&self, name: &str, url: &str, remove: bool) -> Result<(), ClientError> {
        let path = self.url(&format!("/v1/apps/{}/log-drains", seg(name)));
        let rb = if remove {
            self.http.delete(path)
        } else {
            self.http.post(path)
        };
        let rb = self.authed(rb.json(&serde_json::json!({ "url": url })));
        self.send(rb).map(drop)
    }

    /// `GET /v1/nodes`.
    pub fn list_nodes(&self) -> Result<NodeList, ClientError> {
        Ok(self.get_all("/v1/nodes", "nodes")?.value)
    }

    /// `POST /v1/apps/NAME/push`, multipart: file field `archive` (app.zip, application/zip) read
    /// from `archive` (`len` bytes), and the text fields of `settings` that are set.
    pub fn push<R: Read + Send + 'static>(
        &self,
        name: &str,
        archive: R,
        len: u64,
        settings: &PushSettings,
    ) -> Result<AppDetail, ClientError> {
        let rb = self.push_request(name, archive, len, settings)?;
        self.json(self.send(rb)?)
    }

    /// The same push asking for the event stream (`Accept: application/x-ndjson`): its lines as
    /// they come, or the app when the server answers with one JSON document (a server without
    /// the stream).
    pub fn push_streamed<R: Read + Send + 'static>(
        &self,
        name: &str,
        archive: R,
        len: u64,
        settings: &PushSettings,
    ) -> Result<PushAnswer, ClientError> {
        let rb = self
            .push_request(name, archive, len, settings)?
            .header(reqwest::header::ACCEPT, NDJSON);
        let resp = self.send(rb)?;
        let streamed = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(NDJSON));
        if streamed {
            Ok(PushAnswer::Stream(Box::new(PushLines {
                api: self.api.clone(),
                reader: std::io::BufReader::new(resp),
                ended: false,
            })))
        } else {
            Ok(PushAnswer::Plain(Box::new(self.json(resp)?)))
        }
    }

    fn push_request<R: Read + Send + 'static>(
        &self,
        name: &str,
        archive: R,
        len: u64,
        settings: &PushSettings,
    ) -> Result<RequestBuilder, ClientError> {
        let part = multipart::Part::reader_with_length(archive, len)
            .file_name("app.zip")
            .mime_str("application/zip")
            .map_err(|e| self.transport(e))?;
        let mut form = multipart::Form::new().part("archive", part);
        if let Some(n) = settings.instances {
            form = form.text("instances", n.to_string());
        }
        if let Some(mb) = settings.memory_mb {
            form = form.text("memory_mb", mb.to_string());
        }
        if let Some(cmd) = &settings.command {
            form = form.text("command", cmd.clone());
        }
        form = push_extra_fields(form, settings)?;
        Ok(self
            .authed(
                self.http
                    .post(self.url(&format!("/v1/apps/{}/push", seg(name)))),
            )
            .timeout(UPLOAD_TIMEOUT)
            .multipart(form))
    }

    /// `POST /v1/resources/match`: which files the server already holds for us.
    pub fn match_resources(&self, req: &ResourceMatch) -> Result<ResourceMatchResult, ClientError> {
        let rb = self
            .authed(self.http.post(self.url("/v1/resources/match")))
            .json(req);
        self.json(self.send(rb)?)
    }

    /// `GET /v1/apps/NAME/env`.
    pub fn get_env(&self, name: &str) -> Result<Fetched<AppEnv>, ClientError> {
        let rb = self.authed(
            self.http
                .get(self.url(&format!("/v1/apps/{}/env", seg(name)))),
        );
        self.fetched(self.send(rb)?)
    }

    /// `GET /v1/apps/NAME/env?reveal=BOOL`: with `reveal`, secret values in plain (issue 7).
    pub fn get_env_revealed(
        &self,
        name: &str,
        reveal: bool,
    ) -> Result<Fetched<AppEnv>, ClientError> {
        let rb = self.authed(
            self.http
                .get(self.url(&format!("/v1/apps/{}/env", seg(name))))
                .query(&[("reveal", reveal)]),
        );
        self.fetched(self.send(rb)?)
    }

    /// `PATCH /v1/apps/NAME/env`: a new revision with the changed env.
    pub fn update_env(&self, name: &str, update: &EnvUpdate) -> Result<AppDetail, ClientError> {
        let rb = self
            .authed(
                self.http
                    .patch(self.url(&format!("/v1/apps/{}/env", seg(name)))),
            )
            .json(update);
        self.json(self.send(rb)?)
    }

    /// `GET /v1/apps/NAME/revisions`.
    pub fn list_revisions(&self, name: &str) -> Result<Fetched<RevisionList>, ClientError> {
        self.get_all(&format!("/v1/apps/{}/revisions", seg(name)), "revisions")
    }

    /// `POST /v1/apps/NAME/rollback`.
    pub fn rollback(&self, name: &str, req: &RollbackRequest) -> Result<AppDetail, ClientError> {
        let rb = self
            .authed(
                self.http
                    .post(self.url(&format!("/v1/apps/{}/rollback", seg(name)))),
            )
            .json(req);
        self.json(self.send(rb)?)
    }

    /// The same client, acting in another space (`ORG/SPACE`).
    pub fn in_space(&self, space: &str) -> Client {
        Client {
            space: Some(space.to_string()),
            ..self.clone()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    fn authed(&self, rb: RequestBuilder) -> RequestBuilder {
        let rb = match &self.space {
            Some(s) => rb.header("X-Paas-Space", s),
            None => rb,
        };
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// `GET path` and every further page (`Link: <...>; rel="next"`), with the arrays under
    /// `field` joined into the first page's body.
    pub fn get_all<T: DeserializeOwned>(
        &self,
        path: &str,
        field: &str,
    ) -> Result<Fetched<T>, ClientError> {
        let decode = |raw: &str| {
            serde_json::from_str::<serde_json::Value>(raw).map_err(|e| ClientError::Decode {
                api: self.api.clone(),
                cause: format!("{e}: {}", excerpt(raw)),
            })
        };
        let mut url = self.url(path);
        let mut merged: Option<serde_json::Value> = None;
        // Bounded, so a server that keeps answering `next` cannot keep us here forever.
        for _ in 0..100_000 {
            let resp = self.send(self.authed(self.http.get(&url)))?;
            let next = next_link(resp.headers());
            let raw = resp.text().map_err(|e| self.transport(e))?;
            let mut page = decode(&raw)?;
            match &mut merged {
                None => merged = Some(page),
                Some(all) => {
                    let more = page
                        .get_mut(field)
                        .and_then(|v| v.as_array_mut())
                        .map(std::mem::take)
                        .unwrap_or_default();
                    if let Some(items) = all.get_mut(field).and_then(|v| v.as_array_mut()) {
                        items.extend(more);
                    }
                }
            }
            match next {
                // The token goes only to our own API: follow the link's path on it, whatever
                // host a proxy in between made the server think it has.
                Some(link) => url = self.url(&path_and_query(&link)),
                None => break,
            }
        }
        let value = merged.unwrap_or_default();
        let raw = value.to_string();
        let value = serde_json::from_value(value).map_err(|e| ClientError::Decode {
            api: self.api.clone(),
            cause: format!("{e}: {}", excerpt(&raw)),
        })?;
        Ok(Fetched { value, raw })
    }

    /// `GET path`, decoded.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let rb = self.authed(self.http.get(self.url(path)));
        self.json(self.send(rb)?)
    }

    /// `POST path` with a JSON body, decoded.
    pub fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let rb = self.authed(self.http.post(self.url(path))).json(body);
        self.json(self.send(rb)?)
    }

    /// `PUT path` with a JSON body, decoded.
    pub fn put_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let rb = self.authed(self.http.put(self.url(path))).json(body);
        self.json(self.send(rb)?)
    }

    /// `PATCH path` with a JSON body, decoded.
    pub fn patch_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let rb = self.authed(self.http.patch(self.url(path))).json(body);
        self.json(self.send(rb)?)
    }

    /// `DELETE path`, expecting any 2xx.
    pub fn delete_path(&self, path: &str) -> Result<(), ClientError> {
        let rb = self.authed(self.http.delete(self.url(path)));
        self.send(rb).map(drop)
    }

    /// Sends and turns every non-2xx answer into a [`ClientError`].
    fn send(&self, rb: RequestBuilder) -> Result<Response, ClientError> {
        let resp = rb.send().map_err(|e| self.transport(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().unwrap_or_default();
        Err(error_from_body(&self.api, status, &body))
    }

    fn json<T: DeserializeOwned>(&self, resp: Response) -> Result<T, ClientError> {
        Ok(self.fetched(resp)?.value)
    }

    fn fetched<T: DeserializeOwned>(&self, resp: Response) -> Result<Fetched<T>, ClientError> {
        let raw = resp.text().map_err(|e| self.transport(e))?;
        let value = serde_json::from_str(&raw).map_err(|e| ClientError::Decode {
            api: self.api.clone(),
            cause: format!("{e}: {}", excerpt(&raw)),
        })?;
        Ok(Fetched { value, raw })
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        let api = self.api.clone();
        if e.is_connect() {
            ClientError::Connect {
                api,
                cause: root_cause(&e),
            }
        } else if e.is_timeout() {
            ClientError::Timeout { api }
        } else {
            ClientError::Transport {
                api,
                cause: root_cause(&e),
            }
        }
    }
}

/// Routes (issue 5).
impl Client {
    /// `GET /v1/routes`, or `GET /v1/apps/NAME/routes`.
    pub fn list_routes(
        &self,
        app: Option<&str>,
    ) -> Result<paas_common::route::RouteList, ClientError> {
        let path = match app {
            Some(a) => format!("/v1/apps/{}/routes", seg(a)),
            None => "/v1/routes".to_string(),
        };
        Ok(self.get_all(&path, "routes")?.value)
    }

    /// `POST /v1/apps/NAME/routes` `{"route": "HOST[/PATH]"}`.
    pub fn map_route(
        &self,
        app: &str,
        route: &str,
        https_redirect: bool,
        hsts: bool,
    ) -> Result<paas_common::route::RouteInfo, ClientError> {
        let body = paas_common::route::MapRoute {
            route: route.to_string(),
            https_redirect,
            hsts,
        };
        let rb = self.authed(
            self.http
                .post(self.url(&format!("/v1/apps/{}/routes", seg(app))))
                .json(&body),
        );
        self.json(self.send(rb)?)
    }

    /// `DELETE /v1/apps/NAME/routes?route=HOST[/PATH]` (204).
    pub fn unmap_route(&self, app: &str, route: &str) -> Result<(), ClientError> {
        let rb = self.authed(
            self.http
                .delete(self.url(&format!("/v1/apps/{}/routes", seg(app))))
                .query(&[("route", route)]),
        );
        self.send(rb).map(drop)
    }
}

/// The manifest-only push settings, each as one multipart text field (JSON where structured).
fn push_extra_fields(
    mut form: multipart::Form,
    s: &PushSettings,
) -> Result<multipart::Form, ClientError> {
    let enc = |v: serde_json::Result<String>| {
        v.map_err(|e| ClientError::Transport {
            api: String::new(),
            cause: e.to_string(),
        })
    };
    if !s.env.is_empty() {
        form = form.text("env", enc(serde_json::to_string(&s.env))?);
    }
    if let Some(mb) = s.disk_mb {
        form = form.text("disk_mb", mb.to_string());
    }
    if !s.buildpacks.is_empty() {
        form = form.text("buildpacks", enc(serde_json::to_string(&s.buildpacks))?);
    }
    if !s.routes.is_empty() {
        form = form.text("routes", enc(serde_json::to_string(&s.routes))?);
    }
    if !s.services.is_empty() {
        form = form.text("services", enc(serde_json::to_string(&s.services))?);
    }
    if let Some(h) = &s.health {
        form = form.text("health", enc(serde_json::to_string(h))?);
    }
    if let Some(l) = &s.log_rate_limit {
        form = form.text("log_rate_limit", l.clone());
    }
    if let Some(l) = &s.placement_labels {
        form = form.text("placement_labels", enc(serde_json::to_string(l))?);
    }
    if !s.processes.is_empty() {
        form = form.text("processes", enc(serde_json::to_string(&s.processes))?);
    }
    if !s.resources.is_empty() {
        form = form.text("resources", enc(serde_json::to_string(&s.resources))?);
    }
    if let Some(h) = &s.hostname {
        form = form.text("hostname", h.clone());
    }
    if let Some(st) = &s.stack {
        form = form.text("stack", st.clone());
    }
    if let Some(st) = &s.strategy {
        form = form.text("strategy", enc(serde_json::to_string(st))?);
    }
    if let Some(sc) = &s.sidecars {
        form = form.text("sidecars", enc(serde_json::to_string(sc))?);
    }
    for (field, on) in [
        ("random_route", s.random_route),
        ("no_route", s.no_route),
        ("no_cache", s.no_cache),
        ("dockerfile", s.dockerfile),
        ("no_start", s.no_start),
    ] {
        if on {
            form = form.text(field, "true");
        }
    }
    Ok(form)
}

/// The URL of the `rel="next"` entry of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part[start..].find('>')? + start;
            Some(part[start..end].to_string())
        })
}

/// `/v1/apps?page_token=x` of `http://host/v1/apps?page_token=x` (or of a relative link).
fn path_and_query(link: &str) -> String {
    match reqwest::Url::parse(link) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        },
        Err(_) => link.to_string(),
    }
}

/// The error for a non-2xx answer: the API's own error JSON when the body is that, else the
/// status with a short excerpt of the body.
pub fn error_from_body(api: &str, status: StatusCode, body: &str) -> ClientError {
    match serde_json::from_str::<ApiError>(body) {
        Ok(error) => ClientError::Api { status, error },
        Err(_) => ClientError::Status {
            api: api.to_string(),
            status,
            excerpt: excerpt(body),
        },
    }
}

/// At most 200 characters of `body` on one line, or "(empty body)".
pub fn excerpt(body: &str) -> String {
    let flat = crate::output::one_line(body.trim());
    if flat.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = flat.chars().take(200).collect();
    if flat.chars().count() > 200 {
        s.push_str("...");
    }
    s
}

/// The innermost cause ("Connection refused (os error 111)"): reqwest's own message only names
/// the URL, which the caller already prints.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encodes a path segment: app names may hold spaces (`My App` -> `My%20App`).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lifecycle calls: scale and settings, restarts, stop/start, node drain.
impl Client {
    /// `PATCH /v1/apps/NAME`.
    pub fn update_app(
        &self,
        name: &str,
        req: &paas_common::api::AppUpdateRequest,
    ) -> Result<paas_common::api::AppSettings, ClientError> {
        let rb = self
            .authed(
                self.http
                    .patch(self.url(&format!("/v1/apps/{}", seg(name)))),
            )
            .json(req);
        self.json(self.send(rb)?)
    }

    /// `POST /v1/apps/NAME/ACTION` with a JSON body (`restart`, `stop`, `start`,
    /// `instances/INDEX/restart`).
    pub fn app_action<B: serde::Serialize>(
        &self,
        name: &str,
        action: &str,
        body: &B,
    ) -> Result<paas_common::api::AppSettings, ClientError> {
        let rb = self
            .authed(
                self.http
                    .post(self.url(&format!("/v1/apps/{}/{action}", seg(name)))),
            )
            .json(body);
        self.json(self.send(rb)?)
    }

    /// `POST /v1/nodes/NAME/drain`.
    pub fn drain_node(
        &self,
        name: &str,
    ) -> Result<paas_common::api::NodeStateResponse, ClientError> {
        let rb = self.authed(
            self.http
                .post(self.url(&format!("/v1/nodes/{}/drain", seg(name)))),
        );
        self.json(self.send(rb)?)
    }
}

/// Operator buildpacks (issue 3).
impl Client {
    /// `GET /v1/buildpacks`: built-ins and added ones in detection order.
    pub fn list_buildpacks(&self) -> Result<Fetched<paas_common::api::BuildpackList>, ClientError> {
        self.get_all("/v1/buildpacks", "buildpacks")
    }

    /// `POST /v1/buildpacks`: multipart `name` and the zip as `archive`.
    pub fn create_buildpack<R: Read + Send + 'static>(
        &self,
        name: &str,
        archive: R,
        len: u64,
    ) -> Result<paas_common::api::BuildpackInfo, ClientError> {
        let part = multipart::Part::reader_with_length(archive, len)
            .file_name("buildpack.zip")
            .mime_str("application/zip")
            .map_err(|e| self.transport(e))?;
        let form = multipart::Form::new()
            .text("name", name.to_string())
            .part("archive", part);
        let rb = self
            .authed(self.http.post(self.url("/v1/buildpacks")))
            .timeout(UPLOAD_TIMEOUT)
            .multipart(form);
        self.json(self.send(rb)?)
    }

    /// `DELETE /v1/buildpacks/{name}`.
    pub fn delete_buildpack(&self, name: &str) -> Result<(), ClientError> {
        self.delete_path(&format!("/v1/buildpacks/{}", seg(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_json_becomes_message_and_code() {
        let e = error_from_body(
            "http://x",
            StatusCode::NOT_FOUND,
            r#"{"code":"app_not_found","message":"app \"foo\" not found"}"#,
        );
        assert_eq!(e.to_string(), r#"app "foo" not found (app_not_found)"#);
        assert_eq!(e.code(), Some("app_not_found"));
    }

    #[test]
    fn other_bodies_become_status_and_excerpt() {
        let e = error_from_body(
            "http://x",
            StatusCode::BAD_GATEWAY,
            "<html>\n<b>Bad gateway</b>\n</html>",
        );
        assert_eq!(
            e.to_string(),
            "the paas API at http://x answered 502 Bad Gateway: <html> <b>Bad gateway</b> </html>"
        );
        let e = error_from_body("http://x", StatusCode::INTERNAL_SERVER_ERROR, "");
        assert!(e
            .to_string()
            .ends_with("500 Internal Server Error: (empty body)"));
        let long = "x".repeat(1000);
        let e = error_from_body("http://x", StatusCode::INTERNAL_SERVER_ERROR, &long);
        assert!(e.to_string().len() < 300);
    }

    #[test]
    fn not_logged_in_message() {
        let e = Client::from_config(None).err().unwrap();
        assert_eq!(
            e.to_string(),
            "not logged in: run `paas login URL` or set PAAS_API and PAAS_TOKEN"
        );
    }

    #[test]
    fn urls_are_checked_and_normalized() {
        assert!(matches!(
            Client::new("localhost:8080", None),
            Err(ClientError::InvalidUrl(_))
        ));
        assert_eq!(
            Client::new("http://127.0.0.1:8080/", None).unwrap().api(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn connection_refused_says_cannot_reach() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), Some("t".into())).unwrap();
        let msg = c.list_apps().unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot reach the paas API at http://127.0.0.1:{port}: "
            )),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn next_links_are_found_and_kept_on_our_api() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            r#"<http://elsewhere:1/v1/apps?limit=2&page_token=p1.61>; rel="next""#
                .parse()
                .unwrap(),
        );
        let link = next_link(&h).unwrap();
        assert_eq!(path_and_query(&link), "/v1/apps?limit=2&page_token=p1.61");
        assert!(next_link(&reqwest::header::HeaderMap::new()).is_none());
    }

    #[test]
    fn stream_lines_decode_and_unknown_types_are_skipped() {
        let p = decode_progress(r#"{"type":"log","source":"STG","message":"hi"}"#).unwrap();
        assert!(matches!(p, Some(PushProgress::Log { message, .. }) if message == "hi"));
        let p = decode_progress(
            r#"{"type":"instance","process_type":"web","index":0,"state":"starting","node":"n1"}"#,
        )
        .unwrap();
        assert!(matches!(p, Some(PushProgress::Instance { index: 0, .. })));
        assert!(decode_progress(r#"{"type":"from_the_future","x":1}"#)
            .unwrap()
            .is_none());
        // A result this client cannot read is an error, never skipped.
        assert!(decode_progress(r#"{"type":"result","status":"maybe"}"#).is_err());
        assert!(decode_progress("not json").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("my-app"), "my-app");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
