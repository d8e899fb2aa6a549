//! Instance identity (issue 25): the platform CA and the short-lived certificates it signs for
//! instances, so apps can prove who they are to each other (mutual TLS) and to the router
//! (`X-Forwarded-Client-Cert`).
//!
//! The CA (ECDSA P-256, ten years) is made once by the first controller to start and kept in
//! the store (`platform_cas`) with its key sealed by the secret key, like the JWT signing keys,
//! so every controller on the database signs with the same CA. A node makes each instance's key
//! itself and sends only a CSR (`POST /v1/agent/instances/{id}/identity`); the controller takes
//! the public key from it, checks its signature, and writes every name itself from the instance
//! row, for an instance assigned to the calling node only.

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::secrets::SecretBox;
use crate::store::{CaRecord, Store, StoreError};

/// The one CA of instance identity, by its row name.
const CA_NAME: &str = "instance-identity";
/// How far back a certificate's validity starts, for nodes whose clocks lag the controller's.
const BACKDATE_SECS: i64 = 60;
/// OID of organizationalUnitName: the second OU of a subject (see [`subject`]).
const OU_OID: [u64; 4] = [2, 5, 4, 11];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the platform CA's key does not open: {0}")]
    Seal(#[from] crate::secrets::SecretError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the certificate signing request does not parse or its signature is wrong")]
    BadCsr,
}

/// Who an instance is: what its certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSubject {
    pub instance_id: String,
    pub app_id: String,
    pub space_id: String,
    pub org_id: String,
}

impl InstanceSubject {
    /// The SPIFFE id of the instance's app: what a peer checks to know which app it talks to.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://paas/space/{}/app/{}", self.space_id, self.app_id)
    }
}

/// A signed instance certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// The platform CA, loaded once at start.
pub struct PlatformCa {
    pem: String,
    der: CertificateDer<'static>,
    /// The CA as rcgen's issuer (subject and key identifier; re-made from the stored one).
    issuer: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for PlatformCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformCa").finish_non_exhaustive()
    }
}

impl PlatformCa {
    /// The stored CA, or a new one stored now (the first controller's wins a race).
    pub async fn load_or_create(
        store: &dyn Store,
        secrets: &SecretBox,
    ) -> Result<Self, IdentityError> {
        let record = match store.platform_ca(CA_NAME).await? {
            Some(r) => r,
            None => {
                let (pem, key) = generate_ca()?;
                let stored = store
                    .add_platform_ca(&CaRecord {
                        name: CA_NAME.into(),
                        certificate: pem,
                        sealed_key: secrets.seal(CA_NAME, &key.serialize_pem()),
                    })
                    .await?;
                tracing::info!("created the platform CA of instance identity");
                stored
            }
        };
        let key = KeyPair::from_pem(&secrets.open(CA_NAME, &record.sealed_key)?)?;
        Self::from_parts(&record.certificate, key)
    }

    fn from_parts(pem: &str, key: KeyPair) -> Result<Self, IdentityError> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        let issuer = CertificateParams::from_ca_cert_pem(pem)?.self_signed(&key)?;
        Ok(Self {
            pem: pem.to_string(),
            der,
            issuer,
            key,
        })
    }

    /// A fresh CA that is not stored (unit tests, tools).
    pub fn ephemeral() -> Result<Self, IdentityError> {
        let (pem, key) = generate_ca()?;
        Self::from_parts(&pem, key)
    }

    /// The CA certificate (public), PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Signs a certificate for `subject` on the public key of `csr_pem`, valid for `ttl_secs`.
    /// Nothing of the CSR but its key is used: the names are the platform's.
    pub fn issue(
        &self,
        csr_pem: &str,
        subject: &InstanceSubject,
        ttl_secs: u64,
    ) -> Result<Issued, IdentityError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|_| IdentityError::BadCsr)?;
        let now = Utc::now();
        let not_before = now - chrono::Duration::seconds(BACKDATE_SECS);
        let not_after =
            now + chrono::Duration::seconds(i64::try_from(ttl_secs).unwrap_or(i64::MAX));
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(subject);
        params.subject_alt_names = vec![
            SanType::URI(subject.spiffe_id().try_into()?),
            SanType::DnsName(subject.instance_id.clone().try_into()?),
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Both: an instance is the server of its peers and their client.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_time(not_before);
        params.not_after = to_time(not_after);
        let serial = random_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = params.signed_by(&csr.public_key, &self.issuer, &self.key)?;
        Ok(Issued {
            chain_pem: format!("{}{}", leaf.pem(), self.pem),
            serial: hex::encode(serial),
            not_before,
            not_after,
        })
    }
}

/// CN the instance id; the Cloud Foundry OUs `app:<guid>` and `space:<guid>`, and
/// `organization:<guid>` as O: rcgen keeps one value per attribute type, so the second OU is
/// written under the same OID as a custom type and a third cannot be.
fn distinguished_name(s: &InstanceSubject) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        format!("organization:{}", s.org_id),
    );
    dn.push(
        DnType::CustomDnType(OU_OID.to_vec()),
        format!("space:{}", s.space_id),
    );
    dn.push(DnType::OrganizationalUnitName, format!("app:{}", s.app_id));
    dn.push(DnType::CommonName, s.instance_id.clone());
    dn
}

fn generate_ca() -> Result<(String, KeyPair), IdentityError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "paas");
    dn.push(DnType::CommonName, "paas instance identity CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = Utc::now();
    params.not_before = to_time(now - chrono::Duration::hours(1));
    params.not_after = to_time(now + chrono::Duration::days(3650));
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

/// 16 random bytes, the top bit clear so the DER integer stays positive and 16 bytes long.
fn random_serial() -> [u8; 16] {
    let mut s: [u8; 16] = rand::random();
    s[0] &= 0x7f;
    s[0] |= 0x01;
    s
}

fn to_time(t: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn signs_the_csr_key_with_the_platform_names() {
        let ca = PlatformCa::ephemeral().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked
            .distinguished_name
            .push(DnType::CommonName, "someone else");
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let subject = InstanceSubject {
            instance_id: "6f1c2a9e-0000-4000-8000-000000000001".into(),
            app_id: "app-1".into(),
            space_id: "space-1".into(),
            org_id: "org-1".into(),
        };
        let issued = ca.issue(&csr, &subject, 30).unwrap();
        let pems: Vec<_> = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(pems.len(), 2, "leaf then CA");
        assert_eq!(pems[1].as_ref(), ca.der().as_ref());
        let (_, leaf) = X509Certificate::from_der(&pems[0]).unwrap();
        // The router's client verifier accepts it (chain to the CA, client auth usage, dates).
        use rustls::server::danger::ClientCertVerifier;
        let verifier = crate::router::tls::ClientCa::default();
        verifier.set(ca.pem());
        verifier
            .verify_client_cert(&pems[0], &[], rustls_pki_types::UnixTime::now())
            .expect("a certificate the platform CA signed is accepted");
        let other = PlatformCa::ephemeral().unwrap();
        let foreign = other.issue(&csr, &subject, 30).unwrap();
        let foreign = CertificateDer::from_pem_slice(foreign.chain_pem.as_bytes()).unwrap();
        assert!(verifier
            .verify_client_cert(&foreign, &[], rustls_pki_types::UnixTime::now())
            .is_err());
        assert_eq!(
            leaf.public_key().raw,
            key.public_key_der().as_slice(),
            "the CSR's key"
        );
        let subj = leaf.subject().to_string();
        assert!(
            subj.contains("CN=6f1c2a9e-0000-4000-8000-000000000001"),
            "{subj}"
        );
        assert!(subj.contains("OU=app:app-1"), "{subj}");
        assert!(subj.contains("OU=space:space-1"), "{subj}");
        assert!(subj.contains("O=organization:org-1"), "{subj}");
        assert!(!subj.contains("someone else"));
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(
            names.contains(&"URI(spiffe://paas/space/space-1/app/app-1)".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("evil")), "{names:?}");
        assert_eq!(hex::encode(leaf.raw_serial()), issued.serial);
        let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
        assert_eq!(life, 30 + BACKDATE_SECS);
        // A damaged CSR is refused.
        assert!(matches!(
            ca.issue(&csr.replace('A', "B"), &subject, 30),
            Err(IdentityError::BadCsr)
        ));
    }
}
