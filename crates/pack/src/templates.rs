//! Install-time checks of templates: syntax, and that every variable a
//! template reads can exist when it renders.

use ultron8_core::template;

use crate::problem::{Pos, Sink};
use crate::text::list;

/// What a template may read.
pub(crate) enum Scope<'a> {
    /// An action's templates render over its parameters.
    Parameters {
        /// `pack.action`, for messages.
        action: &'a str,
        names: &'a [String],
    },
    /// A rule's templates render over the trigger's payload. `fields` is
    /// `None` when the payload is free-form and nothing can be checked.
    Payload {
        trigger: &'a str,
        fields: Option<&'a [&'a str]>,
    },
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
            Scope::Parameters { action, names } => {
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
