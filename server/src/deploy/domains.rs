//! Domains owned by spaces, the routes mapped under them and their certificates (issue 22).
//!
//! The shared apps domain (`NAME.<apps domain>`, every app's default route) is implicit and
//! belongs to everyone; a private domain belongs to the space that created it, and only that
//! space maps hosts under it. A host under no private domain stays first come, first served
//! ([`check_route`]), so routes mapped before domains existed keep working. A domain cannot
//! be created over hosts another space already serves, nor above or below another space's
//! domain. The store re-checks each rule in its write transaction; the checks here come first so
//! refusals carry a stable code.

use paas_common::route::{host_in_domain, RouteInfo, RouteSpec};
use paas_common::ErrorCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::{AppRecord, DomainRecord, Event, NewCertificate};

/// A domain name as `create-domain` takes it: a host name of two labels or more, lower-cased.
pub fn parse_domain(name: &str) -> DeployResult<String> {
    let spec = RouteSpec::parse(name)
        .map_err(|e| DeployError::invalid(ErrorCode::InvalidRoute, e.to_string()))?;
    if !spec.path.is_empty() || name.contains("://") {
        return Err(DeployError::invalid(
            ErrorCode::InvalidRoute,
            format!("invalid domain {name:?}: a domain is a host name, like example.com"),
        ));
    }
    Ok(spec.host)
}

/// The private domain `host` is under (the longest one that matches), if any.
pub fn domain_of<'a>(domains: &'a [DomainRecord], host: &str) -> Option<&'a DomainRecord> {
    domains
        .iter()
        .filter(|d| host_in_domain(host, &d.name))
        .max_by_key(|d| d.name.len())
}

/// Creates a private domain for `space_id` (the caller's developer role there is checked by
/// the handler).
pub async fn create(ctx: &AppCtx, actor: &Actor, space_id: &str, name: &str) -> DeployResult<()> {
    let name = parse_domain(name)?;
    let shared = ctx.settings.apps_domain.as_str();
    let internal = paas_common::network::INTERNAL_DOMAIN;
    if host_in_domain(&name, internal) || host_in_domain(internal, &name) {
        return Err(DeployError::invalid(
            ErrorCode::DomainNotOwned,
            format!("domain {name} overlaps the built-in internal domain {internal}"),
        ));
    }
    if host_in_domain(&name, shared) || host_in_domain(shared, &name) {
        return Err(DeployError::invalid(
            ErrorCode::DomainNotOwned,
            format!("domain {name} overlaps the shared apps domain {shared}"),
        ));
    }
    for d in ctx.store.list_domains().await? {
        if d.name == name {
            return Err(DeployError::invalid(
                ErrorCode::Conflict,
                format!("domain {name} already exists"),
            ));
        }
        if (host_in_domain(&name, &d.name) || host_in_domain(&d.name, &name))
            && d.space_id != space_id
        {
            return Err(DeployError::invalid(
                ErrorCode::DomainNotOwned,
                format!(
                    "domain {name} overlaps domain {}, owned by another space",
                    d.name
                ),
            ));
        }
    }
    let spaces = app_spaces(ctx).await?;
    for r in ctx.store.list_routes().await? {
        if host_in_domain(&r.host, &name)
            && spaces.get(&r.app_id).map(String::as_str) != Some(space_id)
        {
            return Err(DeployError::invalid(
                ErrorCode::DomainNotOwned,
                format!(
                    "another space serves {}, under domain {name}: it cannot be yours",
                    r.host
                ),
            ));
        }
    }
    let event = Event {
        app_name: None,
        app_id: None,
        actor: actor.actor.clone(),
        kind: "domain.create".into(),
        message: format!("created domain {name}"),
    };
    ctx.store
        .create_domain(&name, space_id, &event)
        .await
        .map_err(conflict_as(ErrorCode::DomainNotOwned))?;
    Ok(())
}

/// Deletes a domain; refused while a route uses it.
pub async fn delete(ctx: &AppCtx, actor: &Actor, domain: &DomainRecord) -> DeployResult<()> {
    let event = Event {
        app_name: None,
        app_id: None,
        actor: actor.actor.clone(),
        kind: "domain.delete".into(),
        message: format!("deleted domain {}", domain.name),
    };
    ctx.store
        .delete_domain(&domain.name, &event)
        .await
        .map_err(conflict_as(ErrorCode::Conflict))?;
    crate::router::refresh(ctx).await?;
    Ok(())
}

fn conflict_as(code: ErrorCode) -> impl Fn(crate::store::StoreError) -> DeployError {
    move |e| match e {
        crate::store::StoreError::Conflict(m) => DeployError::invalid(code, m),
        e => e.into(),
    }
}

async fn app_spaces(ctx: &AppCtx) -> DeployResult<std::collections::HashMap<String, String>> {
    Ok(ctx
        .store
        .list_apps()
        .await?
        .into_iter()
        .map(|a| (a.id, a.space_id))
        .collect())
}

/// Whether a space may map `spec`: its domain (if private) is the space's, the host is not
/// another space's, and it is not another app's default route. `api_host` is the controller's
/// own host as the request named it (a route there would take the API away from everyone).
/// Each refusal names the route.
pub async fn check_route(
    ctx: &AppCtx,
    space_id: &str,
    spec: &RouteSpec,
    api_host: Option<&str>,
) -> DeployResult<()> {
    if api_host.is_some_and(|h| h.trim_end_matches('.').eq_ignore_ascii_case(&spec.host)) {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!("route {spec}: {} is the controller's own host", spec.host),
        ));
    }
    if paas_common::network::is_internal(&spec.host) {
        check_internal(spec)?;
    }
    let domains = ctx.store.list_domains().await?;
    if let Some(d) = domain_of(&domains, &spec.host) {
        if d.space_id != space_id {
            return Err(DeployError::invalid(
                ErrorCode::DomainNotOwned,
                format!(
                    "route {spec}: domain {} belongs to another space; create a domain of your own (paas create-domain)",
                    d.name
                ),
            ));
        }
    }
    // A host belongs to one space (its app's, for a default host; else the first to map it).
    let owner = match crate::router::app_for_host(&spec.host, &ctx.settings.apps_domain) {
        Some(label) => ctx.store.app_by_host(&label).await?,
        None => None,
    };
    if let Some(owner) = &owner {
        if owner.space_id != space_id {
            return Err(taken(spec));
        }
        // An app's default route: only a longer path may be mapped there.
        if spec.path.is_empty() {
            return Err(DeployError::invalid(
                ErrorCode::Conflict,
                format!(
                    "route {spec} is the default route of app {:?}; map a path under it or another host",
                    owner.name
                ),
            ));
        }
    }
    let spaces = app_spaces(ctx).await?;
    let routes = ctx.store.list_routes().await?;
    if routes
        .iter()
        .any(|r| r.host == spec.host && spaces.get(&r.app_id).map(String::as_str) != Some(space_id))
    {
        return Err(taken(spec));
    }
    Ok(())
}

/// An internal route is `NAME.apps.internal`, one DNS label that is not a number (a number
/// is an instance index: `0.NAME.apps.internal`), without a path: it names addresses, not
/// HTTP routes (issue 25).
fn check_internal(spec: &RouteSpec) -> DeployResult<()> {
    let internal = paas_common::network::INTERNAL_DOMAIN;
    let label = spec
        .host
        .strip_suffix(internal)
        .and_then(|l| l.strip_suffix('.'))
        .unwrap_or_default();
    let ok = !label.is_empty()
        && label.len() <= 63
        && !label.contains('.')
        && !label.bytes().all(|b| b.is_ascii_digit())
        && spec.path.is_empty();
    if ok {
        return Ok(());
    }
    Err(DeployError::invalid(
        ErrorCode::InvalidRoute,
        format!(
            "route {spec}: an internal route is NAME.{internal}, one label that is not a number, without a path"
        ),
    ))
}

fn taken(spec: &RouteSpec) -> DeployError {
    DeployError::invalid(
        ErrorCode::RouteTaken,
        format!(
            "route {spec}: {} belongs to another space: map a route under a host of your own",
            spec.host
        ),
    )
}

/// What a mapped route does beyond routing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteOptions {
    pub https_redirect: bool,
    pub hsts: bool,
}

/// Maps `spec` to the app (checked by [`check_route`] first). A route the app already has: a
/// push (`options` `None`) keeps it as it is, so it may map its manifest's routes every time;
/// the API changes its options, or refuses (`conflict`) when they are the same.
pub async fn map_route(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    spec: &RouteSpec,
    options: Option<RouteOptions>,
    api_host: Option<&str>,
) -> DeployResult<RouteInfo> {
    check_route(ctx, &app.space_id, spec, api_host).await?;
    if paas_common::network::is_internal(&spec.host)
        && options.is_some_and(|o| o.https_redirect || o.hsts)
    {
        return Err(DeployError::invalid(
            ErrorCode::InvalidRoute,
            format!("route {spec}: an internal route carries no HTTPS settings"),
        ));
    }
    let routes = ctx.store.list_routes().await?;
    let existing = routes
        .iter()
        .find(|r| r.host == spec.host && r.path == spec.path && r.app_id == app.id)
        .map(|r| RouteOptions {
            https_redirect: r.https_redirect,
            hsts: r.hsts,
        });
    let options = match (existing, options) {
        // Mapping again through the API changes the options, or is refused as before.
        (Some(had), Some(o)) if had == o => {
            return Err(DeployError::invalid(
                ErrorCode::Conflict,
                format!("route {spec} is already mapped to {}", app.name),
            ))
        }
        // A push keeps what the app has.
        (Some(had), None) => had,
        (_, o) => o.unwrap_or_default(),
    };
    if existing.is_none() {
        super::quota::check(
            ctx,
            &app.space_id,
            &super::quota::Change {
                new_routes: 1,
                ..Default::default()
            },
        )
        .await?;
        let event = Event {
            app_name: Some(app.name.clone()),
            app_id: Some(app.id.clone()),
            actor: actor.actor.clone(),
            kind: "route.map".into(),
            message: format!("mapped route {spec} to {}", app.name),
        };
        ctx.store
            .add_route(&app.id, &spec.host, &spec.path, &event)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(m) if m.starts_with("domain ") => {
                    DeployError::invalid(ErrorCode::DomainNotOwned, m)
                }
                e => e.into(),
            })?;
    }
    if existing != Some(options) {
        ctx.store
            .set_route_options(
                &app.id,
                &spec.host,
                &spec.path,
                options.https_redirect,
                options.hsts,
            )
            .await?;
    }
    crate::router::refresh(ctx).await?;
    // A new host under an ACME domain needs a certificate that names it.
    ctx.acme.notify_one();
    Ok(RouteInfo {
        host: spec.host.clone(),
        path: spec.path.clone(),
        app: app.name.clone(),
        app_id: app.id.clone(),
        default: false,
        https_redirect: options.https_redirect,
        hsts: options.hsts,
    })
}

fn bad_cert(domain: &str, why: impl std::fmt::Display) -> DeployError {
    DeployError::invalid(
        ErrorCode::InvalidCertificate,
        format!("certificate for {domain}: {why}"),
    )
}

/// Checks a PEM chain and key for `domain`: both parse, the key is the leaf's, and the leaf is
/// valid for the domain or for `*.DOMAIN`. Returns which of the two it covers.
pub fn check_certificate(domain: &str, chain: &str, key: &str) -> DeployResult<Vec<String>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad_cert(domain, format_args!("the certificate does not parse: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(bad_cert(
            domain,
            "no CERTIFICATE block in the certificate file",
        ));
    };
    let der = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| bad_cert(domain, format_args!("the private key does not parse: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| bad_cert(domain, format_args!("unsupported private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
    certified
        .keys_match()
        .map_err(|_| bad_cert(domain, "the private key does not match the certificate"))?;
    let parsed = rustls::server::ParsedCertificate::try_from(leaf)
        .map_err(|e| bad_cert(domain, format_args!("the certificate does not parse: {e}")))?;
    let mut covers = Vec::new();
    // A wildcard is checked with a name one label below the domain, as a client would see it.
    for (label, probe) in [
        (domain.to_string(), domain.to_string()),
        (format!("*.{domain}"), format!("paas-probe.{domain}")),
    ] {
        let Ok(name) = ServerName::try_from(probe) else {
            continue;
        };
        if rustls::client::verify_server_name(&parsed, &name).is_ok() {
            covers.push(label);
        }
    }
    if covers.is_empty() {
        return Err(bad_cert(
            domain,
            format_args!("its names cover neither {domain} nor *.{domain}"),
        ));
    }
    Ok(covers)
}

/// Checks and stores a domain's certificate, the key sealed; routers serve it from their next
/// table.
pub async fn set_certificate(
    ctx: &AppCtx,
    actor: &Actor,
    domain: &DomainRecord,
    chain: &str,
    key: &str,
) -> DeployResult<Vec<String>> {
    let covers = check_certificate(&domain.name, chain, key)?;
    let cert = NewCertificate {
        chain_pem: chain.to_string(),
        sealed_key: ctx.secrets.seal(&key_aad(&domain.name), key),
        names: covers.clone(),
        source: crate::store::CERT_MANUAL,
    };
    let event = Event {
        app_name: None,
        app_id: None,
        actor: actor.actor.clone(),
        kind: "domain.certificate".into(),
        message: format!(
            "set the certificate of domain {} (covers {})",
            domain.name,
            covers.join(", ")
        ),
    };
    ctx.store
        .set_domain_certificate(&domain.name, &cert, &event)
        .await?;
    crate::router::refresh(ctx).await?;
    Ok(covers)
}

/// Turns ACME on or off for a domain. A certificate set through the API turns it off again (the
/// user's certificate wins); a certificate ACME got stays served until it is replaced.
pub async fn set_acme(
    ctx: &AppCtx,
    actor: &Actor,
    domain: &DomainRecord,
    enabled: bool,
) -> DeployResult<()> {
    if enabled {
        acme_available(ctx)?;
    }
    let event = Event {
        app_name: None,
        app_id: None,
        actor: actor.actor.clone(),
        kind: "domain.acme".into(),
        message: format!(
            "{} ACME certificates for the hosts of domain {}",
            if enabled { "enabled" } else { "disabled" },
            domain.name
        ),
    };
    ctx.store
        .set_domain_acme(&domain.name, enabled, &event)
        .await?;
    ctx.acme.notify_one();
    Ok(())
}

/// Refuses to turn ACME on where it cannot work, rather than wait silently forever.
pub fn acme_available(ctx: &AppCtx) -> DeployResult<()> {
    match ctx.settings.acme_directory.as_deref() {
        Some(d) if !d.is_empty() => Ok(()),
        _ => Err(DeployError::invalid(
            ErrorCode::Conflict,
            "ACME is off on this platform (the operator sets PAAS_ACME_DIRECTORY)",
        )),
    }
}

/// What the API shows of a stored certificate: its leaf's validity and issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertMeta {
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
    pub issuer: String,
}

/// The leaf's validity and issuer, from a PEM chain (leaf first); `None` when it does not parse.
pub fn cert_meta(chain_pem: &str) -> Option<CertMeta> {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let v = cert.validity();
    let at = |t: &x509_parser::time::ASN1Time| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(t.timestamp(), 0)
    };
    Some(CertMeta {
        not_before: at(&v.not_before)?,
        not_after: at(&v.not_after)?,
        issuer: cert.issuer().to_string(),
    })
}

/// The associated data a domain's key is sealed with: a sealed key copied to another domain (or
/// an app's env) does not open.
pub fn key_aad(domain: &str) -> String {
    format!("domain:{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_checked() {
        let c = rcgen::generate_simple_self_signed(vec!["*.example.test".to_string()]).unwrap();
        let (chain, key) = (c.cert.pem(), c.key_pair.serialize_pem());
        assert_eq!(
            check_certificate("example.test", &chain, &key).unwrap(),
            ["*.example.test"]
        );
        let other = rcgen::generate_simple_self_signed(vec!["example.test".to_string()]).unwrap();
        let e = check_certificate("example.test", &chain, &other.key_pair.serialize_pem())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match"), "{e}");
        let e = check_certificate("other.test", &chain, &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cover neither"), "{e}");
        let e = check_certificate("example.test", "junk", &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
        assert_eq!(
            check_certificate(
                "example.test",
                &other.cert.pem(),
                &other.key_pair.serialize_pem()
            )
            .unwrap(),
            ["example.test"]
        );
    }

    #[test]
    fn certificate_validity_and_issuer_are_read() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 4, 2);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Issuer");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let m = cert_meta(&cert.pem()).unwrap();
        assert_eq!(m.not_before.to_rfc3339(), "2030-01-02T00:00:00+00:00");
        assert_eq!(m.not_after.to_rfc3339(), "2030-04-02T00:00:00+00:00");
        assert!(m.issuer.contains("Test Issuer"), "{}", m.issuer);
        assert!(cert_meta("junk").is_none());
    }

    #[test]
    fn hosts_find_their_longest_domain() {
        let d = |name: &str, space: &str| DomainRecord {
            name: name.into(),
            space_id: space.into(),
            ..Default::default()
        };
        let list = [d("example.com", "a"), d("shop.example.com", "a")];
        assert_eq!(
            domain_of(&list, "x.shop.example.com").map(|d| d.name.as_str()),
            Some("shop.example.com")
        );
        assert_eq!(
            domain_of(&list, "example.com").map(|d| d.name.as_str()),
            Some("example.com")
        );
        assert!(domain_of(&list, "badexample.com").is_none());
    }
}
