//! `pack.yaml`.

use crate::model::{Installed, Manifest};
use crate::problem::Sink;
use crate::text::check_name;
use crate::yaml::{Fields, Node, Value, expected, sequence, string};

const KEYS: &[&str] = &["name", "version", "description", "author", "dependencies"];

/// What could be read of the manifest. `name` is kept even when something
/// else is wrong, so the rest of the pack can still be checked against it.
pub(crate) struct Decoded {
    pub name: Option<String>,
    pub manifest: Option<Manifest>,
}

pub(crate) fn decode(node: &Node, installed: &dyn Installed, sink: &mut Sink<'_>) -> Decoded {
    let before = sink.count();
    let Some(fields) = Fields::new(node, "a pack manifest", KEYS, sink) else {
        return Decoded {
            name: None,
            manifest: None,
        };
    };

    let name = fields.required("name", sink).and_then(|node| {
        let name = string(node, sink)?;
        match check_name(name) {
            Ok(()) => Some(name.to_string()),
            Err(why) => {
                sink.at(node.pos, format!("invalid pack name {name:?}: {why}"));
                None
            }
        }
    });

    let version = fields.required("version", sink).and_then(|node| {
        let Value::Str(text) = &node.value else {
            // `version: 1.2` is a YAML number; say what to write instead.
            expected(node, "a semantic version such as `1.2.0`", sink);
            return None;
        };
        match semver::Version::parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                sink.at(
                    node.pos,
                    format!(
                        "invalid version {text:?}: {e} (expected MAJOR.MINOR.PATCH, e.g. `1.2.0`)"
                    ),
                );
                None
            }
        }
    });

    let description = optional_string(&fields, "description", sink);
    let author = optional_string(&fields, "author", sink);

    let mut dependencies = Vec::new();
    if let Some(node) = fields.get("dependencies")
        && let Some(items) = sequence(node, "a list of pack names", sink)
    {
        for item in items {
            let Some(dep) = string(item, sink) else {
                continue;
            };
            if let Err(why) = check_name(dep) {
                sink.at(item.pos, format!("invalid pack name {dep:?}: {why}"));
                continue;
            }
            if dependencies.iter().any(|d| d == dep) {
                sink.at(item.pos, format!("`{dep}` is listed twice"));
                continue;
            }
            let is_self = name.as_deref() == Some(dep);
            if !is_self && installed.pack_version(dep).is_none() {
                sink.at(
                    item.pos,
                    format!("depends on `{dep}`, which is not installed; install it first"),
                );
            }
            dependencies.push(dep.to_string());
        }
    }

    let manifest = match (&name, version) {
        (Some(name), Some(version)) if sink.count() == before => Some(Manifest {
            name: name.clone(),
            version,
            description: description.unwrap_or_default(),
            author: author.unwrap_or_default(),
            dependencies,
        }),
        _ => None,
    };
    Decoded { name, manifest }
}

pub(crate) fn optional_string(
    fields: &Fields<'_>,
    key: &str,
    sink: &mut Sink<'_>,
) -> Option<String> {
    fields
        .get(key)
        .and_then(|node| string(node, sink))
        .map(str::to_string)
}
