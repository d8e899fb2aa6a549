//! Authentication: the bootstrap admin, password hashing (argon2), login JWTs (HS256, with `exp`,
//! `iss`, `aud` and `sub` required and checked) signed by a ring of keys with ids (rotation, see
//! [`Keys`]), the join token agents register with, and node credentials (random, stored as
//! sha256). Extractors [`AuthUser`] and [`AgentNode`] guard handlers.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use chrono::{DateTime, Duration, Utc};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use paas_common::ErrorCode;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::RwLock;

use crate::error::Error;
use crate::state::AppCtx;

pub const ISSUER: &str = "paas";
pub const AUDIENCE: &str = "paas-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// `ci` for API tokens (checked against the token table on every use); absent for logins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// For API tokens: read | deploy | admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// For API tokens restricted to one app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// One signing key of the ring.
struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// When it stopped signing; `None` for the active key.
    retired_at: Option<DateTime<Utc>>,
}

struct Ring {
    active: String,
    keys: HashMap<String, SigningKey>,
}

/// The JWT signing keys: several, each named by a `kid`, one active for signing. A token naming
/// an unknown key is refused, so the algorithm and key are chosen by the server, never by the
/// token. A retired key still verifies login tokens for one token lifetime (they were issued
/// before it retired) and CI tokens it signed (those are checked against the token table too,
/// and the key is kept while one lives: see `AuthStore::drop_signing_keys`).
pub struct Keys {
    ring: RwLock<Ring>,
    /// Keys the dashboard's CSRF tokens; not a signing key, so rotation does not log anyone out
    /// of a form.
    csrf_secret: Vec<u8>,
    validation: Validation,
    /// Dashboard sessions.
    session_ttl: Duration,
    /// API logins (`POST /v1/auth/login`, `/refresh`).
    access_ttl: Duration,
}

/// A signing key as loaded from the store, its secret opened.
pub struct PlainKey {
    pub kid: String,
    pub secret: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

/// The key id the single key of earlier versions had, kept so their tokens stay valid.
pub fn legacy_kid(secret: &[u8]) -> String {
    sha256_hex(&hex::encode(secret))[..16].to_string()
}

impl Keys {
    /// A ring of one key (the data dir's `jwt-secret`, as before keys were stored); `load`
    /// replaces it with the stored keys.
    pub fn new(secret: &[u8], session_ttl_secs: u64, access_ttl_secs: u64) -> Self {
        // Every field set on purpose: jsonwebtoken only checks iss/aud when asked, and only
        // requires claims listed here.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.leeway = LEEWAY_SECS;
        let kid = legacy_kid(secret);
        let mut keys = HashMap::new();
        keys.insert(kid.clone(), signing_key(secret, None));
        Self {
            ring: RwLock::new(Ring { active: kid, keys }),
            csrf_secret: secret.to_vec(),
            validation,
            session_ttl: Duration::seconds(session_ttl_secs as i64),
            access_ttl: Duration::seconds(access_ttl_secs as i64),
        }
    }

    /// How long a retired key keeps verifying login tokens: the longest login token lifetime.
    pub fn retention(&self) -> Duration {
        self.session_ttl.max(self.access_ttl) + Duration::seconds(LEEWAY_SECS as i64)
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn active_kid(&self) -> String {
        self.ring
            .read()
            .map(|r| r.active.clone())
            .unwrap_or_default()
    }

    /// Replaces the ring with `keys`; the newest unretired key signs.
    pub fn load(&self, keys: Vec<PlainKey>) {
        let active = keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .max_by_key(|k| k.created_at)
            .map(|k| k.kid.clone());
        let Some(active) = active else {
            tracing::error!("no active signing key stored; keeping the current ones");
            return;
        };
        let keys = keys
            .into_iter()
            .map(|k| (k.kid, signing_key(&k.secret, k.retired_at)))
            .collect();
        if let Ok(mut ring) = self.ring.write() {
            *ring = Ring { active, keys };
        }
    }

    /// A dashboard session token.
    pub fn issue(&self, username: &str) -> Result<(String, DateTime<Utc>), Error> {
        self.issue_for(username, self.session_ttl)
    }

    /// A short-lived API access token (renewed with a refresh token).
    pub fn issue_access(&self, username: &str) -> Result<(String, DateTime<Utc>), Error> {
        self.issue_for(username, self.access_ttl)
    }

    fn issue_for(&self, username: &str, ttl: Duration) -> Result<(String, DateTime<Utc>), Error> {
        let now = Utc::now();
        let exp = now + ttl;
        let claims = Claims {
            sub: username.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: exp.timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            typ: None,
            scope: None,
            app: None,
        };
        Ok((self.sign(&claims)?.0, exp))
    }

    /// An API token for CI: its own `jti`, a scope, optionally one app, an expiry. Returns the
    /// token and the id of the key that signed it.
    pub fn issue_ci(
        &self,
        username: &str,
        jti: &str,
        scope: &str,
        app: Option<&str>,
        exp: DateTime<Utc>,
    ) -> Result<(String, String), Error> {
        let claims = Claims {
            sub: username.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: exp.timestamp(),
            iat: Utc::now().timestamp(),
            jti: jti.to_string(),
            typ: Some("ci".into()),
            scope: Some(scope.into()),
            app: app.map(str::to_string),
        };
        self.sign(&claims)
    }

    /// The CSRF token that goes with a dashboard session (the session JWT's `jti`): forms and
    /// scripts must echo it, which a cross-site page cannot read.
    pub fn csrf_token(&self, jti: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"paas-csrf\0");
        h.update(&self.csrf_secret);
        h.update(b"\0");
        h.update(jti.as_bytes());
        hex::encode(h.finalize())
    }

    fn sign(&self, claims: &Claims) -> Result<(String, String), Error> {
        let ring = self
            .ring
            .read()
            .map_err(|_| Error::internal("signing keys poisoned"))?;
        let key = ring
            .keys
            .get(&ring.active)
            .ok_or_else(|| Error::internal("the active signing key is missing"))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(ring.active.clone());
        let token =
            jsonwebtoken::encode(&header, claims, &key.encoding).map_err(Error::internal)?;
        Ok((token, ring.active.clone()))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let invalid =
            || jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::InvalidToken);
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::HS256 {
            return Err(invalid());
        }
        let kid = header.kid.ok_or_else(invalid)?;
        let ring = self.ring.read().map_err(|_| invalid())?;
        let key = ring.keys.get(&kid).ok_or_else(invalid)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)?.claims;
        // A retired key's login tokens have all expired after one lifetime; anything newer that
        // names it was not issued by us while it signed.
        if let Some(retired) = key.retired_at {
            if claims.typ.is_none() && Utc::now() > retired + self.retention() {
                return Err(invalid());
            }
        }
        Ok(claims)
    }
}

const LEEWAY_SECS: u64 = 5;

fn signing_key(secret: &[u8], retired_at: Option<DateTime<Utc>>) -> SigningKey {
    SigningKey {
        encoding: EncodingKey::from_secret(secret),
        decoding: DecodingKey::from_secret(secret),
        retired_at,
    }
}

/// Associated data that binds a sealed signing key to its id.
fn key_aad(kid: &str) -> String {
    format!("signing-key:{kid}")
}

/// Loads the stored signing keys into `ctx.keys` at start; with none stored yet, stores the data
/// dir's `jwt-secret` as the first key (its tokens, and CI tokens it signed, stay valid).
pub async fn load_keys(
    store: &dyn crate::store::Store,
    secrets: &crate::secrets::SecretBox,
    keys: &Keys,
    legacy_secret: &[u8],
) -> Result<(), Error> {
    if store.signing_keys().await?.is_empty() {
        let kid = legacy_kid(legacy_secret);
        let plain = String::from_utf8_lossy(legacy_secret).to_string();
        store
            .add_signing_key(
                &crate::store::SigningKeyRecord {
                    secret: secrets.seal(&key_aad(&kid), &plain),
                    kid: kid.clone(),
                    created_at: Utc::now(),
                    retired_at: None,
                },
                &crate::store::Event {
                    app_name: None,
                    app_id: None,
                    actor: "platform".into(),
                    kind: "key.create".into(),
                    message: format!("first signing key {kid}"),
                },
            )
            .await?;
        store.backfill_token_kids(&kid).await?;
    }
    reload_keys(store, secrets, keys).await
}

async fn reload_keys(
    store: &dyn crate::store::Store,
    secrets: &crate::secrets::SecretBox,
    keys: &Keys,
) -> Result<(), Error> {
    let mut ring = Vec::new();
    for k in store.signing_keys().await? {
        let secret = secrets
            .open(&key_aad(&k.kid), &k.secret)
            .map_err(|e| Error::internal(format!("signing key {}: {e}", k.kid)))?;
        ring.push(PlainKey {
            kid: k.kid,
            secret: secret.into_bytes(),
            created_at: k.created_at,
            retired_at: k.retired_at,
        });
    }
    keys.load(ring);
    Ok(())
}

/// Makes a new active signing key; the previous one keeps verifying (see [`Keys::verify`]).
/// Returns the new key's id.
pub async fn rotate_keys(ctx: &AppCtx, actor: &str) -> Result<String, Error> {
    let kid = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    let plain = random_token(64);
    let previous = ctx.keys.active_kid();
    ctx.store
        .add_signing_key(
            &crate::store::SigningKeyRecord {
                secret: ctx.secrets.seal(&key_aad(&kid), &plain),
                kid: kid.clone(),
                created_at: Utc::now(),
                retired_at: None,
            },
            &crate::store::Event {
                app_name: None,
                app_id: None,
                actor: actor.to_string(),
                kind: "key.rotate".into(),
                message: format!("rotated the signing key: {previous} -> {kid}"),
            },
        )
        .await?;
    prune_keys(ctx).await?;
    reload_keys(ctx.store.as_ref(), &ctx.secrets, &ctx.keys).await?;
    tracing::info!(kid = %kid, previous = %previous, "rotated the signing key");
    Ok(kid)
}

/// Drops retired keys past their retention that no live CI token needs; returns their ids.
pub async fn prune_keys(ctx: &AppCtx) -> Result<Vec<String>, Error> {
    let now = Utc::now();
    let dropped = ctx
        .store
        .drop_signing_keys(now - ctx.keys.retention(), now)
        .await?;
    if !dropped.is_empty() {
        tracing::info!(kids = ?dropped, "dropped retired signing keys");
        reload_keys(ctx.store.as_ref(), &ctx.secrets, &ctx.keys).await?;
    }
    Ok(dropped)
}

/// Once a minute: prunes retired keys and expired refresh tokens, and reloads the ring, so a key
/// rotated through another controller sharing the database signs here too within a minute.
pub async fn prune_loop(ctx: std::sync::Arc<AppCtx>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let done = async {
            prune_keys(&ctx).await?;
            ctx.store.delete_expired_refresh_tokens(Utc::now()).await?;
            reload_keys(ctx.store.as_ref(), &ctx.secrets, &ctx.keys).await
        };
        if let Err(e) = done.await {
            tracing::warn!(error = %e, "pruning or reloading signing keys failed");
        }
    }
}

pub fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A real hash of nothing, to spend the same time on unknown usernames as on known ones.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("no such user").unwrap_or_default())
}

/// Constant-time comparison, for the join token.
pub fn secure_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Reads a secret file from the data dir, creating it (mode 0600) with `make()` if missing.
pub fn load_or_create_secret(
    path: &Path,
    make: impl FnOnce() -> String,
) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path)?;
            writeln!(f, "{value}")?;
            f.sync_all()?;
            Ok(value)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn bearer(req: &HttpRequest) -> Option<String> {
    let h = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn ctx(req: &HttpRequest) -> Result<web::Data<AppCtx>, Error> {
    req.app_data::<web::Data<AppCtx>>()
        .cloned()
        .ok_or_else(|| Error::internal("application state missing"))
}

/// A user authenticated by the `authz` middleware (login JWT or API token).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub username: String,
    /// For events: the username, with the API token's name when one was used.
    pub actor: String,
}

impl FromRequest for AuthUser {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        use actix_web::HttpMessage;
        std::future::ready(
            req.extensions()
                .get::<crate::authz::Principal>()
                .map(|p| AuthUser {
                    username: p.username.clone(),
                    actor: p.actor(),
                })
                .ok_or_else(|| {
                    Error::api(
                        ErrorCode::Unauthorized,
                        "missing bearer token; log in first",
                    )
                }),
        )
    }
}

/// A node authenticated by its own credential.
#[derive(Debug, Clone)]
pub struct AgentNode {
    pub name: String,
}

impl FromRequest for AgentNode {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ctx = ctx(req);
        let token = bearer(req);
        Box::pin(async move {
            let ctx = ctx?;
            let token = token
                .ok_or_else(|| Error::api(ErrorCode::Unauthorized, "missing node credential"))?;
            let node = ctx
                .store
                .node_by_token_hash(&sha256_hex(&token))
                .await?
                .ok_or_else(|| {
                    Error::api(
                        ErrorCode::Unauthorized,
                        "unknown node credential; register again",
                    )
                })?;
            Ok(AgentNode { name: node.name })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn keys() -> Keys {
        Keys::new(b"test-secret-test-secret-test-secret", 3600, 600)
    }

    fn forge(mut header: Header, claims: serde_json::Value, secret: &[u8]) -> String {
        header.kid = Some(keys().active_kid());
        encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn issued_token_verifies() {
        let k = keys();
        let (t, _) = k.issue("admin").unwrap();
        assert_eq!(k.verify(&t).unwrap().sub, "admin");
    }

    #[test]
    fn hostile_tokens_are_refused() {
        let k = keys();
        let s = b"test-secret-test-secret-test-secret";
        let now = Utc::now().timestamp();
        let good = json!({"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "iat": now, "jti": "x"});
        assert!(k
            .verify(&forge(Header::new(Algorithm::HS256), good.clone(), s))
            .is_ok());
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        let mut no_aud = good.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        let mut no_iss = good.clone();
        no_iss.as_object_mut().unwrap().remove("iss");
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("evil");
        let mut expired = good.clone();
        expired["exp"] = json!(now - 3600);
        for (what, claims) in [
            ("no exp", no_exp),
            ("no aud", no_aud),
            ("no iss", no_iss),
            ("wrong aud", wrong_aud),
            ("wrong iss", wrong_iss),
            ("expired", expired),
        ] {
            assert!(
                k.verify(&forge(Header::new(Algorithm::HS256), claims, s))
                    .is_err(),
                "{what} accepted"
            );
        }
        assert!(
            k.verify(&forge(Header::new(Algorithm::HS384), good.clone(), s))
                .is_err(),
            "HS384 accepted"
        );
        assert!(
            k.verify(&forge(
                Header::new(Algorithm::HS256),
                good.clone(),
                b"other"
            ))
            .is_err(),
            "wrong key accepted"
        );
        let mut no_kid = Header::new(Algorithm::HS256);
        no_kid.kid = None;
        let t = encode(&no_kid, &good, &EncodingKey::from_secret(s)).unwrap();
        assert!(k.verify(&t).is_err(), "token without kid accepted");
        // alg: none, hand-built: header {"alg":"none","typ":"JWT"}
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(good.to_string().as_bytes())
        );
        assert!(k.verify(&none).is_err(), "alg none accepted");
    }

    fn pk(
        kid: &str,
        secret: &[u8],
        created_at: DateTime<Utc>,
        retired_at: Option<DateTime<Utc>>,
    ) -> PlainKey {
        PlainKey {
            kid: kid.into(),
            secret: secret.to_vec(),
            created_at,
            retired_at,
        }
    }

    fn kid_of(token: &str) -> String {
        jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
    }

    #[test]
    fn rotation_keeps_old_tokens_for_one_lifetime_then_drops_them() {
        let k = keys();
        let old_kid = k.active_kid();
        let (old, _) = k.issue("admin").unwrap();
        let (old_ci, _) = k
            .issue_ci(
                "admin",
                "jti-1",
                "deploy",
                None,
                Utc::now() + Duration::days(30),
            )
            .unwrap();
        let s1 = b"test-secret-test-secret-test-secret".to_vec();
        let now = Utc::now();
        // Rotated just now: the old key is retired but within its retention.
        k.load(vec![
            pk(&old_kid, &s1, now - Duration::hours(1), Some(now)),
            pk("new-kid", b"another-secret", now, None),
        ]);
        assert_eq!(k.active_kid(), "new-kid");
        assert_eq!(k.verify(&old).unwrap().sub, "admin", "old token refused");
        let (new, _) = k.issue_access("admin").unwrap();
        assert_eq!(kid_of(&new), "new-kid");
        assert!(k.verify(&new).is_ok());
        // Retired longer ago than a token lifetime: login tokens naming it are refused, a CI
        // token it signed still verifies (the token table decides about those).
        let long_ago = now - k.retention() - Duration::seconds(1);
        k.load(vec![
            pk(&old_kid, &s1, long_ago - Duration::hours(1), Some(long_ago)),
            pk("new-kid", b"another-secret", long_ago, None),
        ]);
        assert!(
            k.verify(&old).is_err(),
            "login token of an expired key accepted"
        );
        assert!(
            k.verify(&old_ci).is_ok(),
            "live CI token of a retired key refused"
        );
        // Dropped: nothing it signed verifies.
        k.load(vec![pk("new-kid", b"another-secret", long_ago, None)]);
        assert!(
            k.verify(&old_ci).is_err(),
            "token of a dropped key accepted"
        );
        assert!(k.verify(&new).is_ok());
    }

    #[test]
    fn passwords() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }
}
