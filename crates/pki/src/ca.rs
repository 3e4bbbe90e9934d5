//! The Ultron8 certificate authority: issues the hive's server certificate,
//! operators' client certificates and drones' client certificates (from CSRs).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::{PeerIdentity, validate_name};
use crate::{PkiError, fingerprint, pem_to_der_certs};

/// How long the CA certificate is valid.
const CA_VALIDITY: TimeDelta = TimeDelta::days(3650);
/// How long server and operator certificates are valid.
const LEAF_VALIDITY: TimeDelta = TimeDelta::days(365);
/// Certificates are valid from this long before they are issued, so that a
/// peer whose clock is a little behind still accepts them.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

/// A certificate and its freshly generated private key (PKCS#8 PEM).
#[derive(Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("fingerprint", &fingerprint(&self.cert_der))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A certificate the CA signed for a drone's CSR (the key stays on the drone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCertificate {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// End of validity, as written in the certificate (whole seconds).
    pub not_after: DateTime<Utc>,
    /// [`fingerprint`] of `cert_der`.
    pub fingerprint: String,
}

/// The Ultron8 CA: an ECDSA P-256 key and its self-signed certificate.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
    not_after: DateTime<Utc>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("fingerprint", &self.fingerprint())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA: CN "`<name>` Ultron8 CA", valid 10 years, ECDSA P-256.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(PkiError::InvalidName {
                kind: "CA name",
                value: name.to_string(),
                reason: "must not be empty".into(),
            });
        }
        let key = new_key()?;
        let now = now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} Ultron8 CA"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Ultron8");
        // Path length 0: the CA signs end-entity certificates only.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, now - CLOCK_SKEW, now + CA_VALIDITY)?;
        let cert = params
            .self_signed(&key)
            .map_err(PkiError::generate("self-sign the CA certificate"))?;
        Self::from_parts(cert.der().to_vec(), key)
    }

    /// Loads a CA from its certificate and its private key (PKCS#8 PEM).
    /// Checks that the certificate is a CA certificate and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let mut certs = pem_to_der_certs(cert_pem)?;
        if certs.len() != 1 {
            return Err(PkiError::Pem(format!(
                "the CA certificate PEM must hold exactly one certificate, it holds {}",
                certs.len()
            )));
        }
        let cert_der = certs.remove(0);
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::PrivateKey(format!("cannot read the CA key PEM: {e}")))?;
        Self::from_parts(cert_der, key)
    }

    fn from_parts(cert_der: Vec<u8>, key: KeyPair) -> Result<Self, PkiError> {
        let cert = parse_cert(&cert_der)?;
        if !cert.is_ca() {
            return Err(PkiError::Certificate(
                "not a CA certificate (basicConstraints CA is not set)".into(),
            ));
        }
        if cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != key.public_key_raw()
        {
            return Err(PkiError::PrivateKey(
                "the key does not belong to the CA certificate".into(),
            ));
        }
        let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
            .ok_or_else(|| PkiError::Certificate("notAfter out of range".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(PkiError::generate("use the CA certificate as issuer"))?;
        let cert_pem = der_to_pem(&cert_der);
        Ok(Self {
            issuer,
            cert_der,
            cert_pem,
            not_after,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Keep it secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// SHA-256 of the CA certificate, lowercase hex: what join tokens pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// The hive's server certificate: serverAuth, a SAN for each DNS name and
    /// IP address, valid 1 year. It carries no peer identity.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCertificate, PkiError> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'));
            if !valid {
                return Err(PkiError::InvalidDnsName(name.clone()));
            }
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|_| PkiError::InvalidDnsName(name.clone()))?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let cn = dns_names
            .first()
            .cloned()
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .unwrap_or_default();
        let key = new_key()?;
        let now = now();
        let params = self.leaf_params(
            &cn,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            now - CLOCK_SKEW,
            now + LEAF_VALIDITY,
        )?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::generate("sign the server certificate"))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        })
    }

    /// An operator's client certificate (clientAuth), valid 1 year, with
    /// identity `Operator { name, role }`.
    pub fn issue_operator(&self, name: &str, role: &str) -> Result<IssuedCertificate, PkiError> {
        validate_name("operator name", name)?;
        validate_name("operator role", role)?;
        let identity = PeerIdentity::Operator {
            name: name.to_string(),
            role: role.to_string(),
        };
        let key = new_key()?;
        let now = now();
        let params = self.client_params(&identity, now - CLOCK_SKEW, now + LEAF_VALIDITY)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::generate("sign the operator certificate"))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a drone's CSR (DER). Only the CSR's public key is used: the CA
    /// sets subject, SAN (identity `Drone { id: drone_id }`), usage
    /// (clientAuth) and validity itself. A CSR whose self-signature does not
    /// verify is refused. The validity is cut to the CA's own end of validity.
    pub fn sign_drone_csr(
        &self,
        csr_der: &[u8],
        drone_id: &str,
        validity: Duration,
    ) -> Result<SignedCertificate, PkiError> {
        validate_name("drone id", drone_id)?;
        let identity = PeerIdentity::Drone {
            id: drone_id.to_string(),
        };
        self.sign_client_csr(csr_der, &identity, validity)
    }

    /// Signs an operator's CSR as [`sign_drone_csr`](Self::sign_drone_csr)
    /// signs a drone's: the key stays with the operator, the hive decides
    /// name, role and validity.
    pub fn sign_operator_csr(
        &self,
        csr_der: &[u8],
        name: &str,
        role: &str,
        validity: Duration,
    ) -> Result<SignedCertificate, PkiError> {
        validate_name("operator name", name)?;
        validate_name("operator role", role)?;
        let identity = PeerIdentity::Operator {
            name: name.to_string(),
            role: role.to_string(),
        };
        self.sign_client_csr(csr_der, &identity, validity)
    }

    fn sign_client_csr(
        &self,
        csr_der: &[u8],
        identity: &PeerIdentity,
        validity: Duration,
    ) -> Result<SignedCertificate, PkiError> {
        if validity < Duration::from_secs(1) {
            return Err(PkiError::Validity(format!(
                "a client certificate must be valid for at least one second, not {validity:?}"
            )));
        }
        let (rest, csr) = X509CertificationRequest::from_der(csr_der)
            .map_err(|e| PkiError::Csr(format!("cannot parse DER CSR: {e}")))?;
        if !rest.is_empty() {
            return Err(PkiError::Csr("trailing bytes after the DER CSR".into()));
        }
        csr.verify_signature()
            .map_err(|e| PkiError::CsrSignature(e.to_string()))?;
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| PkiError::Csr(format!("unsupported public key: {e}")))?;

        let now = now();
        let not_after = TimeDelta::from_std(validity)
            .ok()
            .and_then(|v| now.checked_add_signed(v))
            .map_or(self.not_after, |t| t.min(self.not_after));
        let params = self.client_params(identity, now - CLOCK_SKEW, not_after)?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(PkiError::generate("sign the client certificate"))?;
        let cert_der = cert.der().to_vec();
        Ok(SignedCertificate {
            fingerprint: fingerprint(&cert_der),
            cert_pem: cert.pem(),
            cert_der,
            not_after,
        })
    }

    fn client_params(
        &self,
        identity: &PeerIdentity,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<CertificateParams, PkiError> {
        let uri = identity
            .to_uri()
            .try_into()
            .map_err(PkiError::generate("encode the identity URI"))?;
        self.leaf_params(
            &identity.common_name(),
            vec![SanType::URI(uri)],
            ExtendedKeyUsagePurpose::ClientAuth,
            not_before,
            not_after,
        )
    }

    fn leaf_params(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<CertificateParams, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::Validity(format!(
                "notAfter {not_after} is not after notBefore {not_before} (is the CA expired?)"
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, not_before, not_after.min(self.not_after))?;
        Ok(params)
    }
}

/// On the drone: a fresh ECDSA P-256 key pair (PKCS#8 PEM; it never leaves the
/// host) and a DER CSR for it. The CSR names `drone_id` for humans; the CA
/// ignores everything in it but the public key.
pub fn generate_key_and_csr(drone_id: &str) -> Result<(String, Vec<u8>), PkiError> {
    validate_name("drone id", drone_id)?;
    let identity = PeerIdentity::Drone {
        id: drone_id.to_string(),
    };
    key_and_csr(&identity)
}

/// On an operator's machine, for `ultronctl operator create`: a key that
/// never leaves it and a CSR the hive signs with the role it grants.
pub fn generate_operator_key_and_csr(name: &str) -> Result<(String, Vec<u8>), PkiError> {
    validate_name("operator name", name)?;
    // The role in the CSR is ignored by the CA, which sets the one granted.
    let identity = PeerIdentity::Operator {
        name: name.to_string(),
        role: "requested".to_string(),
    };
    key_and_csr(&identity)
}

fn key_and_csr(identity: &PeerIdentity) -> Result<(String, Vec<u8>), PkiError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.common_name());
    let csr = params
        .serialize_request(&key)
        .map_err(PkiError::generate("create the CSR"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(PkiError::generate("generate an ECDSA P-256 key"))
}

/// Now, truncated to whole seconds (X.509 times have second precision).
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now)
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte: keeps the encoding 16 bytes long
    Ok(SerialNumber::from_slice(&bytes))
}

/// Sets rcgen's `time::OffsetDateTime` fields from chrono times (whole
/// seconds) without depending on the `time` crate: the Unix epoch from rcgen
/// plus a `std::time::Duration`.
fn set_validity(
    params: &mut CertificateParams,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<(), PkiError> {
    let since_epoch = |t: DateTime<Utc>, which: &str| {
        u64::try_from(t.timestamp())
            .map(Duration::from_secs)
            .map_err(|_| PkiError::Validity(format!("{which} {t} is before 1970")))
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch(not_before, "notBefore")?;
    params.not_after = epoch + since_epoch(not_after, "notAfter")?;
    Ok(())
}

/// When a DER certificate stops being valid.
pub fn certificate_not_after(der: &[u8]) -> Result<DateTime<Utc>, PkiError> {
    let cert = parse_cert(der)?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or_else(|| PkiError::Certificate("notAfter out of range".into()))
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| PkiError::Certificate(format!("cannot parse DER certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate(
            "trailing bytes after the DER certificate".into(),
        ));
    }
    Ok(cert)
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
