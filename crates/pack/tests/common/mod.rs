//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::json;
use ultron8_core::params::{ParamSchema, ParamSpec, ParamType};
use ultron8_pack::{Action, Installed, PackFiles, Problem, Runner, load};

/// A pack from `(path, text)` pairs.
pub fn files(entries: &[(&str, &str)]) -> PackFiles {
    entries
        .iter()
        .map(|(path, text)| ((*path).to_string(), text.as_bytes().to_vec()))
        .collect()
}

/// A minimal valid manifest, for tests about other files.
pub const MANIFEST: &str = "name: linux\nversion: 1.0.0\n";

/// A valid shell action with one required and one optional parameter.
pub const STOP_SERVICE: &str = "\
name: stop_service
runner: shell
command: [systemctl, stop, \"{{ service }}\"]
parameters:
  service: {type: string, required: true}
  force: {type: boolean, default: false}
";

/// What is installed in the tests: the `chatops` pack, 0.3.0, with one
/// http action.
#[derive(Default)]
pub struct Fake {
    pub packs: BTreeMap<String, semver::Version>,
    pub actions: BTreeMap<String, Action>,
}

impl Fake {
    pub fn with_chatops() -> Self {
        let mut fake = Fake::default();
        fake.packs
            .insert("chatops".into(), semver::Version::new(0, 3, 0));
        fake.actions
            .insert("chatops.notify".into(), notify_action());
        fake
    }
}

impl Installed for Fake {
    fn action(&self, reference: &str) -> Option<Action> {
        self.actions.get(reference).cloned()
    }

    fn pack_version(&self, name: &str) -> Option<semver::Version> {
        self.packs.get(name).cloned()
    }
}

pub fn notify_action() -> Action {
    let mut parameters = ParamSchema::new();
    parameters.insert(
        "channel".into(),
        ParamSpec {
            kind: ParamType::String,
            required: true,
            default: None,
            allowed: None,
            secret: false,
            description: String::new(),
        },
    );
    parameters.insert(
        "message".into(),
        ParamSpec {
            kind: ParamType::String,
            required: false,
            default: Some(json!("ping")),
            allowed: None,
            secret: false,
            description: String::new(),
        },
    );
    Action {
        pack: "chatops".into(),
        name: "notify".into(),
        description: "Post to a channel".into(),
        runner: Runner::Http {
            method: "POST".into(),
            url: "https://chat.example/{{ channel }}".into(),
            headers: BTreeMap::new(),
            body: Some("{{ message }}".into()),
            expect_status: vec![],
        },
        parameters,
        timeout: None,
    }
}

/// The problems `load` reports, rendered `file:line:column: message`.
pub fn problems(files: &PackFiles, installed: &dyn Installed) -> Vec<String> {
    match load(files, installed) {
        Ok(pack) => panic!("expected problems, the pack loaded: {pack:#?}"),
        Err(problems) => problems.iter().map(Problem::to_string).collect(),
    }
}

/// Asserts that exactly one problem starts with `expected` (a
/// `file:line:column: message` prefix).
#[track_caller]
pub fn assert_problem(problems: &[String], expected: &str) {
    let found = problems.iter().filter(|p| p.starts_with(expected)).count();
    assert_eq!(
        found,
        1,
        "expected one problem starting with\n  {expected}\ngot:\n  {}",
        problems.join("\n  ")
    );
}
