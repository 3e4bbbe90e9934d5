//! `sensors/<name>.yaml` with `kind: source`: discovery sources a pack
//! declares.

mod common;

use std::time::Duration;

use common::{files, problems};
use ultron8_core::discovery::SourceSpec;
use ultron8_pack::{NothingInstalled, load};

const MANIFEST: (&str, &str) = ("pack.yaml", "name: cloud\nversion: 1.0.0\n");

#[test]
fn every_kind_of_source_loads_with_its_defaults() {
    let pack = load(
        &files(&[
            MANIFEST,
            (
                "sensors/api.yaml",
                "name: api\nkind: source\ndescription: The provider's instances.\ninterval: 10s\n\
                 http: {url: \"http://127.0.0.1:9001\", concurrency: 8, timeout: 2s}\n",
            ),
            (
                "sensors/racks.yaml",
                "name: racks\nkind: source\nfile: /etc/ultron8/targets.txt\n",
            ),
            (
                "sensors/core.yaml",
                "name: core\nkind: source\nstatic: [db-1, 127.0.0.1]\n",
            ),
            (
                "sensors/web.yaml",
                "name: web\nkind: source\ndrones: \"label:role=web\"\n",
            ),
            (
                "sensors/plain.yaml",
                "name: plain\nkind: source\nhttp: {url: \"http://127.0.0.1:9002\"}\n",
            ),
        ]),
        &NothingInstalled,
    )
    .expect("loads");
    let names: Vec<&str> = pack.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "core", "plain", "racks", "web"], "by name");
    let api = &pack.sources[0];
    assert_eq!(api.interval, Duration::from_secs(10));
    assert_eq!(api.description, "The provider's instances.");
    assert_eq!(
        api.spec,
        SourceSpec::Http {
            url: "http://127.0.0.1:9001".into(),
            concurrency: 8,
            timeout_ms: 2000
        }
    );
    assert_eq!(
        pack.sources[2].spec,
        SourceSpec::Http {
            url: "http://127.0.0.1:9002".into(),
            concurrency: 16,
            timeout_ms: 5000
        },
        "defaults"
    );
    assert_eq!(pack.sources[2].interval, Duration::from_secs(30));
    assert_eq!(
        pack.sources[1].spec,
        SourceSpec::Static {
            targets: vec!["db-1".into(), "127.0.0.1".into()]
        }
    );
    assert_eq!(
        pack.sources[4].spec,
        SourceSpec::Drones {
            target: "label:role=web".into(),
            service_label: "service".into()
        }
    );
}

#[test]
fn a_bad_source_is_reported_where_it_is_wrong() {
    let found = problems(
        &files(&[
            MANIFEST,
            (
                "sensors/two.yaml",
                "name: two\nkind: source\nfile: /a\nstatic: [b]\n",
            ),
            ("sensors/none.yaml", "name: none\nkind: source\n"),
            (
                "sensors/url.yaml",
                "name: url\nkind: source\nhttp: {url: \"ftp://127.0.0.1\"}\n",
            ),
            (
                "sensors/rel.yaml",
                "name: rel\nkind: source\nfile: targets.txt\n",
            ),
            (
                "sensors/fast.yaml",
                "name: fast\nkind: source\ninterval: 10ms\nstatic: [a]\n",
            ),
            (
                "sensors/typo.yaml",
                "name: typo\nkind: source\nstatic: [a]\nintreval: 1s\n",
            ),
            ("sensors/probe.yaml", "name: probe\nkind: prob\n"),
            (
                "sensors/named.yaml",
                "name: other\nkind: source\nstatic: [a]\n",
            ),
            ("sensors/notes.txt", "x"),
        ]),
        &NothingInstalled,
    );
    let expected = [
        "sensors/fast.yaml:3:11: a source's interval is at least 1s",
        "sensors/named.yaml:1:7: the sensor is named `other` but its file is sensors/named.yaml; they must match",
        "sensors/none.yaml:1:1: a source needs one of `http`, `file`, `static` or `drones`",
        "sensors/notes.txt:1:1: unexpected file in sensors/: expected sensors/<name>.yaml",
        "sensors/probe.yaml:2:7: unknown sensor kind `prob` (did you mean `probe`?) (kinds: check, probe, source)",
        "sensors/rel.yaml:3:7: a targets file is read by the hive, so its path must be absolute: \"targets.txt\"",
        "sensors/two.yaml:1:1: a source has one of `http`, `file`, `static` or `drones`, not file and static",
        "sensors/typo.yaml:4:1: unknown key `intreval` (did you mean `interval`?)",
        "sensors/url.yaml:3:7: \"ftp://127.0.0.1\" is not an http:// or https:// URL",
    ];
    assert_eq!(found, expected, "{found:#?}");
}
