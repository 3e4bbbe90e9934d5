//! `ultronctl operator`: issue, list and revoke operator certificates.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use ultron8_proto::v1;

use crate::client::{Client, call_failed};
use crate::config::CtlConfig;
use crate::output::{self, Cell, Output, Table};

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Issue a certificate for a new operator (admin). The key is made
    /// here and never leaves this machine; the hive signs it with the
    /// role given and records it. Writes into --out (default ./NAME):
    /// NAME.pem, NAME-key.pem (mode 0600), ca.pem and an ultronctl.toml
    /// pointing at this hive; hand that directory to the operator.
    ///
    /// Roles: viewer (reads), operator (also runs jobs and actions, fires
    /// events, enables rules), admin (also packs, drones, tokens, operators).
    ///
    ///   ultronctl operator create bob --role viewer
    ///   ultronctl operator create carol --role operator --out /tmp/carol --validity 90d
    #[command(verbatim_doc_comment)]
    Create {
        /// The operator's name, as the audit trail will show it
        name: String,
        /// viewer, operator or admin
        #[arg(long)]
        role: String,
        /// Directory to write the credentials into [default: ./NAME]
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long the certificate is valid, e.g. 90d [default: 1 year]
        #[arg(long, value_parser = humantime::parse_duration)]
        validity: Option<Duration>,
        /// Overwrite files already in --out
        #[arg(long)]
        force: bool,
    },
    /// Every operator certificate the hive issued or was shown, with its
    /// role, expiry and revocation.
    ///
    ///   ultronctl operator list
    ///   ultronctl operator list -o json
    #[command(verbatim_doc_comment)]
    List,
    /// Revoke every certificate of an operator (admin): refused at once on
    /// this hive's next handshake and on every later call, including
    /// connections already open; a job they are following stops within a
    /// second. Audited. An admin cannot revoke their own name.
    ///
    ///   ultronctl operator revoke bob --reason "left the team"
    #[command(verbatim_doc_comment)]
    Revoke {
        /// The operator's name
        name: String,
        /// Why, for the audit trail
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn operator(
    client: &mut Client,
    command: OperatorCommand,
    out: &Output,
    config: &CtlConfig,
) -> anyhow::Result<u8> {
    match command {
        OperatorCommand::Create {
            name,
            role,
            out: dir,
            validity,
            force,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let files = CredentialFiles::new(&dir, &name);
            if !force {
                for path in files.all() {
                    if path.exists() {
                        bail!(
                            "{} already exists; pass --force to overwrite it, or --out another directory",
                            path.display()
                        );
                    }
                }
            }
            let (key_pem, csr_der) = ultron8_pki::generate_operator_key_and_csr(&name)
                .with_context(|| format!("cannot make a key for operator {name:?}"))?;
            let issued = client
                .create_operator(v1::CreateOperatorRequest {
                    name: name.clone(),
                    role: role.clone(),
                    csr_der,
                    validity_ms: validity.map_or(0, |v| v.as_millis() as u64),
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            files.write(&issued, &key_pem, config)?;
            if out.is_data() {
                out.data(&json!({
                    "name": name,
                    "role": role,
                    "fingerprint": issued.fingerprint,
                    "not_after": output::time(issued.not_after_ms),
                    "config": files.config,
                }))?;
            } else {
                println!("{}", files.config.display());
                eprintln!(
                    "Operator {name} ({role}) created, valid until {}. Hand over {} (it holds the key); \
                     the operator runs: ultronctl --config {} status",
                    output::time(issued.not_after_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    dir.display(),
                    files.config.display()
                );
            }
            Ok(0)
        }
        OperatorCommand::List => {
            let certificates = client
                .list_operators(v1::ListOperatorsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .certificates;
            if out.is_data() {
                let views: Vec<_> = certificates.iter().map(view).collect();
                out.data(&views)?;
                return Ok(0);
            }
            if certificates.is_empty() {
                eprintln!("No operator certificates recorded yet.");
                return Ok(0);
            }
            let mut table = Table::new(&[
                "NAME",
                "ROLE",
                "STATE",
                "EXPIRES",
                "ISSUED BY",
                "FINGERPRINT",
                "REVOKED BY",
                "REASON",
            ])
            .wide_only(&["FINGERPRINT", "REVOKED BY", "REASON"]);
            for c in &certificates {
                table.row(vec![
                    Cell::text(&c.name),
                    Cell::text(&c.role),
                    Cell::text(state(c)),
                    Cell::text(
                        output::time(c.not_after_ms)
                            .map(|t| t.format("%Y-%m-%d").to_string())
                            .unwrap_or_default(),
                    ),
                    Cell::text(if c.issued_by.is_empty() {
                        "(offline)"
                    } else {
                        &c.issued_by
                    }),
                    Cell::text(&c.fingerprint),
                    Cell::text(&c.revoked_by),
                    Cell::text(&c.revocation_reason),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
        OperatorCommand::Revoke { name, reason } => {
            let revoked = client
                .revoke_operator(v1::RevokeOperatorRequest {
                    name: name.clone(),
                    reason,
                })
                .await
                .map_err(call_failed)?
                .into_inner()
                .revoked;
            if out.is_data() {
                let views: Vec<_> = revoked.iter().map(view).collect();
                out.data(&views)?;
            } else {
                for c in &revoked {
                    println!("revoked {} ({}) {}", c.name, c.role, c.fingerprint);
                }
            }
            Ok(0)
        }
    }
}

fn state(c: &v1::OperatorCertificate) -> &'static str {
    if c.revoked_at_ms != 0 {
        "revoked"
    } else if c.not_after_ms <= chrono::Utc::now().timestamp_millis() {
        "expired"
    } else {
        "valid"
    }
}

fn view(c: &v1::OperatorCertificate) -> serde_json::Value {
    json!({
        "name": c.name,
        "role": c.role,
        "state": state(c),
        "fingerprint": c.fingerprint,
        "not_after": output::time(c.not_after_ms),
        "issued_by": (!c.issued_by.is_empty()).then_some(&c.issued_by),
        "recorded_at": output::time(c.recorded_at_ms),
        "revoked_at": output::time(c.revoked_at_ms),
        "revoked_by": (!c.revoked_by.is_empty()).then_some(&c.revoked_by),
        "revocation_reason": (!c.revocation_reason.is_empty()).then_some(&c.revocation_reason),
    })
}

/// The files `operator create` writes.
struct CredentialFiles {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    config: PathBuf,
}

impl CredentialFiles {
    fn new(dir: &Path, name: &str) -> Self {
        CredentialFiles {
            dir: dir.to_path_buf(),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
            ca: dir.join("ca.pem"),
            config: dir.join("ultronctl.toml"),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.cert, &self.key, &self.ca, &self.config]
    }

    fn write(
        &self,
        issued: &v1::CreateOperatorResponse,
        key_pem: &str,
        config: &CtlConfig,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", self.dir.display()))?;
        write_file(&self.key, key_pem, 0o600)?;
        write_file(&self.cert, &issued.certificate_pem, 0o644)?;
        write_file(&self.ca, &issued.ca_certificate_pem, 0o644)?;
        let file_name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        // Paths relative to the file, so the directory can be moved.
        let mut text = format!("hive = {}\n", toml_string(&config.hive));
        if let Some(server_name) = &config.server_name {
            text.push_str(&format!("server_name = {}\n", toml_string(server_name)));
        }
        text.push_str(&format!(
            "ca = {}\ncert = {}\nkey = {}\n",
            toml_string(&file_name(&self.ca)),
            toml_string(&file_name(&self.cert)),
            toml_string(&file_name(&self.key)),
        ));
        write_file(&self.config, &text, 0o600)
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // `mode` applies only to a file this call created.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
