//! Routes: which requests reach which app. A route is a host and an optional path prefix; every
//! app also has the default route `NAME.<apps domain>` (implicit, never stored). The longest
//! matching path prefix on a host wins. Also the route table the controller hands to standalone
//! routers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A parsed, normalised `HOST[/PATH]`: lower-case DNS host (no port, no IP address), path prefix
/// empty or `/seg/seg` (no trailing slash, no `.`/`..` segments, no query).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteSpec {
    pub host: String,
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pub input: String,
    pub reason: &'static str,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid route {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for RouteError {}

impl RouteSpec {
    pub fn parse(input: &str) -> Result<Self, RouteError> {
        let err = |reason| RouteError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let s = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s);
        let (host, path) = match s.find('/') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() || host.len() > 253 {
            return Err(err("the host must be 1 to 253 characters"));
        }
        let labels: Vec<&str> = host.split('.').collect();
        if labels.len() < 2 {
            return Err(err("the host needs a domain (like app.example.com)"));
        }
        for l in &labels {
            let ok = !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-');
            if !ok {
                return Err(err("host labels are letters, digits and inner dashes"));
            }
        }
        // An address would let a route capture the API's own listener.
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err("the host must be a name, not an IP address"));
        }
        let mut segs = Vec::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            if seg == "." || seg == ".." || seg.contains(['?', '#', '%', ' ']) {
                return Err(err(
                    "path segments must be plain (no ., .., ?, #, % or spaces)",
                ));
            }
            segs.push(seg);
        }
        let path = if segs.is_empty() {
            String::new()
        } else {
            format!("/{}", segs.join("/"))
        };
        Ok(Self { host, path })
    }

    /// Whether a request path falls under this route's prefix (whole segments only:
    /// `/api` matches `/api` and `/api/x`, not `/apix`).
    pub fn matches_path(prefix: &str, path: &str) -> bool {
        prefix.is_empty()
            || path.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
            })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.host, self.path)
    }
}

/// One route as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteInfo {
    pub host: String,
    #[serde(default)]
    pub path: String,
    pub app: String,
    /// The app's id: names are unique per space only, so the router keys apps by id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app_id: String,
    /// The app's default route `HOST.<apps domain>` (cannot be unmapped).
    #[serde(default)]
    pub default: bool,
    /// A plain HTTP request is answered with a 308 to the same URL over HTTPS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// Answers over HTTPS carry `Strict-Transport-Security` (opt-in: it binds browsers for a year).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsts: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteList {
    pub routes: Vec<RouteInfo>,
}

/// Body of `POST /v1/apps/{name}/routes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapRoute {
    /// `HOST[/PATH]`.
    pub route: String,
    /// Redirect plain HTTP to HTTPS (308). Mapping a route the app already has updates this.
    #[serde(default)]
    pub https_redirect: bool,
    /// Send `Strict-Transport-Security` on HTTPS answers.
    #[serde(default)]
    pub hsts: bool,
}

/// A domain apps are served under: the platform's shared apps domain (every app's default
/// route), or a private domain a space created; only that space maps hosts under it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainInfo {
    pub name: String,
    /// `ORG/SPACE` of a private domain; `None` for the shared domain.
    #[serde(default)]
    pub space: Option<String>,
    #[serde(default)]
    pub shared: bool,
    /// The certificate set through the API or obtained by ACME, if any.
    #[serde(default)]
    pub certificate: Option<CertificateInfo>,
    /// Certificates for the hosts mapped under this domain are obtained by ACME (HTTP-01).
    #[serde(default)]
    pub acme: bool,
    /// The last ACME failure (the CA's problem or the client's error), until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_error: Option<String>,
    /// When ACME is tried again after a failure (RFC 3339; exponential backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_retry_at: Option<String>,
}

/// What the API tells of a stored certificate (never its key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateInfo {
    /// Which of `DOMAIN` and `*.DOMAIN` the leaf is valid for (set through the API), or the
    /// hosts it was issued for (ACME).
    pub covers: Vec<String>,
    /// `manual` (`PUT .../certificate`) or `acme`.
    #[serde(default)]
    pub source: String,
    /// The leaf's `notAfter` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The leaf's issuer (distinguished name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// Body of `PUT /v1/domains/{domain}/acme`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetAcme {
    /// Obtain (and renew) a certificate by ACME HTTP-01 for every host mapped under the domain.
    pub enabled: bool,
}

/// A pending ACME HTTP-01 challenge: the router answers
/// `GET http://HOST/.well-known/acme-challenge/TOKEN` with the key authorization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcmeChallenge {
    pub host: String,
    pub token: String,
    pub key_authorization: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainList {
    pub domains: Vec<DomainInfo>,
}

/// Body of `POST /v1/domains` (the space: `X-Paas-Space`, default `default/default`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateDomain {
    pub name: String,
    /// Obtain certificates by ACME for the hosts mapped under it (`PUT .../acme` later too).
    #[serde(default)]
    pub acme: bool,
}

/// Body of `PUT /v1/domains/{domain}/certificate`: PEM texts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetCertificate {
    /// The chain, leaf first.
    pub certificate: String,
    pub private_key: String,
}

/// A domain's certificate as routers get it (the table follow, authenticated by the join token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterCertificate {
    pub domain: String,
    pub certificate: String,
    pub private_key: String,
}

/// One ready instance in a [`RouterTable`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterBackend {
    pub address: String,
    pub index: u32,
    /// The revision the instance runs: a canary or blue-green split sends each request to a
    /// revision first (issue 23).
    #[serde(default)]
    pub revision: i64,
    /// The instance's id: the `__VCAP_ID__` sticky-session cookie names it (issue 23).
    #[serde(default)]
    pub id: String,
}

/// An app's traffic split during a canary or blue-green deployment: `percent` of its requests
/// go to `revision`'s instances, the rest to the others (issue 23).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterSplit {
    pub revision: i64,
    pub percent: u32,
}

/// The whole route table, as `GET /v1/router/table` hands it to standalone routers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterTable {
    /// Changes whenever the table does; long-poll with `?after=VERSION`.
    pub version: u64,
    /// Every route (default ones included).
    pub routes: Vec<RouteInfo>,
    /// App id -> its ready instances (an app with none is listed with an empty list).
    pub apps: BTreeMap<String, Vec<RouterBackend>>,
    /// Certificates set through the API, served by SNI for their domain and the hosts under it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<RouterCertificate>,
    /// Pending ACME HTTP-01 challenges, answered by every router on plain HTTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme_challenges: Vec<AcmeChallenge>,
    /// App id -> its traffic split, for apps in a canary or blue-green deployment (issue 23).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<String, RouterSplit>,
    /// The platform CA of instance identity (PEM, issue 25): the TLS listener accepts client
    /// certificates it signed and passes them on as `X-Forwarded-Client-Cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_ca: Option<String>,
}

/// Whether `host` is `domain` or a name under it.
pub fn host_in_domain(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Body of `POST /v1/router/logs`: RTR lines a standalone router wrote, for the apps' streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterLogs {
    pub lines: Vec<RouterLogLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouterLogLine {
    pub app: String,
    pub line: crate::api::LogLine,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let r = RouteSpec::parse("Shop.Example.com/api/v1/").unwrap();
        assert_eq!(
            (r.host.as_str(), r.path.as_str()),
            ("shop.example.com", "/api/v1")
        );
        assert_eq!(RouteSpec::parse("a.localhost").unwrap().path, "");
        assert_eq!(
            RouteSpec::parse("http://a.localhost//x")
                .unwrap()
                .to_string(),
            "a.localhost/x"
        );
        for bad in [
            "",
            "localhost",
            "127.0.0.1",
            "a..b",
            "-a.b",
            "a.b/../c",
            "a.b/x?y",
            "a_b.c",
            "a.b:80",
        ] {
            assert!(RouteSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(RouteSpec::matches_path("", "/anything"));
        assert!(RouteSpec::matches_path("/api", "/api"));
        assert!(RouteSpec::matches_path("/api", "/api/x"));
        assert!(RouteSpec::matches_path("/api", "/api?q=1"));
        assert!(!RouteSpec::matches_path("/api", "/apix"));
        assert!(!RouteSpec::matches_path("/api", "/"));
    }
}
