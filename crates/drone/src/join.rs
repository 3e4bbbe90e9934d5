//! `ultron8-drone join`: trade a one-time token for a certificate.
//!
//! The private key is generated here and never leaves the host; the hive
//! sees only the CSR. The token pins the hive's CA by fingerprint, so the
//! very first connection is already authenticated.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use ultron8_pki::JoinToken;
use ultron8_proto::v1::EnrollRequest;
use ultron8_proto::v1::drone_service_client::DroneServiceClient;

use crate::config::{DroneDir, DroneFile, DroneSettings};

pub struct JoinOptions {
    pub hive: String,
    pub server_name: Option<String>,
    pub token: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub force: bool,
}

pub async fn join(dir: &DroneDir, options: JoinOptions) -> anyhow::Result<DroneFile> {
    if dir.config().exists() && !options.force {
        bail!(
            "{} already holds a drone identity; pass --force to replace it. The hive takes a name \
             in its fleet only with a token made for it: ultronctl drone token create --replace NAME \
             (the old certificate is then revoked)",
            dir.root().display()
        );
    }
    let token = JoinToken::parse(options.token.trim()).context(
        "the join token is malformed; copy it again from `ultronctl drone token create`",
    )?;
    ultron8_core::target::validate_drone_id(&options.name)
        .map_err(|e| anyhow::anyhow!("invalid drone name {:?}: {e}", options.name))?;
    let server_name = options
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(&options.hive));

    let (key_pem, csr_der) = ultron8_pki::generate_key_and_csr(&options.name)?;
    let tls = ultron8_transport::enrollment_client_config(&token.ca_fingerprint)?;
    let channel = ultron8_transport::connect(&options.hive, &server_name, tls)
        .await
        .with_context(|| {
            format!(
                "cannot reach the hive at {} (or it is not the hive the token was issued by)",
                options.hive
            )
        })?;
    let response = DroneServiceClient::new(channel)
        .enroll(EnrollRequest {
            token: options.token.trim().to_string(),
            drone_id: options.name.clone(),
            csr_der,
        })
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "the hive refused to enroll {}: {}",
                options.name,
                status.message()
            )
        })?
        .into_inner();

    std::fs::create_dir_all(dir.root())
        .with_context(|| format!("cannot create {}", dir.root().display()))?;
    write(&dir.key(), key_pem.as_bytes(), 0o600)?;
    write(
        &dir.cert(),
        ultron8_pki::der_to_pem(&response.certificate_der).as_bytes(),
        0o644,
    )?;
    write(
        &dir.ca(),
        ultron8_pki::der_to_pem(&response.ca_certificate_der).as_bytes(),
        0o644,
    )?;
    let file = DroneFile {
        id: options.name,
        hive: options.hive,
        server_name,
        labels: options.labels,
        settings: DroneSettings::default(),
    };
    let text = toml::to_string_pretty(&file).context("cannot render drone.toml")?;
    write(
        &dir.config(),
        format!("# written by ultron8-drone join; labels and settings may be edited\n{text}")
            .as_bytes(),
        0o600,
    )?;
    Ok(file)
}

/// The host part of `host:port` or `[v6]:port`.
pub fn host_of(address: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            host.trim_matches(['[', ']']).to_string()
        }
        _ => address.to_string(),
    }
}

fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    ultron8_host::write_atomically(path, contents, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}
