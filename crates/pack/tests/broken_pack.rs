//! One pack with many different problems: `load` reports all of them, each
//! at its exact `file:line:column`.

mod common;

use common::{Fake, files, problems};
use ultron8_core::triggers::BUILT_IN;

#[test]
fn every_problem_is_reported_with_its_position() {
    let pack = files(&[
        (
            "pack.yaml",
            "\
name: linux
version: 1.2
dependencies: [core]
autor: me
",
        ),
        (
            "actions/restart_service.yaml",
            "\
name: restart_service
description: Restart a unit
runner: shell
command: [\"systemctl\", \"restart\", \"{{ servce }}\"]
shell: \"systemctl restart {{ service }}\"
timeout: 0s
parameters:
  service: {type: string, required: true, default: nginx}
  force: {type: bool}
  level: {type: string, enum: [low, high], default: medium}
  count: {type: integer, default: \"3\"}
paramters: {}
",
        ),
        (
            "actions/cleanup.yaml",
            "\
name: clean_up
runner: script
script: scripts/cleanup.sh
http: {method: GET, url: \"https://x\"}
",
        ),
        (
            "actions/notify.yaml",
            "\
name: notify
runner: http
http:
  method: FETCH
  url: \"hooks.example/{{ base }}\"
  expect_status: [200, 999]
parameters:
  base: {type: string}
",
        ),
        ("actions/stop_service.yaml", common::STOP_SERVICE),
        ("actions/broken.yaml", "name: broken\nrunner: [shell\n"),
        (
            "rules/restart.yaml",
            "\
name: restart
trigger: alertmanager.alert
trigger_parameters: {every: 5m}
criteria:
  - {path: lables.alertname, op: equals, value: ProbeFailed}
  - {path: status, op: eq, value: firing}
  - any: []
action:
  ref: linux.stop_service
  parameters:
    servce: nginx
    force: \"yes\"
policy:
  cooldown: {key: \"{{ lables.instance }}\", period: 10m}
  max_concurrent: 0
  blast_radius: {max_percent: 150, window: 1h}
",
        ),
        (
            "rules/timer.yaml",
            "\
name: timer
trigger: core.cron
trigger_parameters:
  schedule: \"*/5 * * * *\"
  timezone: Mars/Olympus
action:
  ref: core.notify
  target: \"web-1 and\"
",
        ),
        (
            "rules/ghost.yaml",
            "\
name: ghost
trigger: alertmanager.alrt
action: {ref: linux.missing, target: \"*\"}
",
        ),
        ("rules/notes.txt", "not a rule\n"),
        ("sensors/disk.yaml", "name: disk\n"),
        ("workflows/restart.yaml", "name: restart\n"),
        ("action/typo.yaml", "name: typo\n"),
        ("action/other.yaml", "name: other\n"),
    ]);
    let problems = problems(&pack, &Fake::with_chatops());

    let builtin = BUILT_IN
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ");
    let alert_fields = BUILT_IN
        .iter()
        .find(|t| t.name == "alertmanager.alert")
        .and_then(|t| t.payload_fields)
        .expect("alertmanager.alert declares its payload")
        .join(", ");
    // (exact problem, or a prefix where the words are core's)
    let expected: Vec<(String, bool)> = vec![
        ("action/other.yaml:1:1: unknown directory `action/` (did you mean `actions/`?) (a pack has pack.yaml, actions/, rules/, sensors/ and scripts/)".into(), true),
        ("actions/broken.yaml:3:1: invalid YAML: ".into(), false),
        ("actions/cleanup.yaml:1:7: the action is named `clean_up` but its file is actions/cleanup.yaml; they must match".into(), true),
        ("actions/cleanup.yaml:3:9: scripts/cleanup.sh does not exist in the pack".into(), true),
        ("actions/cleanup.yaml:4:1: `http` is not used by the script runner".into(), true),
        ("actions/notify.yaml:4:11: `FETCH` is not an HTTP method this runner sends (methods: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)".into(), true),
        ("actions/notify.yaml:5:8: the URL must start with `https://` or `http://` (or with a template, checked when it renders)".into(), true),
        ("actions/notify.yaml:6:24: 999 is not an HTTP status code (100-599)".into(), true),
        ("actions/restart_service.yaml:4:35: `servce` is not a parameter of linux.restart_service (parameters: service, force, level, count)".into(), true),
        ("actions/restart_service.yaml:5:1: give either `command` (argv) or `shell` (a shell script), not both (`command` is already set)".into(), true),
        ("actions/restart_service.yaml:6:10: must be longer than zero".into(), true),
        ("actions/restart_service.yaml:8:52: a required parameter cannot have a default (drop `required: true` or the default)".into(), true),
        ("actions/restart_service.yaml:9:17: unknown parameter type `bool` (did you mean `boolean`?) (types: string, integer, number, boolean, array, object)".into(), true),
        ("actions/restart_service.yaml:10:53: the default \"medium\" is not one of the `enum` values".into(), true),
        ("actions/restart_service.yaml:11:35: the default must be an integer, found the string \"3\"".into(), true),
        ("actions/restart_service.yaml:12:1: unknown key `paramters` (did you mean `parameters`?)".into(), true),
        ("pack.yaml:2:10: expected a semantic version such as `1.2.0`, found the number `1.2`".into(), true),
        ("pack.yaml:3:16: depends on `core`, which is not installed; install it first".into(), true),
        ("pack.yaml:4:1: unknown key `autor` (did you mean `author`?)".into(), true),
        (format!("rules/ghost.yaml:2:10: unknown trigger type `alertmanager.alrt` (did you mean `alertmanager.alert`?) (built-in: {builtin})"), true),
        ("rules/ghost.yaml:3:15: this pack has no action `missing`".into(), true),
        ("rules/notes.txt:1:1: unexpected file in rules/: expected rules/<name>.yaml".into(), true),
        ("rules/restart.yaml:3:22: alertmanager.alert takes no trigger_parameters (found `every`)".into(), true),
        (format!("rules/restart.yaml:5:12: `lables` is not in the payload of alertmanager.alert (fields: {alert_fields})"), true),
        ("rules/restart.yaml:6:24: unknown operator `eq` (operators: equals, iequals, nequals, contains, icontains, startswith, endswith, regex, iregex, wildcard, gt, lt, exists, nexists, in, nin, timediff_lt, timediff_gt)".into(), true),
        ("rules/restart.yaml:7:10: `any` needs at least one criterion".into(), true),
        ("rules/restart.yaml:9:3: missing `target`: linux.stop_service runs on drones (shell runner); say which, e.g. `target: \"{{ labels.instance }}\"`".into(), true),
        ("rules/restart.yaml:11:5: `servce` is not a parameter of linux.stop_service (parameters: force, service)".into(), true),
        ("rules/restart.yaml:11:5: missing required parameter of linux.stop_service: service".into(), true),
        ("rules/restart.yaml:12:12: `force` must be a boolean, found the string \"yes\"".into(), true),
        (format!("rules/restart.yaml:14:19: `lables` is not in the payload of alertmanager.alert (fields: {alert_fields})"), true),
        ("rules/restart.yaml:15:19: `max_concurrent` must be at least 1, found 0".into(), true),
        ("rules/restart.yaml:16:31: `max_percent` must be more than 0 and at most 100, found 150".into(), true),
        ("rules/timer.yaml:5:13: invalid schedule: ".into(), false),
        ("rules/timer.yaml:7:8: unknown action `core.notify`: pack `core` is not installed or has no action `notify`".into(), true),
        ("rules/timer.yaml:8:11: invalid target expression: ".into(), false),
        ("sensors/disk.yaml:1:1: missing required key `kind` (kinds: check, probe, source)".into(), true),
        ("workflows/restart.yaml:1:1: workflows are not supported yet; remove this file from the pack".into(), true),
    ];

    let mismatches: Vec<String> = expected
        .iter()
        .zip(&problems)
        .filter(|((want, exact), got)| {
            if *exact {
                got != &want
            } else {
                !got.starts_with(want.as_str())
            }
        })
        .map(|((want, _), got)| format!("want {want}\n got {got}"))
        .collect();
    assert!(
        mismatches.is_empty() && problems.len() == expected.len(),
        "{} problems, {} expected; mismatches:\n{}\nall problems:\n{}",
        problems.len(),
        expected.len(),
        mismatches.join("\n"),
        problems.join("\n")
    );
}
