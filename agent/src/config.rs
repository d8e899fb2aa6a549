//! The agent's one typed configuration: loaded once at startup from an optional TOML file
//! (`PAAS_AGENT_CONFIG`) and then `PAAS_*` environment variables, with defaults that work on one
//! machine. Nothing else in the agent reads environment variables.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("no join token: set PAAS_JOIN_TOKEN or PAAS_JOIN_TOKEN_FILE")]
    MissingJoinToken,
    #[error("cannot read join token file {path}: {source}")]
    JoinTokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("join token file {0} is empty")]
    EmptyJoinTokenFile(PathBuf),
}

/// A credential that never shows up in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Base URL of the controller, or several separated by commas (`PAAS_CONTROLLER=http://a:8080,http://b:8080`):
    /// the node talks to one at a time and moves to the next when it cannot reach it.
    pub controller: String,
    pub join_token: Option<Secret>,
    pub join_token_file: Option<PathBuf>,
    pub node_name: String,
    pub data_dir: PathBuf,
    /// Read from `PAAS_NODE_ZONE`.
    pub zone: String,
    /// Labels apps can require with placement labels (`paas push --placement KEY=VALUE`): a
    /// `[labels]` table in the file, or `PAAS_NODE_LABELS="disk=ssd,gpu=yes"`.
    #[serde(default, deserialize_with = "labels")]
    pub labels: BTreeMap<String, String>,
    /// The address instances are published on and advertised to the controller; routers and
    /// health checks connect here: `PAAS_ADVERTISE_ADDR` (or its older name
    /// `PAAS_NODE_ADDRESS`). An address of this host that routers on other hosts can reach;
    /// the default, 127.0.0.1, suits one machine only.
    pub node_address: String,
    pub docker_network: String,
    /// The bridge network staging containers join (`PAAS_STAGING_NETWORK`), created when
    /// missing: staging alone reaches out, and only to what the settings below name.
    #[serde(default = "default_staging_network")]
    pub staging_network: String,
    /// The Python package index staging installs from (`PAAS_PIP_INDEX_URL`, a PEP 503 URL);
    /// unset: pip's own default (PyPI).
    #[serde(default)]
    pub pip_index_url: Option<String>,
    /// The npm registry staging installs from (`PAAS_NPM_REGISTRY`).
    #[serde(default)]
    pub npm_registry: Option<String>,
    /// The gem source bundler installs from (`PAAS_GEM_SOURCE`), in place of rubygems.org.
    #[serde(default)]
    pub gem_source: Option<String>,
    /// The Go module proxy (`PAAS_GOPROXY`); unset with no vendored modules, `go build` fails
    /// with Go's own message.
    #[serde(default)]
    pub goproxy: Option<String>,
    /// A PEM bundle of extra CAs staging trusts besides Debian's (`PAAS_STAGING_CA_FILE`), for
    /// a mirror behind a private CA.
    #[serde(default)]
    pub staging_ca_file: Option<PathBuf>,
    /// The HTTP(S) proxy staging's installers use (`PAAS_STAGING_PROXY`).
    #[serde(default)]
    pub staging_proxy: Option<String>,
    /// Bound of the dependency cache on this node (`PAAS_STAGING_CACHE_MB`); the least recently
    /// used entries go first.
    #[serde(default = "default_staging_cache_mb")]
    pub staging_cache_mb: u64,
    /// Capacity offered to the scheduler (`PAAS_NODE_MEMORY_MB`, `PAAS_NODE_DISK_MB`,
    /// `PAAS_NODE_INSTANCE_SLOTS`); each one unset is read from the machine at startup (see
    /// `capacity`).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub disk_mb: Option<u64>,
    #[serde(default)]
    pub instance_slots: Option<u32>,
    pub heartbeat_interval_ms: u64,
    /// Debian mirror debootstrap uses to build the stack image.
    pub debian_mirror: String,
    /// The default log rate limit of each instance on this node, for apps that set none of
    /// their own (`log-rate-limit-per-second`, `paas scale -l`): lines per second
    /// (`PAAS_LOG_RATE_LIMIT_LINES`, 0 = unlimited); the excess is dropped and counted in one
    /// `CELL` line per second. An app's own limit replaces this default (lines and bytes).
    #[serde(default = "default_log_rate_lines")]
    pub log_rate_limit_lines: u64,
    /// The same in bytes per second (`PAAS_LOG_RATE_LIMIT_BYTES`, 0 = unlimited).
    #[serde(default = "default_log_rate_bytes")]
    pub log_rate_limit_bytes: u64,
    /// The most bytes per second an app may set for its instances on this node
    /// (`PAAS_LOG_RATE_LIMIT_MAX_BYTES`, 0 = no ceiling): a higher limit is cut to it, and the
    /// dropped-count line says so.
    #[serde(default)]
    pub log_rate_limit_max_bytes: u64,
    /// Where to serve Prometheus `/metrics` (`PAAS_METRICS_LISTEN`, e.g. `127.0.0.1:9101`); off
    /// when unset.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Bound of the disk spool that holds log lines while the controller is unreachable
    /// (`PAAS_LOG_SPOOL_MB`); lines beyond it are dropped and counted.
    #[serde(default = "default_log_spool_mb")]
    pub log_spool_mb: u64,
    /// Rotation of each instance's json-file log (`PAAS_LOG_FILE_MAX_SIZE`, docker's size syntax,
    /// and `PAAS_LOG_FILE_MAX_FILES`). The collector holds rotated files it has not read yet, so
    /// this bounds disk use, not loss.
    #[serde(default = "default_log_file_max_size")]
    pub log_file_max_size: String,
    #[serde(default = "default_log_file_max_files")]
    pub log_file_max_files: u32,
    /// Read instance output from the json-file log directly (`PAAS_LOG_READ_FILES`, default
    /// true); false, or a log file this process cannot read, uses the engine's logs API.
    #[serde(default = "default_true")]
    pub log_read_files: bool,
}

fn default_staging_network() -> String {
    "paas-staging".into()
}

fn default_staging_cache_mb() -> u64 {
    4096
}

fn default_log_file_max_size() -> String {
    "10m".into()
}

fn default_log_file_max_files() -> u32 {
    2
}

fn default_true() -> bool {
    true
}

fn default_log_spool_mb() -> u64 {
    64
}

fn default_log_rate_lines() -> u64 {
    20_000
}

fn default_log_rate_bytes() -> u64 {
    8 * 1024 * 1024
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            controller: "http://127.0.0.1:8080".into(),
            join_token: None,
            join_token_file: None,
            node_name: default_hostname(),
            data_dir: PathBuf::from("/var/lib/paas-agent"),
            zone: "default".into(),
            labels: BTreeMap::new(),
            node_address: "127.0.0.1".into(),
            docker_network: "paas-sandbox".into(),
            staging_network: default_staging_network(),
            pip_index_url: None,
            npm_registry: None,
            gem_source: None,
            goproxy: None,
            staging_ca_file: None,
            staging_proxy: None,
            staging_cache_mb: default_staging_cache_mb(),
            memory_mb: None,
            disk_mb: None,
            instance_slots: None,
            heartbeat_interval_ms: 2000,
            debian_mirror: default_debian_mirror(),
            log_rate_limit_lines: default_log_rate_lines(),
            log_rate_limit_bytes: default_log_rate_bytes(),
            log_rate_limit_max_bytes: 0,
            metrics_listen: None,
            log_spool_mb: default_log_spool_mb(),
            log_file_max_size: default_log_file_max_size(),
            log_file_max_files: default_log_file_max_files(),
            log_read_files: true,
        }
    }
}

impl Settings {
    /// Defaults, then the TOML file named by `PAAS_AGENT_CONFIG`, then `PAAS_*` variables.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("PAAS_AGENT_CONFIG").map(PathBuf::from);
        Self::from_figment(Self::figment(file.as_deref()))
    }

    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file(file));
        }
        // Some variables carry a `NODE_` prefix to read well next to the server's own variables;
        // map them onto the field names. Unknown `PAAS_*` variables (PAAS_API, ...) are ignored.
        figment.merge(Env::prefixed("PAAS_").map(|key| {
            match key.as_str().to_ascii_lowercase().as_str() {
                "node_zone" => "zone".into(),
                "node_labels" => "labels".into(),
                "node_memory_mb" => "memory_mb".into(),
                "node_instance_slots" => "instance_slots".into(),
                "node_disk_mb" => "disk_mb".into(),
                "advertise_addr" => "node_address".into(),
                _ => key.into(),
            }
        }))
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }

    /// The join token from `join_token`, or else read from `join_token_file`.
    pub fn resolve_join_token(&self) -> Result<Secret, ConfigError> {
        if let Some(token) = self
            .join_token
            .as_ref()
            .filter(|t| !t.expose().trim().is_empty())
        {
            return Ok(Secret::new(token.expose().trim()));
        }
        let path = self
            .join_token_file
            .as_ref()
            .ok_or(ConfigError::MissingJoinToken)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::JoinTokenFile {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::EmptyJoinTokenFile(path.clone()));
        }
        Ok(Secret::new(token))
    }
}

/// Labels as a table, or as `KEY=VALUE` pairs separated by commas (the environment's form).
fn labels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Table(BTreeMap<String, String>),
        Text(String),
    }
    match Given::deserialize(d)? {
        Given::Table(t) => Ok(t),
        Given::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(serde::de::Error::custom(format!(
                    "node label {pair:?} is not KEY=VALUE"
                ))),
            })
            .collect(),
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

/// The mirror the host's own apt uses, so a machine behind a local mirror builds the stack
/// without reaching the internet.
fn default_debian_mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_from_deb822(&deb822)
        .or_else(|| mirror_from_sources_list(&classic))
        .unwrap_or_else(|| FALLBACK_MIRROR.into())
}

fn is_debian_http(uri: &str) -> bool {
    (uri.starts_with("http://") || uri.starts_with("https://")) && !uri.contains("security")
}

fn mirror_from_deb822(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("URIs:"))
        .flat_map(|uris| uris.split_whitespace())
        .find(|uri| is_debian_http(uri))
        .map(|uri| uri.trim_end_matches('/').to_string())
}

fn mirror_from_sources_list(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("deb "))
        .filter_map(|l| {
            // `deb [options] uri suite components`: skip the bracketed options.
            l.split_whitespace()
                .skip(1)
                .find(|w| !w.starts_with('[') && !w.ends_with(']'))
        })
        .find(|uri| is_debian_http(uri))
        .map(|uri| uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
// figment's Jail closures return its (large) error type; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_then_file_then_env() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "agent.toml",
                "controller = \"http://ctl:9000\"\nnode_name = \"from-file\"\nzone = \"z1\"\n",
            )?;
            jail.set_env("PAAS_NODE_NAME", "from-env");
            jail.set_env("PAAS_NODE_MEMORY_MB", "2048");
            jail.set_env("PAAS_NODE_INSTANCE_SLOTS", "8");
            jail.set_env("PAAS_JOIN_TOKEN", "s3cret");
            // Variables meant for other binaries must not break the agent.
            jail.set_env("PAAS_API", "http://elsewhere");
            let settings =
                Settings::from_figment(Settings::figment(Some(Path::new("agent.toml")))).unwrap();
            assert_eq!(settings.controller, "http://ctl:9000");
            assert_eq!(settings.node_name, "from-env");
            assert_eq!(settings.zone, "z1");
            assert_eq!(settings.memory_mb, Some(2048));
            assert_eq!(settings.instance_slots, Some(8));
            // Unset: read from the machine at startup.
            assert_eq!(settings.disk_mb, None);
            assert_eq!(settings.staging_network, "paas-staging");
            assert_eq!(settings.pip_index_url, None);
            assert_eq!(settings.docker_network, "paas-sandbox");
            assert_eq!(settings.heartbeat_interval_ms, 2000);
            assert_eq!(settings.resolve_join_token().unwrap().expose(), "s3cret");
            assert!(!format!("{settings:?}").contains("s3cret"));
            assert!(settings.labels.is_empty());
            Ok(())
        });
    }

    #[test]
    fn capacity_keys_from_file_then_env() {
        Jail::expect_with(|jail| {
            jail.create_file("agent.toml", "memory_mb = 1024\ndisk_mb = 5000\n")?;
            let settings =
                Settings::from_figment(Settings::figment(Some(Path::new("agent.toml")))).unwrap();
            assert_eq!(
                (settings.memory_mb, settings.disk_mb),
                (Some(1024), Some(5000))
            );
            jail.set_env("PAAS_NODE_DISK_MB", "7000");
            let settings =
                Settings::from_figment(Settings::figment(Some(Path::new("agent.toml")))).unwrap();
            assert_eq!(settings.disk_mb, Some(7000));
            assert_eq!(settings.instance_slots, None);
            Ok(())
        });
    }

    #[test]
    fn labels_from_file_or_env() {
        Jail::expect_with(|jail| {
            jail.create_file("agent.toml", "[labels]\ndisk = \"ssd\"\n")?;
            let settings =
                Settings::from_figment(Settings::figment(Some(Path::new("agent.toml")))).unwrap();
            assert_eq!(settings.labels["disk"], "ssd");
            jail.set_env("PAAS_NODE_LABELS", "disk=hdd, gpu=yes");
            let settings = Settings::from_figment(Settings::figment(None)).unwrap();
            assert_eq!(
                settings.labels,
                BTreeMap::from([
                    ("disk".to_string(), "hdd".to_string()),
                    ("gpu".to_string(), "yes".to_string())
                ])
            );
            jail.set_env("PAAS_NODE_LABELS", "disk");
            assert!(Settings::from_figment(Settings::figment(None)).is_err());
            Ok(())
        });
    }

    #[test]
    fn join_token_from_file_or_missing() {
        Jail::expect_with(|jail| {
            let settings = Settings::from_figment(Settings::figment(None)).unwrap();
            assert!(matches!(
                settings.resolve_join_token(),
                Err(ConfigError::MissingJoinToken)
            ));
            jail.create_file("token", "  tok-from-file\n")?;
            jail.set_env("PAAS_JOIN_TOKEN_FILE", "token");
            let settings = Settings::from_figment(Settings::figment(None)).unwrap();
            assert_eq!(
                settings.resolve_join_token().unwrap().expose(),
                "tok-from-file"
            );
            Ok(())
        });
    }

    #[test]
    fn advertise_address_from_env() {
        Jail::expect_with(|jail| {
            let settings = Settings::from_figment(Settings::figment(None)).unwrap();
            assert_eq!(settings.node_address, "127.0.0.1");
            jail.set_env("PAAS_ADVERTISE_ADDR", "10.0.0.7");
            let settings = Settings::from_figment(Settings::figment(None)).unwrap();
            assert_eq!(settings.node_address, "10.0.0.7");
            Ok(())
        });
    }

    #[test]
    fn bad_value_is_an_error() {
        Jail::expect_with(|jail| {
            jail.set_env("PAAS_NODE_MEMORY_MB", "lots");
            assert!(Settings::from_figment(Settings::figment(None)).is_err());
            Ok(())
        });
    }

    #[test]
    fn mirror_detection() {
        let deb822 = "Types: deb\nURIs: http://mirror.local/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_from_deb822(deb822).as_deref(),
            Some("http://mirror.local/debian")
        );
        let classic =
            "# comment\ndeb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources_list(classic).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(mirror_from_sources_list(""), None);
    }
}
