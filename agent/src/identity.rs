//! Instance identity on the node (issue 25): each instance's key and certificate, in a folder of
//! the node bind-mounted read-only at `/etc/cf-instance-credentials` (`CF_INSTANCE_CERT`,
//! `CF_INSTANCE_KEY`), renewed before they expire while the instance runs.
//!
//! The key is made here and never leaves the node: the controller gets a CSR and signs a
//! certificate whose names it decides (for an instance assigned to this node only).
//!
//! Files are never rewritten in place. Each certificate is a new generation folder
//! (`..gen-<serial>`) inside the mounted folder; `..data` is a symlink to the current one, swapped
//! by one `rename`, and `instance.crt`, `instance.key`, `ca.crt` are symlinks through it (the
//! layout of Kubernetes' projected volumes). A reader thus sees the old pair or the new pair,
//! never half a file nor a new certificate beside an old key. The previous generation stays
//! until the next renewal, for a reader that opened the old files by path just before the swap.
//!
//! Layout under `DATA_DIR/identity` (0700, so only root on the host gets in):
//! `<instance>/meta.json` (when to renew, whom the key belongs to) and `<instance>/creds/` (the
//! mounted folder).

use chrono::{DateTime, Utc};
use paas_common::agent::{INSTANCE_CA_FILE, INSTANCE_CERT_FILE, INSTANCE_KEY_FILE};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Renewal at this share of the remaining lifetime (two thirds).
const RENEW_NUM: i64 = 2;
const RENEW_DEN: i64 = 3;
/// How long an unassigned instance's folder stays: its container may still be stopping (its
/// SIGTERM grace) and using the files.
const KEEP_UNASSIGNED: Duration = Duration::from_secs(30);
/// How often the renewal loop looks.
const TICK: Duration = Duration::from_secs(1);
/// After a failed issue, the next try waits this long (the loop ticks faster).
const RETRY: Duration = Duration::from_secs(5);
const DATA_LINK: &str = "..data";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("making the key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("the controller did not sign: {0}")]
    Issue(String),
    #[error("writing the credentials: {0}")]
    Io(#[from] std::io::Error),
}

/// Who signs: the controller in production.
#[async_trait::async_trait]
pub trait Issuer: Send + Sync {
    async fn issue(
        &self,
        instance_id: &str,
        csr_pem: &str,
    ) -> Result<paas_common::agent::IdentityResponse, String>;
}

#[async_trait::async_trait]
impl Issuer for crate::client::ControllerClient {
    async fn issue(
        &self,
        instance_id: &str,
        csr_pem: &str,
    ) -> Result<paas_common::agent::IdentityResponse, String> {
        self.instance_identity(instance_id, csr_pem)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What the node keeps about an instance's current certificate (`meta.json`, outside the
/// mounted folder).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    serial: String,
    renew_at: DateTime<Utc>,
    not_after: DateTime<Utc>,
    uid: u32,
    gid: u32,
}

pub struct Identity {
    root: PathBuf,
    issuer: Arc<dyn Issuer>,
    /// One issue at a time: the launch path and the renewal loop never write one folder at once.
    lock: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Instances whose last issue failed, and when to try again.
    retry_at: HashMap<String, Instant>,
    /// Folders of instances no longer assigned, since when.
    unassigned_since: HashMap<String, Instant>,
}

impl Identity {
    pub fn new(root: PathBuf, issuer: Arc<dyn Issuer>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self {
            root,
            issuer,
            lock: Default::default(),
        })
    }

    /// The host folder mounted into the instance.
    pub fn creds_dir(&self, instance_id: &str) -> PathBuf {
        self.root.join(instance_id).join("creds")
    }

    /// Makes sure the instance has a folder to mount and, if the controller answers, a valid
    /// certificate in it for `user` (`uid:gid`). The folder is answered even when the issue
    /// failed: the instance starts, and the renewal loop keeps trying.
    pub async fn prepare(
        &self,
        instance_id: &str,
        user: &str,
    ) -> (PathBuf, Result<(), IdentityError>) {
        let (uid, gid) = parse_user(user);
        let mut state = self.lock.lock().await;
        state.unassigned_since.remove(instance_id);
        let dir = self.creds_dir(instance_id);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return (dir, Err(e.into()));
        }
        let fresh = self
            .meta(instance_id)
            .is_some_and(|m| m.not_after > Utc::now() && m.uid == uid && m.gid == gid);
        let r = if fresh {
            Ok(())
        } else {
            self.issue_locked(&mut state, instance_id, uid, gid).await
        };
        (dir, r)
    }

    /// One pass of the renewal loop: renews what is due among `assigned` (instances that have a
    /// folder), removes the folders of instances unassigned for a while.
    pub async fn pass(&self, assigned: &HashSet<String>) {
        let mut state = self.lock.lock().await;
        let now = Instant::now();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        state.unassigned_since.retain(|id, _| ids.contains(id));
        state.retry_at.retain(|id, _| ids.contains(id));
        for id in ids {
            if !assigned.contains(&id) {
                let since = *state.unassigned_since.entry(id.clone()).or_insert(now);
                if now.duration_since(since) >= KEEP_UNASSIGNED {
                    if let Err(e) = std::fs::remove_dir_all(self.root.join(&id)) {
                        tracing::warn!(instance = %id, error = %e, "cannot remove identity credentials");
                    }
                    state.unassigned_since.remove(&id);
                }
                continue;
            }
            state.unassigned_since.remove(&id);
            if state.retry_at.get(&id).is_some_and(|t| *t > now) {
                continue;
            }
            let meta = self.meta(&id);
            if meta.as_ref().is_some_and(|m| m.renew_at > Utc::now()) {
                continue;
            }
            // No meta: a folder made while the controller did not answer (the instance's user
            // was recorded in it then).
            let (uid, gid) = meta
                .map(|m| (m.uid, m.gid))
                .or_else(|| self.pending_user(&id))
                .unwrap_or(DEFAULT_USER);
            match self.issue_locked(&mut state, &id, uid, gid).await {
                Ok(()) => tracing::debug!(instance = %id, "identity certificate renewed"),
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "cannot renew the identity certificate")
                }
            }
        }
    }

    async fn issue_locked(
        &self,
        state: &mut State,
        instance_id: &str,
        uid: u32,
        gid: u32,
    ) -> Result<(), IdentityError> {
        let r = self.issue(instance_id, uid, gid).await;
        match &r {
            Ok(()) => {
                state.retry_at.remove(instance_id);
            }
            Err(_) => {
                state
                    .retry_at
                    .insert(instance_id.to_string(), Instant::now() + RETRY);
                // Remember whom the key is for, so the loop's retry writes it for them.
                let _ = write_atomic(
                    &self.root.join(instance_id).join("user"),
                    format!("{uid}:{gid}").as_bytes(),
                );
            }
        }
        r
    }

    async fn issue(&self, instance_id: &str, uid: u32, gid: u32) -> Result<(), IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
            .serialize_request(&key)?
            .pem()?;
        let issued = self
            .issuer
            .issue(instance_id, &csr)
            .await
            .map_err(IdentityError::Issue)?;
        let dir = self.creds_dir(instance_id);
        let key_pem = key.serialize_pem();
        let serial = issued.serial.clone();
        let (chain, ca) = (issued.certificate_chain_pem, issued.ca_pem);
        tokio::task::spawn_blocking(move || {
            install(&dir, &serial, &chain, &key_pem, &ca, uid, gid)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let now = Utc::now();
        let meta = Meta {
            serial: issued.serial,
            renew_at: now + (issued.not_after - now) * RENEW_NUM as i32 / RENEW_DEN as i32,
            not_after: issued.not_after,
            uid,
            gid,
        };
        write_atomic(
            &self.root.join(instance_id).join("meta.json"),
            &serde_json::to_vec(&meta).unwrap_or_default(),
        )?;
        Ok(())
    }

    fn meta(&self, instance_id: &str) -> Option<Meta> {
        let bytes = std::fs::read(self.root.join(instance_id).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn pending_user(&self, instance_id: &str) -> Option<(u32, u32)> {
        let s = std::fs::read_to_string(self.root.join(instance_id).join("user")).ok()?;
        Some(parse_user(s.trim()))
    }
}

/// Runs renewals and clean-up for the instances of each assignment list, until the process ends.
pub async fn run(
    identity: Arc<Identity>,
    mut assignments: tokio::sync::watch::Receiver<Option<paas_common::agent::Assignments>>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Until the first list arrives nothing is known to be unassigned.
        let assigned: Option<HashSet<String>> = assignments
            .borrow_and_update()
            .as_ref()
            .map(|a| a.instances.iter().map(|i| i.instance_id.clone()).collect());
        if let Some(assigned) = assigned {
            identity.pass(&assigned).await;
        }
    }
}

const DEFAULT_USER: (u32, u32) = (2000, 2000);

fn parse_user(user: &str) -> (u32, u32) {
    let (u, g) = user.split_once(':').unwrap_or((user, user));
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => (u, g),
        _ => DEFAULT_USER,
    }
}

/// Writes a new generation and switches `..data` to it (see the module doc).
fn install(
    dir: &Path,
    serial: &str,
    chain: &str,
    key: &str,
    ca: &str,
    uid: u32,
    gid: u32,
) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let name = format!("..gen-{serial}");
    let gen = dir.join(&name);
    if gen.exists() {
        std::fs::remove_dir_all(&gen)?;
    }
    std::fs::create_dir(&gen)?;
    std::fs::set_permissions(&gen, std::fs::Permissions::from_mode(0o755))?;
    write_file(&gen.join(INSTANCE_CERT_FILE), chain.as_bytes(), 0o444, None)?;
    write_file(&gen.join(INSTANCE_CA_FILE), ca.as_bytes(), 0o444, None)?;
    write_file(
        &gen.join(INSTANCE_KEY_FILE),
        key.as_bytes(),
        0o400,
        Some((uid, gid)),
    )?;
    let previous = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp = dir.join("..data.tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&name, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA_LINK))?;
    for f in [INSTANCE_CERT_FILE, INSTANCE_KEY_FILE, INSTANCE_CA_FILE] {
        let link = dir.join(f);
        if std::fs::read_link(&link).is_err() {
            let _ = std::fs::remove_file(&link);
            symlink(format!("{DATA_LINK}/{f}"), &link)?;
        }
    }
    // Generations older than the one just replaced go; that one stays for a reader mid-open.
    for e in std::fs::read_dir(dir)?.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        let keep = n == name
            || previous
                .as_deref()
                .is_some_and(|p| p == Path::new(n.as_ref()));
        if n.starts_with("..gen-") && !keep {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    sync_dir(dir);
    Ok(())
}

fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some((uid, gid)) = owner {
        if let Err(e) = std::os::unix::fs::chown(path, Some(uid), Some(gid)) {
            // An agent that is not root cannot give the key away; the instance could not read
            // it at 0400, so it is made readable (the folder is still the instance's alone).
            tracing::warn!(error = %e, "cannot hand the instance key to its user; making it readable");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))?;
            return Ok(());
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_replaces_the_pair_through_one_link() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let me = (nix_uid(), nix_gid());
        install(&creds, "01", "CERT1", "KEY1", "CA", me.0, me.1).unwrap();
        let read = |f: &str| std::fs::read_to_string(creds.join(f)).unwrap();
        assert_eq!(
            (read("instance.crt"), read("instance.key")),
            ("CERT1".into(), "KEY1".into())
        );
        let mode = std::fs::metadata(creds.join("instance.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        install(&creds, "02", "CERT2", "KEY2", "CA", me.0, me.1).unwrap();
        assert_eq!(
            (read("instance.crt"), read("instance.key")),
            ("CERT2".into(), "KEY2".into())
        );
        assert!(
            creds.join("..gen-01").exists(),
            "the previous generation stays once"
        );
        install(&creds, "03", "CERT3", "KEY3", "CA", me.0, me.1).unwrap();
        assert!(!creds.join("..gen-01").exists());
        assert!(creds.join("..gen-02").exists());
        assert_eq!(read("ca.crt"), "CA");
    }

    fn nix_uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0)
    }

    fn nix_gid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self")
            .map(|m| m.gid())
            .unwrap_or(0)
    }

    #[test]
    fn users_parse_with_a_safe_default() {
        assert_eq!(parse_user("2000:2000"), (2000, 2000));
        assert_eq!(parse_user("1001:1002"), (1001, 1002));
        assert_eq!(parse_user("app"), DEFAULT_USER);
    }
}
