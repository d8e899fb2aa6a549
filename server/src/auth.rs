//! Authentication: the bootstrap admin, password hashing (argon2), login JWTs (HS256, with `exp`,
//! `iss`, `aud` and `sub` required and checked), the join token agents register with, and node
//! credentials (random, stored as sha256). Extractors [`AuthUser`] and [`AgentNode`] guard handlers.

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
use std::io::Write;
use std::path::Path;

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

pub struct Keys {
    /// Key id, in every token's header; a token naming another key is refused, so the algorithm
    /// and key are chosen by the server, never by the token.
    kid: String,
    /// Also keys the dashboard's CSRF tokens.
    secret: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Keys {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        // Every field set on purpose: jsonwebtoken only checks iss/aud when asked, and only
        // requires claims listed here.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.leeway = 5;
        Self {
            kid: sha256_hex(&hex::encode(secret))[..16].to_string(),
            secret: secret.to_vec(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: Duration::seconds(ttl_secs as i64),
        }
    }

    pub fn issue(&self, username: &str) -> Result<(String, DateTime<Utc>), Error> {
        let now = Utc::now();
        let exp = now + self.ttl;
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
        Ok((self.sign(&claims)?, exp))
    }

    /// An API token for CI: its own `jti`, a scope, optionally one app, an expiry.
    pub fn issue_ci(
        &self,
        username: &str,
        jti: &str,
        scope: &str,
        app: Option<&str>,
        exp: DateTime<Utc>,
    ) -> Result<String, Error> {
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
        h.update(&self.secret);
        h.update(b"\0");
        h.update(jti.as_bytes());
        hex::encode(h.finalize())
    }

    fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(Error::internal)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.kid.as_deref() != Some(self.kid.as_str()) || header.alg != Algorithm::HS256 {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidToken.into());
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|d| d.claims)
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
        Keys::new(b"test-secret-test-secret-test-secret", 3600)
    }

    fn forge(mut header: Header, claims: serde_json::Value, secret: &[u8]) -> String {
        header.kid = Some(keys().kid.clone());
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

    #[test]
    fn passwords() {
        let h = hash_password("s3cret").unwrap();
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }
}
