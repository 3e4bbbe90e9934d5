//! The drone's own policy in force: the `[policy]` table of `drone.toml`
//! (decided by [`ultron8_core::drone_policy`]) with its users looked up.
//!
//! Everything that can be wrong with the table is found when the drone
//! starts, never when a request arrives: a bad pattern, a user this host
//! does not have, or a user the drone cannot become (only root can run a
//! command as someone else). A drone that starts runs each permitted
//! request as its user and refuses the others with the rule that refused
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use chrono::Utc;
use ultron8_core::ExecutionStatus;
use ultron8_core::drone_policy::{DronePolicy, PolicyDecision, PolicyRefusal, PolicyRequest};
use ultron8_proto::convert::command_from_wire;
use ultron8_proto::v1;

use crate::config::{DroneDir, DroneFile};
use crate::spool::SpooledReport;

/// A user a command runs as, looked up at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Whether the drone must switch user: false when the user is the
    /// drone's own, which needs no privilege.
    pub switch: bool,
}

#[derive(Debug, Clone)]
pub struct Policy {
    rules: DronePolicy,
    users: BTreeMap<String, RunAs>,
}

impl Policy {
    /// Checks the `[policy]` table of `file` (read from `path`) and looks up
    /// its users; every error names the file and the key.
    pub fn load(file: &DroneFile, path: &Path) -> anyhow::Result<Policy> {
        let rules = DronePolicy::new(file.policy.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let own_uid = nix::unistd::geteuid();
        let own_gid = nix::unistd::getegid();
        let mut users = BTreeMap::new();
        for (key, name) in rules.users() {
            if users.contains_key(name) {
                continue;
            }
            let user = match nix::unistd::User::from_name(name) {
                Ok(Some(user)) => user,
                Ok(None) => bail!(
                    "{}: [policy] {key}: this host has no user {name:?}; create it or change {key}",
                    path.display()
                ),
                Err(e) => bail!(
                    "{}: [policy] {key}: cannot look up user {name:?}: {e}",
                    path.display()
                ),
            };
            let switch = user.uid != own_uid || user.gid != own_gid;
            if switch && !own_uid.is_root() {
                bail!(
                    "{}: [policy] {key}: the drone runs as uid {own_uid}, not root, so it cannot run commands as {name:?} (uid {}); run the drone as root or remove {key}",
                    path.display(),
                    user.uid
                );
            }
            users.insert(
                name.to_string(),
                RunAs {
                    name: name.to_string(),
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    home: user.dir,
                    switch,
                },
            );
        }
        Ok(Policy { rules, users })
    }

    /// Reads `drone.toml` in `dir` and checks it as `run` does.
    pub fn check(dir: &DroneDir) -> anyhow::Result<Policy> {
        let file = dir.load()?;
        Policy::load(&file, &dir.config())
    }

    /// The policy as one line for the start-up log.
    pub fn describe(&self) -> String {
        if self.rules.is_open() {
            return "no [policy] in drone.toml: every verified request runs, as the drone's own user"
                .to_string();
        }
        let c = self.rules.config();
        let list = |items: &[String]| {
            if items.is_empty() {
                "[]".to_string()
            } else {
                format!("{items:?}")
            }
        };
        let mut text = format!(
            "allow_actions={} deny_actions={} allow_commands={} deny_commands={} allow_shell={} run_as={}",
            list(&c.allow_actions),
            list(&c.deny_actions),
            list(&c.allow_commands),
            list(&c.deny_commands),
            c.allow_shell,
            c.run_as.as_deref().unwrap_or("(the drone's own user)"),
        );
        for rule in &c.run_as_action {
            text.push_str(&format!(" run_as_action[{:?}]={}", rule.action, rule.user));
        }
        text
    }

    /// The user to run a verified request as, or the report of its refusal
    /// (`failed`, naming the rule). A command that does not decode passes:
    /// the executor fails it without running anything.
    pub fn decide(&self, request: &v1::ActionRequest) -> Result<Option<RunAs>, Box<SpooledReport>> {
        let Ok(command) = command_from_wire(request.command.clone()) else {
            return Ok(None);
        };
        let action = (!request.action.is_empty()).then_some(request.action.as_str());
        match self.rules.decide(PolicyRequest {
            action,
            program: &command.program,
        }) {
            PolicyDecision::Run { run_as: None } => Ok(None),
            PolicyDecision::Run { run_as: Some(name) } => match self.users.get(&name) {
                Some(user) => Ok(Some(user.clone())),
                // `load` looked up every user the rules can name.
                None => Err(refused(
                    request,
                    &PolicyRefusal {
                        rule: "run_as".into(),
                        reason: format!("user {name:?} was not looked up at start; not run"),
                    },
                )),
            },
            PolicyDecision::Refuse(refusal) => Err(refused(request, &refusal)),
        }
    }
}

impl Policy {
    /// The user to run a check as, or why this host's policy refuses it. A
    /// check is judged as an action named by its `pack.name`, with its
    /// program: `deny_actions`, `allow_actions`, `run_as_action` and the
    /// command rules apply to it as to a pack action.
    pub fn decide_check(
        &self,
        reference: &str,
        program: &ultron8_core::Program,
    ) -> Result<Option<RunAs>, PolicyRefusal> {
        match self.rules.decide(PolicyRequest {
            action: Some(reference),
            program,
        }) {
            PolicyDecision::Run { run_as: None } => Ok(None),
            PolicyDecision::Run { run_as: Some(name) } => self
                .users
                .get(&name)
                .cloned()
                .map(Some)
                .ok_or(PolicyRefusal {
                    rule: "run_as".into(),
                    reason: format!("user {name:?} was not looked up at start; not run"),
                }),
            PolicyDecision::Refuse(refusal) => Err(refusal),
        }
    }
}

fn refused(request: &v1::ActionRequest, refusal: &PolicyRefusal) -> Box<SpooledReport> {
    let now = Utc::now().timestamp_millis();
    Box::new(SpooledReport {
        policy_rule: Some(refusal.rule.clone()),
        ..SpooledReport::without_output(
            &request.execution_id,
            &request.job_id,
            ExecutionStatus::Failed,
            refusal.reason.clone(),
            0,
            now,
        )
    })
}
