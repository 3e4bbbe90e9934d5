//! `ultronctl secret`: the hive's named secrets, which pack actions read
//! as `{{ secret.NAME }}`.
//!
//! A value never comes from the command line (argv is visible to every
//! user of the machine and kept in shell history): it is read from
//! standard input, from a file, or typed at a prompt that does not echo.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::Subcommand;
use serde::Serialize;
use ultron8_proto::v1;

use crate::cli::usage;
use crate::client::{Client, call_failed};
use crate::output::{self, Cell, Output, Table};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Create a secret, or replace its value. Admins only; audited (never
    /// the value).
    ///
    /// The value is read from standard input, or from --from-file; never
    /// from the command line. On a terminal it is asked for twice, without
    /// echo. It is kept exactly as given: `echo` adds a newline that
    /// becomes part of the value, `printf %s` does not.
    ///
    ///   ultronctl secret set db_password                 # prompts
    ///   printf %s "$PW" | ultronctl secret set db_password
    ///   ultronctl secret set tls_key --from-file ./key.pem
    ///
    /// Names are a letter or _ followed by letters, digits or _. Values are
    /// text of at least 4 characters (shorter ones cannot be masked in
    /// output) and at most 32 KiB. The hive seals the value with its
    /// secrets key before storing it.
    ///
    /// Pack actions read it as {{ secret.NAME }} in a shell: script or as a
    /// whole env: value; the drone that runs the command gets the value
    /// just before it starts, in the command's environment, and masks it in
    /// the output. See docs/packs.md, "Secrets".
    #[command(verbatim_doc_comment)]
    Set {
        /// The secret's name, e.g. db_password
        name: String,
        /// Read the value from this file instead of standard input
        #[arg(long, value_name = "PATH")]
        from_file: Option<PathBuf>,
    },
    /// The secrets: names, and when and by whom each was set. Never values.
    ///
    ///   ultronctl secret list
    ///   ultronctl secret list -o json
    #[command(verbatim_doc_comment)]
    List,
    /// One secret: when and by whom it was set; with --reveal, its value.
    ///
    /// --reveal prints the value alone (admins only; audited as
    /// secret.revealed). It is off by default so that the value reaches a
    /// screen, a scrollback or a log only when someone asks for it.
    ///
    ///   ultronctl secret get db_password
    ///   ultronctl secret get db_password --reveal > pw.txt
    #[command(verbatim_doc_comment)]
    Get {
        name: String,
        /// Print the value (admins only; audited)
        #[arg(long)]
        reveal: bool,
    },
    /// Delete a secret. Admins only; audited. Jobs that need it fail with a
    /// message naming it until it is set again.
    ///
    ///   ultronctl secret delete db_password
    #[command(verbatim_doc_comment)]
    Delete { name: String },
}

/// A secret as `-o json` and `-o yaml` show it.
#[derive(Serialize)]
pub struct SecretView {
    pub name: String,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    pub created_by: String,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl From<&v1::SecretInfo> for SecretView {
    fn from(s: &v1::SecretInfo) -> Self {
        SecretView {
            name: s.name.clone(),
            created_at: output::time(s.created_at_ms),
            created_by: s.created_by.clone(),
            updated_at: output::time(s.updated_at_ms),
            updated_by: s.updated_by.clone(),
            value: None,
        }
    }
}

pub async fn secret(
    client: &mut Client,
    command: SecretCommand,
    out: &Output,
) -> anyhow::Result<u8> {
    match command {
        SecretCommand::Set { name, from_file } => {
            let value = read_value(&name, from_file.as_deref())?;
            if value.ends_with('\n') {
                eprintln!(
                    "note: the value ends with a newline, which is kept (`printf %s` writes none)"
                );
            }
            let info = client
                .set_secret(v1::SetSecretRequest {
                    name: name.clone(),
                    value,
                })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                out.data(&SecretView::from(&info))?;
            } else if info.created {
                println!("secret {name} created");
            } else {
                println!("secret {name} replaced");
            }
            Ok(0)
        }
        SecretCommand::List => {
            let secrets = client
                .list_secrets(v1::ListSecretsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .secrets;
            if out.is_data() {
                out.data(&secrets.iter().map(SecretView::from).collect::<Vec<_>>())?;
                return Ok(0);
            }
            if secrets.is_empty() {
                eprintln!("No secrets yet. Set one with `ultronctl secret set NAME`.");
                return Ok(0);
            }
            let mut table = Table::new(&["NAME", "UPDATED", "UPDATED BY", "CREATED", "CREATED BY"])
                .wide_only(&["CREATED", "CREATED BY"]);
            for s in &secrets {
                table.row(vec![
                    Cell::text(&s.name),
                    Cell::text(output::ago(s.updated_at_ms)),
                    Cell::text(&s.updated_by),
                    Cell::text(output::ago(s.created_at_ms)),
                    Cell::text(&s.created_by),
                ]);
            }
            out.table(&table);
            Ok(0)
        }
        SecretCommand::Get {
            name,
            reveal: false,
        } => {
            // Metadata only: the list has it, and reading it reveals and
            // audits nothing.
            let secrets = client
                .list_secrets(v1::ListSecretsRequest {})
                .await
                .map_err(call_failed)?
                .into_inner()
                .secrets;
            let Some(info) = secrets.iter().find(|s| s.name == name) else {
                anyhow::bail!("no secret {name}; see `ultronctl secret list`");
            };
            if out.is_data() {
                out.data(&SecretView::from(info))?;
            } else {
                println!(
                    "secret {name}  set {} by {}  created {} by {}",
                    output::ago(info.updated_at_ms),
                    info.updated_by,
                    output::ago(info.created_at_ms),
                    info.created_by
                );
                eprintln!("(the value is shown with --reveal, which is audited)");
            }
            Ok(0)
        }
        SecretCommand::Get { name, reveal: true } => {
            let answer = client
                .get_secret(v1::GetSecretRequest { name })
                .await
                .map_err(call_failed)?
                .into_inner();
            if out.is_data() {
                let mut view = answer
                    .secret
                    .as_ref()
                    .map(SecretView::from)
                    .ok_or_else(|| anyhow::anyhow!("the hive sent no secret"))?;
                view.value = Some(answer.value);
                out.data(&view)?;
            } else {
                // The value exactly, so `> file` keeps it; a newline only
                // for a person reading a terminal.
                let mut stdout = std::io::stdout();
                stdout.write_all(answer.value.as_bytes())?;
                if stdout.is_terminal() {
                    stdout.write_all(b"\n")?;
                }
                stdout.flush()?;
            }
            Ok(0)
        }
        SecretCommand::Delete { name } => {
            client
                .delete_secret(v1::DeleteSecretRequest { name: name.clone() })
                .await
                .map_err(call_failed)?;
            println!("secret {name} deleted");
            Ok(0)
        }
    }
}

/// The value for `set`: from the file, from a prompt on a terminal, or
/// from standard input.
fn read_value(name: &str, from_file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let bytes = match from_file {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password(format!("Value for secret {name}: "))
                .map_err(|e| anyhow::anyhow!("cannot read the value from the terminal: {e}"))?;
            let again = rpassword::prompt_password("Again: ")
                .map_err(|e| anyhow::anyhow!("cannot read the value from the terminal: {e}"))?;
            if first != again {
                return Err(usage("the two values differ; nothing was set"));
            }
            first.into_bytes()
        }
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| anyhow::anyhow!("cannot read the value from standard input: {e}"))?;
            bytes
        }
    };
    let value = String::from_utf8(bytes).map_err(|_| {
        usage("a secret's value is text (UTF-8); encode binary values, e.g. with base64")
    })?;
    if value.is_empty() {
        return Err(usage(
            "the value is empty: pipe it in (printf %s \"$PW\" | ultronctl secret set NAME) or use --from-file",
        ));
    }
    Ok(value)
}
