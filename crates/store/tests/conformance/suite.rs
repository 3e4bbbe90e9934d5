//! The behaviour every [`Store`] must have, written against the trait only.
//!
//! Each test is a plain `async fn(Arc<dyn Store>)` handed a fresh, empty,
//! migrated store. A backend runs the whole list with
//! [`conformance_tests!`], so adding a test here adds it to every backend.
//! Nothing in this file may know which backend it talks to.
//!
//! Times are whole seconds from a fixed epoch: the store is handed every
//! "now", so no test depends on the wall clock, and whole seconds survive
//! any backend's timestamp precision.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use ultron8_core::{CommandSpec, DroneFacts, ExecutionStatus, HostStats, Program};
use ultron8_store::{
    AuditFilter, DroneEnrollment, ExecutionResult, ExecutionUpdate, NewAuditRecord, NewExecution,
    NewJob, NewJoinToken, OutputChunkRecord, OutputStreamKind, Store, StoreError,
    TransitionOutcome,
};
use uuid::Uuid;

/// Expands to one `#[tokio::test]` per conformance test, each calling
/// `$run(test_fn)`. `$run` provides the fresh store and cleans up after.
macro_rules! conformance_tests {
    ($run:path) => {
        $crate::suite::conformance_tests!(@each $run;
            ping_succeeds,
            join_token_is_consumed_once,
            concurrent_join_token_consumption_has_one_winner,
            expired_join_token_is_refused,
            join_token_with_wrong_secret_or_unknown_id_is_refused,
            enrollment_creates_an_offline_drone,
            re_enrollment_replaces_credentials_and_keeps_one_record,
            registration_stores_facts_and_marks_online,
            registration_of_unknown_drone_is_not_found,
            heartbeat_stores_stats_and_marks_online,
            heartbeat_of_unknown_drone_is_not_found,
            drone_labels_merge_token_and_own_labels,
            silent_drones_are_marked_offline,
            drones_are_listed_by_id,
            job_is_stored_with_executions_and_audit,
            failed_job_creation_leaves_nothing_behind,
            jobs_are_listed_newest_first_with_status_counts,
            transitions_only_move_forward,
            transition_records_timestamps,
            terminal_state_is_never_overwritten,
            concurrent_terminal_reports_apply_once,
            terminal_transition_stores_result,
            result_is_only_stored_with_terminal_status,
            transition_of_unknown_execution_is_not_found,
            running_execution_never_expires,
            expiry_moves_overdue_executions_and_writes_audit,
            executions_awaiting_dispatch_are_requested_unexpired_and_oldest_first,
            output_is_ordered_and_deduplicated,
            output_of_terminal_execution_is_ignored,
            output_of_unknown_execution_is_not_found,
            executions_are_counted_by_status,
            audit_round_trips_every_field,
            audit_is_listed_newest_first_and_pages,
            audit_filters_combine,
            audit_limit_zero_means_one_hundred,
        );
    };
    (@each $run:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $run($crate::suite::$name).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

// --- fixtures ---------------------------------------------------------------

/// `secs` seconds after a fixed point in time.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("valid epoch") + Duration::seconds(secs)
}

fn new_id() -> String {
    Uuid::now_v7().to_string()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn secret_hash(seed: u8) -> Vec<u8> {
    vec![seed; 32]
}

fn join_token(id: &str, seed: u8, expires_at: DateTime<Utc>) -> NewJoinToken {
    NewJoinToken {
        id: id.to_string(),
        secret_sha256: secret_hash(seed),
        labels: labels(&[("env", "prod"), ("role", "web")]),
        created_by: "operator:alice".to_string(),
        created_at: t(0),
        expires_at,
    }
}

fn enrollment(
    drone_id: &str,
    token_labels: BTreeMap<String, String>,
    at: DateTime<Utc>,
) -> DroneEnrollment {
    DroneEnrollment {
        drone_id: drone_id.to_string(),
        certificate_fingerprint: format!("fp-{drone_id}-{}", at.timestamp()),
        certificate_not_after: at + Duration::days(90),
        labels: token_labels,
        token_id: format!("token-{drone_id}"),
        enrolled_at: at,
    }
}

async fn enroll(store: &dyn Store, drone_id: &str, at: DateTime<Utc>) {
    store
        .record_enrollment(&enrollment(drone_id, labels(&[("env", "prod")]), at))
        .await
        .expect("enroll drone");
}

fn facts(hostname: &str, own_labels: BTreeMap<String, String>) -> DroneFacts {
    DroneFacts {
        hostname: hostname.to_string(),
        os: "linux".to_string(),
        os_version: "12".to_string(),
        kernel: "6.1.0".to_string(),
        arch: "x86_64".to_string(),
        cpus: 8,
        memory_bytes: 16 << 30,
        labels: own_labels,
        agent_version: "0.1.0".to_string(),
    }
}

fn stats(cpu: f32) -> HostStats {
    HostStats {
        cpu_percent: cpu,
        memory_percent: 40.5,
        disk_percent: 71.25,
        load1: 0.5,
        load5: 0.25,
        load15: 0.125,
        uptime_seconds: 86_400,
        collected_at_ms: 1_893_456_000_000,
    }
}

fn command(script: &str) -> CommandSpec {
    CommandSpec {
        program: Program::Shell(script.to_string()),
        env: labels(&[("LANG", "C")]),
        working_dir: Some("/tmp".to_string()),
        timeout_ms: Some(30_000),
        output_limit_bytes: None,
    }
}

fn audit(action: &str, at: DateTime<Utc>) -> NewAuditRecord {
    NewAuditRecord {
        id: new_id(),
        at,
        actor: "operator:alice".to_string(),
        action: action.to_string(),
        job_id: None,
        execution_id: None,
        drone_id: None,
        status: None,
        detail: json!({}),
    }
}

struct CreatedJob {
    job_id: String,
    /// In the order of the drones passed to [`create_job`].
    execution_ids: Vec<String>,
}

/// A job for `drones`, created at `created_at`, whose executions expire at
/// `expires_at`.
async fn create_job(
    store: &dyn Store,
    drones: &[&str],
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> CreatedJob {
    let job = NewJob {
        id: new_id(),
        target: drones.join(","),
        requester: "operator:alice".to_string(),
        command: command("uptime"),
        created_at,
    };
    let executions: Vec<NewExecution> = drones
        .iter()
        .map(|drone| NewExecution {
            id: new_id(),
            job_id: job.id.clone(),
            drone_id: drone.to_string(),
            created_at,
            expires_at,
        })
        .collect();
    let mut submitted = audit("job.submitted", created_at);
    submitted.job_id = Some(job.id.clone());
    store
        .create_job(&job, &executions, &submitted)
        .await
        .expect("create job");
    CreatedJob {
        job_id: job.id,
        execution_ids: executions
            .into_iter()
            .map(|execution| execution.id)
            .collect(),
    }
}

fn update(status: ExecutionStatus, at: DateTime<Utc>) -> ExecutionUpdate {
    ExecutionUpdate {
        status,
        at,
        started_at: None,
        result: None,
    }
}

fn finished(
    status: ExecutionStatus,
    at: DateTime<Utc>,
    result: ExecutionResult,
) -> ExecutionUpdate {
    ExecutionUpdate {
        status,
        at,
        started_at: None,
        result: Some(result),
    }
}

fn result(exit_code: i32, stdout: &str) -> ExecutionResult {
    ExecutionResult {
        exit_code: Some(exit_code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: b"warning\n".to_vec(),
        stdout_truncated: false,
        stderr_truncated: true,
        duration_ms: 1_234,
        error: None,
    }
}

async fn status_of(store: &dyn Store, execution_id: &str) -> ExecutionStatus {
    store
        .get_execution(execution_id)
        .await
        .expect("get execution")
        .expect("execution exists")
        .status
}

async fn audit_for_execution(store: &dyn Store, execution_id: &str) -> Vec<NewAuditRecord> {
    store
        .list_audit(&AuditFilter {
            execution_id: Some(execution_id.to_string()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit")
}

fn chunk(
    execution_id: &str,
    stream: OutputStreamKind,
    offset: u64,
    data: &str,
) -> OutputChunkRecord {
    OutputChunkRecord {
        execution_id: execution_id.to_string(),
        stream,
        offset,
        data: data.as_bytes().to_vec(),
    }
}

fn assert_not_found(err: StoreError, expected_kind: &str, expected_id: &str) {
    match err {
        StoreError::NotFound { kind, id } => {
            assert_eq!(kind, expected_kind);
            assert_eq!(id, expected_id);
        }
        other => panic!("expected NotFound for {expected_kind} {expected_id}, got {other:?}"),
    }
}

// --- basics -----------------------------------------------------------------

pub async fn ping_succeeds(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

// --- join tokens ------------------------------------------------------------

pub async fn join_token_is_consumed_once(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-1", 1, t(3600)))
        .await
        .expect("create token");

    let grant = store
        .consume_join_token("tok-1", &secret_hash(1), "drone-a", t(10))
        .await
        .expect("first use succeeds");
    assert_eq!(grant.labels, labels(&[("env", "prod"), ("role", "web")]));

    let second = store
        .consume_join_token("tok-1", &secret_hash(1), "drone-b", t(11))
        .await;
    assert!(
        matches!(second, Err(StoreError::JoinTokenInvalid)),
        "a used token must be refused, got {second:?}"
    );
}

pub async fn concurrent_join_token_consumption_has_one_winner(store: Arc<dyn Store>) {
    // Several tokens, each raced by two consumers, all at once: one round is
    // easily serialised by luck, twenty rarely are.
    const TOKENS: u8 = 20;
    for seed in 0..TOKENS {
        store
            .create_join_token(&join_token(&format!("tok-{seed}"), seed, t(3600)))
            .await
            .expect("create token");
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(usize::from(TOKENS) * 2));
    let mut tasks = Vec::new();
    for seed in 0..TOKENS {
        for racer in ["a", "b"] {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let outcome = store
                    .consume_join_token(
                        &format!("tok-{seed}"),
                        &secret_hash(seed),
                        &format!("drone-{seed}-{racer}"),
                        t(10),
                    )
                    .await;
                (seed, outcome)
            }));
        }
    }

    let mut winners = BTreeMap::<u8, u32>::new();
    for task in tasks {
        let (seed, outcome) = task.await.expect("consumer task");
        match outcome {
            Ok(grant) => {
                assert_eq!(grant.labels, labels(&[("env", "prod"), ("role", "web")]));
                *winners.entry(seed).or_default() += 1;
            }
            Err(StoreError::JoinTokenInvalid) => {}
            Err(other) => panic!("unexpected error consuming tok-{seed}: {other:?}"),
        }
    }
    for seed in 0..TOKENS {
        assert_eq!(
            winners.get(&seed),
            Some(&1),
            "tok-{seed} must be consumed exactly once"
        );
    }
}

pub async fn expired_join_token_is_refused(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-old", 7, t(60)))
        .await
        .expect("create token");
    let outcome = store
        .consume_join_token("tok-old", &secret_hash(7), "drone-a", t(61))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::JoinTokenInvalid)),
        "got {outcome:?}"
    );

    // The refusal did not burn it for a caller whose clock says it is valid,
    // which shows the refusal was about time, not a side effect.
    store
        .consume_join_token("tok-old", &secret_hash(7), "drone-a", t(59))
        .await
        .expect("token still valid before its expiry");
}

pub async fn join_token_with_wrong_secret_or_unknown_id_is_refused(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-1", 1, t(3600)))
        .await
        .expect("create token");

    let wrong_secret = store
        .consume_join_token("tok-1", &secret_hash(2), "drone-a", t(10))
        .await;
    assert!(
        matches!(wrong_secret, Err(StoreError::JoinTokenInvalid)),
        "got {wrong_secret:?}"
    );
    let unknown = store
        .consume_join_token("tok-404", &secret_hash(1), "drone-a", t(10))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::JoinTokenInvalid)),
        "got {unknown:?}"
    );

    // A wrong guess must not consume the token.
    store
        .consume_join_token("tok-1", &secret_hash(1), "drone-a", t(10))
        .await
        .expect("the right secret still works");
}

// --- drones -----------------------------------------------------------------

pub async fn enrollment_creates_an_offline_drone(store: Arc<dyn Store>) {
    assert_eq!(store.get_drone("drone-a").await.expect("get drone"), None);

    let enrolled = enrollment("drone-a", labels(&[("env", "prod")]), t(5));
    store.record_enrollment(&enrolled).await.expect("enroll");

    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.id, "drone-a");
    assert_eq!(
        drone.facts,
        DroneFacts::default(),
        "no facts before registration"
    );
    assert_eq!(drone.token_labels, labels(&[("env", "prod")]));
    assert_eq!(drone.stats, None);
    assert!(!drone.online, "enrolled but not yet registered");
    assert_eq!(drone.enrolled_at, t(5));
    assert_eq!(drone.registered_at, None);
    assert_eq!(drone.last_seen_at, None);
    assert_eq!(
        drone.certificate_fingerprint,
        enrolled.certificate_fingerprint
    );
}

pub async fn re_enrollment_replaces_credentials_and_keeps_one_record(store: Arc<dyn Store>) {
    store
        .record_enrollment(&enrollment(
            "drone-a",
            labels(&[("env", "prod"), ("rack", "r1")]),
            t(5),
        ))
        .await
        .expect("enroll");
    store
        .record_registration("drone-a", &facts("host-a", BTreeMap::new()), t(6))
        .await
        .expect("register");

    let again = enrollment("drone-a", labels(&[("env", "staging")]), t(100));
    store.record_enrollment(&again).await.expect("re-enroll");

    let drones = store.list_drones().await.expect("list drones");
    assert_eq!(
        drones.len(),
        1,
        "re-enrollment must not duplicate the drone"
    );
    let drone = &drones[0];
    assert_eq!(drone.certificate_fingerprint, again.certificate_fingerprint);
    assert_eq!(drone.enrolled_at, t(100));
    assert_eq!(
        drone.token_labels,
        labels(&[("env", "staging")]),
        "the latest token's labels apply"
    );
    assert_eq!(
        drone.facts.hostname, "host-a",
        "what the drone reported is kept"
    );
    assert_eq!(drone.registered_at, Some(t(6)));
}

pub async fn registration_stores_facts_and_marks_online(store: Arc<dyn Store>) {
    enroll(&*store, "drone-a", t(0)).await;
    let reported = facts("host-a", labels(&[("role", "db")]));
    store
        .record_registration("drone-a", &reported, t(10))
        .await
        .expect("register");

    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.facts, reported);
    assert!(drone.online);
    assert_eq!(drone.registered_at, Some(t(10)));
    assert_eq!(drone.last_seen_at, Some(t(10)));

    // A later registration (drone restart) replaces the facts.
    let mut upgraded = reported.clone();
    upgraded.agent_version = "0.2.0".to_string();
    store
        .record_registration("drone-a", &upgraded, t(20))
        .await
        .expect("register again");
    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.facts, upgraded);
    assert_eq!(drone.registered_at, Some(t(20)));
}

pub async fn registration_of_unknown_drone_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .record_registration("ghost", &facts("ghost", BTreeMap::new()), t(1))
        .await
        .expect_err("unknown drone");
    assert_not_found(err, "drone", "ghost");
    assert_eq!(
        store.get_drone("ghost").await.expect("get drone"),
        None,
        "no drone appears"
    );
}

pub async fn heartbeat_stores_stats_and_marks_online(store: Arc<dyn Store>) {
    enroll(&*store, "drone-a", t(0)).await;
    store
        .record_registration("drone-a", &facts("host-a", BTreeMap::new()), t(10))
        .await
        .expect("register");
    store
        .record_heartbeat("drone-a", &stats(12.5), t(40))
        .await
        .expect("heartbeat");

    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.stats, Some(stats(12.5)));
    assert!(drone.online);
    assert_eq!(drone.last_seen_at, Some(t(40)));
    assert_eq!(
        drone.registered_at,
        Some(t(10)),
        "a heartbeat is not a registration"
    );

    store
        .record_heartbeat("drone-a", &stats(99.0), t(70))
        .await
        .expect("heartbeat");
    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.stats, Some(stats(99.0)), "the latest stats win");
}

pub async fn heartbeat_of_unknown_drone_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .record_heartbeat("ghost", &stats(1.0), t(1))
        .await
        .expect_err("unknown drone");
    assert_not_found(err, "drone", "ghost");
}

pub async fn drone_labels_merge_token_and_own_labels(store: Arc<dyn Store>) {
    store
        .record_enrollment(&enrollment(
            "drone-a",
            labels(&[("env", "prod"), ("role", "web")]),
            t(0),
        ))
        .await
        .expect("enroll");
    store
        .record_registration(
            "drone-a",
            &facts("host-a", labels(&[("role", "db"), ("zone", "eu-1")])),
            t(1),
        )
        .await
        .expect("register");

    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(
        drone.token_labels,
        labels(&[("env", "prod"), ("role", "web")])
    );
    assert_eq!(
        drone.facts.labels,
        labels(&[("role", "db"), ("zone", "eu-1")])
    );
    assert_eq!(
        drone.labels(),
        labels(&[("env", "prod"), ("role", "db"), ("zone", "eu-1")]),
        "token labels overlaid with the drone's own, the drone's winning"
    );
}

pub async fn silent_drones_are_marked_offline(store: Arc<dyn Store>) {
    for drone in ["drone-a", "drone-b", "drone-c", "drone-d"] {
        enroll(&*store, drone, t(0)).await;
    }
    // drone-d never registers: enrolled, offline, never seen.
    store
        .record_registration("drone-a", &facts("a", BTreeMap::new()), t(10))
        .await
        .expect("register a");
    store
        .record_registration("drone-b", &facts("b", BTreeMap::new()), t(10))
        .await
        .expect("register b");
    store
        .record_registration("drone-c", &facts("c", BTreeMap::new()), t(10))
        .await
        .expect("register c");
    store
        .record_heartbeat("drone-b", &stats(1.0), t(100))
        .await
        .expect("heartbeat b");

    let offline = store
        .mark_silent_drones_offline(t(50))
        .await
        .expect("mark offline");
    assert_eq!(offline, vec!["drone-a".to_string(), "drone-c".to_string()]);

    let online: BTreeMap<String, bool> = store
        .list_drones()
        .await
        .expect("list drones")
        .into_iter()
        .map(|drone| (drone.id, drone.online))
        .collect();
    assert_eq!(
        online,
        BTreeMap::from([
            ("drone-a".to_string(), false),
            ("drone-b".to_string(), true),
            ("drone-c".to_string(), false),
            ("drone-d".to_string(), false),
        ])
    );

    // Already offline: not reported again.
    let again = store
        .mark_silent_drones_offline(t(60))
        .await
        .expect("mark offline");
    assert!(again.is_empty(), "got {again:?}");

    // A heartbeat brings a drone back.
    store
        .record_heartbeat("drone-a", &stats(2.0), t(200))
        .await
        .expect("heartbeat a");
    let drone = store
        .get_drone("drone-a")
        .await
        .expect("get drone")
        .expect("drone exists");
    assert!(drone.online);
}

pub async fn drones_are_listed_by_id(store: Arc<dyn Store>) {
    assert!(store.list_drones().await.expect("list drones").is_empty());
    for drone in ["drone-c", "drone-a", "drone-b"] {
        enroll(&*store, drone, t(0)).await;
    }
    let ids: Vec<String> = store
        .list_drones()
        .await
        .expect("list drones")
        .into_iter()
        .map(|drone| drone.id)
        .collect();
    assert_eq!(ids, ["drone-a", "drone-b", "drone-c"]);
}

// --- jobs -------------------------------------------------------------------

pub async fn job_is_stored_with_executions_and_audit(store: Arc<dyn Store>) {
    assert_eq!(store.get_job("nope").await.expect("get job"), None);
    assert_eq!(
        store.get_execution("nope").await.expect("get execution"),
        None
    );

    let created = create_job(&*store, &["drone-c", "drone-a", "drone-b"], t(10), t(70)).await;
    let job = store
        .get_job(&created.job_id)
        .await
        .expect("get job")
        .expect("job exists");
    assert_eq!(job.id, created.job_id);
    assert_eq!(job.target, "drone-c,drone-a,drone-b");
    assert_eq!(job.requester, "operator:alice");
    assert_eq!(job.command, command("uptime"));
    assert_eq!(job.created_at, t(10));

    let drones: Vec<&str> = job
        .executions
        .iter()
        .map(|execution| execution.drone_id.as_str())
        .collect();
    assert_eq!(
        drones,
        ["drone-a", "drone-b", "drone-c"],
        "ordered by drone id"
    );
    for execution in &job.executions {
        assert_eq!(execution.job_id, created.job_id);
        assert_eq!(execution.status, ExecutionStatus::Requested);
        assert_eq!(execution.result, ExecutionResult::default());
        assert_eq!(execution.created_at, t(10));
        assert_eq!(execution.expires_at, t(70));
        assert_eq!(execution.dispatched_at, None);
        assert_eq!(execution.started_at, None);
        assert_eq!(execution.finished_at, None);
        assert_eq!(
            store
                .get_execution(&execution.id)
                .await
                .expect("get execution")
                .as_ref(),
            Some(execution)
        );
    }
    assert!(
        job.executions
            .iter()
            .any(|e| e.id == created.execution_ids[0] && e.drone_id == "drone-c")
    );

    let audit = store
        .list_audit(&AuditFilter {
            job_id: Some(created.job_id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "job.submitted");
    assert_eq!(store.count_jobs().await.expect("count jobs"), 1);
}

pub async fn failed_job_creation_leaves_nothing_behind(store: Arc<dyn Store>) {
    let first = create_job(&*store, &["drone-a"], t(0), t(60)).await;

    // The second job reuses an execution id, so its insert must fail part
    // way; the job row and the audit record written before must go too.
    let job = NewJob {
        id: new_id(),
        target: "drone-b".to_string(),
        requester: "operator:bob".to_string(),
        command: command("false"),
        created_at: t(1),
    };
    let executions = [NewExecution {
        id: first.execution_ids[0].clone(),
        job_id: job.id.clone(),
        drone_id: "drone-b".to_string(),
        created_at: t(1),
        expires_at: t(61),
    }];
    let mut submitted = audit("job.submitted", t(1));
    submitted.job_id = Some(job.id.clone());
    store
        .create_job(&job, &executions, &submitted)
        .await
        .expect_err("duplicate execution id");

    assert_eq!(store.get_job(&job.id).await.expect("get job"), None);
    assert_eq!(store.count_jobs().await.expect("count jobs"), 1);
    let audit = store
        .list_audit(&AuditFilter {
            job_id: Some(job.id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert!(
        audit.is_empty(),
        "audit of a job that was not created: {audit:?}"
    );
    let original = store
        .get_execution(&first.execution_ids[0])
        .await
        .expect("get execution")
        .expect("execution exists");
    assert_eq!(original.job_id, first.job_id);
}

pub async fn jobs_are_listed_newest_first_with_status_counts(store: Arc<dyn Store>) {
    assert!(store.list_jobs(10).await.expect("list jobs").is_empty());
    assert_eq!(store.count_jobs().await.expect("count jobs"), 0);

    let oldest = create_job(&*store, &["drone-a", "drone-b", "drone-c"], t(10), t(600)).await;
    let middle = create_job(&*store, &["drone-a"], t(20), t(600)).await;
    let newest = create_job(&*store, &["drone-a", "drone-b"], t(30), t(600)).await;

    let applied =
        |outcome: TransitionOutcome| assert!(matches!(outcome, TransitionOutcome::Applied { .. }));
    applied(
        store
            .transition_execution(
                &oldest.execution_ids[0],
                &update(ExecutionStatus::Running, t(11)),
                None,
            )
            .await
            .expect("transition"),
    );
    applied(
        store
            .transition_execution(
                &oldest.execution_ids[1],
                &finished(ExecutionStatus::Succeeded, t(12), result(0, "ok")),
                None,
            )
            .await
            .expect("transition"),
    );

    let jobs = store.list_jobs(10).await.expect("list jobs");
    let ids: Vec<&str> = jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, [&newest.job_id, &middle.job_id, &oldest.job_id]);
    assert_eq!(
        jobs[0].status_counts,
        BTreeMap::from([(ExecutionStatus::Requested, 2)])
    );
    assert_eq!(
        jobs[1].status_counts,
        BTreeMap::from([(ExecutionStatus::Requested, 1)])
    );
    assert_eq!(
        jobs[2].status_counts,
        BTreeMap::from([
            (ExecutionStatus::Requested, 1),
            (ExecutionStatus::Running, 1),
            (ExecutionStatus::Succeeded, 1),
        ])
    );
    assert_eq!(jobs[2].command, command("uptime"));
    assert_eq!(jobs[2].requester, "operator:alice");
    assert_eq!(jobs[2].created_at, t(10));

    let limited = store.list_jobs(2).await.expect("list jobs");
    let ids: Vec<&str> = limited.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(ids, [&newest.job_id, &middle.job_id]);
    assert_eq!(store.count_jobs().await.expect("count jobs"), 3);
}

// --- execution state machine ------------------------------------------------

pub async fn transitions_only_move_forward(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let id = &job.execution_ids[0];

    let mut dispatched = audit("execution.dispatched", t(1));
    dispatched.execution_id = Some(id.clone());
    let outcome = store
        .transition_execution(
            id,
            &update(ExecutionStatus::Dispatched, t(1)),
            Some(&dispatched),
        )
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Applied {
            previous: ExecutionStatus::Requested
        }
    );

    let outcome = store
        .transition_execution(id, &update(ExecutionStatus::Running, t(2)), None)
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Applied {
            previous: ExecutionStatus::Dispatched
        }
    );

    for backwards in [
        ExecutionStatus::Requested,
        ExecutionStatus::Dispatched,
        ExecutionStatus::Running,
    ] {
        let mut refused_audit = audit("execution.bogus", t(3));
        refused_audit.execution_id = Some(id.clone());
        let outcome = store
            .transition_execution(id, &update(backwards, t(3)), Some(&refused_audit))
            .await
            .expect("transition");
        assert_eq!(
            outcome,
            TransitionOutcome::Refused {
                current: ExecutionStatus::Running
            },
            "running -> {backwards}"
        );
    }
    assert_eq!(status_of(&*store, id).await, ExecutionStatus::Running);

    // Only the applied transition's audit was written.
    let audit = audit_for_execution(&*store, id).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0], dispatched);
}

pub async fn transition_records_timestamps(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a", "drone-b", "drone-c"], t(0), t(600)).await;

    // The normal path.
    let a = &job.execution_ids[0];
    for (status, at) in [
        (ExecutionStatus::Dispatched, t(1)),
        (ExecutionStatus::Running, t(2)),
        (ExecutionStatus::Succeeded, t(5)),
    ] {
        store
            .transition_execution(a, &update(status, at), None)
            .await
            .expect("transition");
    }
    let execution = store.get_execution(a).await.expect("get").expect("exists");
    assert_eq!(execution.dispatched_at, Some(t(1)));
    assert_eq!(execution.started_at, Some(t(2)));
    assert_eq!(execution.finished_at, Some(t(5)));

    // Running reported with the drone's own start time.
    let b = &job.execution_ids[1];
    let mut running = update(ExecutionStatus::Running, t(9));
    running.started_at = Some(t(8));
    store
        .transition_execution(b, &running, None)
        .await
        .expect("transition");
    let execution = store.get_execution(b).await.expect("get").expect("exists");
    assert_eq!(
        execution.dispatched_at, None,
        "skipped step leaves no timestamp"
    );
    assert_eq!(execution.started_at, Some(t(8)));
    assert_eq!(execution.finished_at, None);

    // Straight to a terminal state, with the start time on the result.
    let c = &job.execution_ids[2];
    let mut failed = finished(ExecutionStatus::Failed, t(20), result(1, ""));
    failed.started_at = Some(t(15));
    store
        .transition_execution(c, &failed, None)
        .await
        .expect("transition");
    let execution = store.get_execution(c).await.expect("get").expect("exists");
    assert_eq!(execution.dispatched_at, None);
    assert_eq!(execution.started_at, Some(t(15)));
    assert_eq!(execution.finished_at, Some(t(20)));
}

pub async fn terminal_state_is_never_overwritten(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let id = &job.execution_ids[0];
    store
        .transition_execution(id, &update(ExecutionStatus::Running, t(1)), None)
        .await
        .expect("transition");

    let first = result(0, "first\n");
    let mut first_audit = audit("execution.finished", t(2));
    first_audit.execution_id = Some(id.clone());
    let outcome = store
        .transition_execution(
            id,
            &finished(ExecutionStatus::Succeeded, t(2), first.clone()),
            Some(&first_audit),
        )
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Applied {
            previous: ExecutionStatus::Running
        }
    );

    let mut second = result(2, "second\n");
    second.error = Some("late duplicate".to_string());
    let mut second_audit = audit("execution.finished", t(3));
    second_audit.execution_id = Some(id.clone());
    let outcome = store
        .transition_execution(
            id,
            &finished(ExecutionStatus::Failed, t(3), second),
            Some(&second_audit),
        )
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Refused {
            current: ExecutionStatus::Succeeded
        }
    );

    // The same terminal status again is refused too.
    let outcome = store
        .transition_execution(
            id,
            &finished(ExecutionStatus::Succeeded, t(4), result(0, "third\n")),
            None,
        )
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Refused {
            current: ExecutionStatus::Succeeded
        }
    );

    let execution = store.get_execution(id).await.expect("get").expect("exists");
    assert_eq!(execution.status, ExecutionStatus::Succeeded);
    assert_eq!(execution.result, first, "the first result stands");
    assert_eq!(execution.finished_at, Some(t(2)));
    assert_eq!(audit_for_execution(&*store, id).await, vec![first_audit]);
}

pub async fn concurrent_terminal_reports_apply_once(store: Arc<dyn Store>) {
    // Ten executions, each raced by four different terminal reports, all at
    // once: a lost update shows up in at least one of them.
    let drones: Vec<String> = (0..10).map(|i| format!("drone-{i}")).collect();
    let drone_refs: Vec<&str> = drones.iter().map(String::as_str).collect();
    let job = create_job(&*store, &drone_refs, t(0), t(600)).await;
    let reports = [
        ExecutionStatus::Succeeded,
        ExecutionStatus::Failed,
        ExecutionStatus::TimedOut,
        ExecutionStatus::Lost,
    ];
    let barrier = Arc::new(tokio::sync::Barrier::new(
        job.execution_ids.len() * reports.len(),
    ));
    let mut tasks = Vec::new();
    for id in &job.execution_ids {
        for (i, status) in reports.into_iter().enumerate() {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let mut record = audit("execution.finished", t(10));
                record.execution_id = Some(id.clone());
                record.status = Some(status);
                let exit_code = i32::try_from(i).expect("small index");
                barrier.wait().await;
                let outcome = store
                    .transition_execution(
                        &id,
                        &finished(status, t(10), result(exit_code, "x")),
                        Some(&record),
                    )
                    .await
                    .expect("transition");
                (id, status, exit_code, outcome)
            }));
        }
    }

    let mut applied = BTreeMap::<String, Vec<(ExecutionStatus, i32)>>::new();
    for task in tasks {
        let (id, status, exit_code, outcome) = task.await.expect("reporter task");
        match outcome {
            TransitionOutcome::Applied { previous } => {
                assert_eq!(previous, ExecutionStatus::Requested);
                applied.entry(id).or_default().push((status, exit_code));
            }
            TransitionOutcome::Refused { current } => assert!(current.is_terminal()),
            TransitionOutcome::NotFound => panic!("execution {id} vanished"),
        }
    }
    for id in &job.execution_ids {
        let winners = applied.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            winners.len(),
            1,
            "exactly one terminal report applies to {id}: {winners:?}"
        );
        let (status, exit_code) = winners[0];
        let execution = store.get_execution(id).await.expect("get").expect("exists");
        assert_eq!(execution.status, status, "the winner's status is stored");
        assert_eq!(
            execution.result.exit_code,
            Some(exit_code),
            "the winner's result is stored"
        );
        let audit = audit_for_execution(&*store, id).await;
        assert_eq!(audit.len(), 1, "one audit record for {id}: {audit:?}");
        assert_eq!(audit[0].status, Some(status));
    }
}

pub async fn terminal_transition_stores_result(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a", "drone-b"], t(0), t(600)).await;

    let full = ExecutionResult {
        exit_code: Some(3),
        // Not UTF-8: output is bytes.
        stdout: vec![0, 159, 146, 150, b'\n'],
        stderr: b"boom\n".to_vec(),
        stdout_truncated: true,
        stderr_truncated: false,
        duration_ms: 98_765,
        error: None,
    };
    store
        .transition_execution(
            &job.execution_ids[0],
            &finished(ExecutionStatus::Failed, t(5), full.clone()),
            None,
        )
        .await
        .expect("transition");
    let execution = store
        .get_execution(&job.execution_ids[0])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(execution.status, ExecutionStatus::Failed);
    assert_eq!(execution.result, full);

    // A drone that could not start the command: no exit code, an error.
    let refused = ExecutionResult {
        exit_code: None,
        error: Some("working directory /nope does not exist".to_string()),
        ..ExecutionResult::default()
    };
    store
        .transition_execution(
            &job.execution_ids[1],
            &finished(ExecutionStatus::Rejected, t(6), refused.clone()),
            None,
        )
        .await
        .expect("transition");
    let execution = store
        .get_execution(&job.execution_ids[1])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(execution.status, ExecutionStatus::Rejected);
    assert_eq!(execution.result, refused);
}

pub async fn result_is_only_stored_with_terminal_status(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let id = &job.execution_ids[0];
    let mut running = update(ExecutionStatus::Running, t(1));
    running.result = Some(result(0, "premature"));
    store
        .transition_execution(id, &running, None)
        .await
        .expect("transition");
    let execution = store.get_execution(id).await.expect("get").expect("exists");
    assert_eq!(execution.status, ExecutionStatus::Running);
    assert_eq!(execution.result, ExecutionResult::default());
}

pub async fn transition_of_unknown_execution_is_not_found(store: Arc<dyn Store>) {
    let mut record = audit("execution.finished", t(1));
    record.execution_id = Some("ghost".to_string());
    let outcome = store
        .transition_execution(
            "ghost",
            &update(ExecutionStatus::Running, t(1)),
            Some(&record),
        )
        .await
        .expect("transition");
    assert_eq!(outcome, TransitionOutcome::NotFound);
    assert!(audit_for_execution(&*store, "ghost").await.is_empty());
}

pub async fn running_execution_never_expires(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(60)).await;
    let id = &job.execution_ids[0];
    store
        .transition_execution(id, &update(ExecutionStatus::Running, t(30)), None)
        .await
        .expect("transition");

    let expired = store
        .expire_overdue_executions(t(10_000))
        .await
        .expect("expire");
    assert!(
        expired.is_empty(),
        "a running execution was expired: {expired:?}"
    );
    assert_eq!(status_of(&*store, id).await, ExecutionStatus::Running);

    let outcome = store
        .transition_execution(id, &update(ExecutionStatus::Expired, t(10_000)), None)
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Refused {
            current: ExecutionStatus::Running
        }
    );
}

pub async fn expiry_moves_overdue_executions_and_writes_audit(store: Arc<dyn Store>) {
    let overdue = create_job(
        &*store,
        &["drone-a", "drone-b", "drone-c", "drone-d"],
        t(0),
        t(60),
    )
    .await;
    let later = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let [requested, dispatched, running, done] =
        [0, 1, 2, 3].map(|i| overdue.execution_ids[i].clone());
    store
        .transition_execution(
            &dispatched,
            &update(ExecutionStatus::Dispatched, t(1)),
            None,
        )
        .await
        .expect("transition");
    store
        .transition_execution(&running, &update(ExecutionStatus::Running, t(2)), None)
        .await
        .expect("transition");
    store
        .transition_execution(
            &done,
            &finished(ExecutionStatus::Succeeded, t(3), result(0, "ok")),
            None,
        )
        .await
        .expect("transition");

    assert!(
        store
            .expire_overdue_executions(t(59))
            .await
            .expect("expire")
            .is_empty(),
        "nothing is due before its expiry"
    );

    let expired = store
        .expire_overdue_executions(t(61))
        .await
        .expect("expire");
    let mut expired_ids: Vec<&str> = expired
        .iter()
        .map(|execution| execution.id.as_str())
        .collect();
    expired_ids.sort_unstable();
    let mut expected = vec![requested.as_str(), dispatched.as_str()];
    expected.sort_unstable();
    assert_eq!(expired_ids, expected);
    for execution in &expired {
        assert_eq!(execution.status, ExecutionStatus::Expired);
        assert_eq!(execution.expires_at, t(60));
        assert!(execution.finished_at.is_some());
        assert_eq!(
            store
                .get_execution(&execution.id)
                .await
                .expect("get")
                .as_ref(),
            Some(execution),
            "the returned record is what is stored"
        );
    }
    assert_eq!(status_of(&*store, &running).await, ExecutionStatus::Running);
    assert_eq!(status_of(&*store, &done).await, ExecutionStatus::Succeeded);
    assert_eq!(
        status_of(&*store, &later.execution_ids[0]).await,
        ExecutionStatus::Requested
    );

    for execution in &expired {
        let audit = audit_for_execution(&*store, &execution.id).await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        let record = &audit[0];
        assert!(
            Uuid::parse_str(&record.id).is_ok(),
            "audit id {} is a uuid",
            record.id
        );
        assert_eq!(record.actor, "hive");
        assert_eq!(record.action, "execution.expired");
        assert_eq!(record.status, Some(ExecutionStatus::Expired));
        assert_eq!(record.job_id.as_deref(), Some(overdue.job_id.as_str()));
        assert_eq!(record.execution_id.as_deref(), Some(execution.id.as_str()));
        assert_eq!(
            record.drone_id.as_deref(),
            Some(execution.drone_id.as_str())
        );
        assert_eq!(record.detail["expires_at"], json!(t(60)));
    }

    // Expired is terminal: a late result is refused and a second sweep is a
    // no-op that writes nothing.
    let outcome = store
        .transition_execution(
            &requested,
            &finished(ExecutionStatus::Succeeded, t(62), result(0, "late")),
            None,
        )
        .await
        .expect("transition");
    assert_eq!(
        outcome,
        TransitionOutcome::Refused {
            current: ExecutionStatus::Expired
        }
    );
    assert!(
        store
            .expire_overdue_executions(t(62))
            .await
            .expect("expire")
            .is_empty()
    );
    let all_expiry_audit = store
        .list_audit(&AuditFilter {
            action: Some("execution.expired".to_string()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(all_expiry_audit.len(), 2);
}

pub async fn executions_awaiting_dispatch_are_requested_unexpired_and_oldest_first(
    store: Arc<dyn Store>,
) {
    let newest = create_job(&*store, &["drone-a"], t(30), t(1000)).await;
    let oldest = create_job(&*store, &["drone-a", "drone-b"], t(10), t(1000)).await;
    let middle = create_job(&*store, &["drone-c"], t(20), t(1000)).await;
    let expiring = create_job(&*store, &["drone-d"], t(5), t(40)).await;
    let too_recent = create_job(&*store, &["drone-e"], t(100), t(1000)).await;
    // Dispatched already: not awaiting.
    store
        .transition_execution(
            &oldest.execution_ids[1],
            &update(ExecutionStatus::Dispatched, t(11)),
            None,
        )
        .await
        .expect("transition");

    let pending = store
        .executions_awaiting_dispatch(t(50), t(45), 10)
        .await
        .expect("awaiting dispatch");
    let ids: Vec<&str> = pending.iter().map(|p| p.execution_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            oldest.execution_ids[0].as_str(),
            middle.execution_ids[0].as_str(),
            newest.execution_ids[0].as_str(),
        ],
        "requested, created before the cutoff, unexpired, oldest first"
    );
    assert!(!ids.contains(&expiring.execution_ids[0].as_str()));
    assert!(!ids.contains(&too_recent.execution_ids[0].as_str()));

    let first = &pending[0];
    assert_eq!(first.job_id, oldest.job_id);
    assert_eq!(first.drone_id, "drone-a");
    assert_eq!(first.requester, "operator:alice");
    assert_eq!(first.command, command("uptime"));
    assert_eq!(first.created_at, t(10));
    assert_eq!(first.expires_at, t(1000));

    let limited = store
        .executions_awaiting_dispatch(t(50), t(45), 2)
        .await
        .expect("awaiting dispatch");
    assert_eq!(limited, pending[..2].to_vec());

    // Before its expiry the expiring one is still eligible.
    let early = store
        .executions_awaiting_dispatch(t(50), t(39), 10)
        .await
        .expect("awaiting dispatch");
    assert_eq!(early[0].execution_id, expiring.execution_ids[0]);
}

// --- output -----------------------------------------------------------------

pub async fn output_is_ordered_and_deduplicated(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let id = &job.execution_ids[0];
    assert!(store.execution_output(id).await.expect("output").is_empty());
    store
        .transition_execution(id, &update(ExecutionStatus::Running, t(1)), None)
        .await
        .expect("transition");

    use OutputStreamKind::{Stderr, Stdout};
    for piece in [
        chunk(id, Stderr, 0, "err0"),
        chunk(id, Stdout, 6, "world\n"),
        chunk(id, Stdout, 0, "hello "),
        chunk(id, Stderr, 4, "err1"),
        // Redelivered with different bytes: the first copy stays.
        chunk(id, Stdout, 0, "HELLO "),
    ] {
        store.append_output(&piece).await.expect("append output");
    }

    let output = store.execution_output(id).await.expect("output");
    assert_eq!(
        output,
        vec![
            chunk(id, Stdout, 0, "hello "),
            chunk(id, Stdout, 6, "world\n"),
            chunk(id, Stderr, 0, "err0"),
            chunk(id, Stderr, 4, "err1"),
        ],
        "stdout before stderr, each by offset, duplicates dropped"
    );
}

pub async fn output_of_terminal_execution_is_ignored(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let id = &job.execution_ids[0];
    // Output may arrive before the running report.
    store
        .append_output(&chunk(id, OutputStreamKind::Stdout, 0, "early"))
        .await
        .expect("append output");
    store
        .transition_execution(
            id,
            &finished(ExecutionStatus::Succeeded, t(2), result(0, "early")),
            None,
        )
        .await
        .expect("transition");
    store
        .append_output(&chunk(id, OutputStreamKind::Stdout, 5, "late"))
        .await
        .expect("late output is ignored, not an error");
    assert_eq!(
        store.execution_output(id).await.expect("output"),
        vec![chunk(id, OutputStreamKind::Stdout, 0, "early")]
    );
}

pub async fn output_of_unknown_execution_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .append_output(&chunk("ghost", OutputStreamKind::Stdout, 0, "boo"))
        .await
        .expect_err("unknown execution");
    assert_not_found(err, "execution", "ghost");
    assert!(
        store
            .execution_output("ghost")
            .await
            .expect("output")
            .is_empty()
    );
}

// --- metrics ----------------------------------------------------------------

pub async fn executions_are_counted_by_status(store: Arc<dyn Store>) {
    let zeros: Vec<(ExecutionStatus, i64)> =
        ExecutionStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    assert_eq!(
        store.count_executions_by_status().await.expect("count"),
        zeros
    );

    let job = create_job(&*store, &["a", "b", "c", "d"], t(0), t(600)).await;
    store
        .transition_execution(
            &job.execution_ids[0],
            &update(ExecutionStatus::Running, t(1)),
            None,
        )
        .await
        .expect("transition");
    store
        .transition_execution(
            &job.execution_ids[1],
            &update(ExecutionStatus::Running, t(1)),
            None,
        )
        .await
        .expect("transition");
    store
        .transition_execution(
            &job.execution_ids[2],
            &finished(ExecutionStatus::Failed, t(2), result(1, "")),
            None,
        )
        .await
        .expect("transition");

    let counts: BTreeMap<ExecutionStatus, i64> = store
        .count_executions_by_status()
        .await
        .expect("count")
        .into_iter()
        .collect();
    let mut expected: BTreeMap<ExecutionStatus, i64> =
        ExecutionStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    expected.insert(ExecutionStatus::Requested, 1);
    expected.insert(ExecutionStatus::Running, 2);
    expected.insert(ExecutionStatus::Failed, 1);
    assert_eq!(counts, expected, "every status is reported, zeros included");
}

// --- audit ------------------------------------------------------------------

pub async fn audit_round_trips_every_field(store: Arc<dyn Store>) {
    let full = NewAuditRecord {
        id: new_id(),
        at: t(42),
        actor: "drone:drone-a".to_string(),
        action: "execution.finished".to_string(),
        job_id: Some("job-1".to_string()),
        execution_id: Some("exec-1".to_string()),
        drone_id: Some("drone-a".to_string()),
        status: Some(ExecutionStatus::TimedOut),
        detail: json!({ "exit_code": null, "note": "killed after 30s", "nested": { "list": [1, 2.5, "x"] } }),
    };
    let bare = audit("token.created", t(43));
    store.append_audit(&full).await.expect("append");
    store.append_audit(&bare).await.expect("append");

    let listed = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list audit");
    assert_eq!(listed, vec![bare, full]);
}

pub async fn audit_is_listed_newest_first_and_pages(store: Arc<dyn Store>) {
    let mut records = Vec::new();
    for i in 0..7 {
        let record = audit(&format!("test.step{i}"), t(i));
        store.append_audit(&record).await.expect("append");
        records.push(record);
    }
    // Newest first is by id (uuid v7: creation order).
    records.sort_by(|a, b| b.id.cmp(&a.id));

    let all = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list audit");
    assert_eq!(all, records);

    let mut pages = Vec::new();
    let mut before_id = None;
    loop {
        let page = store
            .list_audit(&AuditFilter {
                limit: 3,
                before_id: before_id.clone(),
                ..AuditFilter::default()
            })
            .await
            .expect("list audit");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        before_id = page.last().map(|record| record.id.clone());
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(pages.concat(), records, "pages are disjoint and complete");
}

pub async fn audit_filters_combine(store: Arc<dyn Store>) {
    let record = |action: &str,
                  at: i64,
                  actor: &str,
                  job: Option<&str>,
                  drone: Option<&str>,
                  status: Option<ExecutionStatus>| {
        NewAuditRecord {
            actor: actor.to_string(),
            job_id: job.map(str::to_string),
            execution_id: job.map(|job| format!("{job}-exec")),
            drone_id: drone.map(str::to_string),
            status,
            ..audit(action, t(at))
        }
    };
    let records = [
        record(
            "job.submitted",
            10,
            "operator:alice",
            Some("job-1"),
            None,
            Some(ExecutionStatus::Requested),
        ),
        record(
            "execution.finished",
            20,
            "drone:a",
            Some("job-1"),
            Some("a"),
            Some(ExecutionStatus::Succeeded),
        ),
        record(
            "execution.finished",
            30,
            "drone:b",
            Some("job-2"),
            Some("b"),
            Some(ExecutionStatus::Failed),
        ),
        record("drone.enrolled", 40, "hive", None, Some("a"), None),
        record("token.created", 50, "operator:bob", None, None, None),
    ];
    for record in &records {
        store.append_audit(record).await.expect("append");
    }
    let actions = |listed: Vec<NewAuditRecord>| -> Vec<(String, i64)> {
        listed
            .into_iter()
            .map(|record| (record.action, (record.at - t(0)).num_seconds()))
            .collect()
    };
    let list = |filter: AuditFilter| {
        let store = Arc::clone(&store);
        async move { actions(store.list_audit(&filter).await.expect("list audit")) }
    };
    let pairs = |expected: &[(&str, i64)]| -> Vec<(String, i64)> {
        expected
            .iter()
            .map(|(action, at)| (action.to_string(), *at))
            .collect()
    };

    assert_eq!(
        list(AuditFilter {
            since: Some(t(20)),
            until: Some(t(40)),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("execution.finished", 30), ("execution.finished", 20)]),
        "since is inclusive, until exclusive"
    );
    assert_eq!(
        list(AuditFilter {
            actor: Some("hive".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("drone.enrolled", 40)])
    );
    assert_eq!(
        list(AuditFilter {
            action: Some("execution.finished".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("execution.finished", 30), ("execution.finished", 20)])
    );
    assert_eq!(
        list(AuditFilter {
            job_id: Some("job-1".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("execution.finished", 20), ("job.submitted", 10)])
    );
    assert_eq!(
        list(AuditFilter {
            execution_id: Some("job-2-exec".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("execution.finished", 30)])
    );
    assert_eq!(
        list(AuditFilter {
            drone_id: Some("a".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("drone.enrolled", 40), ("execution.finished", 20)])
    );
    assert_eq!(
        list(AuditFilter {
            status: Some(ExecutionStatus::Failed),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("execution.finished", 30)])
    );
    assert_eq!(
        list(AuditFilter {
            drone_id: Some("a".into()),
            action: Some("execution.finished".into()),
            since: Some(t(15)),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("execution.finished", 20)]),
        "filters combine with AND"
    );
    assert_eq!(
        list(AuditFilter {
            job_id: Some("job-404".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[])
    );
}

pub async fn audit_limit_zero_means_one_hundred(store: Arc<dyn Store>) {
    for i in 0..105 {
        store
            .append_audit(&audit("test.bulk", t(i)))
            .await
            .expect("append");
    }
    let listed = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list audit");
    assert_eq!(listed.len(), 100);
    let limited = store
        .list_audit(&AuditFilter {
            limit: 5,
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(limited, listed[..5].to_vec());
}
