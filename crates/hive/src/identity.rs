//! The hive's on-disk identity: CA, server certificate, request-signing key
//! and the first operator's credentials, as written by `ultron8-hive init`.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ultron8_pki::{CertificateAuthority, RequestSigningKey};

/// File names inside the data directory.
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }
    pub fn hive_cert(&self) -> PathBuf {
        self.root.join("hive.pem")
    }
    pub fn hive_key(&self) -> PathBuf {
        self.root.join("hive-key.pem")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("request-signing.pk8")
    }
    pub fn operator_cert(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.pem"))
    }
    pub fn operator_key(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}-key.pem"))
    }
    pub fn ultronctl_config(&self) -> PathBuf {
        self.root.join("ultronctl.toml")
    }
    pub fn secrets_key(&self) -> PathBuf {
        self.root.join(crate::keys::KEY_FILE_NAME)
    }
}

pub struct InitOptions {
    /// DNS names in the hive's certificate; the first is its common name.
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub admin_name: String,
    /// What ultronctl dials, e.g. `127.0.0.1:7443`.
    pub hive_address: String,
    /// Overwrite an existing identity.
    pub force: bool,
}

/// What `init` created, for the summary it prints.
pub struct InitReport {
    pub ca_fingerprint: String,
    pub ultronctl_config: PathBuf,
}

pub fn init(dir: &DataDir, options: &InitOptions) -> anyhow::Result<InitReport> {
    if dir.ca_cert().exists() && !options.force {
        bail!(
            "{} already holds a hive identity (ca.pem exists); refusing to replace it, because every \
             drone and operator certificate issued from it would stop working. Pass --force to start over.",
            dir.root().display()
        );
    }
    if options.names.is_empty() && options.ips.is_empty() {
        bail!("give the hive at least one --name or --ip to put in its certificate");
    }
    fs::create_dir_all(dir.root())
        .with_context(|| format!("cannot create {}", dir.root().display()))?;
    fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict permissions of {}", dir.root().display()))?;

    let ca_name = options
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| options.ips[0].to_string());
    let ca = CertificateAuthority::generate(&ca_name)?;
    let server = ca.issue_server(&options.names, &options.ips)?;
    let admin = ca.issue_operator(&options.admin_name, "admin")?;
    let signing_key = RequestSigningKey::generate_pkcs8()?;

    write_public(&dir.ca_cert(), ca.cert_pem().as_bytes())?;
    write_secret(&dir.ca_key(), ca.key_pem().as_bytes())?;
    write_public(&dir.hive_cert(), server.cert_pem.as_bytes())?;
    write_secret(&dir.hive_key(), server.key_pem.as_bytes())?;
    write_secret(&dir.signing_key(), &signing_key)?;
    write_public(
        &dir.operator_cert(&options.admin_name),
        admin.cert_pem.as_bytes(),
    )?;
    write_secret(
        &dir.operator_key(&options.admin_name),
        admin.key_pem.as_bytes(),
    )?;

    let server_name = options
        .hive_address
        .rsplit_once(':')
        .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
        .unwrap_or_else(|| options.hive_address.clone());
    let ctl = CtlConfigFile {
        hive: options.hive_address.clone(),
        server_name,
        ca: dir.ca_cert(),
        cert: dir.operator_cert(&options.admin_name),
        key: dir.operator_key(&options.admin_name),
    };
    write_secret(&dir.ultronctl_config(), ctl.render().as_bytes())?;
    // Kept when it exists, even with --force: a new key would make every
    // secret already stored unreadable.
    crate::keys::FileKey::load_or_create(&dir.secrets_key())?;

    Ok(InitReport {
        ca_fingerprint: ca.fingerprint(),
        ultronctl_config: dir.ultronctl_config(),
    })
}

/// What `operator create` wrote.
pub struct OperatorCredentials {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// An ultronctl config naming them, for `ULTRONCTL_CONFIG`.
    pub ultronctl_config: PathBuf,
}

/// Issues an operator certificate with `role` from the hive's CA, with an
/// ultronctl config file beside it that reaches the hive as the admin's
/// does. Refuses to replace an operator's existing credentials.
pub fn create_operator(
    dir: &DataDir,
    name: &str,
    role: ultron8_core::roles::Role,
) -> anyhow::Result<OperatorCredentials> {
    if !dir.ca_cert().exists() {
        bail!(
            "{} has no hive identity; create one with `ultron8-hive init --data-dir {}`",
            dir.root().display(),
            dir.root().display()
        );
    }
    let credentials = OperatorCredentials {
        cert: dir.operator_cert(name),
        key: dir.operator_key(name),
        ultronctl_config: dir.root().join(format!("ultronctl-{name}.toml")),
    };
    if credentials.cert.exists() {
        bail!(
            "operator {name} already has a certificate ({}); choose another name",
            credentials.cert.display()
        );
    }
    let ca =
        CertificateAuthority::from_pem(&read_text(&dir.ca_cert())?, &read_text(&dir.ca_key())?)
            .with_context(|| format!("cannot load the CA from {}", dir.root().display()))?;
    let issued = ca.issue_operator(name, role.as_str())?;
    // Reach the hive the way the first operator's config does.
    let existing = read_text(&dir.ultronctl_config())?;
    let existing: toml::Table = toml::from_str(&existing)
        .with_context(|| format!("cannot read {}", dir.ultronctl_config().display()))?;
    let field = |key: &str| {
        existing
            .get(key)
            .and_then(|v| v.as_str())
            .map(String::from)
            .with_context(|| format!("{} has no `{key}`", dir.ultronctl_config().display()))
    };
    let ctl = CtlConfigFile {
        hive: field("hive")?,
        server_name: field("server_name")?,
        ca: dir.ca_cert(),
        cert: credentials.cert.clone(),
        key: credentials.key.clone(),
    };
    write_public(&credentials.cert, issued.cert_pem.as_bytes())?;
    write_secret(&credentials.key, issued.key_pem.as_bytes())?;
    write_secret(&credentials.ultronctl_config, ctl.render().as_bytes())?;
    Ok(credentials)
}

/// The ultronctl configuration file format (read by ultronctl's config
/// module; the e2e tests check the two agree).
pub struct CtlConfigFile {
    pub hive: String,
    pub server_name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CtlConfigFile {
    pub fn render(&self) -> String {
        #[derive(serde::Serialize)]
        struct File<'a> {
            hive: &'a str,
            server_name: &'a str,
            ca: &'a Path,
            cert: &'a Path,
            key: &'a Path,
        }
        let body = toml::to_string(&File {
            hive: &self.hive,
            server_name: &self.server_name,
            ca: &self.ca,
            cert: &self.cert,
            key: &self.key,
        })
        .unwrap_or_default();
        format!("# ultronctl configuration written by ultron8-hive init\n{body}")
    }
}

/// Everything `serve` needs from the data directory.
pub struct HiveIdentity {
    pub ca: CertificateAuthority,
    pub server_cert_der: Vec<u8>,
    pub server_key_pem: String,
    pub signing_key: RequestSigningKey,
}

impl HiveIdentity {
    pub fn load(dir: &DataDir) -> anyhow::Result<HiveIdentity> {
        if !dir.ca_cert().exists() {
            bail!(
                "{} has no hive identity; create one with `ultron8-hive init --data-dir {}`",
                dir.root().display(),
                dir.root().display()
            );
        }
        let ca =
            CertificateAuthority::from_pem(&read_text(&dir.ca_cert())?, &read_text(&dir.ca_key())?)
                .with_context(|| format!("cannot load the CA from {}", dir.root().display()))?;
        let server_pem = read_text(&dir.hive_cert())?;
        let server_cert_der = ultron8_pki::pem_to_der_certs(&server_pem)?
            .into_iter()
            .next()
            .with_context(|| format!("{} holds no certificate", dir.hive_cert().display()))?;
        let server_key_pem = read_text(&dir.hive_key())?;
        let signing_key_bytes = fs::read(dir.signing_key())
            .with_context(|| format!("cannot read {}", dir.signing_key().display()))?;
        let signing_key = RequestSigningKey::from_pkcs8(&signing_key_bytes).with_context(|| {
            format!("{} is not a valid signing key", dir.signing_key().display())
        })?;
        Ok(HiveIdentity {
            ca,
            server_cert_der,
            server_key_pem,
            signing_key,
        })
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_file(path, contents, 0o644)
}

/// Private keys and files naming them are readable by the owner only.
pub fn write_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_file(path, contents, 0o600)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    ultron8_host::write_atomically(path, contents, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}
