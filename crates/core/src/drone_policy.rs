//! A drone's own policy: what its host's owner lets run on it, whatever the
//! hive asks. The hive's signature proves a request came from the hive; it
//! cannot prove the hive (or whoever holds an operator's or admin's
//! credential) should be asking. The `[policy]` table of `drone.toml` is the
//! owner's answer, decided here for every verified request before anything
//! runs.
//!
//! What a request offers to match:
//!
//! - **The action**, `pack.action`, for a run of a pack action (by hand or
//!   by a rule); an ad-hoc command (`ultronctl run -- ...`) has none.
//! - **The program**: the file the drone would execute. For an argv that
//!   is its first element as written; for a shell command (`--shell`, or a
//!   `shell` action written as one line) it is `/bin/sh`, which is what
//!   runs it. A pack script has no program a pattern can name: its file is
//!   the drone's cached copy, named by its hash.
//!
//! The decision, in order; the first that applies wins:
//!
//! 1. `deny_actions`: an action run whose action matches a pattern is
//!    refused.
//! 2. `allow_shell = false`: a shell command is refused (its text is not
//!    parsed, so no command pattern can speak for what it runs).
//! 3. `deny_commands`: a command whose program matches a pattern is
//!    refused.
//! 4. The allow lists. Both empty: everything not denied runs. Otherwise
//!    the drone runs only what one of them allows: an action run whose
//!    action matches `allow_actions`, or a command (ad-hoc or an action's)
//!    whose program matches `allow_commands`. So `allow_actions` alone
//!    also refuses every ad-hoc command, and a pack script passes only by
//!    its action.
//!
//! Patterns are globs (`*`, `?`, `[a-z]`; [`crate::glob`]), anchored, case
//! sensitive. A program pattern with a `/` matches the program's whole path
//! as written (`/usr/bin/*`); one without matches its last component, so
//! `rm` denies `rm`, `/bin/rm` and `/usr/bin/rm` alike. A path with a `.`,
//! `..` or empty component never matches an allow pattern that has a `/`
//! (`/usr/bin/../../tmp/x` would otherwise match `/usr/bin/*`).
//!
//! `run_as` picks the user a permitted request runs as: the first
//! `[[policy.run_as_action]]` whose action pattern matches an action run,
//! else `run_as`, else the drone's own user.

use serde::{Deserialize, Serialize};

use crate::glob::{Glob, GlobError};
use crate::model::Program;

/// What a shell command's program is, for the command lists: the file the
/// drone executes to run it.
pub const SHELL_PROGRAM: &str = "/bin/sh";

/// The `[policy]` table of `drone.toml`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Globs over `pack.action`; see the module docs.
    pub allow_actions: Vec<String>,
    pub deny_actions: Vec<String>,
    /// Globs over the program; see the module docs.
    pub allow_commands: Vec<String>,
    pub deny_commands: Vec<String>,
    /// `false` refuses every shell command.
    pub allow_shell: bool,
    /// The user every permitted request runs as, unless a `run_as_action`
    /// names another; `None`: the drone's own user.
    pub run_as: Option<String>,
    /// Users for actions, first match wins.
    pub run_as_action: Vec<RunAsAction>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            allow_actions: Vec::new(),
            deny_actions: Vec::new(),
            allow_commands: Vec::new(),
            deny_commands: Vec::new(),
            allow_shell: true,
            run_as: None,
            run_as_action: Vec::new(),
        }
    }
}

/// `[[policy.run_as_action]]`: actions matching `action` run as `user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAsAction {
    pub action: String,
    pub user: String,
}

/// A pattern or user name in the `[policy]` table that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[policy] {key}: {message}")]
pub struct PolicyConfigError {
    /// The key, with the index of the entry: `deny_commands[2]`.
    pub key: String,
    pub message: String,
}

/// A verified request, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyRequest<'a> {
    /// `pack.action` for an action run; `None` for an ad-hoc command.
    pub action: Option<&'a str>,
    pub program: &'a Program,
}

/// What the policy says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    /// Run it, as this user (`None`: the drone's own).
    Run {
        run_as: Option<String>,
    },
    Refuse(PolicyRefusal),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRefusal {
    /// The rule that refused it, as written in `drone.toml`:
    /// `deny_commands "rm"`, `allow_shell = false`, or the allow lists in
    /// force (`allow_actions, allow_commands`) when none allowed it.
    pub rule: String,
    /// A sentence naming what was asked and the rule.
    pub reason: String,
}

/// A pattern, compiled once.
#[derive(Debug, Clone)]
struct Pattern {
    glob: Glob,
    /// Matched against the program's whole path, not its last component.
    has_slash: bool,
}

impl Pattern {
    fn compile(key: &str, index: usize, source: &str) -> Result<Pattern, PolicyConfigError> {
        let error = |message: String| PolicyConfigError {
            key: format!("{key}[{index}]"),
            message,
        };
        if source.trim().is_empty() {
            return Err(error("an empty pattern matches nothing; remove it".into()));
        }
        let glob = Glob::new(source).map_err(|e| {
            error(match e {
                GlobError::Unterminated { .. } => {
                    format!("pattern {source:?} has a `[` that is never closed")
                }
                GlobError::BadRange { lo, hi, .. } => {
                    format!("pattern {source:?} has the empty range {lo}-{hi}")
                }
            })
        })?;
        Ok(Pattern {
            glob,
            has_slash: source.contains('/'),
        })
    }

    fn source(&self) -> &str {
        &self.glob.source
    }

    fn matches_action(&self, action: &str) -> bool {
        self.glob.matches(action, false)
    }

    /// `allowing`: an unclean path never matches a pattern with a `/` when
    /// allowing (see the module docs); denying still compares it as written.
    fn matches_program(&self, program: &str, allowing: bool) -> bool {
        if self.has_slash {
            if allowing && !clean_path(program) {
                return false;
            }
            self.glob.matches(program, false)
        } else {
            self.glob.matches(last_component(program), false)
        }
    }
}

fn last_component(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// No `.`, `..` or empty component, except the empty one before a leading `/`.
fn clean_path(program: &str) -> bool {
    let rest = program.strip_prefix('/').unwrap_or(program);
    rest.split('/')
        .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The `[policy]` table, checked and compiled.
#[derive(Debug, Clone)]
pub struct DronePolicy {
    config: PolicyConfig,
    allow_actions: Vec<Pattern>,
    deny_actions: Vec<Pattern>,
    allow_commands: Vec<Pattern>,
    deny_commands: Vec<Pattern>,
    run_as_action: Vec<(Pattern, String)>,
}

impl DronePolicy {
    /// Checks every pattern and user name; the error names the first bad
    /// key. Whether the users exist is for the caller, who can look.
    pub fn new(config: PolicyConfig) -> Result<DronePolicy, PolicyConfigError> {
        let compile = |key: &str, sources: &[String]| {
            sources
                .iter()
                .enumerate()
                .map(|(i, s)| Pattern::compile(key, i, s))
                .collect::<Result<Vec<_>, _>>()
        };
        let user = |key: String, name: &str| {
            if name.is_empty() || name.trim() != name || name.contains(['/', ':', '\0']) {
                Err(PolicyConfigError {
                    key,
                    message: format!("{name:?} is not a user name"),
                })
            } else {
                Ok(name.to_string())
            }
        };
        if let Some(name) = &config.run_as {
            user("run_as".into(), name)?;
        }
        let mut run_as_action = Vec::new();
        for (i, rule) in config.run_as_action.iter().enumerate() {
            let pattern = Pattern::compile("run_as_action", i, &rule.action)?;
            let name = user(format!("run_as_action[{i}].user"), &rule.user)?;
            run_as_action.push((pattern, name));
        }
        Ok(DronePolicy {
            allow_actions: compile("allow_actions", &config.allow_actions)?,
            deny_actions: compile("deny_actions", &config.deny_actions)?,
            allow_commands: compile("allow_commands", &config.allow_commands)?,
            deny_commands: compile("deny_commands", &config.deny_commands)?,
            run_as_action,
            config,
        })
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Whether this policy lets everything run as the drone's own user.
    pub fn is_open(&self) -> bool {
        self.config == PolicyConfig::default()
    }

    /// Every user a request may run as, for the caller to look up at start.
    pub fn users(&self) -> Vec<(String, &str)> {
        let mut users = Vec::new();
        if let Some(name) = &self.config.run_as {
            users.push(("run_as".to_string(), name.as_str()));
        }
        for (i, (_, name)) in self.run_as_action.iter().enumerate() {
            users.push((format!("run_as_action[{i}].user"), name.as_str()));
        }
        users
    }

    /// The decision for one request; see the module docs for the order.
    pub fn decide(&self, request: PolicyRequest<'_>) -> PolicyDecision {
        let what = describe(request);
        let refuse = |rule: String, why: String| {
            PolicyDecision::Refuse(PolicyRefusal {
                reason: format!("refused by this drone's policy: {what} {why}; not run"),
                rule,
            })
        };
        if let Some(action) = request.action
            && let Some(pattern) = self.deny_actions.iter().find(|p| p.matches_action(action))
        {
            let rule = format!("deny_actions {:?}", pattern.source());
            return refuse(rule.clone(), format!("matches {rule}"));
        }
        let program = match request.program {
            Program::Argv(argv) => argv.first().map(String::as_str),
            Program::Shell(_) => {
                if !self.config.allow_shell {
                    return refuse(
                        "allow_shell = false".into(),
                        "is a shell command and allow_shell = false".into(),
                    );
                }
                Some(SHELL_PROGRAM)
            }
            Program::Script { .. } => None,
        };
        if let Some(program) = program
            && let Some(pattern) = self
                .deny_commands
                .iter()
                .find(|p| p.matches_program(program, false))
        {
            let rule = format!("deny_commands {:?}", pattern.source());
            return refuse(rule.clone(), format!("matches {rule}"));
        }
        let restricted = !self.allow_actions.is_empty() || !self.allow_commands.is_empty();
        let by_action = request
            .action
            .is_some_and(|action| self.allow_actions.iter().any(|p| p.matches_action(action)));
        let by_program = program.is_some_and(|program| {
            self.allow_commands
                .iter()
                .any(|p| p.matches_program(program, true))
        });
        if restricted && !by_action && !by_program {
            let lists: Vec<&str> = [
                (!self.allow_actions.is_empty()).then_some("allow_actions"),
                (!self.allow_commands.is_empty()).then_some("allow_commands"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let rule = lists.join(", ");
            let why = match (request.program, request.action) {
                (Program::Script { .. }, _) if self.allow_actions.is_empty() => format!(
                    "is a pack script, which allow_commands cannot name (allow its action in allow_actions), and {rule} allows nothing else"
                ),
                _ => format!("matches nothing in {rule}"),
            };
            return refuse(rule, why);
        }
        let run_as = request
            .action
            .and_then(|action| {
                self.run_as_action
                    .iter()
                    .find(|(p, _)| p.matches_action(action))
                    .map(|(_, user)| user.clone())
            })
            .or_else(|| self.config.run_as.clone());
        PolicyDecision::Run { run_as }
    }
}

/// "action `k8s.drain` (program `kubectl`)", "command `rm`", "shell command".
fn describe(request: PolicyRequest<'_>) -> String {
    let program = match request.program {
        Program::Argv(argv) => match argv.first() {
            Some(program) => format!("program `{}`", crate::echo::elide(program)),
            None => "an empty argv".to_string(),
        },
        Program::Shell(_) => format!("a shell command (program `{SHELL_PROGRAM}`)"),
        Program::Script { name, .. } => format!("pack script `{}`", crate::echo::elide(name)),
    };
    match request.action {
        Some(action) => format!("action `{}` ({program})", crate::echo::elide(action)),
        None => format!("ad-hoc command ({program})"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn policy(edit: impl FnOnce(&mut PolicyConfig)) -> DronePolicy {
        let mut config = PolicyConfig::default();
        edit(&mut config);
        DronePolicy::new(config).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn argv(items: &[&str]) -> Program {
        Program::Argv(strings(items))
    }

    fn script() -> Program {
        Program::Script {
            sha256: "ab".repeat(32),
            name: "scripts/restart.sh".into(),
            args: vec![],
        }
    }

    /// `Ok(run_as)` or `Err(rule)`.
    type Outcome = Result<Option<String>, String>;

    fn decide(policy: &DronePolicy, action: Option<&str>, program: &Program) -> Outcome {
        match policy.decide(PolicyRequest { action, program }) {
            PolicyDecision::Run { run_as } => Ok(run_as),
            PolicyDecision::Refuse(refusal) => Err(refusal.rule),
        }
    }

    #[test]
    fn the_default_policy_runs_everything_as_the_drones_own_user() {
        let open = policy(|_| {});
        assert!(open.is_open());
        for (action, program) in [
            (None, argv(&["rm", "-rf", "/tmp/x"])),
            (None, Program::Shell("echo hi".into())),
            (None, argv(&[])),
            (Some("core.local"), argv(&["/bin/true"])),
            (Some("linux.restart"), script()),
        ] {
            assert_eq!(
                decide(&open, action, &program),
                Ok(None),
                "{action:?} {program:?}"
            );
        }
    }

    #[test]
    fn each_documented_case_decides_as_documented() {
        let deny_rm = policy(|c| c.deny_commands = strings(&["rm", "/opt/*/danger"]));
        let only_actions = policy(|c| c.allow_actions = strings(&["core.*", "k8s.drain"]));
        let only_programs = policy(|c| c.allow_commands = strings(&["systemctl", "/usr/bin/*"]));
        let no_shell = policy(|c| c.allow_shell = false);
        let allow_sh = policy(|c| c.allow_commands = strings(&["sh"]));
        let both = policy(|c| {
            c.allow_actions = strings(&["linux.*"]);
            c.allow_commands = strings(&["uptime"]);
            c.deny_actions = strings(&["linux.reboot"]);
        });
        let sh = Program::Shell("touch /tmp/x".into());
        let cases: Vec<(&str, &DronePolicy, Option<&str>, Program, Outcome)> = vec![
            // A name pattern denies the program wherever it lives.
            (
                "deny by name",
                &deny_rm,
                None,
                argv(&["rm", "-f", "x"]),
                Err(r#"deny_commands "rm""#.into()),
            ),
            (
                "deny by name, any path",
                &deny_rm,
                None,
                argv(&["/bin/rm"]),
                Err(r#"deny_commands "rm""#.into()),
            ),
            (
                "deny by name, only the whole name",
                &deny_rm,
                None,
                argv(&["rmdir"]),
                Ok(None),
            ),
            (
                "deny by path",
                &deny_rm,
                None,
                argv(&["/opt/x/danger"]),
                Err(r#"deny_commands "/opt/*/danger""#.into()),
            ),
            (
                "deny by path, not elsewhere",
                &deny_rm,
                None,
                argv(&["/usr/bin/danger"]),
                Ok(None),
            ),
            (
                "deny applies to an action's command",
                &deny_rm,
                Some("core.local"),
                argv(&["rm"]),
                Err(r#"deny_commands "rm""#.into()),
            ),
            (
                "a pack script has no program to deny",
                &deny_rm,
                Some("linux.clean"),
                script(),
                Ok(None),
            ),
            // Only allow_actions: actions by name, nothing ad hoc.
            (
                "allowed action",
                &only_actions,
                Some("core.local"),
                argv(&["rm"]),
                Ok(None),
            ),
            (
                "allowed action by exact name",
                &only_actions,
                Some("k8s.drain"),
                script(),
                Ok(None),
            ),
            (
                "unlisted action",
                &only_actions,
                Some("k8s.delete"),
                argv(&["kubectl"]),
                Err("allow_actions".into()),
            ),
            (
                "ad-hoc under allow_actions",
                &only_actions,
                None,
                argv(&["true"]),
                Err("allow_actions".into()),
            ),
            // Only allow_commands: by program, for ad-hoc and actions alike.
            (
                "allowed by name",
                &only_programs,
                None,
                argv(&["systemctl", "restart", "nginx"]),
                Ok(None),
            ),
            (
                "allowed by name, any path",
                &only_programs,
                None,
                argv(&["/tmp/systemctl"]),
                Ok(None),
            ),
            (
                "allowed by path",
                &only_programs,
                None,
                argv(&["/usr/bin/uptime"]),
                Ok(None),
            ),
            (
                "a bare name is no path",
                &only_programs,
                None,
                argv(&["uptime"]),
                Err("allow_commands".into()),
            ),
            (
                "no escaping an allowed directory",
                &only_programs,
                None,
                argv(&["/usr/bin/../../tmp/x"]),
                Err("allow_commands".into()),
            ),
            (
                "no dot components",
                &only_programs,
                None,
                argv(&["/usr/bin/./x"]),
                Err("allow_commands".into()),
            ),
            (
                "no empty components",
                &only_programs,
                None,
                argv(&["/usr/bin//x"]),
                Err("allow_commands".into()),
            ),
            (
                "an action's command by program",
                &only_programs,
                Some("web.restart"),
                argv(&["systemctl"]),
                Ok(None),
            ),
            (
                "a pack script under allow_commands",
                &only_programs,
                Some("web.restart"),
                script(),
                Err("allow_commands".into()),
            ),
            (
                "a shell is /bin/sh, which the list does not name",
                &only_programs,
                None,
                sh.clone(),
                Err("allow_commands".into()),
            ),
            (
                "a shell is allowed as sh",
                &allow_sh,
                None,
                sh.clone(),
                Ok(None),
            ),
            (
                "an empty argv under allow_commands",
                &only_programs,
                None,
                argv(&[]),
                Err("allow_commands".into()),
            ),
            // Shell.
            (
                "shell refused",
                &no_shell,
                None,
                sh.clone(),
                Err("allow_shell = false".into()),
            ),
            (
                "shell refused in actions too",
                &no_shell,
                Some("core.remote"),
                sh.clone(),
                Err("allow_shell = false".into()),
            ),
            (
                "argv unaffected by allow_shell",
                &no_shell,
                None,
                argv(&["sh", "-c", "x"]),
                Ok(None),
            ),
            // Both allow lists: either allows; deny wins over both.
            (
                "allowed by action",
                &both,
                Some("linux.restart"),
                argv(&["systemctl"]),
                Ok(None),
            ),
            (
                "allowed by program",
                &both,
                None,
                argv(&["uptime"]),
                Ok(None),
            ),
            (
                "allowed by program inside an unlisted action",
                &both,
                Some("web.status"),
                argv(&["uptime"]),
                Ok(None),
            ),
            (
                "neither",
                &both,
                None,
                argv(&["ls"]),
                Err("allow_actions, allow_commands".into()),
            ),
            (
                "deny beats allow",
                &both,
                Some("linux.reboot"),
                argv(&["uptime"]),
                Err(r#"deny_actions "linux.reboot""#.into()),
            ),
        ];
        for (name, policy, action, program, expected) in cases {
            assert_eq!(decide(policy, action, &program), expected, "{name}");
        }
    }

    #[test]
    fn run_as_takes_the_first_matching_action_then_the_default() {
        let p = policy(|c| {
            c.run_as = Some("nobody".into());
            c.run_as_action = vec![
                RunAsAction {
                    action: "k8s.*".into(),
                    user: "kube".into(),
                },
                RunAsAction {
                    action: "*".into(),
                    user: "ops".into(),
                },
            ];
        });
        assert_eq!(
            decide(&p, Some("k8s.drain"), &argv(&["kubectl"])),
            Ok(Some("kube".into()))
        );
        assert_eq!(
            decide(&p, Some("linux.uptime"), &argv(&["uptime"])),
            Ok(Some("ops".into()))
        );
        assert_eq!(decide(&p, None, &argv(&["id"])), Ok(Some("nobody".into())));
        let users: Vec<_> = p
            .users()
            .into_iter()
            .map(|(k, u)| format!("{k}={u}"))
            .collect();
        assert_eq!(
            users,
            [
                "run_as=nobody",
                "run_as_action[0].user=kube",
                "run_as_action[1].user=ops"
            ]
        );
        assert!(!p.is_open());
    }

    #[test]
    fn a_refusal_names_what_was_asked_and_the_rule() {
        let p = policy(|c| c.deny_commands = strings(&["touch"]));
        let PolicyDecision::Refuse(refusal) = p.decide(PolicyRequest {
            action: None,
            program: &argv(&["/usr/bin/touch", "/tmp/x"]),
        }) else {
            panic!("not refused");
        };
        assert_eq!(
            refusal.reason,
            r#"refused by this drone's policy: ad-hoc command (program `/usr/bin/touch`) matches deny_commands "touch"; not run"#
        );
        let p = policy(|c| c.allow_commands = strings(&["uptime"]));
        let PolicyDecision::Refuse(refusal) = p.decide(PolicyRequest {
            action: Some("linux.restart"),
            program: &script(),
        }) else {
            panic!("not refused");
        };
        assert!(
            refusal
                .reason
                .contains("action `linux.restart` (pack script `scripts/restart.sh`)"),
            "{}",
            refusal.reason
        );
        assert!(
            refusal.reason.contains("allow its action in allow_actions"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn bad_patterns_and_users_are_refused_naming_the_key() {
        let error = |edit: fn(&mut PolicyConfig)| {
            let mut config = PolicyConfig::default();
            edit(&mut config);
            DronePolicy::new(config).unwrap_err().to_string()
        };
        assert_eq!(
            error(|c| c.deny_commands = strings(&["rm", "[a-"])),
            r#"[policy] deny_commands[1]: pattern "[a-" has a `[` that is never closed"#
        );
        assert_eq!(
            error(|c| c.allow_actions = strings(&["[z-a]"])),
            r#"[policy] allow_actions[0]: pattern "[z-a]" has the empty range z-a"#
        );
        assert_eq!(
            error(|c| c.allow_commands = strings(&[" "])),
            "[policy] allow_commands[0]: an empty pattern matches nothing; remove it"
        );
        assert_eq!(
            error(|c| c.run_as = Some(String::new())),
            r#"[policy] run_as: "" is not a user name"#
        );
        assert_eq!(
            error(|c| c.run_as_action = vec![RunAsAction {
                action: "x.*".into(),
                user: "a:b".into()
            }]),
            r#"[policy] run_as_action[0].user: "a:b" is not a user name"#
        );
    }

    #[test]
    fn the_table_deserializes_with_defaults_and_refuses_unknown_keys() {
        let config: PolicyConfig = serde_json::from_str(
            r#"{"deny_commands": ["rm"], "run_as_action": [{"action": "k8s.*", "user": "kube"}]}"#,
        )
        .unwrap();
        assert!(config.allow_shell);
        assert_eq!(config.deny_commands, ["rm"]);
        assert_eq!(config.run_as_action[0].user, "kube");
        assert!(serde_json::from_str::<PolicyConfig>(r#"{"deny_command": ["rm"]}"#).is_err());
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("rm".to_string()),
            Just("/bin/rm".to_string()),
            Just("/usr/bin/../x".to_string()),
            Just("core.local".to_string()),
            "[a-c/.]{0,6}",
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            Just("rm".to_string()),
            "[a-c/.*?]{1,5}"
        ]
    }

    fn program() -> impl Strategy<Value = Program> {
        prop_oneof![
            proptest::collection::vec(word(), 0..3).prop_map(Program::Argv),
            word().prop_map(Program::Shell),
            Just(script()),
        ]
    }

    fn config() -> impl Strategy<Value = PolicyConfig> {
        let list = || proptest::collection::vec(pattern(), 0..3);
        (list(), list(), list(), list(), any::<bool>()).prop_map(
            |(allow_actions, deny_actions, allow_commands, deny_commands, allow_shell)| {
                PolicyConfig {
                    allow_actions,
                    deny_actions,
                    allow_commands,
                    deny_commands,
                    allow_shell,
                    ..PolicyConfig::default()
                }
            },
        )
    }

    fn program_of(program: &Program) -> Option<&str> {
        match program {
            Program::Argv(argv) => argv.first().map(String::as_str),
            Program::Shell(_) => Some(SHELL_PROGRAM),
            Program::Script { .. } => None,
        }
    }

    proptest! {
        #[test]
        fn what_is_denied_never_runs_whatever_is_allowed(
            config in config(),
            action in proptest::option::of(word()),
            program in program(),
        ) {
            let policy = DronePolicy::new(config.clone()).unwrap();
            let decision = policy.decide(PolicyRequest { action: action.as_deref(), program: &program });
            let denied_action = action.as_deref().is_some_and(|a| {
                config.deny_actions.iter().any(|p| Glob::new(p).unwrap().matches(a, false))
            });
            let denied_program = program_of(&program).is_some_and(|prog| {
                config.deny_commands.iter().any(|p| Pattern::compile("k", 0, p).unwrap().matches_program(prog, false))
            });
            let denied_shell = matches!(program, Program::Shell(_)) && !config.allow_shell;
            if denied_action || denied_program || denied_shell {
                prop_assert!(matches!(decision, PolicyDecision::Refuse(_)), "{decision:?}");
            }
            // Whatever runs was allowed by a list, or no list restricts.
            if matches!(decision, PolicyDecision::Run { .. })
                && !(config.allow_actions.is_empty() && config.allow_commands.is_empty())
            {
                let by_action = action.as_deref().is_some_and(|a| {
                    config.allow_actions.iter().any(|p| Glob::new(p).unwrap().matches(a, false))
                });
                let by_program = program_of(&program).is_some_and(|prog| {
                    config.allow_commands.iter().any(|p| Pattern::compile("k", 0, p).unwrap().matches_program(prog, true))
                });
                prop_assert!(by_action || by_program);
            }
        }

        #[test]
        fn with_no_lists_only_the_shell_switch_refuses(
            action in proptest::option::of(word()),
            program in program(),
            allow_shell in any::<bool>(),
        ) {
            let policy = DronePolicy::new(PolicyConfig { allow_shell, ..PolicyConfig::default() }).unwrap();
            let refused = matches!(
                policy.decide(PolicyRequest { action: action.as_deref(), program: &program }),
                PolicyDecision::Refuse(_)
            );
            prop_assert_eq!(refused, !allow_shell && matches!(program, Program::Shell(_)));
        }

        #[test]
        fn adding_a_deny_pattern_never_lets_more_run(
            config in config(),
            extra in pattern(),
            action in proptest::option::of(word()),
            program in program(),
        ) {
            let request = PolicyRequest { action: action.as_deref(), program: &program };
            let before = DronePolicy::new(config.clone()).unwrap().decide(request);
            let mut stricter = config;
            stricter.deny_commands.push(extra.clone());
            stricter.deny_actions.push(extra);
            let after = DronePolicy::new(stricter).unwrap().decide(request);
            if matches!(before, PolicyDecision::Refuse(_)) {
                prop_assert!(matches!(after, PolicyDecision::Refuse(_)));
            }
        }
    }
}
