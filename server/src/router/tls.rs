//! Optional TLS termination for app traffic (and the API on the same listener), with rustls.
//!
//! Certificates come from one folder (`PAAS_TLS_CERT_DIR`): a pair `NAME.crt` (PEM chain, leaf
//! first) + `NAME.key` (PEM private key) serves the host `NAME`; `_.DOMAIN.crt` serves the
//! wildcard `*.DOMAIN` (one label, as browsers match); `default.crt` answers clients that send
//! no SNI or a name no other pair covers. The folder is re-read when any file in it changes
//! (polled every [`RELOAD_EVERY`]): a renewed certificate is served on the next handshake with
//! no restart. A folder that fails to load keeps the previous set (and says why in the log), so
//! a half-copied renewal never takes HTTPS down.
//!
//! Certificates set through the API (`PUT /v1/domains/{domain}/certificate`) come with the route
//! table ([`TableCerts`]: the controller's own, or the one a standalone router follows), so
//! every router serves them without files; the folder is then optional. A handshake's name
//! picks, in order: the folder's exact pair, the API certificate of the longest domain the name
//! is (or is under), the folder's wildcard, the folder's default.
//!
//! ALPN offers `h2` and `http/1.1` (actix-http adds them), so clients get HTTP/2 over TLS; the
//! router speaks HTTP/1.1 to instances either way.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path}: unsupported private key: {message}")]
    Key { path: PathBuf, message: String },
    #[error("{0}: has a .crt but no .key beside it")]
    MissingKey(PathBuf),
}

/// The certificates of one load of the folder.
#[derive(Default, Debug)]
struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.DOMAIN`, keyed by DOMAIN.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl Certs {
    fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = self.exact.get(&name) {
                return Some(c.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(c) = self.wildcard.get(parent) {
                    return Some(c.clone());
                }
            }
        }
        self.default.clone()
    }

    fn exact(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        self.exact
            .get(&sni.trim_end_matches('.').to_ascii_lowercase())
            .cloned()
    }

    fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.default.is_some())
    }
}

/// The certificates of a route table, by domain: a domain's certificate answers the domain and
/// every name under it (the client checks the names; `set-cert` checked they cover the domain
/// or `*.DOMAIN`).
#[derive(Default)]
pub struct TableCerts {
    by_domain: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for TableCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableCerts")
            .field("domains", &self.by_domain.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TableCerts {
    /// Parses the table's certificates; one that does not load is left out (and logged), so one
    /// bad entry never takes the others down.
    pub fn load(list: &[paas_common::route::RouterCertificate]) -> Self {
        let mut by_domain = HashMap::new();
        for c in list {
            match parse_pair(c.certificate.as_bytes(), c.private_key.as_bytes()) {
                Ok(key) => {
                    by_domain.insert(c.domain.to_ascii_lowercase(), key);
                }
                Err(e) => {
                    tracing::warn!(domain = %c.domain, error = %e, "a domain's certificate does not load; not served")
                }
            }
        }
        Self { by_domain }
    }

    /// The certificate of the longest domain `name` is, or is under.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if self.by_domain.is_empty() {
            return None;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if let Some(c) = self.by_domain.get(rest) {
                return Some(c.clone());
            }
            rest = rest.split_once('.')?.1;
        }
    }
}

fn parse_pair(chain: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    let der = PrivateKeyDer::from_pem_slice(key).map_err(|e| e.to_string())?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Picks the certificate for each handshake by SNI from the current set; [`CertStore::reload`]
/// swaps the folder's set under it; the route table's certificates follow the table.
pub struct CertStore {
    /// The operator's folder, if any.
    dir: Option<PathBuf>,
    table: Option<Arc<super::RouteTable>>,
    certs: RwLock<Arc<Certs>>,
    /// What the folder looked like at the last load (names, sizes, times).
    stamp: RwLock<Vec<(PathBuf, u64, Option<SystemTime>)>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("dir", &self.dir).finish()
    }
}

impl CertStore {
    /// Loads the folder once; an error here (unlike on reload) stops start-up, since the operator
    /// asked for TLS and would otherwise get a listener that fails every handshake.
    pub fn open(dir: &Path) -> Result<Arc<Self>, TlsError> {
        Self::with_table(Some(dir), None)
    }

    /// The folder's certificates (if a folder is given) and the route table's.
    pub fn with_table(
        dir: Option<&Path>,
        table: Option<Arc<super::RouteTable>>,
    ) -> Result<Arc<Self>, TlsError> {
        let (stamp, certs) = match dir {
            Some(dir) => {
                let stamp = stamp(dir)?;
                let certs = load(dir)?;
                tracing::info!(dir = %dir.display(), certificates = certs.len(), "TLS certificates loaded");
                (stamp, certs)
            }
            None => Default::default(),
        };
        Ok(Arc::new(Self {
            dir: dir.map(Path::to_path_buf),
            table,
            certs: RwLock::new(Arc::new(certs)),
            stamp: RwLock::new(stamp),
        }))
    }

    /// Re-reads the folder if anything in it changed. Returns whether a new set is in use.
    pub fn reload(&self) -> bool {
        let Some(dir) = &self.dir else {
            return false;
        };
        let Ok(now) = stamp(dir) else {
            return false;
        };
        if self.stamp.read().is_ok_and(|s| *s == now) {
            return false;
        }
        // Remember the stamp either way: a broken folder is reported once per change, not on
        // every poll.
        if let Ok(mut s) = self.stamp.write() {
            *s = now;
        }
        match load(dir) {
            Ok(certs) => {
                tracing::info!(dir = %dir.display(), certificates = certs.len(), "TLS certificates reloaded");
                if let Ok(mut c) = self.certs.write() {
                    *c = Arc::new(certs);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate folder changed but does not load; keeping the previous certificates");
                false
            }
        }
    }

    /// The rustls config for a listener: certificates from this store; with `client_ca`, a
    /// client certificate is asked for (never required) and verified against it.
    pub fn server_config(self: &Arc<Self>, client_ca: Option<Arc<ClientCa>>) -> ServerConfig {
        let builder =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions");
        match client_ca {
            Some(ca) => builder.with_client_cert_verifier(ca),
            None => builder.with_no_client_auth(),
        }
        .with_cert_resolver(self.clone())
    }

    /// Polls the folder until the process ends.
    pub async fn watch(self: Arc<Self>) {
        if self.dir.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            // Reading files is blocking work.
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().ok()?.clone();
        let sni = hello.server_name();
        if let Some(c) = sni.and_then(|n| certs.exact(n)) {
            return Some(c);
        }
        if let Some(c) = sni
            .zip(self.table.as_ref())
            .and_then(|(n, t)| t.certificate_for(n))
        {
            return Some(c);
        }
        certs.lookup(sni)
    }
}

/// The client certificates the TLS listener accepts (issue 25): those the platform CA of
/// instance identity signed, as the route table carries it (so a standalone router learns it
/// from the controller, and a listener that started before it knows none). A client may present
/// none (ordinary browsers); one the CA did not sign fails the handshake, so whatever reaches an
/// app as `X-Forwarded-Client-Cert` was verified.
#[derive(Default)]
pub struct ClientCa {
    /// (the CA's PEM, its verifier)
    inner: RwLock<Option<(String, Arc<dyn ClientCertVerifier>)>>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa").finish_non_exhaustive()
    }
}

impl ClientCa {
    /// Trusts `pem` from the next handshake on; the same PEM again changes nothing.
    pub fn set(&self, pem: &str) {
        if self
            .inner
            .read()
            .is_ok_and(|i| i.as_ref().is_some_and(|(p, _)| p == pem))
        {
            return;
        }
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            if let Err(e) = roots.add(der) {
                tracing::warn!(error = %e, "the instance identity CA does not load");
            }
        }
        let built = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build();
        match built {
            Ok(v) => {
                if let Ok(mut i) = self.inner.write() {
                    *i = Some((pem.to_string(), v));
                }
            }
            Err(e) => tracing::warn!(error = %e, "no client certificate verifier"),
        }
    }

    fn current(&self) -> Option<Arc<dyn ClientCertVerifier>> {
        self.inner.read().ok()?.as_ref().map(|(_, v)| v.clone())
    }
}

impl ClientCertVerifier for ClientCa {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: a client offers whatever certificate it has, and browsers are not prompted to
    /// pick among theirs for a CA they never heard of.
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.current() {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "no instance identity CA known yet".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `X-Forwarded-Client-Cert` for a verified client certificate: its DER in base64, as Cloud
/// Foundry's gorouter forwards it (the PEM body without its lines and armour).
pub fn forwarded_client_cert(der: &[u8]) -> Option<http::HeaderValue> {
    use base64::Engine;
    http::HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(der)).ok()
}

fn stamp(dir: &Path) -> Result<Vec<(PathBuf, u64, Option<SystemTime>)>, TlsError> {
    let read = |source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read)? {
        let e = e.map_err(read)?;
        // Follow links: certificate managers often keep `live/NAME.crt -> archive/...`.
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue;
        };
        out.push((e.path(), meta.len(), meta.modified().ok()));
    }
    out.sort();
    Ok(out)
}

fn load(dir: &Path) -> Result<Certs, TlsError> {
    let mut certs = Certs::default();
    let entries = std::fs::read_dir(dir).map_err(|source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".crt"))
        else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        let key_path = path.with_extension("key");
        if !key_path.exists() {
            return Err(TlsError::MissingKey(path));
        }
        let key = certified_key(&path, &key_path)?;
        if name == "default" {
            certs.default = Some(key);
        } else if let Some(domain) = name.strip_prefix("_.") {
            certs.wildcard.insert(domain.to_string(), key);
        } else {
            certs.exact.insert(name, key);
        }
    }
    Ok(certs)
}

fn certified_key(crt: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(crt)
        .map_err(|e| pem(crt, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(crt, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: crt.to_path_buf(),
            message: "no CERTIFICATE block".into(),
        });
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| TlsError::Key {
            path: key.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The TLS listener the settings ask for, bound (port 0 allowed: the address is written to
/// `DATA_DIR/tls-listen-addr` for scripts and tests), with its certificate store. `None` when
/// `PAAS_TLS_LISTEN` is unset.
pub fn bind(
    settings: &crate::config::Settings,
    table: Arc<super::RouteTable>,
) -> anyhow::Result<Option<(std::net::TcpListener, Arc<CertStore>)>> {
    use anyhow::Context;
    let Some(listen) = &settings.tls_listen else {
        return Ok(None);
    };
    // Without a folder, only certificates set through the API are served.
    let store = CertStore::with_table(settings.tls_cert_dir.as_deref(), Some(table))
        .context("loading TLS certificates")?;
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let tmp = settings.data_dir.join("tls-listen-addr.tmp");
    std::fs::write(&tmp, format!("{addr}\n"))?;
    std::fs::rename(&tmp, settings.data_dir.join("tls-listen-addr"))?;
    tracing::info!(%addr, "TLS listener bound");
    Ok(Some((listener, store)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, file: &str, names: &[&str]) -> Vec<u8> {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{file}.crt")), c.cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), c.key_pair.serialize_pem()).unwrap();
        c.cert.der().to_vec()
    }

    fn leaf(c: &Option<Arc<CertifiedKey>>) -> Option<Vec<u8>> {
        c.as_ref().map(|k| k.cert[0].as_ref().to_vec())
    }

    #[test]
    fn picks_exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let exact = write_pair(dir.path(), "a.apps.test", &["a.apps.test"]);
        let wild = write_pair(dir.path(), "_.apps.test", &["*.apps.test"]);
        let store = CertStore::open(dir.path()).unwrap();
        let certs = store.certs.read().unwrap().clone();
        assert_eq!(leaf(&certs.lookup(Some("A.apps.test"))), Some(exact));
        assert_eq!(leaf(&certs.lookup(Some("b.apps.test"))), Some(wild));
        // A wildcard covers one label only.
        assert_eq!(leaf(&certs.lookup(Some("x.b.apps.test"))), None);
        assert_eq!(leaf(&certs.lookup(None)), None);
        let def = write_pair(dir.path(), "default", &["fallback.test"]);
        assert!(store.reload());
        let certs = store.certs.read().unwrap().clone();
        assert_eq!(leaf(&certs.lookup(Some("other.test"))), Some(def.clone()));
        assert_eq!(leaf(&certs.lookup(None)), Some(def));
        // Nothing changed: no reload.
        assert!(!store.reload());
    }

    #[test]
    fn a_broken_folder_keeps_the_previous_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(dir.path(), "a.test", &["a.test"]);
        let store = CertStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("b.test.crt"), "not a certificate").unwrap();
        assert!(!store.reload());
        let certs = store.certs.read().unwrap().clone();
        assert_eq!(leaf(&certs.lookup(Some("a.test"))), Some(good));
        // At start-up the same folder is an error that names the file.
        let err = CertStore::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("b.test"), "{err}");
    }
}
