//! Automatic certificates by ACME HTTP-01 (issue 22, RFC 8555), run by the leader.
//!
//! A private domain opts in (`PUT /v1/domains/{domain}/acme`, `paas create-domain --acme`,
//! `paas domain-acme DOMAIN on`); what gets a certificate is then exactly the hosts routes map
//! under it (the longest private domain of each mapped host), so nothing is ever ordered for a
//! name no route maps (Caddy's on-demand `ask` lesson), and the shared apps domain never is.
//! One certificate per domain, whose names are those hosts, stored like one set through the API
//! (`cert_source = acme`, the key sealed), so every router serves it by SNI through the route
//! table. It is ordered again when a host is mapped that it does not name, and renewed when less
//! than `PAAS_ACME_RENEW_BEFORE_DAYS` or a third of its lifetime is left (the shorter).
//!
//! The HTTP-01 answer is published in the store (`acme_challenges`) and the route table, so
//! every router (this controller's, the others', standalone ones following the table) answers
//! `GET /.well-known/acme-challenge/TOKEN` for the host. A failure is stored with the CA's
//! problem and an exponential backoff (`acme_retry_at`), so a restart does not hammer the CA.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use paas_common::route::AcmeChallenge;

use crate::state::AppCtx;
use crate::store::{DomainRecord, Event, NewCertificate, CERT_ACME};

/// How long a published challenge answer is given to reach every router before the CA is told.
const PROPAGATION: Duration = Duration::from_secs(2);

/// Why an attempt failed (stored on the domain and in its event).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Other(String),
}

/// The loop: off unless `PAAS_ACME_DIRECTORY` is set; only the leader orders.
pub async fn run(ctx: Arc<AppCtx>) {
    let Some(directory) = ctx
        .settings
        .acme_directory
        .clone()
        .filter(|d| !d.is_empty())
    else {
        return;
    };
    tracing::info!(%directory, "ACME on: certificates for the hosts of opted-in domains");
    let mut account: Option<Account> = None;
    let every = Duration::from_secs(ctx.settings.acme_check_secs.max(1));
    loop {
        if ctx.leadership.is_leader() {
            if let Err(e) = pass(&ctx, &directory, &mut account).await {
                tracing::warn!(error = %e, "ACME pass failed");
            }
        }
        tokio::select! {
            _ = ctx.acme.notified() => {}
            _ = tokio::time::sleep(every) => {}
            _ = ctx.stopping.cancelled() => return,
        }
    }
}

/// The hosts routes map under `domain` (it being their longest private domain).
pub fn hosts_of(
    domains: &[DomainRecord],
    routes: &[crate::store::RouteRecord],
    domain: &str,
) -> BTreeSet<String> {
    routes
        .iter()
        .filter(|r| {
            crate::deploy::domains::domain_of(domains, &r.host).map(|d| d.name.as_str())
                == Some(domain)
        })
        .map(|r| r.host.clone())
        .collect()
}

/// When a certificate valid from `not_before` to `not_after` is renewed: `renew_before` or a
/// third of its lifetime before it ends, whichever is later (the shorter time left).
pub fn renew_at(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    renew_before: chrono::Duration,
) -> DateTime<Utc> {
    let third = (not_after - not_before) / 3;
    not_after - third.min(renew_before)
}

/// Whether the domain needs a new certificate now for `hosts`.
fn due(d: &DomainRecord, hosts: &BTreeSet<String>, renew_before: chrono::Duration) -> bool {
    if d.cert_source.as_deref() != Some(CERT_ACME) {
        return true;
    }
    if !hosts.iter().all(|h| d.cert_names.contains(h)) {
        return true;
    }
    match d
        .certificate
        .as_deref()
        .and_then(crate::deploy::domains::cert_meta)
    {
        Some(m) => Utc::now() >= renew_at(m.not_before, m.not_after, renew_before),
        None => true,
    }
}

/// The wait after `failures` failures in a row: doubling from the base, capped.
pub fn backoff(base_secs: u64, max_secs: u64, failures: i64) -> Duration {
    let exp = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    Duration::from_secs(
        base_secs
            .saturating_mul(2u64.saturating_pow(exp))
            .min(max_secs),
    )
}

async fn pass(
    ctx: &AppCtx,
    directory: &str,
    account: &mut Option<Account>,
) -> Result<(), AcmeError> {
    let domains = ctx.store.list_domains().await?;
    if !domains.iter().any(|d| d.acme) {
        return Ok(());
    }
    let routes = ctx.store.list_routes().await?;
    let renew_before = chrono::Duration::days(
        i64::try_from(ctx.settings.acme_renew_before_days).unwrap_or(i64::MAX / 86_400_000),
    );
    for d in domains.iter().filter(|d| d.acme) {
        if d.acme_retry_at.is_some_and(|at| Utc::now() < at) {
            continue;
        }
        let hosts = hosts_of(&domains, &routes, &d.name);
        if hosts.is_empty() || !due(d, &hosts, renew_before) {
            continue;
        }
        if !ctx.leadership.is_leader() {
            return Ok(());
        }
        let hosts: Vec<String> = hosts.into_iter().collect();
        tracing::info!(domain = %d.name, hosts = %hosts.join(","), "ordering a certificate by ACME");
        let result = match account_for(ctx, directory, account).await {
            Ok(acct) => issue(ctx, &acct, d, &hosts).await,
            Err(e) => Err(e),
        };
        // Whatever happened, the order is over: its answers leave the routers.
        if let Err(e) = ctx.store.delete_acme_challenges(&d.name).await {
            tracing::warn!(domain = %d.name, error = %e, "could not drop ACME challenges");
        }
        match result {
            Ok((chain, key)) => {
                let cert = NewCertificate {
                    chain_pem: chain.clone(),
                    sealed_key: ctx
                        .secrets
                        .seal(&crate::deploy::domains::key_aad(&d.name), &key),
                    names: hosts.clone(),
                    source: CERT_ACME,
                };
                let until = crate::deploy::domains::cert_meta(&chain)
                    .map(|m| m.not_after.to_rfc3339())
                    .unwrap_or_default();
                let event = Event {
                    app_name: None,
                    app_id: None,
                    actor: "platform".into(),
                    kind: "domain.certificate_issued".into(),
                    message: format!(
                        "ACME certificate for {} (domain {}), valid until {until}",
                        hosts.join(", "),
                        d.name
                    ),
                };
                ctx.store
                    .set_domain_certificate(&d.name, &cert, &event)
                    .await?;
                tracing::info!(domain = %d.name, %until, "ACME certificate issued");
            }
            Err(e) => {
                // An account the CA no longer knows (or a changed directory) is made again.
                *account = None;
                let failures = d.acme_failures + 1;
                let wait = backoff(
                    ctx.settings.acme_backoff_secs,
                    ctx.settings.acme_backoff_max_secs,
                    failures,
                );
                let retry_at = Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1));
                let message = e.to_string();
                tracing::warn!(domain = %d.name, error = %message, failures, retry_in = ?wait, "ACME order failed");
                let event = Event {
                    app_name: None,
                    app_id: None,
                    actor: "platform".into(),
                    kind: "domain.certificate_failed".into(),
                    message: format!(
                        "ACME certificate for {} (domain {}) failed ({failures} in a row, next try {}): {message}",
                        hosts.join(", "),
                        d.name,
                        retry_at.to_rfc3339()
                    ),
                };
                ctx.store
                    .record_acme_failure(&d.name, &message, failures, retry_at, &event)
                    .await?;
            }
        }
        crate::router::refresh(ctx).await?;
    }
    Ok(())
}

/// One order for `hosts`: each authorization's HTTP-01 answer published, the CA told, the order
/// finalized with a fresh key. Answers the chain and the key (PEM).
async fn issue(
    ctx: &AppCtx,
    account: &Account,
    d: &DomainRecord,
    hosts: &[String],
) -> Result<(String, String), AcmeError> {
    let ids: Vec<Identifier> = hosts.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            s => {
                return Err(AcmeError::Other(format!(
                    "authorization {} is {s:?}",
                    authz.url()
                )))
            }
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| AcmeError::Other("the CA offers no http-01 challenge".into()))?;
        let host = match challenge.identifier().identifier {
            Identifier::Dns(h) => h.clone(),
            other => return Err(AcmeError::Other(format!("unexpected identifier {other:?}"))),
        };
        let answer = AcmeChallenge {
            host,
            token: challenge.token.clone(),
            key_authorization: challenge.key_authorization().as_str().to_string(),
        };
        ctx.store.put_acme_challenge(&d.name, &answer).await?;
        crate::router::refresh(ctx).await?;
        // The CA may validate at once, through any router: standalone ones get the answer
        // within moments through the table follow, other controllers at their next follower
        // pass (every second). Orders are rare; waiting costs nothing.
        tokio::time::sleep(PROPAGATION).await;
        challenge.set_ready().await?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(90));
    match order.poll_ready(&retries).await? {
        OrderStatus::Ready => {}
        s => {
            let why = order
                .state()
                .error
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("the order is {s:?}"));
            return Err(AcmeError::Other(why));
        }
    }
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&retries).await?;
    Ok((chain, key))
}

/// The account for `directory`: the one in the store, else a new one (stored sealed).
async fn account_for(
    ctx: &AppCtx,
    directory: &str,
    cached: &mut Option<Account>,
) -> Result<Account, AcmeError> {
    if let Some(a) = cached {
        return Ok(a.clone());
    }
    let aad = format!("acme-account:{directory}");
    let open = |sealed: &str| -> Result<AccountCredentials, AcmeError> {
        let json = ctx
            .secrets
            .open(&aad, sealed)
            .map_err(|e| AcmeError::Other(format!("the ACME account does not open: {e}")))?;
        serde_json::from_str(&json)
            .map_err(|e| AcmeError::Other(format!("the ACME account does not parse: {e}")))
    };
    let builder = || -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(Account::builder_with_http(Box::new(Http::new(
            &ctx.settings,
        )?)))
    };
    let account = match ctx.store.acme_account(directory).await? {
        Some(sealed) => builder()?.from_credentials(open(&sealed)?).await?,
        None => {
            let contact = ctx
                .settings
                .acme_email
                .as_ref()
                .map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, creds) = builder()?
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    directory.to_string(),
                    None,
                )
                .await?;
            let json = serde_json::to_string(&creds)
                .map_err(|e| AcmeError::Other(format!("serialising the ACME account: {e}")))?;
            let kept = ctx
                .store
                .put_acme_account(directory, &ctx.secrets.seal(&aad, &json))
                .await?;
            // Another leader stored one first: use that one, so there is one account.
            if open(&kept)
                .ok()
                .and_then(|c| serde_json::to_string(&c).ok())
                .as_deref()
                == Some(json.as_str())
            {
                account
            } else {
                builder()?.from_credentials(open(&kept)?).await?
            }
        }
    };
    tracing::info!(id = %account.id(), "ACME account ready");
    *cached = Some(account.clone());
    Ok(account)
}

/// instant-acme's HTTP client, on the server's reqwest (rustls on ring), trusting
/// `PAAS_ACME_CA_FILE` instead of the public roots when it is set.
struct Http(reqwest::Client);

impl Http {
    fn new(settings: &crate::config::Settings) -> Result<Self, AcmeError> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("paas/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.acme_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                AcmeError::Other(format!("reading PAAS_ACME_CA_FILE {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AcmeError::Other(format!("PAAS_ACME_CA_FILE {}: {e}", path.display()))
            })?;
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        b.build()
            .map(Self)
            .map_err(|e| AcmeError::Other(format!("the ACME HTTP client: {e}")))
    }
}

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(never) => match never {},
            };
            let rsp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let mut out = http::Response::builder().status(rsp.status());
            for (k, v) in rsp.headers() {
                out = out.header(k, v);
            }
            let bytes = rsp
                .bytes()
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let rsp = out
                .body(http_body_util::Full::new(bytes))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(rsp))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `names` valid from `age` ago for `lifetime`.
    fn cert(names: &[&str], age: i64, lifetime: i64) -> String {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = rcgen::date_time_ymd(2000, 1, 1)
            + std::time::Duration::from_secs(
                u64::try_from(Utc::now().timestamp()).unwrap() - 946_684_800,
            );
        params.not_before = now - std::time::Duration::from_secs(age.unsigned_abs());
        params.not_after =
            params.not_before + std::time::Duration::from_secs(lifetime.unsigned_abs());
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_certificate_is_due_for_a_new_host_a_manual_source_or_its_renewal() {
        let day = 86_400;
        let hosts: BTreeSet<String> = ["www.shop.test".to_string()].into();
        let record = |source: &str, names: &[&str], pem: String| DomainRecord {
            name: "shop.test".into(),
            acme: true,
            cert_source: Some(source.into()),
            cert_names: names.iter().map(|n| n.to_string()).collect(),
            certificate: Some(pem),
            ..Default::default()
        };
        let window = chrono::Duration::days(30);
        let fresh = cert(&["www.shop.test"], day, 90 * day);
        assert!(!due(
            &record(CERT_ACME, &["www.shop.test"], fresh.clone()),
            &hosts,
            window
        ));
        // A host mapped since, a certificate set by hand, none at all: ordered.
        let more: BTreeSet<String> = ["www.shop.test".into(), "api.shop.test".into()].into();
        assert!(due(
            &record(CERT_ACME, &["www.shop.test"], fresh.clone()),
            &more,
            window
        ));
        assert!(due(
            &record(crate::store::CERT_MANUAL, &["www.shop.test"], fresh),
            &hosts,
            window
        ));
        assert!(due(&DomainRecord::default(), &hosts, window));
        // 61 days into 90: 29 left, inside the 30-day window.
        let old = cert(&["www.shop.test"], 61 * day, 90 * day);
        assert!(due(
            &record(CERT_ACME, &["www.shop.test"], old),
            &hosts,
            window
        ));
        // A 2-minute certificate 30 s old is not due (a third is 40 s); 90 s old it is.
        let short = cert(&["www.shop.test"], 30, 120);
        assert!(!due(
            &record(CERT_ACME, &["www.shop.test"], short),
            &hosts,
            window
        ));
        let short = cert(&["www.shop.test"], 90, 120);
        assert!(due(
            &record(CERT_ACME, &["www.shop.test"], short),
            &hosts,
            window
        ));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(60, 3600, 1), Duration::from_secs(60));
        assert_eq!(backoff(60, 3600, 2), Duration::from_secs(120));
        assert_eq!(backoff(60, 3600, 4), Duration::from_secs(480));
        assert_eq!(backoff(60, 3600, 40), Duration::from_secs(3600));
    }

    #[test]
    fn renewal_comes_at_the_shorter_of_the_window_and_a_third() {
        let start = Utc::now();
        let day = chrono::Duration::days(1);
        // 90 days: 30 days before the end either way.
        assert_eq!(
            renew_at(start, start + day * 90, day * 30),
            start + day * 60
        );
        // 2 minutes: a third of it (40 s) before the end, not 30 days.
        let two = chrono::Duration::seconds(120);
        assert_eq!(
            renew_at(start, start + two, day * 30),
            start + chrono::Duration::seconds(80)
        );
    }
}
