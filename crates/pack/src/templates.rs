//! Install-time checks of templates: syntax, and that every variable a
//! template reads can exist when it renders.

use ultron8_core::template;

use crate::problem::{Pos, Sink};
use crate::text::list;

/// Where an action's template may read the hive's secrets
/// (`{{ secret.NAME }}`; see `ultron8_core::secrets`). They reach a
/// command only through its environment, never its argv, which every user
/// of the host can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Secrets {
    /// A `shell:` script: anywhere, as a quoted `"$ULTRON8_SECRET_NAME"`.
    Shell,
    /// An `env:` value: only as the whole value, `{{ secret.NAME }}`.
    Env,
    /// Anywhere else (argv, a script's args, an http request); says why.
    Refused(&'static str),
}

/// Why argv and args take no secret.
pub(crate) const THROUGH_THE_ENVIRONMENT: &str =
    "secrets reach commands through the environment; use it in shell: or env:";

/// What a template may read.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// An action's templates render over its parameters.
    Parameters {
        /// `pack.action`, for messages.
        action: &'a str,
        names: &'a [String],
        secrets: Secrets,
    },
    /// A rule's templates render over the trigger's payload. `fields` is
    /// `None` when the payload is free-form and nothing can be checked.
    Payload {
        trigger: &'a str,
        fields: Option<&'a [&'a str]>,
    },
}

impl Scope<'_> {
    /// The same scope, with secrets allowed as `secrets` says.
    pub(crate) fn with_secrets(self, secrets: Secrets) -> Self {
        match self {
            Scope::Parameters { action, names, .. } => Scope::Parameters {
                action,
                names,
                secrets,
            },
            payload => payload,
        }
    }
}

/// Checks one template at `pos`; returns whether it was clean.
pub(crate) fn check(source: &str, pos: Pos, scope: &Scope<'_>, sink: &mut Sink<'_>) -> bool {
    let variables = match template::check(source) {
        Ok(variables) => variables,
        Err(e) => {
            // The template's own line only helps in a multi-line value; the
            // node's position already finds the value.
            let line = match e.line {
                Some(line) if line > 1 => format!(" (line {line} of the template)"),
                _ => String::new(),
            };
            sink.at(pos, format!("invalid template: {}{line}", e.message));
            return false;
        }
    };
    let mut clean = true;
    for variable in &variables {
        match scope {
            Scope::Parameters {
                action, secrets, ..
            } if variable == "secret" => {
                let named: Vec<String> = template::secret_references(source).into_iter().collect();
                let which = if named.is_empty() {
                    "a secret".to_string()
                } else {
                    format!("secret {}", named.join(", "))
                };
                let problem = match secrets {
                    Secrets::Shell => None,
                    Secrets::Env if template::whole_secret_reference(source).is_some() => None,
                    Secrets::Env => Some(format!(
                        "an env value that uses {which} must be exactly `{{{{ secret.NAME }}}}`; \
                         to build a longer value from it, use a shell: script"
                    )),
                    Secrets::Refused(why) => Some(format!("{action} uses {which} here: {why}")),
                };
                if let Some(problem) = problem {
                    sink.at(pos, problem);
                    clean = false;
                }
            }
            Scope::Parameters { action, names, .. } => {
                if !names.iter().any(|n| n == variable) {
                    let known = if names.is_empty() {
                        "it has no parameters".to_string()
                    } else {
                        format!("parameters: {}", list(names.iter().map(String::as_str)))
                    };
                    sink.at(
                        pos,
                        format!("`{variable}` is not a parameter of {action} ({known})"),
                    );
                    clean = false;
                }
            }
            Scope::Payload {
                trigger,
                fields: Some(fields),
            } => {
                if !fields.contains(&variable.as_str()) {
                    sink.at(
                        pos,
                        format!(
                            "`{variable}` is not in the payload of {trigger} (fields: {})",
                            list(fields.iter().copied())
                        ),
                    );
                    clean = false;
                }
            }
            Scope::Payload { fields: None, .. } => {}
        }
    }
    clean
}
