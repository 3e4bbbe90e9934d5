use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

/// One CA for the whole module: key generation is cheap, but there is no
/// reason to do it in every test.
fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::generate("test").unwrap())
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn sans(der: &[u8]) -> Vec<String> {
    let cert = parse(der);
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => format!("dns:{d}"),
                    GeneralName::URI(u) => format!("uri:{u}"),
                    GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                    other => format!("other:{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn drone_cert(id: &str) -> SignedCertificate {
    let (_key, csr) = generate_key_and_csr(id).unwrap();
    ca().sign_drone_csr(&csr, id, Duration::from_secs(3600))
        .unwrap()
}

/// Checks that `cert_der` was signed by the CA's key.
fn assert_signed_by_ca(cert_der: &[u8]) {
    let ca_der = ca().cert_der();
    let ca_cert = parse(ca_der);
    parse(cert_der)
        .verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
    assert_eq!(parse(cert_der).issuer(), ca_cert.subject());
}

#[test]
fn ca_is_a_ca_with_the_expected_name_and_lifetime() {
    let der = ca().cert_der();
    let cert = parse(der);
    assert!(cert.is_ca());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "test Ultron8 CA");
    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
    assert!((3650..=3651).contains(&days), "{days} days");
    assert_eq!(ca().fingerprint(), fingerprint(der));
    assert_eq!(ca().fingerprint().len(), 64);
    assert!(CertificateAuthority::generate("  ").is_err());
}

#[test]
fn ca_round_trips_through_pem() {
    let ca = ca();
    let loaded = CertificateAuthority::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.fingerprint(), ca.fingerprint());
    assert_eq!(loaded.key_pem(), ca.key_pem());

    // The reloaded CA issues certificates that chain to the original.
    let (_key, csr) = generate_key_and_csr("web-1").unwrap();
    let signed = loaded
        .sign_drone_csr(&csr, "web-1", Duration::from_secs(60))
        .unwrap();
    assert_signed_by_ca(&signed.cert_der);
}

#[test]
fn ca_from_pem_refuses_a_foreign_key_and_a_non_ca_cert() {
    let other = CertificateAuthority::generate("other").unwrap();
    let err = CertificateAuthority::from_pem(&ca().cert_pem(), &other.key_pem()).unwrap_err();
    assert!(matches!(err, PkiError::PrivateKey(_)), "{err}");

    let server = ca().issue_server(&["hive".into()], &[]).unwrap();
    let err = CertificateAuthority::from_pem(&server.cert_pem, &server.key_pem).unwrap_err();
    assert!(matches!(err, PkiError::Certificate(_)), "{err}");

    let err = CertificateAuthority::from_pem("not pem", &ca().key_pem()).unwrap_err();
    assert!(matches!(err, PkiError::Pem(_)), "{err}");
    let err = CertificateAuthority::from_pem(&ca().cert_pem(), "garbage").unwrap_err();
    assert!(matches!(err, PkiError::PrivateKey(_)), "{err}");
}

#[test]
fn server_cert_has_the_sans_and_server_auth() {
    let ips = [
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let issued = ca()
        .issue_server(&["hive.example.com".into(), "localhost".into()], &ips)
        .unwrap();
    let sans = sans(&issued.cert_der);
    assert!(
        sans.contains(&"dns:hive.example.com".to_string()),
        "{sans:?}"
    );
    assert!(sans.contains(&"dns:localhost".to_string()), "{sans:?}");
    assert!(sans.contains(&"ip:[10, 0, 0, 7]".to_string()), "{sans:?}");
    assert_eq!(sans.len(), 4, "{sans:?}");

    let cert = parse(&issued.cert_der);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(!cert.is_ca());
    let v = cert.validity();
    let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
    assert!((365..=366).contains(&days), "{days} days");
    assert_signed_by_ca(&issued.cert_der);

    // The PEM forms match the DER and the key parses.
    assert_eq!(
        pem_to_der_certs(&issued.cert_pem).unwrap(),
        vec![issued.cert_der.clone()]
    );
    KeyPair::from_pem(&issued.key_pem).unwrap();

    // A server certificate is nobody's client identity.
    assert!(matches!(
        peer_identity(&issued.cert_der),
        Err(PkiError::NoIdentity)
    ));
}

#[test]
fn server_cert_needs_valid_names() {
    assert!(matches!(
        ca().issue_server(&[], &[]),
        Err(PkiError::NoServerNames)
    ));
    assert!(matches!(
        ca().issue_server(&["bad name".into()], &[]),
        Err(PkiError::InvalidDnsName(_))
    ));
    let only_ip = ca()
        .issue_server(&[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap();
    assert_eq!(
        sans(&only_ip.cert_der),
        vec!["ip:[127, 0, 0, 1]".to_string()]
    );
}

#[test]
fn operator_identity_round_trips() {
    let issued = ca().issue_operator("alice", "admin").unwrap();
    let identity = peer_identity(&issued.cert_der).unwrap();
    assert_eq!(
        identity,
        PeerIdentity::Operator {
            name: "alice".into(),
            role: "admin".into()
        }
    );
    assert_eq!(identity.to_string(), "operator:alice");
    assert_eq!(
        sans(&issued.cert_der),
        vec!["uri:urn:ultron8:operator:alice:admin".to_string()]
    );
    let cert = parse(&issued.cert_der);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_signed_by_ca(&issued.cert_der);
}

#[test]
fn drone_identity_round_trips() {
    let signed = drone_cert("web-1");
    let identity = peer_identity(&signed.cert_der).unwrap();
    assert_eq!(identity, PeerIdentity::Drone { id: "web-1".into() });
    assert_eq!(identity.to_string(), "drone:web-1");
    assert_eq!(signed.fingerprint, fingerprint(&signed.cert_der));
    assert_eq!(
        pem_to_der_certs(&signed.cert_pem).unwrap(),
        vec![signed.cert_der.clone()]
    );
    let cert = parse(&signed.cert_der);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(
        cert.validity().not_after.timestamp(),
        signed.not_after.timestamp()
    );
    let lifetime = signed.not_after - chrono::Utc::now();
    assert!(lifetime.num_seconds() > 3500 && lifetime.num_seconds() <= 3600);
    assert_signed_by_ca(&signed.cert_der);
}

#[test]
fn drone_and_operator_cannot_be_confused() {
    // An operator named like a drone is still an operator, and vice versa.
    let op = ca().issue_operator("web-1", "drone").unwrap();
    let drone = drone_cert("operator");
    assert!(matches!(
        peer_identity(&op.cert_der).unwrap(),
        PeerIdentity::Operator { .. }
    ));
    assert!(matches!(
        peer_identity(&drone.cert_der).unwrap(),
        PeerIdentity::Drone { .. }
    ));
    assert_ne!(
        peer_identity(&op.cert_der).unwrap(),
        peer_identity(&drone.cert_der).unwrap()
    );

    // Names that would smuggle a separator are refused when issuing.
    for bad in ["", "a:b", "operator:x:admin", "-x", "a b", "é"] {
        let err = ca().issue_operator(bad, "admin").unwrap_err();
        assert!(matches!(err, PkiError::InvalidName { .. }), "{bad}: {err}");
        let err = ca().issue_operator("alice", bad).unwrap_err();
        assert!(matches!(err, PkiError::InvalidName { .. }), "{bad}: {err}");
        let (_k, csr) = generate_key_and_csr("ok").unwrap();
        let err = ca()
            .sign_drone_csr(&csr, bad, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, PkiError::InvalidName { .. }), "{bad}: {err}");
    }
}

/// A certificate with arbitrary SAN URIs, signed by a throwaway self-signed key.
fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn peer_identity_refuses_missing_malformed_and_ambiguous_identities() {
    assert!(matches!(
        peer_identity(&cert_with_uris(&[])),
        Err(PkiError::NoIdentity)
    ));
    assert!(matches!(
        peer_identity(&cert_with_uris(&["https://example.com"])),
        Err(PkiError::NoIdentity)
    ));
    for bad in [
        "urn:ultron8:drone:",
        "urn:ultron8:drone:a:b",
        "urn:ultron8:operator:alice",
        "urn:ultron8:operator:alice:admin:extra",
        "urn:ultron8:root:x",
        "URN:ULTRON8:drone:x",
    ] {
        let err = peer_identity(&cert_with_uris(&[bad])).unwrap_err();
        assert!(
            matches!(err, PkiError::MalformedIdentity { .. }),
            "{bad}: {err}"
        );
    }
    let err = peer_identity(&cert_with_uris(&[
        "urn:ultron8:drone:a",
        "urn:ultron8:operator:a:admin",
    ]))
    .unwrap_err();
    assert!(matches!(err, PkiError::AmbiguousIdentity(_)), "{err}");
    assert!(matches!(
        peer_identity(b"not a certificate"),
        Err(PkiError::Certificate(_))
    ));
}

#[test]
fn csr_contents_other_than_the_key_are_ignored() {
    // A CSR that asks to be an operator and a server gets a drone certificate.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "operator:root");
    params.subject_alt_names = vec![
        SanType::URI("urn:ultron8:operator:root:admin".try_into().unwrap()),
        SanType::DnsName("hive.example.com".try_into().unwrap()),
    ];
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap();
    let signed = ca()
        .sign_drone_csr(csr.der(), "web-2", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        sans(&signed.cert_der),
        vec!["uri:urn:ultron8:drone:web-2".to_string()]
    );
    let cert = parse(&signed.cert_der);
    assert!(!cert.is_ca());
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "drone:web-2"
    );
}

#[test]
fn csr_with_a_bad_signature_is_refused() {
    let (_key, mut csr) = generate_key_and_csr("web-1").unwrap();
    // The signature BIT STRING is the last element: flip its final byte.
    let last = csr.len() - 1;
    csr[last] ^= 0x01;
    let err = ca()
        .sign_drone_csr(&csr, "web-1", Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, PkiError::CsrSignature(_)), "{err}");

    // A CSR whose subject was changed after signing: the signature no longer covers it.
    let (_key, csr) = generate_key_and_csr("aaaaa").unwrap();
    let pos = csr
        .windows(5)
        .position(|w| w == b"aaaaa")
        .expect("CN in the CSR");
    let mut tampered = csr.clone();
    tampered[pos..pos + 5].copy_from_slice(b"bbbbb");
    let err = ca()
        .sign_drone_csr(&tampered, "aaaaa", Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, PkiError::CsrSignature(_)), "{err}");

    let err = ca()
        .sign_drone_csr(b"garbage", "web-1", Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, PkiError::Csr(_)), "{err}");
}

#[test]
fn drone_validity_is_checked_and_capped_by_the_ca() {
    let (_key, csr) = generate_key_and_csr("web-1").unwrap();
    let err = ca()
        .sign_drone_csr(&csr, "web-1", Duration::ZERO)
        .unwrap_err();
    assert!(matches!(err, PkiError::Validity(_)), "{err}");

    let signed = ca()
        .sign_drone_csr(&csr, "web-1", Duration::from_secs(100 * 365 * 86_400))
        .unwrap();
    let ca_not_after = parse(ca().cert_der()).validity().not_after.timestamp();
    assert_eq!(signed.not_after.timestamp(), ca_not_after);
    assert_eq!(
        parse(&signed.cert_der).validity().not_after.timestamp(),
        ca_not_after
    );
    let signed = ca().sign_drone_csr(&csr, "web-1", Duration::MAX).unwrap();
    assert_eq!(signed.not_after.timestamp(), ca_not_after);
}

#[test]
fn serials_are_unique_even_for_the_same_key() {
    let (_key, csr) = generate_key_and_csr("web-1").unwrap();
    let a = ca()
        .sign_drone_csr(&csr, "web-1", Duration::from_secs(60))
        .unwrap();
    let b = ca()
        .sign_drone_csr(&csr, "web-1", Duration::from_secs(60))
        .unwrap();
    assert_ne!(parse(&a.cert_der).serial, parse(&b.cert_der).serial);
}

#[test]
fn generated_drone_key_matches_its_csr() {
    let (key_pem, csr) = generate_key_and_csr("db-3").unwrap();
    let key = KeyPair::from_pem(&key_pem).unwrap();
    let signed = ca()
        .sign_drone_csr(&csr, "db-3", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        parse(&signed.cert_der)
            .public_key()
            .subject_public_key
            .data
            .as_ref(),
        key.public_key_raw()
    );
    assert!(generate_key_and_csr("bad:id").is_err());
}

#[test]
fn pem_to_der_certs_reads_bundles_and_rejects_garbage() {
    let server = ca().issue_server(&["hive".into()], &[]).unwrap();
    let bundle = format!("{}{}{}", server.cert_pem, server.key_pem, ca().cert_pem());
    let certs = pem_to_der_certs(&bundle).unwrap();
    assert_eq!(
        certs,
        vec![server.cert_der.clone(), ca().cert_der().to_vec()]
    );
    assert!(matches!(pem_to_der_certs(""), Err(PkiError::Pem(_))));
    assert!(matches!(
        pem_to_der_certs(&server.key_pem),
        Err(PkiError::Pem(_))
    ));
}

#[test]
fn fingerprint_is_lowercase_sha256_hex() {
    assert_eq!(
        fingerprint(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn request_signatures_verify_and_tampering_is_refused() {
    let der = RequestSigningKey::generate_pkcs8().unwrap();
    let key = RequestSigningKey::from_pkcs8(&der).unwrap();
    let verifier = RequestVerifier::new(key.public_key());
    assert_eq!(key.public_key().len(), 32);
    assert_eq!(key.key_id().len(), 16);
    assert_eq!(key.key_id(), verifier.key_id());
    assert_eq!(
        key.key_id(),
        hex::encode(Sha256::digest(key.public_key()))[..16]
    );

    let message = b"run uptime on web-1";
    let signature = key.sign(message);
    assert_eq!(signature.len(), 64);
    verifier.verify(message, &signature).unwrap();

    let err = verifier
        .verify(b"run rm -rf / on web-1", &signature)
        .unwrap_err();
    assert!(matches!(err, PkiError::BadSignature { .. }), "{err}");
    let mut bad_sig = signature.clone();
    bad_sig[0] ^= 1;
    assert!(verifier.verify(message, &bad_sig).is_err());
    assert!(verifier.verify(message, &[]).is_err());

    let other =
        RequestSigningKey::from_pkcs8(&RequestSigningKey::generate_pkcs8().unwrap()).unwrap();
    let other_verifier = RequestVerifier::new(other.public_key());
    assert_ne!(other.key_id(), key.key_id());
    assert!(other_verifier.verify(message, &signature).is_err());
    assert!(
        RequestVerifier::new(vec![1, 2, 3])
            .verify(message, &signature)
            .is_err()
    );

    // The same PKCS#8 loads to the same key.
    let again = RequestSigningKey::from_pkcs8(&der).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    assert!(matches!(
        RequestSigningKey::from_pkcs8(b"nope"),
        Err(PkiError::SigningKey(_))
    ));
}

#[test]
fn join_token_round_trips() {
    let ca_fp = ca().fingerprint();
    let token = JoinToken::generate(&ca_fp).unwrap();
    assert_eq!(token.id.len(), 12);
    assert!(
        token
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(token.secret.len(), 43);
    assert_eq!(token.ca_fingerprint, ca_fp);

    let text = token.encode();
    assert!(text.starts_with("u8join1."));
    assert_eq!(text.split('.').count(), 4);
    let parsed = JoinToken::parse(&format!("  {text}\n")).unwrap();
    assert_eq!(parsed, token);
    assert_eq!(parsed.secret_sha256(), token.secret_sha256());
    assert_eq!(token.secret_sha256().len(), 32);

    let other = JoinToken::generate(&ca_fp).unwrap();
    assert_ne!(other.id, token.id);
    assert_ne!(other.secret, token.secret);
    assert_ne!(other.secret_sha256(), token.secret_sha256());

    // Uppercase fingerprints are accepted and normalized.
    let upper = JoinToken::generate(&ca_fp.to_uppercase()).unwrap();
    assert_eq!(upper.ca_fingerprint, ca_fp);
    assert!(!format!("{token:?}").contains(&token.secret));
}

#[test]
fn malformed_join_tokens_name_the_wrong_part() {
    let good = JoinToken::generate(&ca().fingerprint()).unwrap();
    let (id, secret, fp) = (&good.id, &good.secret, &good.ca_fingerprint);
    let short_secret =
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 16]);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "token"),
        (format!("u8join2.{id}.{secret}.{fp}"), "prefix"),
        ("hello".to_string(), "prefix"),
        (format!("u8join1.{id}.{secret}"), "format"),
        (format!("u8join1.{id}.{secret}.{fp}.x"), "format"),
        (format!("u8join1.ABCDEF012345.{secret}.{fp}"), "id"),
        (format!("u8join1.abc.{secret}.{fp}"), "id"),
        (format!("u8join1.{id}.not*base64!.{fp}"), "secret"),
        (format!("u8join1.{id}.{short_secret}.{fp}"), "secret"),
        (
            format!("u8join1.{id}.{secret}.{}", &fp[..60]),
            "ca-fingerprint",
        ),
        (
            format!("u8join1.{id}.{secret}.{}zz", &fp[..62]),
            "ca-fingerprint",
        ),
    ];
    for (text, expected) in cases {
        match JoinToken::parse(&text) {
            Err(PkiError::InvalidToken { part, reason }) => {
                assert_eq!(part, expected, "{text}: {reason}");
                let message = PkiError::InvalidToken { part, reason }.to_string();
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("{text}: expected an error on {expected}, got {other:?}"),
        }
    }
    assert!(matches!(
        JoinToken::generate("abc"),
        Err(PkiError::InvalidFingerprint { .. })
    ));
}
