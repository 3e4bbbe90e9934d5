//! Conversions between `v1` wire messages and `ultron8_core` types.
//!
//! Wire input is untrusted: conversions from the wire are fallible and say
//! which field is wrong.

use ultron8_core::{CommandSpec, DroneFacts, ExecutionStatus, HostStats, Program};

use crate::v1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub fn status_to_wire(status: ExecutionStatus) -> v1::ExecutionStatus {
    match status {
        ExecutionStatus::Requested => v1::ExecutionStatus::Requested,
        ExecutionStatus::Dispatched => v1::ExecutionStatus::Dispatched,
        ExecutionStatus::Running => v1::ExecutionStatus::Running,
        ExecutionStatus::Succeeded => v1::ExecutionStatus::Succeeded,
        ExecutionStatus::Failed => v1::ExecutionStatus::Failed,
        ExecutionStatus::TimedOut => v1::ExecutionStatus::TimedOut,
        ExecutionStatus::Rejected => v1::ExecutionStatus::Rejected,
        ExecutionStatus::Expired => v1::ExecutionStatus::Expired,
        ExecutionStatus::Lost => v1::ExecutionStatus::Lost,
        ExecutionStatus::Canceled => v1::ExecutionStatus::Canceled,
    }
}

pub fn status_from_wire(value: i32) -> Result<ExecutionStatus, WireError> {
    let invalid = |reason: String| WireError::Invalid {
        field: "status",
        reason,
    };
    let status = v1::ExecutionStatus::try_from(value)
        .map_err(|_| invalid(format!("unknown value {value}")))?;
    Ok(match status {
        v1::ExecutionStatus::Unspecified => return Err(invalid("unspecified".into())),
        v1::ExecutionStatus::Requested => ExecutionStatus::Requested,
        v1::ExecutionStatus::Dispatched => ExecutionStatus::Dispatched,
        v1::ExecutionStatus::Running => ExecutionStatus::Running,
        v1::ExecutionStatus::Succeeded => ExecutionStatus::Succeeded,
        v1::ExecutionStatus::Failed => ExecutionStatus::Failed,
        v1::ExecutionStatus::TimedOut => ExecutionStatus::TimedOut,
        v1::ExecutionStatus::Rejected => ExecutionStatus::Rejected,
        v1::ExecutionStatus::Expired => ExecutionStatus::Expired,
        v1::ExecutionStatus::Lost => ExecutionStatus::Lost,
        v1::ExecutionStatus::Canceled => ExecutionStatus::Canceled,
    })
}

pub fn command_to_wire(command: &CommandSpec) -> v1::Command {
    v1::Command {
        program: Some(match &command.program {
            Program::Argv(args) => v1::command::Program::Argv(v1::Argv { args: args.clone() }),
            Program::Shell(script) => v1::command::Program::Shell(script.clone()),
            Program::Script { sha256, name, args } => {
                v1::command::Program::Script(v1::ScriptProgram {
                    sha256: sha256.clone(),
                    name: name.clone(),
                    args: args.clone(),
                })
            }
        }),
        env: command.env.clone().into_iter().collect(),
        working_dir: command.working_dir.clone().unwrap_or_default(),
        timeout_ms: command.timeout_ms.unwrap_or(0),
        output_limit_bytes: command.output_limit_bytes.unwrap_or(0),
        redact: command.redact.clone(),
        secret_env: command.secret_env.clone().into_iter().collect(),
    }
}

pub fn command_from_wire(command: Option<v1::Command>) -> Result<CommandSpec, WireError> {
    let command = command.ok_or(WireError::Missing { field: "command" })?;
    let program = match command.program {
        Some(v1::command::Program::Argv(argv)) if argv.args.is_empty() => {
            return Err(WireError::Invalid {
                field: "command.argv",
                reason: "no program given".into(),
            });
        }
        Some(v1::command::Program::Argv(argv)) => Program::Argv(argv.args),
        Some(v1::command::Program::Shell(script)) if script.trim().is_empty() => {
            return Err(WireError::Invalid {
                field: "command.shell",
                reason: "empty script".into(),
            });
        }
        Some(v1::command::Program::Shell(script)) => Program::Shell(script),
        Some(v1::command::Program::Script(script)) => {
            let valid_hash =
                script.sha256.len() == 64 && script.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid_hash {
                return Err(WireError::Invalid {
                    field: "command.script.sha256",
                    reason: "not a SHA-256 in hex".into(),
                });
            }
            Program::Script {
                sha256: script.sha256.to_ascii_lowercase(),
                name: script.name,
                args: script.args,
            }
        }
        None => {
            return Err(WireError::Missing {
                field: "command.program",
            });
        }
    };
    let nonzero = |v: u64| (v != 0).then_some(v);
    Ok(CommandSpec {
        program,
        env: command.env.into_iter().collect(),
        working_dir: Some(command.working_dir).filter(|d| !d.is_empty()),
        timeout_ms: nonzero(command.timeout_ms),
        output_limit_bytes: nonzero(command.output_limit_bytes),
        redact: command.redact,
        secret_env: command.secret_env.into_iter().collect(),
    })
}

pub fn facts_to_wire(facts: &DroneFacts) -> v1::DroneFacts {
    v1::DroneFacts {
        hostname: facts.hostname.clone(),
        os: facts.os.clone(),
        os_version: facts.os_version.clone(),
        kernel: facts.kernel.clone(),
        arch: facts.arch.clone(),
        cpus: facts.cpus,
        memory_bytes: facts.memory_bytes,
        labels: facts.labels.clone().into_iter().collect(),
        agent_version: facts.agent_version.clone(),
    }
}

pub fn facts_from_wire(facts: v1::DroneFacts) -> DroneFacts {
    DroneFacts {
        hostname: facts.hostname,
        os: facts.os,
        os_version: facts.os_version,
        kernel: facts.kernel,
        arch: facts.arch,
        cpus: facts.cpus,
        memory_bytes: facts.memory_bytes,
        labels: facts.labels.into_iter().collect(),
        agent_version: facts.agent_version,
    }
}

pub fn stats_to_wire(stats: &HostStats) -> v1::HostStats {
    v1::HostStats {
        cpu_percent: stats.cpu_percent,
        memory_percent: stats.memory_percent,
        disk_percent: stats.disk_percent,
        load1: stats.load1,
        load5: stats.load5,
        load15: stats.load15,
        uptime_seconds: stats.uptime_seconds,
        collected_at_ms: stats.collected_at_ms,
    }
}

pub fn stats_from_wire(stats: v1::HostStats) -> HostStats {
    HostStats {
        cpu_percent: stats.cpu_percent,
        memory_percent: stats.memory_percent,
        disk_percent: stats.disk_percent,
        load1: stats.load1,
        load5: stats.load5,
        load15: stats.load15,
        uptime_seconds: stats.uptime_seconds,
        collected_at_ms: stats.collected_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips() {
        for status in ExecutionStatus::ALL {
            assert_eq!(status_from_wire(status_to_wire(status) as i32), Ok(status));
        }
        assert!(status_from_wire(0).is_err());
        assert!(status_from_wire(99).is_err());
    }

    #[test]
    fn commands_round_trip_and_empty_programs_are_refused() {
        let command = CommandSpec {
            program: Program::Argv(vec!["echo".into(), "hi".into()]),
            env: [("A".to_string(), "1".to_string())].into(),
            working_dir: Some("/tmp".into()),
            timeout_ms: Some(5000),
            output_limit_bytes: None,
            redact: vec!["secret".into()],
            secret_env: [("TOKEN".to_string(), "api_token".to_string())].into(),
        };
        assert_eq!(
            command_from_wire(Some(command_to_wire(&command))),
            Ok(command)
        );
        let empty = v1::Command {
            program: Some(v1::command::Program::Argv(v1::Argv { args: vec![] })),
            ..Default::default()
        };
        assert!(command_from_wire(Some(empty)).is_err());
        assert_eq!(
            command_from_wire(None),
            Err(WireError::Missing { field: "command" })
        );
    }
}
