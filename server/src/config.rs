//! The controller's one typed configuration: defaults that work on one machine, then an optional
//! TOML file (`PAAS_CONFIG`), then `PAAS_*` environment variables. Loaded once in `main`.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A string that never prints: passwords and keys.
#[derive(Clone, Serialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

/// Env values that look like numbers (`PAAS_ADMIN_PASSWORD=123456`) reach us as numbers; a
/// secret takes any scalar as its text.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `PAAS_ROUTER_CLIENT_CERT` (issue 25).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertMode {
    /// Ask for a client certificate; a client may present none.
    #[default]
    Request,
    /// Never ask.
    Off,
}

fn default_instance_cert_ttl() -> u64 {
    24 * 3600
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Address of the API, dashboard and (by default) router: `PAAS_LISTEN`.
    pub listen: String,
    /// Database, blobstore, keys, join token and admin password live here: `PAAS_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Password of the bootstrap `admin` user; generated into `data_dir/admin-password` if unset.
    pub admin_password: Option<Secret>,
    /// Basic-auth username of the built-in service broker's OSB endpoint (`/broker/v2`):
    /// `PAAS_BUILTIN_BROKER_USERNAME`, default `broker` (issue 22).
    #[serde(default = "default_builtin_broker_username")]
    pub builtin_broker_username: String,
    /// Its password: `PAAS_BUILTIN_BROKER_PASSWORD`; generated into
    /// `data_dir/builtin-broker-password` if unset.
    #[serde(default)]
    pub builtin_broker_password: Option<Secret>,
    /// Apps are served at `NAME.<apps_domain>`: `PAAS_APPS_DOMAIN`.
    pub apps_domain: String,
    /// Scheme and port used when printing app URLs; defaults to the listener's port.
    pub public_port: Option<u16>,
    /// How long a dashboard session lives.
    pub token_ttl_secs: u64,
    /// How long an API access token from `POST /v1/auth/login` or `/refresh` lives
    /// (`PAAS_ACCESS_TOKEN_TTL_SECS`); clients renew it with their refresh token.
    #[serde(default = "default_access_token_ttl")]
    pub access_token_ttl_secs: u64,
    /// How long a refresh token stays usable (`PAAS_REFRESH_TOKEN_TTL_SECS`); each refresh
    /// replaces it with a new one of the same lifetime.
    #[serde(default = "default_refresh_token_ttl")]
    pub refresh_token_ttl_secs: u64,
    /// A streamed push waits this long for the new instances to run before its last line says
    /// `failed` (`PAAS_PUSH_START_TIMEOUT_SECS`).
    #[serde(default = "default_push_start_timeout")]
    pub push_start_timeout_secs: u64,
    /// Failed logins per account (from any source) and per source (for any account) within a
    /// minute before logins are refused (`PAAS_LOGIN_FAILURES_PER_KEY`); a source guessing one
    /// account is held back after 5.
    #[serde(default = "default_login_failures_per_key")]
    pub login_failures_per_key: u32,
    /// Largest accepted upload body.
    pub max_upload_mb: u64,
    /// Largest total size an archive may unpack to.
    pub max_unpacked_mb: u64,
    /// Most entries an archive may hold.
    pub max_archive_entries: usize,
    /// A node that has not sent a heartbeat for this long is lost.
    pub node_grace_secs: u64,
    /// Defaults for a new app.
    pub default_memory_mb: u64,
    pub default_disk_mb: u64,
    /// Log lines kept per app.
    pub log_retention_lines: i64,
    /// Most processes (and threads) one instance may run: stops fork bombs.
    pub instance_pids_limit: i64,
    /// How long a request for an app with no ready instance waits for one (a deploy or restart
    /// in progress) before the router answers 503.
    #[serde(default = "default_router_wait_ms")]
    pub router_wait_ms: u64,
    /// Connecting to an instance longer than this is a failure (retried on another instance).
    #[serde(default = "default_router_connect_timeout_ms")]
    pub router_connect_timeout_ms: u64,
    /// An instance that sends no response header for this long gets a 504.
    #[serde(default = "default_router_response_timeout_secs")]
    pub router_response_timeout_secs: u64,
    /// A response body that stays silent this long mid-way is cut (the client sees the
    /// connection end before the body does), so a hung instance cannot hold a request forever.
    #[serde(default = "default_router_idle_timeout_secs")]
    pub router_idle_timeout_secs: u64,
    /// `round_robin` (default) or `least_connections`.
    #[serde(default)]
    pub router_balance: crate::router::Balance,
    /// Threads serving the public listener (`PAAS_ROUTER_THREADS`); 0 = one per core.
    #[serde(default)]
    pub router_threads: usize,
    /// How long a removed instance's in-flight requests may take before it is stopped anyway
    /// (`PAAS_ROUTER_DRAIN_SECS`).
    #[serde(default = "default_router_drain_secs")]
    pub router_drain_secs: u64,
    /// How often the leader's autoscaler looks at apps with a policy
    /// (`PAAS_AUTOSCALE_INTERVAL_SECS`, default 5).
    #[serde(default = "default_autoscale_interval_secs")]
    pub autoscale_interval_secs: u64,
    /// The metric window the autoscaler reads (`PAAS_AUTOSCALE_WINDOW_SECS`, default 30): the
    /// mean requests per second and the highest p99 of the 10 s intervals closed in it.
    #[serde(default = "default_autoscale_window_secs")]
    pub autoscale_window_secs: u64,
    /// Standalone router (`paas-server router`) only: the controller to follow, or several,
    /// comma-separated (the first that answers is followed).
    #[serde(default = "default_controller")]
    pub controller: String,
    /// Standalone router only: the router credential (the controller's join token), inline or
    /// from a file.
    #[serde(default)]
    pub join_token: Option<Secret>,
    #[serde(default)]
    pub join_token_file: Option<PathBuf>,
    /// Stored log lines older than this are deleted (default 7 days): `PAAS_LOG_RETENTION_SECS`.
    #[serde(default = "default_log_retention_secs")]
    pub log_retention_secs: u64,
    /// Extra CA certificate (PEM) trusted by `https://` log drains besides the public roots, e.g.
    /// an internal sink's self-signed certificate: `PAAS_DRAIN_CA_FILE`.
    #[serde(default)]
    pub drain_ca_file: Option<PathBuf>,
    /// Newest lines per app kept in memory for new stream subscribers.
    #[serde(default = "default_log_memory_lines")]
    pub log_memory_lines: usize,
    /// Droplets (and their packages) kept per app: those of its newest N revisions and its
    /// current one; older ones are collected (`PAAS_KEEP_DROPLETS`).
    #[serde(default = "default_keep_droplets")]
    pub keep_droplets: usize,
    /// Limits of a staging container on a node (`PAAS_STAGING_*`).
    #[serde(default = "default_staging_timeout")]
    pub staging_timeout_secs: u64,
    #[serde(default = "default_staging_memory")]
    pub staging_memory_mb: u64,
    /// A second listener, HTTPS (HTTP/2 by ALPN), serving the same API and app traffic:
    /// `PAAS_TLS_LISTEN` (e.g. `0.0.0.0:8443`). Off unless set; needs `tls_cert_dir`.
    #[serde(default)]
    pub tls_listen: Option<String>,
    /// Certificates for the TLS listener, `HOST.crt` + `HOST.key` pairs (`_.DOMAIN` for
    /// `*.DOMAIN`, `default` for the rest), re-read when they change: `PAAS_TLS_CERT_DIR`.
    #[serde(default)]
    pub tls_cert_dir: Option<PathBuf>,
    /// Lifetime of an instance identity certificate (issue 25): `PAAS_INSTANCE_CERT_TTL_SECS`,
    /// default 24 h. Nodes renew at two thirds of it.
    #[serde(default = "default_instance_cert_ttl")]
    pub instance_cert_ttl_secs: u64,
    /// Whether the TLS listener asks clients for a certificate (issue 25):
    /// `PAAS_ROUTER_CLIENT_CERT`, `request` (default: asked, never required; one the platform
    /// CA did not sign fails the handshake) or `off`. A verified client certificate reaches the
    /// app as `X-Forwarded-Client-Cert`.
    #[serde(default)]
    pub router_client_cert: ClientCertMode,
    /// Where packages, droplets and buildpacks live: unset for `DATA_DIR/blobs`, or an
    /// S3-compatible bucket, `s3://BUCKET/PREFIX?endpoint=URL&region=REGION`
    /// (`PAAS_BLOBSTORE_URL`). Several controllers must share one bucket.
    #[serde(default)]
    pub blobstore_url: Option<String>,
    /// The database: unset for SQLite at `DATA_DIR/paas.db`, `sqlite://PATH`, or PostgreSQL,
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (`PAAS_DATABASE_URL`). A secret: the URL may hold
    /// a password.
    #[serde(default)]
    pub database_url: Option<Secret>,
    /// The S3 blobstore's credentials, from the standard `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` variables (or the config file).
    #[serde(default)]
    pub aws_access_key_id: Option<Secret>,
    #[serde(default)]
    pub aws_secret_access_key: Option<Secret>,
    #[serde(default)]
    pub aws_session_token: Option<Secret>,
    /// This controller's own API URL as agents reach it, e.g. `http://10.0.0.5:8080`
    /// (`PAAS_ADVERTISE_URL`). With several controllers, an ssh session offer names it so the
    /// node dials back to the controller holding the client's socket; unset, the node dials its
    /// own controller (right with one controller). Unset and `listen` a specific address: that
    /// address.
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// The ACME directory certificates are ordered from, e.g.
    /// `https://acme-v02.api.letsencrypt.org/directory` (`PAAS_ACME_DIRECTORY`). Unset: ACME
    /// is off (domains may still opt in; nothing is ordered).
    #[serde(default)]
    pub acme_directory: Option<String>,
    /// The account's contact (`PAAS_ACME_EMAIL`), sent as `mailto:` when the account is made.
    #[serde(default)]
    pub acme_email: Option<String>,
    /// A CA bundle (PEM) the directory's HTTPS is checked against instead of the public roots
    /// (`PAAS_ACME_CA_FILE`), for a private or test CA.
    #[serde(default)]
    pub acme_ca_file: Option<PathBuf>,
    /// A certificate is renewed when less than this many days are left, or a third of its
    /// lifetime, whichever is shorter (`PAAS_ACME_RENEW_BEFORE_DAYS`, default 30).
    #[serde(default = "default_acme_renew_before_days")]
    pub acme_renew_before_days: u64,
    /// After a failure, the first retry waits this long, doubling per failure in a row
    /// (`PAAS_ACME_BACKOFF_SECS`, default 60) up to `PAAS_ACME_BACKOFF_MAX_SECS` (default a day).
    #[serde(default = "default_acme_backoff_secs")]
    pub acme_backoff_secs: u64,
    #[serde(default = "default_acme_backoff_max_secs")]
    pub acme_backoff_max_secs: u64,
    /// How often the leader looks for hosts needing a certificate (`PAAS_ACME_CHECK_SECS`,
    /// default 30; a domain's change wakes it at once).
    #[serde(default = "default_acme_check_secs")]
    pub acme_check_secs: u64,
}

fn default_acme_renew_before_days() -> u64 {
    30
}

fn default_acme_backoff_secs() -> u64 {
    60
}

fn default_acme_backoff_max_secs() -> u64 {
    24 * 3600
}

fn default_acme_check_secs() -> u64 {
    30
}

fn default_access_token_ttl() -> u64 {
    15 * 60
}

fn default_refresh_token_ttl() -> u64 {
    30 * 24 * 3600
}

fn default_push_start_timeout() -> u64 {
    180
}

fn default_login_failures_per_key() -> u32 {
    20
}

fn default_controller() -> String {
    "http://127.0.0.1:8080".into()
}

fn default_router_drain_secs() -> u64 {
    10
}

fn default_autoscale_interval_secs() -> u64 {
    5
}

fn default_autoscale_window_secs() -> u64 {
    30
}

fn default_router_wait_ms() -> u64 {
    5000
}
fn default_router_connect_timeout_ms() -> u64 {
    2000
}
fn default_router_response_timeout_secs() -> u64 {
    300
}
fn default_router_idle_timeout_secs() -> u64 {
    300
}

fn default_log_retention_secs() -> u64 {
    7 * 24 * 3600
}

fn default_log_memory_lines() -> usize {
    1000
}

fn default_staging_timeout() -> u64 {
    900
}

fn default_staging_memory() -> u64 {
    1024
}

fn default_keep_droplets() -> usize {
    5
}

fn default_builtin_broker_username() -> String {
    "broker".into()
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from(".paas-data"),
            admin_password: None,
            builtin_broker_username: default_builtin_broker_username(),
            builtin_broker_password: None,
            apps_domain: "localhost".into(),
            public_port: None,
            token_ttl_secs: 12 * 3600,
            access_token_ttl_secs: default_access_token_ttl(),
            refresh_token_ttl_secs: default_refresh_token_ttl(),
            push_start_timeout_secs: default_push_start_timeout(),
            login_failures_per_key: default_login_failures_per_key(),
            max_upload_mb: 1024,
            max_unpacked_mb: 2048,
            max_archive_entries: 100_000,
            node_grace_secs: 10,
            default_memory_mb: 256,
            default_disk_mb: 1024,
            log_retention_lines: 10_000,
            instance_pids_limit: 1024,
            router_wait_ms: default_router_wait_ms(),
            router_connect_timeout_ms: default_router_connect_timeout_ms(),
            router_response_timeout_secs: default_router_response_timeout_secs(),
            router_idle_timeout_secs: default_router_idle_timeout_secs(),
            router_balance: crate::router::Balance::default(),
            router_threads: 0,
            router_drain_secs: default_router_drain_secs(),
            autoscale_interval_secs: default_autoscale_interval_secs(),
            autoscale_window_secs: default_autoscale_window_secs(),
            controller: default_controller(),
            join_token: None,
            join_token_file: None,
            log_retention_secs: default_log_retention_secs(),
            log_memory_lines: default_log_memory_lines(),
            drain_ca_file: None,
            keep_droplets: default_keep_droplets(),
            staging_timeout_secs: default_staging_timeout(),
            staging_memory_mb: default_staging_memory(),
            tls_listen: None,
            tls_cert_dir: None,
            instance_cert_ttl_secs: default_instance_cert_ttl(),
            router_client_cert: ClientCertMode::default(),
            blobstore_url: None,
            database_url: None,
            advertise_url: None,
            aws_access_key_id: None,
            aws_secret_access_key: None,
            aws_session_token: None,
            acme_directory: None,
            acme_email: None,
            acme_ca_file: None,
            acme_renew_before_days: default_acme_renew_before_days(),
            acme_backoff_secs: default_acme_backoff_secs(),
            acme_backoff_max_secs: default_acme_backoff_max_secs(),
            acme_check_secs: default_acme_check_secs(),
        }
    }
}

impl Settings {
    pub fn blobstore(&self) -> crate::blobstore::BlobstoreConfig {
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
        crate::blobstore::BlobstoreConfig {
            url: self.blobstore_url.clone(),
            access_key_id: expose(&self.aws_access_key_id),
            secret_access_key: expose(&self.aws_secret_access_key),
            session_token: expose(&self.aws_session_token),
        }
    }

    /// The database URL [`crate::store::open`] takes: `PAAS_DATABASE_URL`, else SQLite in the
    /// data dir.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.expose().is_empty() => u.expose().to_string(),
            _ => format!("sqlite://{}", self.data_dir.join("paas.db").display()),
        }
    }

    pub fn load() -> Result<Self, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Ok(path) = std::env::var("PAAS_CONFIG") {
            fig = fig.merge(Toml::file(path));
        }
        fig.merge(Env::raw().only(&[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ]))
        .merge(Env::prefixed("PAAS_"))
        .extract()
        .map_err(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_defaults_to_sqlite_in_the_data_dir() {
        let s = Settings {
            data_dir: PathBuf::from("/var/lib/paas"),
            ..Settings::default()
        };
        assert_eq!(s.database_url(), "sqlite:///var/lib/paas/paas.db");
        let s = Settings {
            database_url: Some(Secret::new("postgres://paas:pw@db/paas")),
            ..s
        };
        assert_eq!(s.database_url(), "postgres://paas:pw@db/paas");
        // The password never reaches a log line.
        assert!(!format!("{s:?}").contains("pw@"));
    }
}
