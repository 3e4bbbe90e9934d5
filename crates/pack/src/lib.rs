//! Ultron8 packs: a pack's files in, a validated [`Pack`] out, or every
//! [`Problem`] with its `file:line:column`.
//!
//! Installing a pack is all or nothing: [`load`] checks every file, and
//! every file against the others and against what is installed, before
//! anything is accepted. One problem anywhere rejects the pack, and the
//! error lists all of them, so an author fixes a pack in one round.
//!
//! [`load`] is pure. The only I/O is in [`source`], which reads a pack from
//! a directory or a `.tar.gz` into [`PackFiles`].
//!
//! # Pack authoring reference
//!
//! A pack is a directory (or a `.tar.gz` of one, optionally under a single
//! top-level directory such as `linux-1.2.0/`):
//!
//! ```text
//! linux/
//!   pack.yaml                   the manifest (required)
//!   actions/<name>.yaml         one action per file
//!   rules/<name>.yaml           one rule per file
//!   sensors/<name>.yaml         one sensor per file, with a `kind` (check, probe, source)
//!   scripts/...                 files used by `script` actions and checks, any layout
//!   README.md, LICENSE, ...     top-level documentation, not installed
//! ```
//!
//! Nothing is silently ignored: any other directory, a YAML file at the top
//! other than `pack.yaml`, a file in `actions/`, `rules/` or `sensors/` not
//! named `<name>.yaml`, a sensor whose `kind` is missing or unknown, and
//! anything in `workflows/` (reserved: not supported yet) is a problem. Names starting with `.` (`.git/`) are
//! skipped when reading a directory or an archive.
//!
//! Objects are referred to as `pack.name`. Pack, action, rule and parameter
//! names are `[a-z][a-z0-9_]*`, at most 64 characters. An action's or a
//! rule's `name` must equal its file name without `.yaml`.
//!
//! ## YAML
//!
//! Files are UTF-8 YAML 1.2, one document each. Scalars follow the core
//! schema: `yes`/`no`/`on`/`off` are strings, `true`/`false` booleans, and a
//! quoted value is always a string (`"8080"`). Anchors, aliases and custom
//! tags are refused; nesting is limited to 64 levels. Every key is checked:
//! a misspelt key (`paramters`) is an error, never ignored. A key written
//! with no value (`parameters:`) counts as absent.
//!
//! Durations are written `30s`, `5m`, `1h 30m` and must be longer than zero.
//!
//! ## `pack.yaml`
//!
//! ```yaml
//! name: linux            # required; the reference prefix
//! version: 1.2.0         # required; semver MAJOR.MINOR.PATCH
//! description: Linux host remediation
//! author: SRE <sre@example.com>
//! dependencies: [core]   # packs whose actions this pack's rules use;
//!                        # each must be installed first
//! ```
//!
//! ## `actions/<name>.yaml`
//!
//! ```yaml
//! name: restart_service                     # required
//! description: Restart a systemd service
//! runner: shell                             # required: shell | script | http | noop | escalate
//! command: ["systemctl", "restart", "{{ service }}"]
//! env: { SYSTEMD_COLORS: "0" }
//! timeout: 60s
//! parameters:
//!   service: { type: string, required: true, description: Unit name }
//!   force:   { type: boolean, default: false }
//!   token:   { type: string, secret: true }
//!   level:   { type: string, enum: [low, high], default: low }
//! ```
//!
//! Runners, and the keys each takes (a key of another runner is an error):
//!
//! - `shell`, on the drones: exactly one of `command` (argv, run without a
//!   shell; at least the program) or `shell` (a script for `/bin/sh -c`;
//!   quote parameters with `| shell_quote`). Optional `env`.
//! - `script`, on the drones: `script: scripts/restart.sh`, a file of this
//!   pack under `scripts/`; its SHA-256 is recorded at install. Optional
//!   `args` (a list) and `env`.
//! - `http`, a request the hive makes:
//!   `http: {method, url, headers, body, expect_status}`. `method` (required)
//!   is one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS (any case;
//!   stored upper case). `url` (required) starts with `https://` or
//!   `http://`, or with a template (`{{ url }}`, for generic webhook
//!   actions), whose rendered value the hive checks is http(s) before
//!   sending. `headers` maps header names to values; `body` is a string;
//!   `expect_status` lists the statuses that mean success (100-599; left
//!   out, any 2xx).
//! - `noop`: does nothing; for rules that only record or escalate.
//! - `escalate`, in the hive: raises `core.escalation` with the firing's
//!   rule and event and the action's `reason` parameter (required, a
//!   string).
//!
//! Every `command` element, `shell`, `args` element, `env` value, and the
//! `url`, header values and `body` are templates over the parameters:
//! reading anything but a declared parameter (`{{ servce }}`) is an error.
//!
//! Parameters: `type` (required) is one of string, integer, number,
//! boolean, array, object. `required` (default false), `default`, `enum` (a
//! non-empty list), `secret` (masked everywhere; default false) and
//! `description` are optional. The `default` and every `enum` value must
//! have the parameter's type, and the default must be in the enum. A
//! required parameter cannot have a default (it would never be required),
//! and a secret one can only default to `""` (anything else would sit in the
//! pack in clear text). Names that templates reserve (`not`, `in`, `true`,
//! ...) are refused.
//!
//! ## `rules/<name>.yaml`
//!
//! ```yaml
//! name: restart_on_probe_failure           # required
//! description: Restart the unit behind a failing probe
//! enabled: true                            # default true
//! trigger: alertmanager.alert              # required: a built-in trigger type
//! criteria:                                # all must hold
//!   - {path: status, op: equals, value: firing}
//!   - {path: labels.alertname, op: equals, value: ProbeFailed}
//!   - any:
//!       - {path: labels.severity, op: in, value: [critical, page]}
//!   - not: {path: labels.env, op: equals, value: dev}
//! action:                                  # required
//!   ref: linux.restart_service             # pack.action
//!   target: "{{ labels.instance }}"
//!   parameters:
//!     service: "{{ labels.service }}"
//! policy:
//!   cooldown: {key: "{{ labels.instance }}", period: 10m}
//!   max_concurrent: 2
//!   blast_radius: {max_hosts: 3, max_percent: 20, window: 1h}
//! ```
//!
//! - `trigger` is one of `ultron8_core::triggers::BUILT_IN`. Timers take
//!   `trigger_parameters`: `core.interval` needs `every: 5m`; `core.cron`
//!   needs `schedule: "*/5 * * * *"` and may add `timezone: Europe/Paris`.
//!   Other triggers take none.
//! - `criteria` is a list, never a mapping (so YAML cannot silently drop a
//!   duplicate). An item is a match `{path, op, value}` (`value` left out
//!   for `exists`/`nexists`) or a group: `any: [...]`, `all: [...]` or
//!   `not: {...}`, nesting freely. Operators: equals, iequals, nequals,
//!   contains, icontains, startswith, endswith, regex, iregex, wildcard, gt,
//!   lt, exists, nexists, in, nin, timediff_lt, timediff_gt.
//! - `action.ref` names an action of this pack, or of an installed pack
//!   listed in `dependencies`. `action.parameters` may only name the
//!   action's parameters, and must give every required one that has no
//!   default. A value without template syntax is checked against the
//!   parameter's type and enum at install.
//! - `action.target` renders a target expression (`web-*`,
//!   `label:role=web and not web-3`); it is required for `shell` and
//!   `script` actions, which run on drones. Written without templates, it
//!   is parsed at install.
//! - Templates in a rule (`target`, every string inside parameter values,
//!   the cooldown `key`) render over the trigger's payload: they, and the
//!   first field of every criterion `path`, may only use the trigger's
//!   top-level payload fields (unchecked for free-form payloads such as
//!   `core.webhook`).
//! - `policy`: `cooldown` (`key` and `period`, both required),
//!   `max_concurrent` (at least 1), `blast_radius` (`window` required, and
//!   `max_hosts` at least 1 and/or `max_percent` in (0, 100]).
//!
//! ## `sensors/<name>.yaml`
//!
//! The `kind` chooses the format; `check` is a command drones run on an
//! interval (see `docs/packs.md`, "Checks"):
//!
//! ```yaml
//! kind: check
//! name: node_ok                      # default: the file name
//! targets: "label:role=k8s-node"     # default "*"
//! command: [/usr/local/bin/node-check, --quick]   # or shell: "...", or script: x.sh + args
//! interval: 30s                      # default 30s, at least 100ms
//! timeout: 10s                       # default min(10s, interval/2); < interval
//! failure_threshold: 4               # default 3
//! success_threshold: 2               # default 1
//! flap: {max_changes: 5, window: 10m}   # default; `false` for none
//! ```
//!
//! ## Problems
//!
//! Each [`Problem`] renders as `file:line:column: message`, 1-based, at
//! the YAML node concerned; a problem about a whole file points at `1:1`.
//! They are sorted by file and position.

mod action;
mod check;
pub mod discovery_source;
mod loader;
mod manifest;
mod model;
mod probe;
mod problem;
mod rule;
mod sensor;
pub mod source;
mod templates;
mod text;
mod yaml;

pub use loader::load;
pub use model::{
    Action, Check, Installed, Manifest, NothingInstalled, Pack, PackFiles, Probe, Rule, RuleAction,
    Runner, Script, ShellProgram,
};
pub use problem::Problem;
pub use source::{Limits, SourceError, read_dir, read_tarball};
