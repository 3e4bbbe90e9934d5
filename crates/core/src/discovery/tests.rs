use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn figures(name: &str, service: &str, cpu: f64, memory: f64) -> Observation {
    Observation {
        service: service.to_string(),
        report: Report::Figures { cpu, memory },
        ..Observation::named(name)
    }
}

fn failed(name: &str, error: &str) -> Observation {
    Observation {
        report: Report::Failed(error.to_string()),
        ..Observation::named(name)
    }
}

#[test]
fn percentages_as_the_api_writes_them() {
    for (value, expected) in [
        (json!("61%"), Some(61.0)),
        (json!("4%"), Some(4.0)),
        (json!(" 61.5 % "), Some(61.5)),
        (json!("0%"), Some(0.0)),
        (json!("100%"), Some(100.0)),
        (json!("61"), Some(61.0)),
        (json!(61), Some(61.0)),
        (json!(12.25), Some(12.25)),
        (json!("101%"), None),
        (json!("-1%"), None),
        (json!("NaN%"), None),
        (json!("inf"), None),
        (json!("sixty"), None),
        (json!("%"), None),
        (json!(""), None),
        (json!(null), None),
        (json!(true), None),
        (json!(["61%"]), None),
    ] {
        assert_eq!(parse_percent(&value).ok(), expected, "{value}");
    }
}

#[test]
fn server_list_keeps_order_drops_repeats_and_sets_unusable_ids_apart() {
    let list = parse_server_list(br#"["127.0.0.1", "127.0.0.2", "127.0.0.1", "../admin", "a/b"]"#)
        .unwrap();
    assert_eq!(list.ids, ["127.0.0.1", "127.0.0.2"]);
    assert_eq!(
        list.unusable
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["../admin", "a/b"]
    );
    for bad in [&b"{}"[..], b"not json", br#"["ok", 3]"#, br#"null"#] {
        assert!(
            parse_server_list(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(parse_server_list(b"[]").unwrap(), ServerList::default());
}

#[test]
fn instance_reports() {
    let ok = parse_instance_report(
        "127.0.0.5",
        br#"{"cpu":"61%","service":"UserService","memory":"4%","extra":1}"#,
    );
    assert_eq!(ok.service, "UserService");
    assert_eq!(ok.address.as_deref(), Some("127.0.0.5"));
    assert_eq!(
        ok.report,
        Report::Figures {
            cpu: 61.0,
            memory: 4.0
        }
    );

    let named = parse_instance_report("web-1", br#"{"cpu":1,"service":"s","memory":2}"#);
    assert_eq!(named.address, None);

    for (body, needle) in [
        (&br#"{"cpu":"61%","service":"S"}"#[..], "no memory"),
        (br#"{"cpu":"lots","service":"S","memory":"4%"}"#, "cpu"),
        (br#"{"cpu":"1%","service":7,"memory":"4%"}"#, "service"),
        (br#"[1,2]"#, "not a JSON object"),
        (b"<html>", "not JSON"),
    ] {
        let observation = parse_instance_report("127.0.0.9", body);
        match observation.report {
            Report::Failed(error) => {
                assert!(error.starts_with("malformed report"), "{error}");
                assert!(error.contains(needle), "{error} should mention {needle}");
            }
            other => panic!("{} read as {other:?}", String::from_utf8_lossy(body)),
        }
    }
}

#[test]
fn classification() {
    let th = Thresholds::default();
    let c = |figures, failed, checks_failing| {
        classify(
            HealthInputs {
                figures,
                failed,
                checks_failing,
            },
            th,
        )
    };
    assert_eq!(c(Some((79.9, 79.9)), false, None), InstanceStatus::Healthy);
    assert_eq!(
        c(Some((80.0, 10.0)), false, None),
        InstanceStatus::Unhealthy
    );
    assert_eq!(
        c(Some((10.0, 80.0)), false, None),
        InstanceStatus::Unhealthy
    );
    assert_eq!(c(None, false, None), InstanceStatus::Unknown);
    assert_eq!(c(None, true, None), InstanceStatus::Unknown);
    // The seam for checks: a failing check wins over good figures.
    assert_eq!(
        c(Some((1.0, 1.0)), false, Some(true)),
        InstanceStatus::Unhealthy
    );
    assert_eq!(
        c(Some((1.0, 1.0)), false, Some(false)),
        InstanceStatus::Healthy
    );
    // Passing checks are all that is known of an instance without figures;
    // a report that failed is still unknown.
    assert_eq!(c(None, false, Some(false)), InstanceStatus::Healthy);
    assert_eq!(c(None, false, Some(true)), InstanceStatus::Unhealthy);
    assert_eq!(c(None, true, Some(false)), InstanceStatus::Unknown);
    assert_eq!(
        c(Some((90.0, 1.0)), false, Some(false)),
        InstanceStatus::Unhealthy,
        "passing checks do not hide a hot instance"
    );
    let strict = Thresholds {
        cpu: 50.0,
        memory: 90.0,
    };
    assert_eq!(
        classify(
            HealthInputs {
                figures: Some((50.0, 1.0)),
                ..Default::default()
            },
            strict
        ),
        InstanceStatus::Unhealthy
    );
}

#[test]
fn merge_keeps_history_drops_unlisted_and_reports_failures_on_the_instance() {
    let th = Thresholds::default();
    let first = merge(
        "api",
        &[],
        vec![
            figures("127.0.0.1", "Web", 10.0, 20.0),
            figures("127.0.0.2", "Web", 90.0, 20.0),
            figures("127.0.0.3", "Db", 30.0, 40.0),
        ],
        th,
        &HashMap::new(),
        t(0),
    );
    assert_eq!(first.len(), 3);
    assert_eq!(first[1].status, InstanceStatus::Unhealthy);
    assert_eq!(first[0].history.len(), 1);
    assert_eq!(first[0].last_seen, Some(t(0)));

    let second = merge(
        "api",
        &first,
        vec![
            figures("127.0.0.1", "Web", 11.0, 21.0),
            failed("127.0.0.2", "timed out after 1s"),
            // 127.0.0.3 is no longer listed.
            figures("127.0.0.4", "Db", 1.0, 1.0),
        ],
        th,
        &HashMap::new(),
        t(30),
    );
    let names: Vec<&str> = second.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.1", "127.0.0.2", "127.0.0.4"]);
    assert_eq!(second[0].history.len(), 2);
    assert_eq!(second[0].cpu, Some(11.0));
    let failing = &second[1];
    assert_eq!(failing.status, InstanceStatus::Unknown);
    assert_eq!(failing.error.as_deref(), Some("timed out after 1s"));
    assert_eq!((failing.cpu, failing.memory), (None, None));
    // What was known of it stays: its service, history and last sighting.
    assert_eq!(failing.service, "Web");
    assert_eq!(failing.history.len(), 1);
    assert_eq!(failing.last_seen, Some(t(0)));
    assert_eq!(failing.updated_at, t(30));
}

#[test]
fn merge_bounds_history_and_ignores_other_sources() {
    let th = Thresholds::default();
    let mut inventory = Vec::new();
    for tick in 0..(HISTORY_LEN as i64 + 15) {
        inventory = merge(
            "a",
            &inventory,
            vec![figures("web-1", "Web", tick as f64 % 100.0, 1.0)],
            th,
            &HashMap::new(),
            t(tick),
        );
    }
    let history = &inventory[0].history;
    assert_eq!(history.len(), HISTORY_LEN);
    assert_eq!(
        history.last().unwrap().at_ms,
        t(HISTORY_LEN as i64 + 14).timestamp_millis()
    );
    assert_eq!(history[0].at_ms, t(15).timestamp_millis());

    // Source b's instance of the same name starts its own history.
    let other = merge(
        "b",
        &inventory,
        vec![figures("web-1", "Web", 1.0, 1.0)],
        th,
        &HashMap::new(),
        t(999),
    );
    assert_eq!(other[0].history.len(), 1);
    assert_eq!(other[0].source, "b");
}

#[test]
fn targets_file_lines() {
    let text = "# the web tier\n\
                web-1 127.0.0.1 service=web zone=a\n\
                \n\
                web-2 service=web   # no address\n\
                db-1\n";
    let targets = parse_targets_file(text).unwrap();
    assert_eq!(targets.len(), 3);
    assert_eq!(targets[0].address.as_deref(), Some("127.0.0.1"));
    assert_eq!(targets[0].service, "web");
    assert_eq!(targets[0].labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(targets[1].address, None);
    assert_eq!(targets[1].service, "web");
    assert_eq!(targets[2], Observation::named("db-1"));
    assert!(targets.iter().all(|t| t.report == Report::NoFigures));
    assert_eq!(parse_targets_file("").unwrap(), Vec::new());
}

#[test]
fn targets_file_problems_name_their_lines() {
    let problems = parse_targets_file("a\nb 127.0.0.1 c\na\nd =x\ne/f\n").unwrap_err();
    let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4, 5], "{problems:?}");
    assert!(problems[1].message.contains("line 1"), "{}", problems[1]);
}

#[test]
fn targets_file_as_json() {
    let targets = parse_targets_file(
        r#"[{"name": "web-1", "address": "127.0.0.1", "service": "web", "labels": {"zone": "a"}},
            {"name": "db-1"}]"#,
    )
    .unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0].service, "web");
    assert!(parse_targets_file(r#"[{"nom": "x"}]"#).is_err());
    assert!(parse_targets_file(r#"[{"name": "a"}, {"name": "a"}]"#).is_err());
}

#[test]
fn source_specs_are_checked() {
    let http = |url: &str, concurrency, timeout_ms| SourceSpec::Http {
        url: url.to_string(),
        concurrency,
        timeout_ms,
    };
    assert!(http("http://127.0.0.1:9001", 16, 5000).check().is_ok());
    assert!(http("https://api.example.invalid/v1", 1, 1).check().is_ok());
    for bad in [
        http("ftp://127.0.0.1", 16, 5000),
        http("http://", 16, 5000),
        http("http://127.0.0.1/?x=1", 16, 5000),
        http("http://127.0.0.1", 0, 5000),
        http("http://127.0.0.1", 16, 0),
        http("http://127.0.0.1", MAX_HTTP_CONCURRENCY + 1, 5000),
        SourceSpec::Static { targets: vec![] },
        SourceSpec::Static {
            targets: vec!["a".into(), "a".into()],
        },
        SourceSpec::Static {
            targets: vec!["a b".into()],
        },
        SourceSpec::File {
            path: "targets.txt".into(),
        },
        SourceSpec::Drones {
            target: "label:(".into(),
            service_label: "service".into(),
        },
        SourceSpec::Drones {
            target: "*".into(),
            service_label: String::new(),
        },
    ] {
        assert!(bad.check().is_err(), "{bad:?} passed");
    }
    assert!(
        SourceSpec::Drones {
            target: "*".into(),
            service_label: "service".into()
        }
        .check()
        .is_ok()
    );
    for (name, ok) in [
        ("cloud-api", true),
        ("a.b_c", true),
        ("1api", false),
        ("", false),
        ("a b", false),
    ] {
        assert_eq!(check_source_name(name).is_ok(), ok, "{name}");
    }
    // The spec's JSON is what the store keeps.
    let spec = http("http://127.0.0.1:9", 4, 100);
    let stored = serde_json::to_value(&spec).unwrap();
    assert_eq!(stored["kind"], "http");
    assert_eq!(serde_json::from_value::<SourceSpec>(stored).unwrap(), spec);
}

fn instance(name: &str, service: &str, cpu: Option<f64>, memory: Option<f64>) -> Instance {
    let status = classify(
        HealthInputs {
            figures: cpu.zip(memory),
            ..Default::default()
        },
        Thresholds::default(),
    );
    Instance {
        source: "s".to_string(),
        name: name.to_string(),
        address: None,
        service: service.to_string(),
        labels: BTreeMap::new(),
        cpu,
        memory,
        status,
        error: None,
        last_seen: None,
        updated_at: t(0),
        history: Vec::new(),
    }
}

#[test]
fn services_count_and_average_over_instances_with_figures() {
    let fleet = [
        instance("a1", "Auth", Some(10.0), Some(20.0)),
        instance("a2", "Auth", Some(90.0), Some(40.0)),
        instance("a3", "Auth", None, None),
        instance("d1", "Db", Some(50.0), Some(50.0)),
        instance("x", "", Some(1.0), Some(1.0)),
    ];
    let services = summarize_services(&fleet);
    let names: Vec<&str> = services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["", "Auth", "Db"]);
    let auth = &services[1];
    assert_eq!(
        (auth.instances, auth.healthy, auth.unhealthy, auth.unknown),
        (3, 1, 1, 1)
    );
    assert_eq!(auth.avg_cpu, Some(50.0));
    assert_eq!(auth.avg_memory, Some(30.0));
    assert_eq!(auth.not_healthy, ["a2", "a3"]);
    assert_eq!(auth.status(), ServiceStatus::Degraded);
    assert_eq!(services[2].status(), ServiceStatus::Healthy);

    let flagged: Vec<&str> = below_min_healthy(&services, 2)
        .iter()
        .map(|s| s.service.as_str())
        .collect();
    assert_eq!(flagged, ["", "Auth", "Db"]);
    assert!(below_min_healthy(&services, 1).is_empty());

    let only_unknown = summarize_services(&[instance("z", "Z", None, None)]);
    assert_eq!(only_unknown[0].avg_cpu, None);
    assert_eq!(only_unknown[0].status(), ServiceStatus::Down);
}

#[test]
fn sorting() {
    let mut fleet = vec![
        instance("b", "S2", Some(30.0), Some(5.0)),
        instance("a", "S1", None, None),
        instance("c", "S1", Some(95.0), Some(1.0)),
        instance("d", "S2", Some(10.0), Some(99.0)),
    ];
    let order = |fleet: &[Instance]| fleet.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    sort_instances(&mut fleet, SortKey::Cpu, false);
    assert_eq!(order(&fleet), ["a", "d", "b", "c"]);
    sort_instances(&mut fleet, SortKey::Cpu, true);
    assert_eq!(order(&fleet), ["c", "b", "d", "a"]);
    sort_instances(&mut fleet, SortKey::Memory, true);
    assert_eq!(order(&fleet), ["d", "b", "c", "a"]);
    sort_instances(&mut fleet, SortKey::Name, true);
    assert_eq!(order(&fleet), ["d", "c", "b", "a"]);
    sort_instances(&mut fleet, SortKey::Service, false);
    assert_eq!(order(&fleet), ["a", "c", "b", "d"]);
    sort_instances(&mut fleet, SortKey::Status, false);
    assert_eq!(order(&fleet), ["b", "c", "d", "a"]);
    assert_eq!("cpu".parse::<SortKey>(), Ok(SortKey::Cpu));
    assert!("ram".parse::<SortKey>().is_err());
}

#[test]
fn names_compare_as_people_read_them() {
    let mut names = vec![
        "127.0.0.10",
        "127.0.0.2",
        "web-10",
        "web-9",
        "web-09b",
        "db",
        "127.0.0.1",
        "web-",
    ];
    names.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(
        names,
        [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.10",
            "db",
            "web-",
            "web-9",
            "web-09b",
            "web-10"
        ]
    );
    assert_eq!(
        natural_cmp("a01", "a1"),
        "a01".cmp("a1"),
        "equal values fall back to the text"
    );
}

#[test]
fn service_changes_report_healthy_count_changes_only() {
    let before = summarize_services(&[
        instance("a1", "Auth", Some(1.0), Some(1.0)),
        instance("a2", "Auth", Some(1.0), Some(1.0)),
        instance("d1", "Db", Some(1.0), Some(1.0)),
        instance("g1", "Gone", Some(1.0), Some(1.0)),
    ]);
    let after = summarize_services(&[
        instance("a1", "Auth", Some(1.0), Some(1.0)),
        instance("a2", "Auth", Some(99.0), Some(1.0)),
        instance("d1", "Db", Some(2.0), Some(2.0)),
        instance("n1", "New", Some(1.0), Some(1.0)),
    ]);
    let changes = service_changes(&before, &after);
    let names: Vec<&str> = changes.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["Auth", "New", "Gone"]);
    let payload = service_event_payload(&changes[0]);
    assert_eq!(
        payload,
        json!({"service": "Auth", "instances": 2, "healthy": 1, "unhealthy": ["a2"]})
    );
    assert_eq!(changes[2].instances, 0);
    assert!(service_changes(&after, &after).is_empty());
    // Instances without a service are no service.
    let unnamed = summarize_services(&[instance("x", "", Some(1.0), Some(1.0))]);
    assert!(service_changes(&[], &unnamed).is_empty());
}

proptest! {
    #[test]
    fn service_figures_add_up(
        rows in proptest::collection::vec(
            (0usize..4, proptest::option::of((0.0f64..=100.0, 0.0f64..=100.0))),
            0..60,
        )
    ) {
        let fleet: Vec<Instance> = rows
            .iter()
            .enumerate()
            .map(|(i, (service, figures))| {
                instance(&format!("i{i}"), &format!("S{service}"), figures.map(|f| f.0), figures.map(|f| f.1))
            })
            .collect();
        let services = summarize_services(&fleet);
        prop_assert_eq!(services.iter().map(|s| s.instances).sum::<usize>(), fleet.len());
        for s in &services {
            prop_assert_eq!(s.healthy + s.unhealthy + s.unknown, s.instances);
            prop_assert_eq!(s.not_healthy.len(), s.instances - s.healthy);
            let members: Vec<&Instance> = fleet.iter().filter(|i| i.service == s.service).collect();
            let cpus: Vec<f64> = members.iter().filter_map(|i| i.cpu).collect();
            match s.avg_cpu {
                None => prop_assert!(cpus.is_empty()),
                Some(avg) => {
                    let expected = cpus.iter().sum::<f64>() / cpus.len() as f64;
                    prop_assert!((avg - expected).abs() < 1e-9);
                    let lo = cpus.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = cpus.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    prop_assert!(avg >= lo - 1e-9 && avg <= hi + 1e-9);
                }
            }
            prop_assert_eq!(below_min_healthy(std::slice::from_ref(s), s.healthy + 1).len(), 1);
            prop_assert!(below_min_healthy(std::slice::from_ref(s), s.healthy).is_empty());
        }
    }

    #[test]
    fn natural_order_is_a_total_order(a in "[a-c0-9.]{0,8}", b in "[a-c0-9.]{0,8}") {
        prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
        prop_assert_eq!(natural_cmp(&a, &b) == std::cmp::Ordering::Equal, a == b);
    }

    #[test]
    fn sorting_is_a_permutation_in_order(
        figures in proptest::collection::vec(proptest::option::of(0.0f64..=100.0), 0..40),
        descending in any::<bool>(),
    ) {
        let mut fleet: Vec<Instance> = figures
            .iter()
            .enumerate()
            .map(|(i, cpu)| instance(&format!("i{i:02}"), "S", *cpu, cpu.map(|_| 1.0)))
            .collect();
        sort_instances(&mut fleet, SortKey::Cpu, descending);
        prop_assert_eq!(fleet.len(), figures.len());
        for pair in fleet.windows(2) {
            let (a, b) = (pair[0].cpu.unwrap_or(-1.0), pair[1].cpu.unwrap_or(-1.0));
            if descending { prop_assert!(a >= b) } else { prop_assert!(a <= b) }
        }
    }

    #[test]
    fn percentages_round_trip(value in 0.0f64..=100.0) {
        prop_assert_eq!(parse_percent(&json!(format!("{value}%"))).unwrap(), value);
    }

    #[test]
    fn file_parser_never_panics(text in "\\PC{0,200}") {
        let _ = parse_targets_file(&text);
    }
}
