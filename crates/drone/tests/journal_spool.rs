//! The journal and the spool against a real directory, including re-opening
//! it as a restarted drone would.

use std::io::ErrorKind;
use std::time::Duration;

use ultron8_core::ExecutionStatus;
use ultron8_drone::journal::{Begin, Journal};
use ultron8_drone::spool::{Spool, SpooledReport};

const BAD_IDS: [&str; 10] = [
    "",
    "../escape",
    "..",
    ".",
    "a/b",
    "/etc/passwd",
    "id with space",
    "nul\0byte",
    "dot.ted",
    "ünïcode",
];

fn long_id() -> String {
    "a".repeat(65)
}

// ---------------------------------------------------------------- journal

#[test]
fn begin_twice_is_already_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path()).expect("open");
    assert_eq!(
        journal.begin("exec-1", "job-1").expect("begin"),
        Begin::Fresh
    );
    assert_eq!(
        journal.begin("exec-1", "job-1").expect("begin"),
        Begin::AlreadySeen { finished: false }
    );
    journal.finish("exec-1").expect("finish");
    assert_eq!(
        journal.begin("exec-1", "job-1").expect("begin"),
        Begin::AlreadySeen { finished: true }
    );
    // A different id is unaffected.
    assert_eq!(
        journal.begin("exec-2", "job-1").expect("begin"),
        Begin::Fresh
    );
}

#[test]
fn open_creates_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nested = dir.path().join("state").join("journal");
    let journal = Journal::open(&nested).expect("open");
    assert!(nested.is_dir());
    assert_eq!(journal.begin("e", "j").expect("begin"), Begin::Fresh);
}

#[test]
fn the_journal_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let journal = Journal::open(dir.path()).expect("open");
        assert_eq!(
            journal.begin("done-1", "job-a").expect("begin"),
            Begin::Fresh
        );
        journal.finish("done-1").expect("finish");
        assert_eq!(
            journal.begin("crashed-1", "job-b").expect("begin"),
            Begin::Fresh
        );
        assert_eq!(
            journal.begin("crashed-2", "job-c").expect("begin"),
            Begin::Fresh
        );
        // The drone "crashes" here: dropped without finishing crashed-*.
    }
    let journal = Journal::open(dir.path()).expect("reopen");
    let unfinished = journal.unfinished().expect("unfinished");
    let ids: Vec<(&str, &str)> = unfinished
        .iter()
        .map(|entry| (entry.execution_id.as_str(), entry.job_id.as_str()))
        .collect();
    assert_eq!(ids, [("crashed-1", "job-b"), ("crashed-2", "job-c")]);
    let now = chrono::Utc::now();
    for entry in &unfinished {
        assert!(entry.begun_at <= now && now - entry.begun_at < chrono::TimeDelta::minutes(5));
    }

    // A redelivery after the restart still never runs anything twice.
    assert_eq!(
        journal.begin("done-1", "job-a").expect("begin"),
        Begin::AlreadySeen { finished: true }
    );
    assert_eq!(
        journal.begin("crashed-1", "job-b").expect("begin"),
        Begin::AlreadySeen { finished: false }
    );

    // Once reported as lost and finished, they are no longer unfinished.
    journal.finish("crashed-1").expect("finish");
    journal.finish("crashed-2").expect("finish");
    drop(journal);
    let journal = Journal::open(dir.path()).expect("reopen");
    assert!(journal.unfinished().expect("unfinished").is_empty());
    assert_eq!(
        journal.begin("crashed-2", "job-c").expect("begin"),
        Begin::AlreadySeen { finished: true }
    );
}

#[test]
fn finish_is_idempotent_but_needs_a_begin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path()).expect("open");
    journal.begin("e1", "j").expect("begin");
    journal.finish("e1").expect("finish");
    journal.finish("e1").expect("finish again");
    let error = journal.finish("never-begun").expect_err("not begun");
    assert_eq!(error.kind(), ErrorKind::NotFound);
}

#[test]
fn malicious_ids_are_refused_everywhere() {
    let outside = tempfile::tempdir().expect("tempdir");
    let dir = outside.path().join("journal");
    let journal = Journal::open(&dir).expect("open");
    let spool = Spool::open(&outside.path().join("spool")).expect("open");
    for id in BAD_IDS.iter().map(|id| id.to_string()).chain([long_id()]) {
        let refused = |result: std::io::Result<_>| {
            assert_eq!(
                result.map(|_| ()).expect_err(&id).kind(),
                ErrorKind::InvalidInput,
                "{id:?}"
            );
        };
        refused(journal.begin(&id, "job").map(|_| ()));
        refused(journal.finish(&id));
        refused(spool.put(&report(&id, 1)));
        refused(spool.remove(&id));
    }
    // Nothing was written outside (or inside) either directory.
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .expect("read_dir")
        .map(|dirent| dirent.expect("dirent").file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(std::fs::read_dir(&dir).expect("read_dir").count(), 0);

    // The longest valid id, UUID-shaped ids and mixed case are fine.
    for id in [
        "a".repeat(64),
        "0190f3a4-7b7c-7cc3-9b1e-3c0d2b6e9f10".to_string(),
        "Exec-ID-9".to_string(),
    ] {
        assert_eq!(
            journal.begin(&id, "job").expect("begin"),
            Begin::Fresh,
            "{id}"
        );
    }
}

#[test]
fn pruning_removes_only_old_finished_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path()).expect("open");
    journal.begin("finished", "j").expect("begin");
    journal.finish("finished").expect("finish");
    journal.begin("running", "j").expect("begin");

    // Finished just now: younger than an hour, kept.
    assert_eq!(
        journal
            .prune_finished(Duration::from_secs(3600))
            .expect("prune"),
        0
    );
    assert_eq!(
        journal.begin("finished", "j").expect("begin"),
        Begin::AlreadySeen { finished: true }
    );

    // Wait (bounded) until the entry is strictly older than zero.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut pruned = 0;
    while pruned == 0 && std::time::Instant::now() < deadline {
        pruned = journal.prune_finished(Duration::ZERO).expect("prune");
        if pruned == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(pruned, 1);
    // An unfinished entry is never pruned: it must still be reported as lost.
    let unfinished = journal.unfinished().expect("unfinished");
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].execution_id, "running");
    // A pruned id is forgotten.
    assert_eq!(journal.begin("finished", "j").expect("begin"), Begin::Fresh);
    assert_eq!(journal.prune_finished(Duration::MAX).expect("prune"), 0);
}

#[test]
fn a_damaged_entry_is_still_treated_as_begun() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("damaged.json"), b"{\"execution_id\": \"dam").expect("write");
    // Leftovers of a crash mid-write and foreign files are ignored.
    std::fs::write(dir.path().join(".tmp-123-456-0"), b"partial").expect("write");
    std::fs::write(dir.path().join("README"), b"not an entry").expect("write");
    let journal = Journal::open(dir.path()).expect("open");
    assert!(
        !dir.path().join(".tmp-123-456-0").exists(),
        "stale temporary file removed"
    );

    assert_eq!(
        journal.begin("damaged", "j").expect("begin"),
        Begin::AlreadySeen { finished: false }
    );
    let unfinished = journal.unfinished().expect("unfinished");
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].execution_id, "damaged");
    assert_eq!(unfinished[0].job_id, "");
    journal.finish("damaged").expect("finish");
    assert!(journal.unfinished().expect("unfinished").is_empty());
    assert_eq!(
        journal.begin("damaged", "j").expect("begin"),
        Begin::AlreadySeen { finished: true }
    );
}

#[test]
fn concurrent_begins_of_one_id_let_exactly_one_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path()).expect("open");
    for round in 0..20 {
        let id = format!("race-{round}");
        let fresh = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| journal.begin(&id, "job").expect("begin")))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("join"))
                .filter(|begin| *begin == Begin::Fresh)
                .count()
        });
        assert_eq!(fresh, 1, "{id}");
    }
}

// ---------------------------------------------------------------- spool

fn report(execution_id: &str, finished_at_ms: i64) -> SpooledReport {
    SpooledReport {
        policy_rule: None,
        execution_id: execution_id.to_string(),
        job_id: "job-7".to_string(),
        status: ExecutionStatus::Failed,
        exit_code: Some(2),
        stdout: b"binary \x00\xff\xfe output\n".to_vec(),
        stderr: b"oops\n".to_vec(),
        stdout_truncated: true,
        stderr_truncated: false,
        duration_ms: 1234,
        error: Some("exit 2".to_string()),
        started_at_ms: finished_at_ms - 1234,
        finished_at_ms,
    }
}

#[test]
fn spool_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("open");
    assert!(spool.pending().expect("pending").is_empty());
    let original = report("exec-1", 1_700_000_000_000);
    spool.put(&original).expect("put");
    assert_eq!(spool.pending().expect("pending"), [original]);

    // Output is base64 in the file, not an array of numbers.
    let json = std::fs::read_to_string(dir.path().join("exec-1.json")).expect("read");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["stdout"], "YmluYXJ5IAD//iBvdXRwdXQK");
    assert_eq!(value["status"], "failed");

    spool.remove("exec-1").expect("remove");
    assert!(spool.pending().expect("pending").is_empty());
    spool.remove("exec-1").expect("removing twice is fine");
    // Only the spooled files themselves were ever visible.
    assert_eq!(std::fs::read_dir(dir.path()).expect("read_dir").count(), 0);
}

#[test]
fn put_overwrites_the_same_execution() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("open");
    spool.put(&report("exec-1", 10)).expect("put");
    let mut newer = report("exec-1", 20);
    newer.status = ExecutionStatus::Lost;
    spool.put(&newer).expect("put");
    assert_eq!(spool.pending().expect("pending"), [newer]);
}

#[test]
fn the_spool_survives_a_restart_and_is_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let spool = Spool::open(dir.path()).expect("open");
        spool.put(&report("c-newest", 3_000)).expect("put");
        spool.put(&report("a-oldest", 1_000)).expect("put");
        spool.put(&report("b-middle", 2_000)).expect("put");
        spool.put(&report("d-tie", 2_000)).expect("put");
    }
    std::fs::write(dir.path().join(".tmp-1-2-3"), b"{").expect("write");
    let spool = Spool::open(dir.path()).expect("reopen");
    let ids: Vec<String> = spool
        .pending()
        .expect("pending")
        .into_iter()
        .map(|r| r.execution_id)
        .collect();
    assert_eq!(ids, ["a-oldest", "b-middle", "d-tie", "c-newest"]);
    assert!(
        !dir.path().join(".tmp-1-2-3").exists(),
        "stale temporary file removed"
    );
}

#[test]
fn a_corrupt_report_is_moved_aside_and_blocks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).expect("open");
    spool.put(&report("good-1", 1)).expect("put");
    spool.put(&report("good-2", 2)).expect("put");
    std::fs::write(
        dir.path().join("torn.json"),
        b"{\"execution_id\":\"torn\",\"job",
    )
    .expect("write");
    std::fs::write(dir.path().join("bad-b64.json"), {
        let mut value = serde_json::to_value(report("bad-b64", 3)).expect("json");
        value["stdout"] = "not base64!".into();
        value.to_string()
    })
    .expect("write");
    // A valid report under the wrong name could never be removed.
    std::fs::write(
        dir.path().join("misnamed.json"),
        serde_json::to_vec(&report("other", 4)).expect("json"),
    )
    .expect("write");

    let ids: Vec<String> = spool
        .pending()
        .expect("pending")
        .into_iter()
        .map(|r| r.execution_id)
        .collect();
    assert_eq!(ids, ["good-1", "good-2"]);
    for name in ["torn.json", "bad-b64.json", "misnamed.json"] {
        assert!(!dir.path().join(name).exists(), "{name} left in place");
        assert!(
            dir.path().join(format!("{name}.corrupt")).exists(),
            "{name} not moved aside"
        );
    }
    // Moved aside once, not reported again.
    assert_eq!(spool.pending().expect("pending").len(), 2);
}
