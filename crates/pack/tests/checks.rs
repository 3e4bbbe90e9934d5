//! One test (at least) per check `load` makes, each asserting the problem's
//! position and words.

// Test code: a failed setup step should panic where it happened.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Fake, MANIFEST, STOP_SERVICE, assert_problem, files, problems};
use ultron8_pack::{NothingInstalled, PackFiles, load};

/// pack.yaml, the stop_service action, and `extra`.
fn pack_with(extra: &[(&str, &str)]) -> PackFiles {
    let mut all = vec![
        ("pack.yaml", MANIFEST),
        ("actions/stop_service.yaml", STOP_SERVICE),
    ];
    all.extend_from_slice(extra);
    files(&all)
}

fn action_problems(yaml: &str) -> Vec<String> {
    problems(&pack_with(&[("actions/a.yaml", yaml)]), &NothingInstalled)
}

fn rule_problems(yaml: &str) -> Vec<String> {
    problems(&pack_with(&[("rules/r.yaml", yaml)]), &Fake::with_chatops())
}

fn rule_loads(yaml: &str) -> ultron8_pack::Rule {
    let pack =
        load(&pack_with(&[("rules/r.yaml", yaml)]), &Fake::with_chatops()).unwrap_or_else(|p| {
            panic!(
                "{}",
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
    pack.rules.into_iter().next().expect("one rule")
}

// --- files and YAML ---------------------------------------------------------

#[test]
fn a_pack_without_pack_yaml_is_refused() {
    let p = problems(
        &files(&[("actions/stop_service.yaml", STOP_SERVICE)]),
        &NothingInstalled,
    );
    assert_problem(
        &p,
        "pack.yaml:1:1: missing pack.yaml; every pack has one at its root",
    );
    let p = problems(&files(&[("pack.yml", MANIFEST)]), &NothingInstalled);
    assert_problem(
        &p,
        "pack.yaml:1:1: missing pack.yaml; every pack has one at its root (found pack.yml: rename it to pack.yaml)",
    );
    assert_problem(&p, "pack.yml:1:1: unexpected file `pack.yml`");
}

#[test]
fn bad_yaml_is_reported_at_the_parser_position() {
    let p = action_problems("name: a\nrunner: noop\ndescription: \"unterminated\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("actions/a.yaml:3:14: invalid YAML: "),
        "{p:?}"
    );
    let p = action_problems("name: a\nrunner: noop\nparameters: {a: 1\n");
    assert!(
        p[0].starts_with("actions/a.yaml:4:1: invalid YAML: "),
        "{p:?}"
    );
}

#[test]
fn files_that_are_not_utf8_or_empty_are_refused() {
    let mut pack = pack_with(&[]);
    pack.insert("actions/a.yaml".into(), b"name: a\nrunner: \xff\n".to_vec());
    let p = problems(&pack, &NothingInstalled);
    assert_problem(&p, "actions/a.yaml:2:9: not valid UTF-8 text");
    let p = action_problems("");
    assert_problem(
        &p,
        "actions/a.yaml:1:1: the file is empty; expected an action (a mapping)",
    );
    let p = action_problems("- name: a\n");
    assert_problem(
        &p,
        "actions/a.yaml:1:1: expected an action (a mapping), found a list",
    );
}

#[test]
fn duplicate_keys_are_reported_with_both_positions() {
    let p = action_problems("name: a\nrunner: noop\nname: a\n");
    assert_problem(
        &p,
        "actions/a.yaml:3:1: duplicate key `name` (first at line 1, column 1)",
    );
}

#[test]
fn unexpected_files_and_directories_are_named() {
    let p = problems(
        &pack_with(&[
            ("actions/nested/a.yaml", "name: a\n"),
            ("actions/a.yml", "name: a\n"),
            ("rules/README", "x"),
            ("tests/test_a.yaml", "x"),
            ("config.yaml", "x"),
        ]),
        &NothingInstalled,
    );
    assert_problem(
        &p,
        "actions/nested/a.yaml:1:1: actions/ holds <name>.yaml files only, not subdirectories",
    );
    assert_problem(
        &p,
        "actions/a.yml:1:1: unexpected file in actions/: expected actions/<name>.yaml; rename it to actions/a.yaml",
    );
    assert_problem(
        &p,
        "rules/README:1:1: unexpected file in rules/: expected rules/<name>.yaml",
    );
    assert_problem(
        &p,
        "tests/test_a.yaml:1:1: unknown directory `tests/` (a pack has",
    );
    assert_problem(&p, "config.yaml:1:1: unexpected file `config.yaml`");
    assert_eq!(p.len(), 5, "{p:#?}");
}

#[test]
fn paths_that_escape_are_refused_even_from_hand_built_files() {
    let p = problems(
        &pack_with(&[("actions/../../etc/passwd", "x"), ("/abs.yaml", "x")]),
        &NothingInstalled,
    );
    assert_problem(
        &p,
        "actions/../../etc/passwd:1:1: not a plain relative path inside the pack",
    );
    assert_problem(
        &p,
        "/abs.yaml:1:1: not a plain relative path inside the pack",
    );
}

#[test]
fn problems_are_sorted_and_render_as_file_line_column() {
    let p = load(
        &files(&[
            ("pack.yaml", "name: linux\nversion: 1.0.0\ncolour: red\n"),
            ("actions/b.yaml", "name: b\nrunner: nope\n"),
            ("actions/a.yaml", "name: a\n"),
        ]),
        &NothingInstalled,
    )
    .unwrap_err();
    let rendered: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "actions/a.yaml:1:1: missing required key `runner`",
            "actions/b.yaml:2:9: unknown runner `nope` (runners: shell, script, http, noop, escalate)",
            "pack.yaml:3:1: unknown key `colour` (expected one of: name, version, description, author, dependencies)",
        ]
    );
    assert_eq!((p[0].line, p[0].column), (1, 1));
}

// --- pack.yaml --------------------------------------------------------------

#[test]
fn manifest_names_versions_and_required_keys() {
    let p = problems(
        &files(&[("pack.yaml", "description: x\n")]),
        &NothingInstalled,
    );
    assert_problem(&p, "pack.yaml:1:1: missing required key `name`");
    assert_problem(&p, "pack.yaml:1:1: missing required key `version`");

    let p = problems(
        &files(&[("pack.yaml", "name: my-pack\nversion: 1.2.x\nauthor: [me]\n")]),
        &NothingInstalled,
    );
    assert_problem(
        &p,
        "pack.yaml:1:7: invalid pack name \"my-pack\": may only contain lowercase letters, digits and `_` (found '-')",
    );
    assert_problem(&p, "pack.yaml:2:10: invalid version \"1.2.x\": ");
    assert_problem(&p, "pack.yaml:3:9: expected a string, found a list");

    let p = problems(
        &files(&[("pack.yaml", "name:\nversion: 1.0.0\n")]),
        &NothingInstalled,
    );
    assert_problem(&p, "pack.yaml:1:1: `name` must have a value");
}

#[test]
fn dependencies_must_be_installed_valid_and_unique() {
    let manifest = "name: linux\nversion: 1.0.0\ndependencies: [chatops, core, Bad, chatops]\n";
    let p = problems(&files(&[("pack.yaml", manifest)]), &Fake::with_chatops());
    assert_problem(
        &p,
        "pack.yaml:3:25: depends on `core`, which is not installed; install it first",
    );
    assert_problem(&p, "pack.yaml:3:31: invalid pack name \"Bad\"");
    assert_problem(&p, "pack.yaml:3:36: `chatops` is listed twice");
    assert_eq!(p.len(), 3, "{p:#?}");
    let p = problems(
        &files(&[(
            "pack.yaml",
            "name: linux\nversion: 1.0.0\ndependencies: chatops\n",
        )]),
        &Fake::with_chatops(),
    );
    assert_problem(
        &p,
        "pack.yaml:3:15: expected a list of pack names, found the string \"chatops\"",
    );
}

// --- actions ----------------------------------------------------------------

#[test]
fn action_names_must_be_valid_and_match_the_file() {
    let p = action_problems("name: A\nrunner: noop\n");
    assert_problem(
        &p,
        "actions/a.yaml:1:7: invalid action name \"A\": must start with a lowercase letter (a-z)",
    );
    let p = action_problems("name: b\nrunner: noop\n");
    assert_problem(
        &p,
        "actions/a.yaml:1:7: the action is named `b` but its file is actions/a.yaml; they must match",
    );
}

#[test]
fn duplicate_action_and_rule_names_are_refused() {
    let p = problems(
        &pack_with(&[
            ("actions/stop.yaml", STOP_SERVICE),
            (
                "rules/a.yaml",
                "name: a\ntrigger: core.event\naction: {ref: linux.stop_service, target: '*', parameters: {service: x}}\n",
            ),
            (
                "rules/b.yaml",
                "name: a\ntrigger: core.event\naction: {ref: linux.stop_service, target: '*', parameters: {service: x}}\n",
            ),
        ]),
        &NothingInstalled,
    );
    assert_problem(
        &p,
        "actions/stop_service.yaml:1:7: action `stop_service` is already defined in actions/stop.yaml",
    );
    assert_problem(
        &p,
        "rules/b.yaml:1:7: rule `a` is already defined in rules/a.yaml",
    );
}

#[test]
fn unknown_keys_are_found_at_every_level() {
    let p = action_problems(
        "\
name: a
runner: http
http: {method: GET, url: 'https://x', header: {}}
parameters:
  n: {type: string, requird: true}
",
    );
    assert_problem(
        &p,
        "actions/a.yaml:3:39: unknown key `header` (did you mean `headers`?)",
    );
    assert_problem(
        &p,
        "actions/a.yaml:5:21: unknown key `requird` (did you mean `required`?)",
    );

    let p = rule_problems(
        "\
name: r
trigger: core.event
criteria: [{pth: x, op: exists}]
action: {rf: linux.stop_service}
policy: {cooldown: {key: x, period: 1m, jitter: 1s}, max_concurent: 1}
",
    );
    assert_problem(
        &p,
        "rules/r.yaml:3:13: unknown key `pth` (did you mean `path`?)",
    );
    assert_problem(&p, "rules/r.yaml:3:12: missing required key `path`");
    assert_problem(
        &p,
        "rules/r.yaml:4:10: unknown key `rf` (expected one of: ref, target, parameters)",
    );
    assert_problem(
        &p,
        "rules/r.yaml:5:41: unknown key `jitter` (expected one of: key, period)",
    );
    assert_problem(
        &p,
        "rules/r.yaml:5:54: unknown key `max_concurent` (did you mean `max_concurrent`?)",
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let p = rule_problems(
        "\
name: r
description: 42
enabled: \"yes\"
trigger: core.event
criteria: {path: x, op: exists}
action: {ref: linux.stop_service, target: '*', parameters: [service]}
",
    );
    assert_problem(
        &p,
        "rules/r.yaml:2:14: expected a string, found the integer `42`",
    );
    assert_problem(
        &p,
        "rules/r.yaml:3:10: expected `true` or `false`, found the string \"yes\"",
    );
    assert_problem(
        &p,
        "rules/r.yaml:5:11: expected a list of criteria (`- {path: ..., op: ..., value: ...}`), found a mapping",
    );
    assert_problem(
        &p,
        "rules/r.yaml:6:60: expected a mapping of parameter values, found a list",
    );
}

#[test]
fn the_shell_runner_needs_exactly_one_program() {
    let p = action_problems("name: a\nrunner: shell\n");
    assert_problem(
        &p,
        "actions/a.yaml:1:1: the shell runner needs `command` (argv, run without a shell) or `shell` (run by /bin/sh -c)",
    );
    let p = action_problems("name: a\nrunner: shell\ncommand: []\n");
    assert_problem(
        &p,
        "actions/a.yaml:3:10: `command` needs at least the program to run",
    );
    let p = action_problems("name: a\nrunner: shell\nshell: '  '\n");
    assert_problem(&p, "actions/a.yaml:3:8: must not be empty");
    let p = action_problems("name: a\nrunner: shell\ncommand: [ls, 3]\nenv: {1BAD: x}\n");
    assert_problem(
        &p,
        "actions/a.yaml:3:15: expected a string, found the integer `3`",
    );
    assert_problem(
        &p,
        "actions/a.yaml:4:7: invalid environment variable name \"1BAD\"",
    );
}

#[test]
fn the_script_runner_needs_a_script_of_the_pack() {
    let with_script = |script: &str| {
        problems(
            &pack_with(&[
                (
                    "actions/a.yaml",
                    &format!("name: a\nrunner: script\nscript: {script}\n"),
                ),
                ("scripts/run.sh", "#!/bin/sh\n"),
            ]),
            &NothingInstalled,
        )
    };
    assert_problem(
        &with_script("run.sh"),
        "actions/a.yaml:3:9: `script` must be a path under scripts/ in the pack (e.g. `scripts/run.sh`)",
    );
    assert_problem(
        &with_script("scripts/../pack.yaml"),
        "actions/a.yaml:3:9: `scripts/../pack.yaml` is not a plain path inside scripts/",
    );
    assert_problem(
        &with_script("scripts/rum.sh"),
        "actions/a.yaml:3:9: scripts/rum.sh does not exist in the pack (did you mean `scripts/run.sh`?)",
    );
    let p = action_problems("name: a\nrunner: script\ncommand: [ls]\n");
    assert_problem(&p, "actions/a.yaml:1:1: missing required key `script`");
    assert_problem(
        &p,
        "actions/a.yaml:3:1: `command` is not used by the script runner",
    );
}

#[test]
fn the_http_runner_checks_method_url_headers_and_statuses() {
    let p = action_problems("name: a\nrunner: http\n");
    assert_problem(&p, "actions/a.yaml:1:1: missing required key `http`");
    let p = action_problems(
        "\
name: a
runner: http
http:
  url: file:///etc/passwd
  headers: {\"Bad Header\": x}
  expect_status: []
env: {A: b}
",
    );
    assert_problem(&p, "actions/a.yaml:4:3: missing required key `method`");
    assert_problem(
        &p,
        "actions/a.yaml:4:8: the URL must start with `https://` or `http://`",
    );
    assert_problem(
        &p,
        "actions/a.yaml:5:13: invalid header name \"Bad Header\"",
    );
    assert_problem(
        &p,
        "actions/a.yaml:6:18: list at least one status, or leave `expect_status` out to accept any 2xx",
    );
    assert_problem(
        &p,
        "actions/a.yaml:7:1: `env` is not used by the http runner",
    );
    let p = action_problems(
        "name: a\nrunner: http\nhttp: {method: GET, url: 'https://x', expect_status: [200, \"ok\"]}\n",
    );
    assert_problem(
        &p,
        "actions/a.yaml:3:60: expected an integer, found the string \"ok\"",
    );
}

#[test]
fn a_generic_webhook_action_may_template_the_whole_url_and_default_a_secret_to_empty() {
    let pack = pack_with(&[(
        "actions/hook.yaml",
        "\
name: hook
runner: http
http: {method: POST, url: \"{{ url }}\", headers: {Authorization: \"{{ auth }}\"}}
parameters:
  url: {type: string, required: true}
  auth: {type: string, secret: true, default: \"\"}
",
    )]);
    let loaded = load(&pack, &NothingInstalled).unwrap();
    let hook = loaded.action("hook").unwrap();
    assert!(matches!(&hook.runner, ultron8_pack::Runner::Http { url, .. } if url == "{{ url }}"));
    assert_eq!(hook.parameters["auth"].default, Some(serde_json::json!("")));
}

#[test]
fn parameter_schemas_are_checked() {
    let p = action_problems(
        "\
name: a
runner: noop
parameters:
  kind: {type: text}
  port: {type: integer, default: 80.5}
  mode: {type: string, enum: [fast, 2], default: slow}
  token: {type: string, secret: true, default: hunter2}
  not: {type: string}
  Bad: {type: string}
  empty: {type: string, enum: []}
  ratio: {type: number, default: 1}
  tags: {type: array, default: [a]}
  spec: string
",
    );
    assert_problem(
        &p,
        "actions/a.yaml:4:16: unknown parameter type `text` (types: string, integer, number, boolean, array, object)",
    );
    assert_problem(
        &p,
        "actions/a.yaml:5:34: the default must be an integer, found the number `80.5`",
    );
    assert_problem(
        &p,
        "actions/a.yaml:6:37: expected a string, found the integer `2`",
    );
    assert_problem(
        &p,
        "actions/a.yaml:6:50: the default \"slow\" is not one of the `enum` values",
    );
    assert_problem(
        &p,
        "actions/a.yaml:7:48: a secret parameter's default must be empty (\"\"): any other value would be stored in the pack in clear text",
    );
    assert_problem(
        &p,
        "actions/a.yaml:8:3: invalid parameter name \"not\": is a template keyword",
    );
    assert_problem(&p, "actions/a.yaml:9:3: invalid parameter name \"Bad\"");
    assert_problem(
        &p,
        "actions/a.yaml:10:31: `enum` must list at least one value",
    );
    assert_problem(
        &p,
        "actions/a.yaml:13:9: expected a parameter spec (a mapping), found the string \"string\"",
    );
    assert_eq!(p.len(), 9, "{p:#?}");
}

#[test]
fn required_with_a_default_is_contradictory() {
    let p = action_problems(
        "name: a\nrunner: noop\nparameters:\n  n: {type: integer, required: true, default: 1}\n",
    );
    assert_problem(
        &p,
        "actions/a.yaml:4:47: a required parameter cannot have a default (drop `required: true` or the default)",
    );
}

#[test]
fn action_templates_may_only_read_parameters() {
    let p = action_problems(
        "\
name: a
runner: shell
command: [systemctl, restart, \"{{ servce }}\"]
env: {X: \"{{ force }}\"}
parameters:
  service: {type: string}
  force: {type: boolean, default: false}
",
    );
    assert_eq!(
        p,
        [
            "actions/a.yaml:3:31: `servce` is not a parameter of linux.a (parameters: service, force)"
        ]
    );
    let p = action_problems("name: a\nrunner: shell\nshell: \"echo {{ host }}\"\n");
    assert_eq!(
        p,
        ["actions/a.yaml:3:8: `host` is not a parameter of linux.a (it has no parameters)"]
    );
}

#[test]
fn invalid_template_syntax_is_reported_at_the_value() {
    let p = action_problems(
        "name: a\nrunner: shell\ncommand: [echo, \"{{ service \"]\nparameters: {service: {type: string}}\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("actions/a.yaml:3:17: invalid template: "),
        "{p:?}"
    );
}

#[test]
fn durations_must_be_positive_and_readable() {
    let p = action_problems("name: a\nrunner: noop\ntimeout: 60\n");
    assert_problem(
        &p,
        "actions/a.yaml:3:10: expected a duration such as `30s`, `5m` or `1h`, found the integer `60`",
    );
    let p = action_problems("name: a\nrunner: noop\ntimeout: soon\n");
    assert_problem(&p, "actions/a.yaml:3:10: invalid duration \"soon\"");
}

// --- rules ------------------------------------------------------------------

const STOP: &str = "action: {ref: linux.stop_service, target: '*', parameters: {service: x}}\n";

#[test]
fn rules_need_a_built_in_trigger_and_an_action() {
    let p = rule_problems("name: r\n");
    assert_problem(&p, "rules/r.yaml:1:1: missing required key `trigger`");
    assert_problem(&p, "rules/r.yaml:1:1: missing required key `action`");
    let p = rule_problems(&format!("name: r\ntrigger: nagios.alert\n{STOP}"));
    assert_problem(
        &p,
        "rules/r.yaml:2:10: unknown trigger type `nagios.alert` (built-in: ",
    );
}

#[test]
fn timers_need_valid_parameters() {
    let p = rule_problems(&format!("name: r\ntrigger: core.interval\n{STOP}"));
    assert_problem(
        &p,
        "rules/r.yaml:2:10: core.interval needs `trigger_parameters: {every: <duration>}`, e.g. `every: 5m`",
    );
    let p = rule_problems(&format!(
        "name: r\ntrigger: core.interval\ntrigger_parameters: {{every: soon, evry: 1m}}\n{STOP}"
    ));
    assert_problem(
        &p,
        "rules/r.yaml:3:35: `evry` is not a parameter of core.interval (did you mean `every`?) (parameters: every)",
    );
    assert_problem(&p, "rules/r.yaml:3:29: invalid duration \"soon\"");
    let p = rule_problems(&format!(
        "name: r\ntrigger: core.cron\ntrigger_parameters: {{}}\n{STOP}"
    ));
    assert_problem(
        &p,
        "rules/r.yaml:3:21: core.cron needs `trigger_parameters: {schedule: <cron>}`",
    );
    let p = rule_problems(&format!(
        "name: r\ntrigger: core.cron\ntrigger_parameters: {{schedule: \"61 * * * *\"}}\n{STOP}"
    ));
    assert_problem(&p, "rules/r.yaml:3:32: invalid schedule: ");
    let p = rule_problems(&format!(
        "name: r\ntrigger: core.cron\ntrigger_parameters: {{schedule: \"*/5 * * * *\", timezone: Mars}}\n{STOP}"
    ));
    assert_problem(&p, "rules/r.yaml:3:57: invalid schedule: ");
    let p = rule_problems(&format!(
        "name: r\ntrigger: core.interval\ntrigger_parameters: {{every: 500ms}}\n{STOP}"
    ));
    assert_problem(&p, "rules/r.yaml:3:29: invalid schedule: ");
}

#[test]
fn a_cron_rule_gets_its_schedule() {
    let rule = rule_loads(&format!(
        "name: r\ntrigger: core.cron\ntrigger_parameters: {{schedule: \"*/5 * * * *\"}}\n{STOP}"
    ));
    assert_eq!(
        rule.schedule,
        Some(ultron8_core::schedule::Schedule::Cron {
            expression: "*/5 * * * *".into(),
            timezone: None
        })
    );
}

#[test]
fn criteria_are_structurally_checked() {
    let p = rule_problems(&format!(
        "\
name: r
trigger: alertmanager.alert
criteria:
  - {{path: status, op: equals, any: []}}
  - {{any: [], all: []}}
  - {{path: labels..x, op: exists}}
  - not: [{{path: status, op: exists}}]
  - just a string
  - {{op: exists}}
{STOP}"
    ));
    assert_problem(
        &p,
        "rules/r.yaml:4:5: a criterion is either a match (`path`, `op`, `value`) or one group (`any`, `all` or `not`), not both",
    );
    assert_problem(
        &p,
        "rules/r.yaml:5:5: a group holds exactly one of `any`, `all` or `not`; nest them to combine",
    );
    assert_problem(
        &p,
        "rules/r.yaml:6:12: invalid path \"labels..x\": dotted field names, e.g. `labels.alertname`",
    );
    assert_problem(
        &p,
        "rules/r.yaml:7:10: expected a criterion (`{path, op, value}`, or `any`, `all` or `not`), found a list",
    );
    assert_problem(&p, "rules/r.yaml:8:5: expected a criterion");
    assert_problem(&p, "rules/r.yaml:9:5: missing required key `path`");
    assert_eq!(p.len(), 6, "{p:#?}");
}

#[test]
fn criteria_paths_must_start_with_a_payload_field() {
    let p = rule_problems(&format!(
        "name: r\ntrigger: alertmanager.alert\ncriteria:\n  - any:\n      - {{path: lables.x, op: exists}}\n{STOP}"
    ));
    assert_problem(
        &p,
        "rules/r.yaml:5:16: `lables` is not in the payload of alertmanager.alert (fields: status, labels,",
    );
}

#[test]
fn each_criterion_is_validated_by_core_at_its_position() {
    let p = rule_problems(&format!(
        "\
name: r
trigger: alertmanager.alert
criteria:
  - {{path: status, op: equals, value: firing}}
  - any:
      - {{path: labels.severity, op: in, value: critical}}
  - {{path: labels.x, op: regex, value: \"(\"}}
{STOP}"
    ));
    assert_problem(
        &p,
        "rules/r.yaml:6:9: invalid criterion: labels.severity in: needs a list",
    );
    assert_problem(&p, "rules/r.yaml:7:5: invalid criterion: labels.x regex: ");
    assert_eq!(p.len(), 2, "{p:#?}");
}

#[test]
fn action_references_resolve_here_or_in_listed_installed_packs() {
    let p = rule_problems("name: r\ntrigger: core.event\naction: {ref: restart}\n");
    assert_problem(
        &p,
        "rules/r.yaml:3:15: invalid action reference \"restart\": write `pack.action`, e.g. `linux.restart_service`",
    );
    let p = rule_problems(
        "name: r\ntrigger: core.event\naction: {ref: linux.stop_servce, target: '*'}\n",
    );
    assert_problem(
        &p,
        "rules/r.yaml:3:15: this pack has no action `stop_servce` (did you mean `stop_service`?)",
    );
    // Installed, but chatops is not in this pack's dependencies.
    let p = rule_problems(
        "name: r\ntrigger: core.event\naction: {ref: chatops.notify, parameters: {channel: ops}}\n",
    );
    assert_eq!(
        p,
        [
            "rules/r.yaml:3:15: `chatops.notify` is from pack `chatops`, which is not in this pack's `dependencies`; add it there"
        ]
    );
    let p = rule_problems("name: r\ntrigger: core.event\naction: {ref: chatops.shout}\n");
    assert_problem(
        &p,
        "rules/r.yaml:3:15: unknown action `chatops.shout`: pack `chatops` is not installed or has no action `shout`",
    );

    // Listed: fine.
    let pack = files(&[
        (
            "pack.yaml",
            "name: linux\nversion: 1.0.0\ndependencies: [chatops]\n",
        ),
        (
            "rules/r.yaml",
            "name: r\ntrigger: core.event\naction: {ref: chatops.notify, parameters: {channel: ops}}\n",
        ),
    ]);
    let loaded = load(&pack, &Fake::with_chatops()).unwrap();
    assert_eq!(loaded.rules[0].action.reference, "chatops.notify");
}

#[test]
fn a_pack_upgrade_resolves_its_own_actions_from_the_new_files_only() {
    // `linux.gone` is installed (an older linux), but the new linux has no
    // such action: the rule must not silently use the old one.
    let mut installed = Fake::with_chatops();
    let mut old = common::notify_action();
    old.pack = "linux".into();
    old.name = "gone".into();
    installed.actions.insert("linux.gone".into(), old);
    installed
        .packs
        .insert("linux".into(), semver::Version::new(0, 9, 0));
    let p = problems(
        &pack_with(&[(
            "rules/r.yaml",
            "name: r\ntrigger: core.event\naction: {ref: linux.gone, parameters: {channel: x}}\n",
        )]),
        &installed,
    );
    assert_eq!(p, ["rules/r.yaml:3:15: this pack has no action `gone`"]);
}

#[test]
fn rule_parameters_must_fit_the_action() {
    let p = rule_problems(
        "\
name: r
trigger: core.event
action:
  ref: linux.stop_service
  target: '*'
  parameters:
    servce: nginx
    force: 1
",
    );
    assert_eq!(
        p,
        [
            "rules/r.yaml:7:5: `servce` is not a parameter of linux.stop_service (parameters: force, service)",
            "rules/r.yaml:7:5: missing required parameter of linux.stop_service: service",
            "rules/r.yaml:8:12: `force` must be a boolean, found the integer `1`",
        ]
    );
    // A template's type is only known when it renders: not checked here.
    rule_loads(
        "name: r\ntrigger: core.event\naction: {ref: linux.stop_service, target: '*', parameters: {service: x, force: '{{ f }}'}}\n",
    );
}

#[test]
fn rule_parameters_are_checked_against_the_enum() {
    let pack = files(&[
        ("pack.yaml", MANIFEST),
        (
            "actions/a.yaml",
            "name: a\nrunner: noop\nparameters:\n  level: {type: string, enum: [low, high]}\n",
        ),
        (
            "rules/r.yaml",
            "name: r\ntrigger: core.event\naction: {ref: linux.a, parameters: {level: medium}}\n",
        ),
    ]);
    let p = problems(&pack, &NothingInstalled);
    assert_eq!(
        p,
        ["rules/r.yaml:3:44: `level` must be one of \"low\", \"high\", found \"medium\""]
    );
}

#[test]
fn drone_actions_need_a_target_and_hive_actions_do_not() {
    let p = rule_problems(
        "name: r\ntrigger: core.event\naction: {ref: linux.stop_service, parameters: {service: x}}\n",
    );
    assert_problem(
        &p,
        "rules/r.yaml:3:9: missing `target`: linux.stop_service runs on drones (shell runner)",
    );
    let pack = files(&[
        ("pack.yaml", MANIFEST),
        ("actions/a.yaml", "name: a\nrunner: noop\n"),
        (
            "rules/r.yaml",
            "name: r\ntrigger: core.event\naction: {ref: linux.a}\n",
        ),
    ]);
    let loaded = load(&pack, &NothingInstalled).unwrap();
    assert_eq!(loaded.rules[0].action.target, None);
}

#[test]
fn literal_targets_are_parsed_at_install() {
    let p = rule_problems(
        "name: r\ntrigger: core.event\naction: {ref: linux.stop_service, target: 'web-1 and', parameters: {service: x}}\n",
    );
    assert_problem(&p, "rules/r.yaml:3:43: invalid target expression: ");
    let rule = rule_loads(
        "name: r\ntrigger: core.event\naction: {ref: linux.stop_service, target: 'label:role=web and not web-3', parameters: {service: x}}\n",
    );
    assert_eq!(
        rule.action.target.as_deref(),
        Some("label:role=web and not web-3")
    );
}

#[test]
fn rule_templates_may_only_read_the_payload() {
    let p = rule_problems(
        "\
name: r
trigger: alertmanager.alert
action:
  ref: linux.stop_service
  target: \"{{ lables.instance }}\"
  parameters:
    service: [\"{{ labels.service }}\", {nested: \"{{ annotation.x }}\"}]
policy:
  cooldown: {key: \"{{ instance }}\", period: 5m}
",
    );
    let fields = "status, labels, annotations, starts_at, ends_at, fingerprint, generator_url, receiver, group_labels, common_labels, external_url";
    assert_eq!(
        p,
        [
            format!(
                "rules/r.yaml:5:11: `lables` is not in the payload of alertmanager.alert (fields: {fields})"
            ),
            format!(
                "rules/r.yaml:7:48: `annotation` is not in the payload of alertmanager.alert (fields: {fields})"
            ),
            format!(
                "rules/r.yaml:9:19: `instance` is not in the payload of alertmanager.alert (fields: {fields})"
            ),
        ]
    );
}

#[test]
fn policies_must_be_sane() {
    let p = rule_problems(&format!(
        "\
name: r
trigger: core.event
policy:
  cooldown: {{key: x, period: 0s}}
  max_concurrent: -1
  blast_radius: {{max_hosts: 0, max_percent: 0, window: 1h}}
{STOP}"
    ));
    assert_eq!(
        p,
        [
            "rules/r.yaml:4:30: must be longer than zero",
            "rules/r.yaml:5:19: `max_concurrent` must be at least 1, found -1",
            "rules/r.yaml:6:29: `max_hosts` must be at least 1, found 0",
            "rules/r.yaml:6:45: `max_percent` must be more than 0 and at most 100, found 0",
        ]
    );
    let p = rule_problems(&format!(
        "name: r\ntrigger: core.event\npolicy:\n  blast_radius: {{window: 1h}}\n  cooldown: {{key: x}}\n{STOP}"
    ));
    assert_eq!(
        p,
        [
            "rules/r.yaml:4:17: a blast radius needs `max_hosts`, `max_percent` or both; without them it limits nothing",
            "rules/r.yaml:5:13: missing required key `period`",
        ]
    );
    let rule = rule_loads(&format!(
        "name: r\ntrigger: core.event\npolicy: {{blast_radius: {{max_percent: 12.5, window: 30m}}}}\n{STOP}"
    ));
    assert_eq!(
        rule.policy.blast_radius.and_then(|b| b.max_percent),
        Some(12.5)
    );
}

// --- robustness -------------------------------------------------------------

#[test]
fn no_input_makes_load_panic() {
    // Every prefix of every file of a valid pack, and a few thousand
    // deterministic byte mutations: `load` answers (Ok or Err), never panics.
    let base = files(&[
        ("pack.yaml", "name: linux\nversion: 1.0.0\ndependencies: [chatops]\n"),
        ("actions/stop_service.yaml", STOP_SERVICE),
        (
            "rules/r.yaml",
            "\
name: r
trigger: alertmanager.alert
criteria:
  - {path: status, op: equals, value: firing}
  - any: [{path: labels.severity, op: in, value: [critical]}, {not: {path: labels.env, op: exists}}]
action: {ref: linux.stop_service, target: '{{ labels.instance }}', parameters: {service: '{{ labels.service }}'}}
policy: {cooldown: {key: '{{ labels.instance }}', period: 10m}, blast_radius: {max_hosts: 1, window: 1h}}
",
        ),
    ]);
    let installed = Fake::with_chatops();
    load(&base, &installed).unwrap();
    for (path, content) in &base {
        for cut in 0..content.len() {
            let mut pack = base.clone();
            pack.insert(path.clone(), content[..cut].to_vec());
            let _ = load(&pack, &installed);
        }
    }
    let interesting = b"{}[]:,-'\"&*!|>#%@`\n\t {{}}.0";
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut pack = base.clone();
        let path =
            ["pack.yaml", "actions/stop_service.yaml", "rules/r.yaml"][(next() % 3) as usize];
        let content = pack.get_mut(path).unwrap();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % content.len().max(1);
            let byte = interesting[(next() as usize) % interesting.len()];
            match next() % 3 {
                0 if !content.is_empty() => content[at] = byte,
                1 => content.insert(at.min(content.len()), byte),
                _ if !content.is_empty() => {
                    content.remove(at);
                }
                _ => {}
            }
        }
        let _ = load(&pack, &installed);
    }
}

// --- secrets ----------------------------------------------------------------

#[test]
fn secrets_go_in_shell_scripts_and_whole_env_values_and_nowhere_else() {
    // Where they may go: loads clean.
    let clean = pack_with(&[(
        "actions/a.yaml",
        "name: a\nrunner: shell\nshell: curl -u app:{{ secret.db_password }} https://db\nenv:\n  TOKEN: \"{{ secret.api_token }}\"\n",
    )]);
    if let Err(p) = load(&clean, &NothingInstalled) {
        panic!("{p:?}");
    }

    // In argv: refused, naming the file, the place and the secret.
    let p = action_problems(
        "name: a\nrunner: shell\ncommand: [curl, \"-u\", \"app:{{ secret.db_password }}\"]\n",
    );
    assert_problem(
        &p,
        "actions/a.yaml:3:23: linux.a uses secret db_password here: secrets reach commands through the environment; use it in shell: or env:",
    );

    // Inside a longer env value: refused with the way out.
    let p = action_problems(
        "name: a\nrunner: shell\nshell: env\nenv:\n  AUTH: \"Bearer {{ secret.api_token }}\"\n",
    );
    assert_problem(
        &p,
        "actions/a.yaml:5:9: an env value that uses secret api_token must be exactly `{{ secret.NAME }}`; to build a longer value from it, use a shell: script",
    );

    // A parameter may not hide them.
    let p = action_problems("name: a\nrunner: noop\nparameters:\n  secret: {type: string}\n");
    assert!(
        p.iter().any(|problem| problem.contains("is reserved")),
        "{p:?}"
    );
}

#[test]
fn an_escalate_action_needs_a_string_reason() {
    let p = action_problems("name: a\nrunner: escalate\n");
    assert_problem(
        &p,
        "actions/a.yaml:1:1: the escalate runner needs a `reason` parameter (type: string)",
    );
    let p = action_problems("name: a\nrunner: escalate\nparameters: {reason: {type: integer}}\n");
    assert_problem(
        &p,
        "actions/a.yaml:3:13: the escalate runner's `reason` parameter must be a string",
    );
    let pack = load(
        &pack_with(&[(
            "actions/a.yaml",
            "name: a\nrunner: escalate\nparameters: {reason: {type: string, required: true}}\n",
        )]),
        &NothingInstalled,
    )
    .unwrap();
    assert_eq!(pack.action("a").map(|a| a.runner.kind()), Some("escalate"));
}
