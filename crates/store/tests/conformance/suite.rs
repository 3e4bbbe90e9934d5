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
use ultron8_core::audit::{Actor, AuditVerb};
use ultron8_core::criteria::{Criterion, Operator};
use ultron8_core::discovery::{Instance, InstanceStatus, Sample, SourceSpec};
use ultron8_core::health::{CheckState, RunOutcome, Thresholds, Tracker};
use ultron8_core::ids::{DroneId, EventId, ExecutionId, JobId};
use ultron8_core::policy::{BlastRadius, Cooldown, Observation, Policy};
use ultron8_core::{CommandSpec, DroneFacts, ExecutionStatus, HostStats, Program};
use ultron8_pack::{Action, Manifest, Pack, Rule, RuleAction, Runner, ShellProgram};
use ultron8_store::{
    ActionRecord, AuditFilter, DroneEnrollment, DroneRemoval, EnrollmentClaim, EventFilter,
    EventOutcome, EventRecord, EventState, ExecutionResult, ExecutionUpdate, FiringOutcome, IdKind,
    JobFilter, JobOrigin, NewAuditRecord, NewEvent, NewExecution, NewJob, NewJoinToken,
    OperatorCertificate, OutputChunkRecord, OutputStreamKind, PackRecord, ProbeStateRecord,
    RevokedCertificate, RuleFiring, RuleRecord, ScriptRecord, SealedValue, SecretWrite, Store,
    StoreError, TransitionOutcome,
};
use ultron8_store::{NewSource, SourceRefresh, TargetFilter};
use uuid::Uuid;

/// Expands to one `#[tokio::test]` per conformance test, each calling
/// `$run(test_fn)`. `$run` provides the fresh store and cleans up after.
macro_rules! conformance_tests {
    ($run:path) => {
        $crate::suite::conformance_tests!(@each $run;
            ping_succeeds,
            join_token_is_consumed_once,
            enrollment_never_takes_over_a_name_in_the_fleet,
            a_replace_token_takes_over_and_revokes_the_old_certificate,
            a_token_bound_to_a_name_enrolls_no_other,
            removing_a_drone_revokes_its_certificate_and_frees_its_name,
            operator_certificates_are_recorded_once_and_listed_with_revocations,
            concurrent_join_token_consumption_has_one_winner,
            expired_join_token_is_refused,
            join_token_with_wrong_secret_or_unknown_id_is_refused,
            enrollment_creates_an_offline_drone,
            re_enrollment_replaces_credentials_and_keeps_one_record,
            registration_stores_facts_and_marks_online,
            registration_of_unknown_drone_is_not_found,
            heartbeat_stores_stats_and_marks_online,
            heartbeat_of_unknown_drone_is_not_found,
            a_drone_seen_is_online_with_its_stats_kept,
            drone_labels_merge_token_and_own_labels,
            silent_drones_are_marked_offline,
            drones_are_listed_by_id,
            job_is_stored_with_executions_and_audit,
            failed_job_creation_leaves_nothing_behind,
            batches_beyond_one_statement_are_written_whole_or_not_at_all,
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
            running_executions_of_silent_drones_are_found,
            output_of_unknown_execution_is_not_found,
            executions_are_counted_by_status,
            activity_counts_what_finished_in_the_window,
            audit_round_trips_every_field,
            audit_is_listed_newest_first_and_pages,
            audit_filters_combine,
            audit_limit_zero_means_one_hundred,
            job_origin_round_trips,
            pack_is_installed_with_its_actions_rules_and_scripts,
            pack_upgrade_keeps_history_and_replaces_actions_and_rules,
            pack_removal_keeps_history_and_scripts,
            scripts_are_content_addressed,
            failed_pack_install_changes_nothing,
            concurrent_installs_of_one_pack_run_one_after_another,
            rule_enabled_flag_is_set_with_audit_only_when_the_rule_exists,
            events_are_recorded_pending_and_finished,
            events_are_recorded_together_all_or_nothing_and_once_per_key,
            pending_events_are_claimed_oldest_first_under_a_lease,
            the_backlog_counts_pending_events_and_dates_the_oldest,
            concurrent_claimers_never_get_the_same_event,
            events_are_listed_newest_first_with_filters_and_pages,
            allowed_firing_writes_job_executions_cooldown_and_linked_audit,
            fired_job_names_the_firing_rule_and_event,
            held_firing_writes_no_job,
            cooldown_holds_a_second_firing_for_the_same_key_only,
            max_concurrent_holds_while_a_job_of_the_rule_is_unfinished,
            blast_radius_counts_distinct_hosts_in_the_window,
            concurrent_firings_of_one_rule_fire_once,
            timer_tick_is_claimed_once,
            audit_filters_by_event_rule_and_action_ref,
            a_rule_is_decided_once_per_event,
            batched_firings_are_decided_in_order_and_all_or_nothing,
            finished_events_keep_the_rules_that_matched,
            catalog_version_moves_with_every_catalog_change,
            jobs_are_filtered_by_status_drone_rule_action_and_time,
            ids_are_found_by_prefix_with_no_wildcards,
            ids_sharing_their_first_characters_are_found,
            a_removed_drone_leaves_the_fleet_and_keeps_its_history,
            a_removed_drone_joins_again_with_a_new_enrollment,
            a_rule_keeps_the_text_its_pack_wrote,
            secrets_are_created_replaced_listed_and_deleted_with_their_audit,
            concurrent_creations_of_one_secret_create_it_once,
            a_secret_write_that_fails_leaves_no_trace,
            sources_are_created_listed_and_removed_with_their_audit_and_instances,
            one_claimant_of_a_due_source_wins_and_a_lost_lease_stores_nothing,
            a_refresh_replaces_its_sources_instances_only,
            a_failed_refresh_keeps_the_instances,
            probe_rounds_are_claimed_once_and_never_backwards,
            probe_states_are_replaced_per_round_and_forgotten_with_their_probe,
            a_drones_check_summary_replaces_the_last_one,
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

/// The newest `limit` jobs, unfiltered.
fn latest(limit: u32) -> JobFilter {
    JobFilter {
        limit,
        ..JobFilter::default()
    }
}

/// A fresh uuid v7, as a job, execution, event or audit record id.
fn new_id<Id: From<String>>() -> Id {
    Uuid::now_v7().to_string().into()
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
        drone_id: None,
        replaces: false,
    }
}

fn enrollment(
    drone_id: &str,
    token_labels: BTreeMap<String, String>,
    at: DateTime<Utc>,
) -> DroneEnrollment {
    DroneEnrollment {
        drone_id: drone_id.into(),
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
        redact: Vec::new(),
        secret_env: BTreeMap::new(),
    }
}

fn alice() -> Actor {
    Actor::Operator("alice".to_string())
}

fn audit(action: AuditVerb, at: DateTime<Utc>) -> NewAuditRecord {
    NewAuditRecord {
        id: new_id(),
        at,
        actor: alice(),
        action,
        job_id: None,
        execution_id: None,
        drone_id: None,
        status: None,
        event_id: None,
        rule: None,
        action_ref: None,
        detail: json!({}),
    }
}

struct CreatedJob {
    job_id: JobId,
    /// In the order of the drones passed to [`create_job`].
    execution_ids: Vec<ExecutionId>,
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
        origin: Default::default(),
    };
    let executions: Vec<NewExecution> = drones
        .iter()
        .map(|drone| NewExecution {
            id: new_id(),
            job_id: job.id.clone(),
            drone_id: DroneId::from(*drone),
            created_at,
            expires_at,
        })
        .collect();
    let mut submitted = audit(AuditVerb::JobSubmitted, created_at);
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

async fn status_of(store: &dyn Store, execution_id: &ExecutionId) -> ExecutionStatus {
    store
        .get_execution(execution_id)
        .await
        .expect("get execution")
        .expect("execution exists")
        .status
}

async fn audit_for_execution(store: &dyn Store, execution_id: &ExecutionId) -> Vec<NewAuditRecord> {
    store
        .list_audit(&AuditFilter {
            execution_id: Some(execution_id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit")
}

fn chunk(
    execution_id: &ExecutionId,
    stream: OutputStreamKind,
    offset: u64,
    data: &str,
) -> OutputChunkRecord {
    OutputChunkRecord {
        execution_id: execution_id.clone(),
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
        .consume_join_token("tok-1", &secret_hash(1), &"drone-a".into(), t(10))
        .await
        .expect("first use succeeds");
    assert_eq!(grant.labels, labels(&[("env", "prod"), ("role", "web")]));

    let second = store
        .consume_join_token("tok-1", &secret_hash(1), &"drone-b".into(), t(11))
        .await;
    assert!(
        matches!(second, Err(StoreError::JoinTokenInvalid)),
        "a used token must be refused, got {second:?}"
    );
}

fn claim(token_id: &str, seed: u8, drone_id: &str, certificate: &str, at: i64) -> EnrollmentClaim {
    EnrollmentClaim {
        token_id: token_id.to_string(),
        secret_sha256: secret_hash(seed),
        drone_id: drone_id.into(),
        certificate_fingerprint: certificate.to_string(),
        certificate_not_after: t(at) + Duration::days(90),
        enrolled_at: t(at),
    }
}

fn bound_token(id: &str, seed: u8, drone_id: &str, replaces: bool) -> NewJoinToken {
    NewJoinToken {
        drone_id: Some(drone_id.into()),
        replaces,
        ..join_token(id, seed, t(3600))
    }
}

async fn revoked_fingerprints(store: &dyn Store, now: DateTime<Utc>) -> Vec<String> {
    store
        .list_revoked_certificates(now)
        .await
        .expect("list revoked")
        .into_iter()
        .map(|r| r.fingerprint)
        .collect()
}

pub async fn enrollment_never_takes_over_a_name_in_the_fleet(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-a", 1, t(3600)))
        .await
        .expect("token a");
    store
        .create_join_token(&join_token("tok-b", 2, t(3600)))
        .await
        .expect("token b");
    let grant = store
        .enroll_drone(&claim("tok-a", 1, "d1", "cert-1", 10))
        .await
        .expect("the first enrollment of d1");
    assert_eq!(grant.replaced_certificate, None);

    let takeover = store
        .enroll_drone(&claim("tok-b", 2, "d1", "cert-evil", 20))
        .await;
    assert!(
        matches!(&takeover, Err(StoreError::DroneEnrolled { drone_id, certificate_fingerprint, .. })
            if drone_id.as_str() == "d1" && certificate_fingerprint == "cert-1"),
        "a second token must not take over d1: {takeover:?}"
    );
    let d1 = store
        .get_drone(&"d1".into())
        .await
        .expect("get")
        .expect("d1");
    assert_eq!(
        d1.certificate_fingerprint, "cert-1",
        "d1 keeps its certificate"
    );
    assert!(revoked_fingerprints(&*store, t(30)).await.is_empty());
    // The refused claim did not burn the token: it still enrolls a new name.
    store
        .enroll_drone(&claim("tok-b", 2, "d2", "cert-2", 30))
        .await
        .expect("the unused token enrolls d2");
}

pub async fn a_replace_token_takes_over_and_revokes_the_old_certificate(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-a", 1, t(3600)))
        .await
        .expect("token a");
    store
        .enroll_drone(&claim("tok-a", 1, "d1", "cert-1", 10))
        .await
        .expect("enroll d1");
    store
        .create_join_token(&bound_token("tok-r", 2, "d1", true))
        .await
        .expect("replace token");
    let grant = store
        .enroll_drone(&claim("tok-r", 2, "d1", "cert-2", 20))
        .await
        .expect("the replace token enrolls d1 again");
    assert_eq!(grant.replaced_certificate.as_deref(), Some("cert-1"));
    let d1 = store
        .get_drone(&"d1".into())
        .await
        .expect("get")
        .expect("d1");
    assert_eq!(d1.certificate_fingerprint, "cert-2");
    let revoked = store.list_revoked_certificates(t(30)).await.expect("list");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].fingerprint, "cert-1");
    assert_eq!(revoked[0].subject, "drone:d1");
    // Revocations are listed until the certificate expires, then dropped.
    assert!(
        revoked_fingerprints(&*store, t(10) + Duration::days(91))
            .await
            .is_empty()
    );
    // Used once, like any token.
    let again = store
        .enroll_drone(&claim("tok-r", 2, "d1", "cert-3", 40))
        .await;
    assert!(
        matches!(again, Err(StoreError::JoinTokenInvalid)),
        "{again:?}"
    );
}

pub async fn a_token_bound_to_a_name_enrolls_no_other(store: Arc<dyn Store>) {
    store
        .create_join_token(&bound_token("tok-n", 1, "web-4", false))
        .await
        .expect("token");
    let other = store
        .enroll_drone(&claim("tok-n", 1, "web-5", "cert-5", 10))
        .await;
    assert!(
        matches!(other, Err(StoreError::JoinTokenInvalid)),
        "{other:?}"
    );
    assert!(
        store
            .get_drone(&"web-5".into())
            .await
            .expect("get")
            .is_none()
    );
    let other = store
        .consume_join_token("tok-n", &secret_hash(1), &"web-5".into(), t(10))
        .await;
    assert!(
        matches!(other, Err(StoreError::JoinTokenInvalid)),
        "{other:?}"
    );
    store
        .enroll_drone(&claim("tok-n", 1, "web-4", "cert-4", 20))
        .await
        .expect("the named drone enrolls");
}

pub async fn removing_a_drone_revokes_its_certificate_and_frees_its_name(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-a", 1, t(3600)))
        .await
        .expect("token a");
    store
        .enroll_drone(&claim("tok-a", 1, "d1", "cert-1", 10))
        .await
        .expect("enroll d1");
    let removal = DroneRemoval {
        at: t(20),
        by: "operator:alice".into(),
    };
    assert!(
        store
            .remove_drone(
                &"d1".into(),
                &removal,
                &audit(AuditVerb::DroneRemoved, t(20))
            )
            .await
            .expect("remove")
    );
    let revoked = store.list_revoked_certificates(t(30)).await.expect("list");
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (
            revoked[0].fingerprint.as_str(),
            revoked[0].subject.as_str(),
            revoked[0].revoked_by.as_str()
        ),
        ("cert-1", "drone:d1", "operator:alice")
    );
    // A removed name joins again with any token, and is back in the fleet.
    store
        .create_join_token(&join_token("tok-b", 2, t(3600)))
        .await
        .expect("token b");
    let grant = store
        .enroll_drone(&claim("tok-b", 2, "d1", "cert-2", 40))
        .await
        .expect("a removed name joins again");
    assert_eq!(grant.replaced_certificate.as_deref(), Some("cert-1"));
    let d1 = store
        .get_drone(&"d1".into())
        .await
        .expect("get")
        .expect("d1");
    assert!(d1.removed.is_none());
    assert_eq!(d1.certificate_fingerprint, "cert-2");
    // The revocation keeps its first record (the removal).
    let revoked = store.list_revoked_certificates(t(50)).await.expect("list");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].revoked_by, "operator:alice");
}

pub async fn operator_certificates_are_recorded_once_and_listed_with_revocations(
    store: Arc<dyn Store>,
) {
    let bob = OperatorCertificate {
        fingerprint: "b".repeat(64),
        name: "bob".into(),
        role: "viewer".into(),
        not_after: t(86_400),
        issued_by: Some("operator:alice".into()),
        recorded_at: t(10),
    };
    let admin = OperatorCertificate {
        fingerprint: "a".repeat(64),
        name: "admin".into(),
        role: "admin".into(),
        not_after: t(86_400),
        issued_by: None,
        recorded_at: t(5),
    };
    assert!(
        store
            .record_operator_certificate(&bob)
            .await
            .expect("record bob")
    );
    assert!(
        store
            .record_operator_certificate(&admin)
            .await
            .expect("record admin")
    );
    let later = OperatorCertificate {
        role: "admin".into(),
        recorded_at: t(99),
        ..bob.clone()
    };
    assert!(
        !store
            .record_operator_certificate(&later)
            .await
            .expect("record again")
    );

    store
        .revoke_certificates(
            &[RevokedCertificate {
                fingerprint: bob.fingerprint.clone(),
                subject: "operator:bob".into(),
                reason: "left".into(),
                revoked_at: t(20),
                revoked_by: "operator:alice".into(),
                not_after: Some(bob.not_after),
            }],
            &audit(AuditVerb::OperatorRevoked, t(20)),
        )
        .await
        .expect("revoke bob");
    let listed = store.list_operator_certificates().await.expect("list");
    let names: Vec<(&str, &str, bool)> = listed
        .iter()
        .map(|r| {
            (
                r.certificate.name.as_str(),
                r.certificate.role.as_str(),
                r.revoked.is_some(),
            )
        })
        .collect();
    assert_eq!(names, [("admin", "admin", false), ("bob", "viewer", true)]);
    assert_eq!(listed[1].certificate, bob, "the first record stays");
    let revocation = listed[1].revoked.as_ref().expect("bob revoked");
    assert_eq!(
        (revocation.reason.as_str(), revocation.revoked_at),
        ("left", t(20))
    );
    assert_eq!(
        revoked_fingerprints(&*store, t(30)).await,
        std::slice::from_ref(&bob.fingerprint)
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
                        &DroneId::from(format!("drone-{seed}-{racer}")),
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
        .consume_join_token("tok-old", &secret_hash(7), &"drone-a".into(), t(61))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::JoinTokenInvalid)),
        "got {outcome:?}"
    );

    // The refusal did not burn it for a caller whose clock says it is valid,
    // which shows the refusal was about time, not a side effect.
    store
        .consume_join_token("tok-old", &secret_hash(7), &"drone-a".into(), t(59))
        .await
        .expect("token still valid before its expiry");
}

pub async fn join_token_with_wrong_secret_or_unknown_id_is_refused(store: Arc<dyn Store>) {
    store
        .create_join_token(&join_token("tok-1", 1, t(3600)))
        .await
        .expect("create token");

    let wrong_secret = store
        .consume_join_token("tok-1", &secret_hash(2), &"drone-a".into(), t(10))
        .await;
    assert!(
        matches!(wrong_secret, Err(StoreError::JoinTokenInvalid)),
        "got {wrong_secret:?}"
    );
    let unknown = store
        .consume_join_token("tok-404", &secret_hash(1), &"drone-a".into(), t(10))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::JoinTokenInvalid)),
        "got {unknown:?}"
    );

    // A wrong guess must not consume the token.
    store
        .consume_join_token("tok-1", &secret_hash(1), &"drone-a".into(), t(10))
        .await
        .expect("the right secret still works");
}

// --- drones -----------------------------------------------------------------

pub async fn enrollment_creates_an_offline_drone(store: Arc<dyn Store>) {
    assert_eq!(
        store.get_drone(&"drone-a".into()).await.expect("get drone"),
        None
    );

    let enrolled = enrollment("drone-a", labels(&[("env", "prod")]), t(5));
    store.record_enrollment(&enrolled).await.expect("enroll");

    let drone = store
        .get_drone(&"drone-a".into())
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
        .record_registration(&"drone-a".into(), &facts("host-a", BTreeMap::new()), t(6))
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
        .record_registration(&"drone-a".into(), &reported, t(10))
        .await
        .expect("register");

    let drone = store
        .get_drone(&"drone-a".into())
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
        .record_registration(&"drone-a".into(), &upgraded, t(20))
        .await
        .expect("register again");
    let drone = store
        .get_drone(&"drone-a".into())
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.facts, upgraded);
    assert_eq!(drone.registered_at, Some(t(20)));
}

pub async fn registration_of_unknown_drone_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .record_registration(&"ghost".into(), &facts("ghost", BTreeMap::new()), t(1))
        .await
        .expect_err("unknown drone");
    assert_not_found(err, "drone", "ghost");
    assert_eq!(
        store.get_drone(&"ghost".into()).await.expect("get drone"),
        None,
        "no drone appears"
    );
}

pub async fn heartbeat_stores_stats_and_marks_online(store: Arc<dyn Store>) {
    enroll(&*store, "drone-a", t(0)).await;
    store
        .record_registration(&"drone-a".into(), &facts("host-a", BTreeMap::new()), t(10))
        .await
        .expect("register");
    store
        .record_heartbeat(&"drone-a".into(), &stats(12.5), t(40))
        .await
        .expect("heartbeat");

    let drone = store
        .get_drone(&"drone-a".into())
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
        .record_heartbeat(&"drone-a".into(), &stats(99.0), t(70))
        .await
        .expect("heartbeat");
    let drone = store
        .get_drone(&"drone-a".into())
        .await
        .expect("get drone")
        .expect("drone exists");
    assert_eq!(drone.stats, Some(stats(99.0)), "the latest stats win");
}

pub async fn a_drone_seen_is_online_with_its_stats_kept(store: Arc<dyn Store>) {
    enroll(&*store, "drone-a", t(0)).await;
    store
        .record_heartbeat(&"drone-a".into(), &stats(12.5), t(40))
        .await
        .expect("heartbeat");
    store
        .mark_silent_drones_offline(t(100))
        .await
        .expect("sweep");
    store
        .record_seen(&"drone-a".into(), t(120))
        .await
        .expect("seen");
    let drone = store
        .get_drone(&"drone-a".into())
        .await
        .expect("get drone")
        .expect("drone exists");
    assert!(drone.online, "seen again: online");
    assert_eq!(drone.last_seen_at, Some(t(120)));
    assert_eq!(drone.stats, Some(stats(12.5)), "its stats are kept");
    let err = store
        .record_seen(&"ghost".into(), t(1))
        .await
        .expect_err("unknown drone");
    assert_not_found(err, "drone", "ghost");
}

pub async fn heartbeat_of_unknown_drone_is_not_found(store: Arc<dyn Store>) {
    let err = store
        .record_heartbeat(&"ghost".into(), &stats(1.0), t(1))
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
            &"drone-a".into(),
            &facts("host-a", labels(&[("role", "db"), ("zone", "eu-1")])),
            t(1),
        )
        .await
        .expect("register");

    let drone = store
        .get_drone(&"drone-a".into())
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
        .record_registration(&"drone-a".into(), &facts("a", BTreeMap::new()), t(10))
        .await
        .expect("register a");
    store
        .record_registration(&"drone-b".into(), &facts("b", BTreeMap::new()), t(10))
        .await
        .expect("register b");
    store
        .record_registration(&"drone-c".into(), &facts("c", BTreeMap::new()), t(10))
        .await
        .expect("register c");
    store
        .record_heartbeat(&"drone-b".into(), &stats(1.0), t(100))
        .await
        .expect("heartbeat b");

    let offline = store
        .mark_silent_drones_offline(t(50))
        .await
        .expect("mark offline");
    assert_eq!(offline, ["drone-a", "drone-c"]);

    let online: BTreeMap<String, bool> = store
        .list_drones()
        .await
        .expect("list drones")
        .into_iter()
        .map(|drone| (drone.id.into_string(), drone.online))
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
        .record_heartbeat(&"drone-a".into(), &stats(2.0), t(200))
        .await
        .expect("heartbeat a");
    let drone = store
        .get_drone(&"drone-a".into())
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
    let ids: Vec<DroneId> = store
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
    assert_eq!(store.get_job(&"nope".into()).await.expect("get job"), None);
    assert_eq!(
        store
            .get_execution(&"nope".into())
            .await
            .expect("get execution"),
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
    assert_eq!(audit[0].action.as_str(), "job.submitted");
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
        origin: Default::default(),
    };
    let executions = [NewExecution {
        id: first.execution_ids[0].clone(),
        job_id: job.id.clone(),
        drone_id: "drone-b".into(),
        created_at: t(1),
        expires_at: t(61),
    }];
    let mut submitted = audit(AuditVerb::JobSubmitted, t(1));
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

/// More rows than one statement may bind (Postgres takes 65,535 parameters,
/// SQLite 32,766): a job on 14,000 drones, and the expiry records of all
/// its executions. The batch is split across statements but stays one
/// transaction, so it is written whole or not at all.
pub async fn batches_beyond_one_statement_are_written_whole_or_not_at_all(store: Arc<dyn Store>) {
    const DRONES: usize = 14_000;
    let drones: Vec<DroneId> = (0..DRONES)
        .map(|i| DroneId::new(format!("drone-{i:05}")))
        .collect();

    // The last execution repeats the first one's drone, which the schema
    // refuses: the statements before it must not stay.
    let job = NewJob {
        id: new_id(),
        target: "all".to_string(),
        requester: "operator:alice".to_string(),
        command: command("uptime"),
        created_at: t(0),
        origin: Default::default(),
    };
    let mut executions: Vec<NewExecution> = drones
        .iter()
        .map(|drone| NewExecution {
            id: new_id(),
            job_id: job.id.clone(),
            drone_id: drone.clone(),
            created_at: t(0),
            expires_at: t(60),
        })
        .collect();
    if let Some(last) = executions.last_mut() {
        last.drone_id = drones[0].clone();
    }
    let mut submitted = audit(AuditVerb::JobSubmitted, t(0));
    submitted.job_id = Some(job.id.clone());
    store
        .create_job(&job, &executions, &submitted)
        .await
        .expect_err("two executions of the job on one drone");
    assert_eq!(store.count_jobs().await.expect("count jobs"), 0);
    let requested = |counts: Vec<(ExecutionStatus, i64)>| {
        counts
            .into_iter()
            .find(|(status, _)| *status == ExecutionStatus::Requested)
            .map_or(0, |(_, count)| count)
    };
    assert_eq!(
        requested(store.count_executions_by_status().await.expect("count")),
        0,
        "no execution of the refused job stays"
    );

    let names: Vec<&str> = drones.iter().map(DroneId::as_str).collect();
    let created = create_job(&*store, &names, t(0), t(60)).await;
    let stored = store
        .get_job(&created.job_id)
        .await
        .expect("get job")
        .expect("job exists");
    assert_eq!(stored.executions.len(), DRONES);
    assert_eq!(
        requested(store.count_executions_by_status().await.expect("count")),
        i64::try_from(DRONES).expect("small")
    );

    let expired = store
        .expire_overdue_executions(t(61))
        .await
        .expect("expire");
    assert_eq!(expired.len(), DRONES);
    let records = store
        .list_audit(&AuditFilter {
            action: Some(AuditVerb::ExecutionExpired),
            limit: u32::try_from(DRONES + 1).expect("small"),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(records.len(), DRONES, "one record per expired execution");
}

pub async fn jobs_are_listed_newest_first_with_status_counts(store: Arc<dyn Store>) {
    assert!(
        store
            .list_jobs(&latest(10))
            .await
            .expect("list jobs")
            .is_empty()
    );
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

    let jobs = store.list_jobs(&latest(10)).await.expect("list jobs");
    let ids: Vec<&JobId> = jobs.iter().map(|job| &job.id).collect();
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

    let limited = store.list_jobs(&latest(2)).await.expect("list jobs");
    let ids: Vec<&JobId> = limited.iter().map(|job| &job.id).collect();
    assert_eq!(ids, [&newest.job_id, &middle.job_id]);
    assert_eq!(store.count_jobs().await.expect("count jobs"), 3);
}

// --- execution state machine ------------------------------------------------

pub async fn transitions_only_move_forward(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["drone-a"], t(0), t(600)).await;
    let id = &job.execution_ids[0];

    // The hive records no dispatch: any verb shows that the record goes with
    // the transition that applied and only with it.
    let mut dispatched = audit(AuditVerb::ExecutionFinished, t(1));
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
        let mut refused_audit = audit(AuditVerb::DroneRefusedRequest, t(3));
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
    let mut first_audit = audit(AuditVerb::ExecutionFinished, t(2));
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
    let mut second_audit = audit(AuditVerb::ExecutionFinished, t(3));
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
                let mut record = audit(AuditVerb::ExecutionFinished, t(10));
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

    let mut applied = BTreeMap::<ExecutionId, Vec<(ExecutionStatus, i32)>>::new();
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
    let ghost = ExecutionId::new("ghost");
    let mut record = audit(AuditVerb::ExecutionFinished, t(1));
    record.execution_id = Some(ghost.clone());
    let outcome = store
        .transition_execution(
            &ghost,
            &update(ExecutionStatus::Running, t(1)),
            Some(&record),
        )
        .await
        .expect("transition");
    assert_eq!(outcome, TransitionOutcome::NotFound);
    assert!(audit_for_execution(&*store, &ghost).await.is_empty());
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
        assert_eq!(record.actor.to_string(), "hive");
        assert_eq!(record.action.as_str(), "execution.expired");
        assert_eq!(record.status, Some(ExecutionStatus::Expired));
        assert_eq!(record.job_id.as_ref(), Some(&overdue.job_id));
        assert_eq!(record.execution_id.as_ref(), Some(&execution.id));
        assert_eq!(record.drone_id.as_ref(), Some(&execution.drone_id));
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
            action: Some(AuditVerb::ExecutionExpired),
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

    // A follower that has seen 6 bytes of stdout and 4 of stderr gets the rest.
    assert_eq!(
        store.execution_output_from(id, 6, 4).await.expect("output"),
        vec![
            chunk(id, Stdout, 6, "world\n"),
            chunk(id, Stderr, 4, "err1")
        ]
    );
    assert!(
        store
            .execution_output_from(id, 12, 8)
            .await
            .expect("output")
            .is_empty()
    );
}

pub async fn running_executions_of_silent_drones_are_found(store: Arc<dyn Store>) {
    enroll(&*store, "quiet", t(0)).await;
    enroll(&*store, "chatty", t(0)).await;
    store
        .record_heartbeat(&"quiet".into(), &HostStats::default(), t(10))
        .await
        .expect("heartbeat");
    store
        .record_heartbeat(&"chatty".into(), &HostStats::default(), t(100))
        .await
        .expect("heartbeat");
    let job = create_job(&*store, &["quiet", "chatty"], t(0), t(600)).await;
    create_job(&*store, &["quiet"], t(1), t(600)).await;
    for index in [0, 1] {
        store
            .transition_execution(
                &job.execution_ids[index],
                &update(ExecutionStatus::Running, t(5)),
                None,
            )
            .await
            .expect("transition");
    }
    // Only quiet's running execution: its second job's execution is still
    // requested; chatty was seen after the cutoff.
    let found = store.running_on_silent_drones(t(50)).await.expect("query");
    let ids: Vec<&ExecutionId> = found.iter().map(|e| &e.id).collect();
    assert_eq!(ids, vec![&job.execution_ids[0]]);
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
    let ghost = ExecutionId::new("ghost");
    let err = store
        .append_output(&chunk(&ghost, OutputStreamKind::Stdout, 0, "boo"))
        .await
        .expect_err("unknown execution");
    assert_not_found(err, "execution", "ghost");
    assert!(
        store
            .execution_output(&ghost)
            .await
            .expect("output")
            .is_empty()
    );
}

// --- metrics ----------------------------------------------------------------

pub async fn activity_counts_what_finished_in_the_window(store: Arc<dyn Store>) {
    let job = create_job(&*store, &["a", "b", "c", "d"], t(0), t(600)).await;
    for (index, status, at) in [
        (0, ExecutionStatus::Failed, 5),
        (1, ExecutionStatus::Failed, 50),
        (2, ExecutionStatus::Succeeded, 60),
    ] {
        store
            .transition_execution(
                &job.execution_ids[index],
                &finished(status, t(at), result(1, "")),
                None,
            )
            .await
            .expect("transition");
    }
    let events = record_events(&*store, "alertmanager", 3, 0).await;
    store
        .finish_event(&events[0], Some("too early"), t(5))
        .await
        .expect("finish");
    store
        .finish_event(&events[1], Some("no drone matches"), t(40))
        .await
        .expect("finish");
    store
        .finish_event(&events[2], None, t(41))
        .await
        .expect("finish");

    let activity = store.activity_since(t(10)).await.expect("activity");
    let mut finished = activity.finished_executions.clone();
    finished.sort();
    assert_eq!(
        finished,
        vec![
            (ExecutionStatus::Succeeded, 1),
            (ExecutionStatus::Failed, 1)
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "the one failure before the window and the running execution are not counted"
    );
    assert_eq!(activity.failed_events, 1);
}

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
        actor: Actor::Drone("drone-a".to_string()),
        action: AuditVerb::ExecutionFinished,
        job_id: Some("job-1".into()),
        execution_id: Some("exec-1".into()),
        drone_id: Some("drone-a".into()),
        status: Some(ExecutionStatus::TimedOut),
        event_id: Some("event-1".into()),
        rule: Some("web.restart_nginx".to_string()),
        action_ref: Some("web.restart".to_string()),
        detail: json!({ "exit_code": null, "note": "killed after 30s", "nested": { "list": [1, 2.5, "x"] } }),
    };
    let bare = audit(AuditVerb::JoinTokenCreated, t(43));
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
    for (i, verb) in (0..7).zip(AuditVerb::ALL.iter().cycle()) {
        let record = audit(*verb, t(i));
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
            actor: actor.parse().expect("an actor"),
            job_id: job.map(JobId::from),
            execution_id: job.map(|job| ExecutionId::new(format!("{job}-exec"))),
            drone_id: drone.map(DroneId::from),
            status,
            ..audit(action.parse().expect("a verb"), t(at))
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
        record("join_token.created", 50, "operator:bob", None, None, None),
    ];
    for record in &records {
        store.append_audit(record).await.expect("append");
    }
    let actions = |listed: Vec<NewAuditRecord>| -> Vec<(String, i64)> {
        listed
            .into_iter()
            .map(|record| (record.action.to_string(), (record.at - t(0)).num_seconds()))
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
            actor: Some(Actor::Hive),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("drone.enrolled", 40)])
    );
    assert_eq!(
        list(AuditFilter {
            action: Some(AuditVerb::ExecutionFinished),
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
            action: Some(AuditVerb::ExecutionFinished),
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
            .append_audit(&audit(AuditVerb::JobSubmitted, t(i)))
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

// --- job origins ------------------------------------------------------------

pub async fn job_origin_round_trips(store: Arc<dyn Store>) {
    let origin = JobOrigin {
        action_ref: Some("web.restart".to_string()),
        rule: None,
        event_id: None,
        parameters: Some(json!({ "service": "nginx", "password": "********" })),
    };
    let job = NewJob {
        id: new_id(),
        target: "drone-a".to_string(),
        requester: "operator:alice".to_string(),
        command: command("systemctl restart nginx"),
        created_at: t(5),
        origin: origin.clone(),
    };
    let executions = [execution(&job.id, "drone-a", t(5))];
    store
        .create_job(&job, &executions, &audit(AuditVerb::JobSubmitted, t(5)))
        .await
        .expect("create job");
    let ad_hoc = create_job(&*store, &["drone-b"], t(6), t(600)).await;

    let stored = store
        .get_job(&job.id)
        .await
        .expect("get job")
        .expect("job exists");
    assert_eq!(stored.origin, origin);
    let listed = store.list_jobs(&latest(10)).await.expect("list jobs");
    assert_eq!(listed[0].id, ad_hoc.job_id);
    assert_eq!(
        listed[0].origin,
        JobOrigin::default(),
        "an ad-hoc job has no origin"
    );
    assert_eq!(listed[1].origin, origin);
}

// --- packs ------------------------------------------------------------------

/// Two scripts and their SHA-256 (lowercase hex).
const RESTART_SCRIPT: (&str, &str) = (
    "fb0da4c5c7524918e17cf2623a67c183ee4ec1e41de9a6dae063a02dd16f5d19",
    "#!/bin/sh\nsystemctl restart nginx\n",
);
const DISK_SCRIPT: (&str, &str) = (
    "9b5b6dd6b560779926f3521c722bcbe7124dc0fd3988e3604c838db40c87be65",
    "#!/bin/sh\ndf -h\n",
);

fn script((sha256, content): (&str, &str)) -> ScriptRecord {
    ScriptRecord {
        sha256: sha256.to_string(),
        content: content.as_bytes().to_vec(),
    }
}

/// A pack record; its content is the manifest alone (the store keeps a
/// pack's actions and rules as given to `install_pack`, not from it).
pub(crate) fn pack(name: &str, version: &str, installed_at: DateTime<Utc>) -> PackRecord {
    let description = format!("{name} remediations");
    PackRecord {
        name: name.to_string(),
        version: version.to_string(),
        content: Pack {
            manifest: Manifest {
                name: name.to_string(),
                version: version.parse().expect("a semver version"),
                description: description.clone(),
                author: "tests".to_string(),
                dependencies: Vec::new(),
            },
            actions: Vec::new(),
            rules: Vec::new(),
            scripts: Vec::new(),
            probes: Vec::new(),
            checks: Vec::new(),
            sources: Vec::new(),
        },
        description,
        installed_at,
        installed_by: "operator:alice".to_string(),
    }
}

/// An action whose definition names the pack `version` it came with, so
/// two versions' definitions differ.
pub(crate) fn action(pack: &str, name: &str, version: &str) -> ActionRecord {
    ActionRecord {
        reference: format!("{pack}.{name}"),
        pack: pack.to_string(),
        definition: Action {
            pack: pack.to_string(),
            name: name.to_string(),
            description: format!("since {version}"),
            runner: Runner::Shell {
                program: ShellProgram::Argv(vec!["systemctl".to_string(), "restart".to_string()]),
                env: BTreeMap::new(),
            },
            parameters: Default::default(),
            timeout: Some(std::time::Duration::from_secs(30)),
        },
    }
}

pub(crate) fn rule(pack: &str, name: &str, trigger: &str, enabled: bool) -> RuleRecord {
    RuleRecord {
        reference: format!("{pack}.{name}"),
        pack: pack.to_string(),
        trigger: trigger.to_string(),
        enabled,
        definition: Rule {
            pack: pack.to_string(),
            name: name.to_string(),
            description: "restart nginx when it is down".to_string(),
            enabled,
            trigger: trigger.to_string(),
            trigger_parameters: Default::default(),
            schedule: None,
            criteria: vec![Criterion::Match {
                path: "labels.alertname".to_string(),
                op: Operator::Equals,
                value: Some(json!("NginxDown")),
            }],
            action: RuleAction {
                reference: format!("{pack}.restart"),
                target: Some("{{ labels.instance }}".to_string()),
                parameters: Default::default(),
            },
            policy: Policy::default(),
        },
        source: Some(format!(
            "# as written\nname: {name}\ntrigger: {trigger}\nenabled: {enabled}\n"
        )),
    }
}

fn pack_audit(action: AuditVerb, pack: &str, at: DateTime<Utc>) -> NewAuditRecord {
    NewAuditRecord {
        detail: json!({ "pack": pack }),
        ..audit(action, at)
    }
}

async fn install(
    store: &dyn Store,
    installed: &PackRecord,
    actions: &[ActionRecord],
    rules: &[RuleRecord],
    scripts: &[ScriptRecord],
) -> Option<String> {
    store
        .install_pack(
            installed,
            actions,
            rules,
            scripts,
            &pack_audit(
                AuditVerb::PackInstalled,
                &installed.name,
                installed.installed_at,
            ),
        )
        .await
        .expect("install pack")
}

fn references<T>(records: &[T], reference: impl Fn(&T) -> &str) -> Vec<String> {
    records.iter().map(|r| reference(r).to_string()).collect()
}

async fn pack_audit_actions(store: &dyn Store) -> Vec<String> {
    let mut records = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list audit");
    records.reverse();
    records
        .into_iter()
        .filter(|record| {
            let verb = record.action.as_str();
            verb.starts_with("pack.") || verb.starts_with("rule.")
        })
        .map(|record| {
            format!(
                "{} {}",
                record.action,
                record.detail["pack"].as_str().unwrap_or("")
            )
        })
        .collect()
}

pub async fn pack_is_installed_with_its_actions_rules_and_scripts(store: Arc<dyn Store>) {
    assert_eq!(store.get_pack("web").await.expect("get pack"), None);
    assert!(store.list_packs().await.expect("list packs").is_empty());

    let web = pack("web", "1.0.0", t(10));
    let web_actions = [action("web", "restart", "1"), action("web", "check", "1")];
    let web_rules = [
        rule("web", "restart_on_down", "alertmanager", true),
        rule("web", "check_hourly", "timer", false),
    ];
    let previous = install(
        &*store,
        &web,
        &web_actions,
        &web_rules,
        &[script(RESTART_SCRIPT)],
    )
    .await;
    assert_eq!(previous, None, "a first install replaces nothing");
    let db = pack("db", "0.3.1", t(11));
    install(
        &*store,
        &db,
        &[action("db", "vacuum", "1")],
        &[rule("db", "vacuum_nightly", "timer", true)],
        &[],
    )
    .await;

    assert_eq!(
        store.get_pack("web").await.expect("get pack"),
        Some(web.clone())
    );
    assert_eq!(
        store.list_packs().await.expect("list packs"),
        vec![db.clone(), web.clone()],
        "ordered by name"
    );
    assert!(store.pack_history("web").await.expect("history").is_empty());

    assert_eq!(
        store.get_action("web.restart").await.expect("get action"),
        Some(web_actions[0].clone())
    );
    assert_eq!(
        store.get_action("web.nope").await.expect("get action"),
        None
    );
    let all_actions = store.list_actions(None).await.expect("list actions");
    assert_eq!(
        references(&all_actions, |a| &a.reference),
        ["db.vacuum", "web.check", "web.restart"],
        "ordered by reference"
    );
    assert_eq!(
        store.list_actions(Some("web")).await.expect("list actions"),
        vec![web_actions[1].clone(), web_actions[0].clone()]
    );
    assert!(
        store
            .list_actions(Some("nope"))
            .await
            .expect("list actions")
            .is_empty()
    );

    assert_eq!(
        store.get_rule("web.check_hourly").await.expect("get rule"),
        Some(web_rules[1].clone()),
        "a rule keeps the enabled flag it was installed with"
    );
    let all_rules = store.list_rules(None).await.expect("list rules");
    assert_eq!(
        references(&all_rules, |r| &r.reference),
        [
            "db.vacuum_nightly",
            "web.check_hourly",
            "web.restart_on_down"
        ]
    );
    let timer_rules = store.list_rules(Some("timer")).await.expect("list rules");
    assert_eq!(
        references(&timer_rules, |r| &r.reference),
        ["db.vacuum_nightly", "web.check_hourly"],
        "filtered by trigger"
    );

    assert_eq!(
        store
            .get_script(RESTART_SCRIPT.0)
            .await
            .expect("get script"),
        Some(RESTART_SCRIPT.1.as_bytes().to_vec())
    );
    assert_eq!(
        store.get_script(DISK_SCRIPT.0).await.expect("get script"),
        None
    );
    assert_eq!(
        pack_audit_actions(&*store).await,
        ["pack.installed web", "pack.installed db"]
    );
}

pub async fn pack_upgrade_keeps_history_and_replaces_actions_and_rules(store: Arc<dyn Store>) {
    let v1 = pack("web", "1.0.0", t(10));
    install(
        &*store,
        &v1,
        &[action("web", "restart", "1"), action("web", "reload", "1")],
        &[
            rule("web", "restart_on_down", "alertmanager", true),
            rule("web", "reload_on_change", "webhook", true),
        ],
        &[script(RESTART_SCRIPT)],
    )
    .await;
    // Another pack, which the upgrade must not touch.
    install(
        &*store,
        &pack("db", "1.0.0", t(11)),
        &[action("db", "vacuum", "1")],
        &[rule("db", "vacuum_nightly", "timer", true)],
        &[],
    )
    .await;

    let v2 = pack("web", "2.0.0", t(20));
    let v2_actions = [action("web", "restart", "2"), action("web", "drain", "2")];
    let v2_rules = [rule("web", "restart_on_down", "alertmanager", false)];
    let previous = install(&*store, &v2, &v2_actions, &v2_rules, &[script(DISK_SCRIPT)]).await;
    assert_eq!(
        previous.as_deref(),
        Some("1.0.0"),
        "the replaced version is returned"
    );

    assert_eq!(
        store.get_pack("web").await.expect("get pack"),
        Some(v2.clone())
    );
    assert_eq!(
        store.pack_history("web").await.expect("history"),
        vec![v1.clone()]
    );
    assert_eq!(
        store.list_actions(Some("web")).await.expect("list actions"),
        vec![v2_actions[1].clone(), v2_actions[0].clone()],
        "the new version's actions, and only those"
    );
    assert_eq!(
        store.get_action("web.reload").await.expect("get action"),
        None
    );
    assert_eq!(
        store
            .get_rule("web.reload_on_change")
            .await
            .expect("get rule"),
        None,
        "a rule dropped from the new version is gone"
    );
    assert_eq!(
        store
            .get_rule("web.restart_on_down")
            .await
            .expect("get rule"),
        Some(v2_rules[0].clone()),
        "a kept rule takes the new definition and enabled flag"
    );
    assert!(
        store
            .list_rules(Some("webhook"))
            .await
            .expect("list rules")
            .is_empty()
    );
    assert!(
        store
            .get_script(RESTART_SCRIPT.0)
            .await
            .expect("get script")
            .is_some(),
        "scripts of earlier versions stay, jobs may still show them"
    );
    assert!(
        store
            .get_script(DISK_SCRIPT.0)
            .await
            .expect("get script")
            .is_some()
    );
    assert_eq!(
        references(
            &store.list_actions(Some("db")).await.expect("list actions"),
            |a| &a.reference
        ),
        ["db.vacuum"]
    );
    assert!(
        store
            .get_rule("db.vacuum_nightly")
            .await
            .expect("get rule")
            .is_some()
    );

    let v3 = pack("web", "3.0.0", t(30));
    let previous = install(&*store, &v3, &[], &[], &[]).await;
    assert_eq!(previous.as_deref(), Some("2.0.0"));
    assert_eq!(
        store.pack_history("web").await.expect("history"),
        vec![v2, v1],
        "newest first"
    );
    assert!(
        store
            .list_actions(Some("web"))
            .await
            .expect("list actions")
            .is_empty()
    );
    assert!(store.pack_history("db").await.expect("history").is_empty());
}

pub async fn pack_removal_keeps_history_and_scripts(store: Arc<dyn Store>) {
    let v1 = pack("web", "1.0.0", t(10));
    install(
        &*store,
        &v1,
        &[action("web", "restart", "1")],
        &[rule("web", "restart_on_down", "alertmanager", true)],
        &[script(RESTART_SCRIPT)],
    )
    .await;
    let v2 = pack("web", "1.1.0", t(20));
    install(
        &*store,
        &v2,
        &[action("web", "restart", "2")],
        &[rule("web", "restart_on_down", "alertmanager", true)],
        &[script(RESTART_SCRIPT)],
    )
    .await;

    let removed = store
        .remove_pack("web", &pack_audit(AuditVerb::PackRemoved, "web", t(30)))
        .await
        .expect("remove pack");
    assert!(removed);
    assert_eq!(store.get_pack("web").await.expect("get pack"), None);
    assert!(store.list_packs().await.expect("list packs").is_empty());
    assert!(
        store
            .list_actions(None)
            .await
            .expect("list actions")
            .is_empty()
    );
    assert!(store.list_rules(None).await.expect("list rules").is_empty());
    assert_eq!(
        store.pack_history("web").await.expect("history"),
        vec![v2.clone(), v1.clone()],
        "the removed version joins the history: what was installed is never forgotten"
    );
    assert!(
        store
            .get_script(RESTART_SCRIPT.0)
            .await
            .expect("get script")
            .is_some()
    );

    let again = store
        .remove_pack("web", &pack_audit(AuditVerb::PackRemoved, "web", t(31)))
        .await
        .expect("remove pack");
    assert!(!again, "not installed");
    assert_eq!(
        pack_audit_actions(&*store).await,
        [
            "pack.installed web",
            "pack.installed web",
            "pack.removed web"
        ],
        "a removal that removed nothing writes no audit record"
    );

    // A reinstall starts afresh, with the history intact.
    let v3 = pack("web", "2.0.0", t(40));
    assert_eq!(
        install(&*store, &v3, &[action("web", "restart", "3")], &[], &[]).await,
        None
    );
    assert_eq!(
        store.pack_history("web").await.expect("history"),
        vec![v2, v1]
    );
}

pub async fn scripts_are_content_addressed(store: Arc<dyn Store>) {
    // Two packs ship the same script: stored once, both installs succeed,
    // and so does reinstalling it.
    install(
        &*store,
        &pack("web", "1.0.0", t(1)),
        &[],
        &[],
        &[script(RESTART_SCRIPT), script(DISK_SCRIPT)],
    )
    .await;
    install(
        &*store,
        &pack("proxy", "1.0.0", t(2)),
        &[],
        &[],
        &[script(RESTART_SCRIPT)],
    )
    .await;
    install(
        &*store,
        &pack("web", "1.0.1", t(3)),
        &[],
        &[],
        &[script(RESTART_SCRIPT)],
    )
    .await;
    for (sha256, content) in [RESTART_SCRIPT, DISK_SCRIPT] {
        assert_eq!(
            store.get_script(sha256).await.expect("get script"),
            Some(content.as_bytes().to_vec())
        );
    }
    assert_eq!(
        store.get_script(&"0".repeat(64)).await.expect("get script"),
        None
    );
}

pub async fn failed_pack_install_changes_nothing(store: Arc<dyn Store>) {
    let v1 = pack("web", "1.0.0", t(10));
    let v1_actions = [action("web", "restart", "1")];
    install(&*store, &v1, &v1_actions, &[], &[]).await;

    // An action claiming a reference in another pack's namespace is refused,
    // and the whole install with it.
    let v2 = pack("web", "2.0.0", t(20));
    let intruder = ActionRecord {
        reference: "db.vacuum".to_string(),
        ..action("web", "vacuum", "2")
    };
    store
        .install_pack(
            &v2,
            &[action("web", "restart", "2"), intruder],
            &[rule("web", "restart_on_down", "alertmanager", true)],
            &[script(DISK_SCRIPT)],
            &pack_audit(AuditVerb::PackInstalled, "web", t(20)),
        )
        .await
        .expect_err("an action outside the pack's namespace");

    assert_eq!(store.get_pack("web").await.expect("get pack"), Some(v1));
    assert!(store.pack_history("web").await.expect("history").is_empty());
    assert_eq!(
        store.list_actions(None).await.expect("list actions"),
        v1_actions.to_vec()
    );
    assert!(store.list_rules(None).await.expect("list rules").is_empty());
    assert_eq!(
        store.get_script(DISK_SCRIPT.0).await.expect("get script"),
        None
    );
    assert_eq!(pack_audit_actions(&*store).await, ["pack.installed web"]);
}

pub async fn concurrent_installs_of_one_pack_run_one_after_another(store: Arc<dyn Store>) {
    // Replicas installing the same new pack at once: the first install has
    // no row to lock, yet none may fail or lose a version.
    const RACERS: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let version = format!("1.0.{i}");
            let installed = pack("web", &version, t(10));
            let actions = [action("web", "restart", &version)];
            barrier.wait().await;
            let previous = install(&*store, &installed, &actions, &[], &[]).await;
            (version, previous)
        }));
    }
    let mut replaced = BTreeMap::new();
    for task in tasks {
        let (version, previous) = task.await.expect("install task");
        replaced.insert(version, previous);
    }

    // The installs form one chain: exactly one replaced nothing, each other
    // replaced a distinct version, and the one nobody replaced is current.
    let current = store
        .get_pack("web")
        .await
        .expect("get pack")
        .expect("pack installed");
    assert_eq!(
        replaced.values().filter(|p| p.is_none()).count(),
        1,
        "{replaced:?}"
    );
    let mut predecessors: Vec<&String> = replaced.values().flatten().collect();
    predecessors.sort();
    predecessors.dedup();
    assert_eq!(predecessors.len(), RACERS - 1, "{replaced:?}");
    assert!(!predecessors.contains(&&current.version));
    let history = store.pack_history("web").await.expect("history");
    assert_eq!(history.len(), RACERS - 1);
    assert_eq!(
        store.list_actions(Some("web")).await.expect("list actions"),
        vec![action("web", "restart", &current.version)],
        "the current version's actions, not a mix"
    );
}

pub async fn rule_enabled_flag_is_set_with_audit_only_when_the_rule_exists(store: Arc<dyn Store>) {
    install(
        &*store,
        &pack("web", "1.0.0", t(1)),
        &[],
        &[rule("web", "restart_on_down", "alertmanager", true)],
        &[],
    )
    .await;

    let disabled = store
        .set_rule_enabled(
            "web.restart_on_down",
            false,
            &pack_audit(AuditVerb::RuleDisabled, "web", t(2)),
        )
        .await
        .expect("disable rule");
    assert!(disabled);
    let stored = store
        .get_rule("web.restart_on_down")
        .await
        .expect("get rule")
        .expect("rule exists");
    assert!(!stored.enabled);

    let unknown = store
        .set_rule_enabled(
            "web.nope",
            true,
            &pack_audit(AuditVerb::RuleEnabled, "web", t(3)),
        )
        .await
        .expect("enable unknown rule");
    assert!(!unknown, "no such rule");
    assert_eq!(
        pack_audit_actions(&*store).await,
        ["pack.installed web", "rule.disabled web"],
        "nothing is written for a rule that does not exist"
    );

    store
        .set_rule_enabled(
            "web.restart_on_down",
            true,
            &pack_audit(AuditVerb::RuleEnabled, "web", t(4)),
        )
        .await
        .expect("enable rule");
    assert!(
        store
            .get_rule("web.restart_on_down")
            .await
            .expect("get rule")
            .expect("rule exists")
            .enabled
    );
}

// --- events -----------------------------------------------------------------

fn event(trigger: &str, received_at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        id: new_id(),
        trigger: trigger.to_string(),
        payload: json!({ "labels": { "alertname": "NginxDown", "instance": "web-1" } }),
        source: "alertmanager".to_string(),
        received_at,
        idempotency_key: None,
    }
}

/// [`event`] with an idempotency key.
fn keyed_event(key: &str, received_at: DateTime<Utc>) -> NewEvent {
    NewEvent {
        idempotency_key: Some(key.to_string()),
        ..event("alertmanager.alert", received_at)
    }
}

/// Records `count` events of `trigger`, in order, one second apart from
/// `first`; returns their ids.
async fn record_events(store: &dyn Store, trigger: &str, count: i64, first: i64) -> Vec<EventId> {
    let mut ids = Vec::new();
    for i in 0..count {
        let recorded = event(trigger, t(first + i));
        store.record_event(&recorded).await.expect("record event");
        ids.push(recorded.id);
    }
    ids
}

fn event_ids(events: &[EventRecord]) -> Vec<EventId> {
    events.iter().map(|event| event.id.clone()).collect()
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn events_are_recorded_together_all_or_nothing_and_once_per_key(store: Arc<dyn Store>) {
    let first = [
        keyed_event("a", t(1)),
        keyed_event("b", t(1)),
        event("alertmanager.alert", t(1)),
    ];
    let ids = store.record_events(&first).await.expect("record events");
    assert_eq!(ids, event_ids_of(&first), "each stored under its own id");

    // Sent again (new ids, same keys), with one more: only the new one is
    // stored; the others answer with the ids they were stored under. An
    // event without a key is always new.
    let again = [
        keyed_event("a", t(2)),
        keyed_event("b", t(2)),
        keyed_event("c", t(2)),
        event("alertmanager.alert", t(2)),
    ];
    let ids = store.record_events(&again).await.expect("record again");
    assert_eq!(
        ids,
        [
            first[0].id.clone(),
            first[1].id.clone(),
            again[2].id.clone(),
            again[3].id.clone()
        ]
    );
    assert_eq!(store.get_event(&again[0].id).await.expect("get"), None);
    assert_eq!(count_events(store.as_ref()).await, 5);

    // Twice the same key in one call: stored once.
    let twins = [keyed_event("d", t(3)), keyed_event("d", t(3))];
    let ids = store.record_events(&twins).await.expect("record twins");
    assert_eq!(ids, [twins[0].id.clone(), twins[0].id.clone()]);
    assert_eq!(count_events(store.as_ref()).await, 6);

    // The third cannot be stored (its id is taken): none of them is.
    let mut broken = [
        keyed_event("e", t(4)),
        event("alertmanager.alert", t(4)),
        event("alertmanager.alert", t(4)),
    ];
    broken[2].id = first[2].id.clone();
    store
        .record_events(&broken)
        .await
        .expect_err("an event id is stored once");
    for event in &broken[..2] {
        assert_eq!(store.get_event(&event.id).await.expect("get"), None);
    }
    assert_eq!(count_events(store.as_ref()).await, 6);
    // Nothing of it was kept: its key is free.
    let retried = [keyed_event("e", t(5))];
    assert_eq!(
        store.record_events(&retried).await.expect("record"),
        [retried[0].id.clone()]
    );

    let none: Vec<EventId> = store.record_events(&[]).await.expect("nothing");
    assert!(none.is_empty());
    // Stored events are pending and read back like any other.
    let stored = store
        .get_event(&first[0].id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.state, EventState::Pending);
    assert_eq!(stored.payload, first[0].payload);
}

fn event_ids_of(events: &[NewEvent]) -> Vec<EventId> {
    events.iter().map(|event| event.id.clone()).collect()
}

async fn count_events(store: &dyn Store) -> usize {
    store
        .list_events(&EventFilter {
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .expect("list events")
        .len()
}

pub async fn events_are_recorded_pending_and_finished(store: Arc<dyn Store>) {
    assert_eq!(
        store.get_event(&"nope".into()).await.expect("get event"),
        None
    );
    let processed = event("alertmanager", t(1));
    let failed = event("webhook.deploy", t(2));
    store.record_event(&processed).await.expect("record event");
    store.record_event(&failed).await.expect("record event");

    let stored = store
        .get_event(&processed.id)
        .await
        .expect("get event")
        .expect("event exists");
    assert_eq!(
        stored,
        EventRecord {
            id: processed.id.clone(),
            trigger: processed.trigger.clone(),
            payload: processed.payload.clone(),
            source: processed.source.clone(),
            received_at: t(1),
            state: EventState::Pending,
            processed_at: None,
            error: None,
            matched_rules: Vec::new(),
        }
    );

    store
        .finish_event(&processed.id, None, t(5))
        .await
        .expect("finish event");
    store
        .finish_event(&failed.id, Some("template error: undefined value"), t(6))
        .await
        .expect("finish event");
    let stored = store
        .get_event(&processed.id)
        .await
        .expect("get event")
        .expect("event exists");
    assert_eq!(stored.state, EventState::Processed);
    assert_eq!(stored.processed_at, Some(t(5)));
    assert_eq!(stored.error, None);
    let stored = store
        .get_event(&failed.id)
        .await
        .expect("get event")
        .expect("event exists");
    assert_eq!(stored.state, EventState::Failed);
    assert_eq!(stored.processed_at, Some(t(6)));
    assert_eq!(
        stored.error.as_deref(),
        Some("template error: undefined value")
    );

    // A second processor (its lease ran out) finishing late changes nothing.
    store
        .finish_event(&processed.id, Some("late"), t(9))
        .await
        .expect("finish event again");
    let stored = store
        .get_event(&processed.id)
        .await
        .expect("get event")
        .expect("event exists");
    assert_eq!(
        (stored.state, stored.processed_at),
        (EventState::Processed, Some(t(5)))
    );

    let err = store
        .finish_event(&"ghost".into(), None, t(9))
        .await
        .expect_err("unknown event");
    assert_not_found(err, "event", "ghost");
}

pub async fn the_backlog_counts_pending_events_and_dates_the_oldest(store: Arc<dyn Store>) {
    let empty = store.pending_events().await.expect("backlog");
    assert_eq!((empty.count, empty.oldest_received_at), (0, None));
    let ids = record_events(&*store, "alertmanager", 3, 10).await;
    let backlog = store.pending_events().await.expect("backlog");
    assert_eq!(
        (backlog.count, backlog.oldest_received_at),
        (3, Some(t(10)))
    );
    // Claimed but unfinished events are still waiting; finished ones are not.
    store
        .claim_pending_events("hive-a", 1, LEASE, t(20))
        .await
        .expect("claim");
    store
        .finish_event(&ids[0], None, t(21))
        .await
        .expect("finish");
    let backlog = store.pending_events().await.expect("backlog");
    assert_eq!(
        (backlog.count, backlog.oldest_received_at),
        (2, Some(t(11)))
    );
}

pub async fn pending_events_are_claimed_oldest_first_under_a_lease(store: Arc<dyn Store>) {
    assert!(
        store
            .claim_pending_events("hive-a", 10, LEASE, t(0))
            .await
            .expect("claim")
            .is_empty()
    );
    let ids = record_events(&*store, "alertmanager", 5, 0).await;

    let first = store
        .claim_pending_events("hive-a", 2, LEASE, t(10))
        .await
        .expect("claim");
    assert_eq!(
        event_ids(&first),
        ids[..2].to_vec(),
        "oldest first, up to the limit"
    );
    assert!(first.iter().all(|event| event.state == EventState::Pending));
    let second = store
        .claim_pending_events("hive-b", 10, LEASE, t(11))
        .await
        .expect("claim");
    assert_eq!(
        event_ids(&second),
        ids[2..].to_vec(),
        "leased events are skipped"
    );
    assert!(
        store
            .claim_pending_events("hive-b", 10, LEASE, t(12))
            .await
            .expect("claim")
            .is_empty()
    );

    // hive-a finishes its first event and dies with the second.
    store
        .finish_event(&ids[0], None, t(15))
        .await
        .expect("finish");
    assert!(
        store
            .claim_pending_events("hive-b", 10, LEASE, t(40))
            .await
            .expect("claim")
            .is_empty(),
        "a lease runs until its end (t(10) + 30s) inclusive"
    );
    let reclaimed = store
        .claim_pending_events("hive-b", 10, LEASE, t(41))
        .await
        .expect("claim");
    assert_eq!(
        event_ids(&reclaimed),
        vec![ids[1].clone()],
        "an expired lease is claimable again; a finished event never is"
    );
    // Limit zero means the default page, as everywhere.
    let all = store
        .claim_pending_events("hive-c", 0, LEASE, t(100))
        .await
        .expect("claim");
    assert_eq!(event_ids(&all), ids[1..].to_vec());
}

pub async fn concurrent_claimers_never_get_the_same_event(store: Arc<dyn Store>) {
    const EVENTS: i64 = 60;
    const CLAIMERS: usize = 8;
    let ids = record_events(&*store, "alertmanager", EVENTS, 0).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let mut tasks = Vec::new();
    for claimer in 0..CLAIMERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim_pending_events(&format!("hive-{claimer}"), 10, LEASE, t(100))
                .await
                .expect("claim")
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(event_ids(&task.await.expect("claimer task")));
    }
    // A claimer may come back short (rows it skipped were taken meanwhile),
    // never with an event another claimer holds.
    let mut distinct = claimed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), claimed.len(), "an event was claimed twice");

    let rest = store
        .claim_pending_events("hive-late", 100, LEASE, t(101))
        .await
        .expect("claim");
    claimed.extend(event_ids(&rest));
    claimed.sort();
    assert_eq!(claimed, ids, "every event claimed exactly once");
}

pub async fn events_are_listed_newest_first_with_filters_and_pages(store: Arc<dyn Store>) {
    let alerts = record_events(&*store, "alertmanager", 4, 0).await;
    let hooks = record_events(&*store, "webhook.deploy", 3, 10).await;
    store
        .finish_event(&alerts[0], None, t(20))
        .await
        .expect("finish");
    store
        .finish_event(&hooks[0], Some("boom"), t(20))
        .await
        .expect("finish");

    let newest_first = |ids: &[EventId]| ids.iter().rev().cloned().collect::<Vec<_>>();
    let list = |filter: EventFilter| {
        let store = Arc::clone(&store);
        async move { event_ids(&store.list_events(&filter).await.expect("list events")) }
    };

    let mut all = alerts.clone();
    all.extend(hooks.iter().cloned());
    assert_eq!(list(EventFilter::default()).await, newest_first(&all));
    assert_eq!(
        list(EventFilter {
            trigger: Some("webhook.deploy".into()),
            ..EventFilter::default()
        })
        .await,
        newest_first(&hooks)
    );
    assert_eq!(
        list(EventFilter {
            since: Some(t(2)),
            trigger: Some("alertmanager".into()),
            ..EventFilter::default()
        })
        .await,
        newest_first(&alerts[2..]),
        "since is inclusive"
    );
    assert_eq!(
        list(EventFilter {
            state: Some(EventState::Pending),
            ..EventFilter::default()
        })
        .await,
        newest_first(&[&alerts[1..], &hooks[1..]].concat())
    );
    assert_eq!(
        list(EventFilter {
            state: Some(EventState::Failed),
            ..EventFilter::default()
        })
        .await,
        vec![hooks[0].clone()]
    );
    assert_eq!(
        list(EventFilter {
            state: Some(EventState::Processed),
            trigger: Some("alertmanager".into()),
            ..EventFilter::default()
        })
        .await,
        vec![alerts[0].clone()]
    );

    let mut pages = Vec::new();
    let mut before_id = None;
    loop {
        let page = list(EventFilter {
            limit: 3,
            before_id: before_id.clone(),
            ..EventFilter::default()
        })
        .await;
        if page.is_empty() {
            break;
        }
        before_id = page.last().cloned();
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(
        pages.concat(),
        newest_first(&all),
        "pages are disjoint and complete"
    );
}

// --- rule firings -----------------------------------------------------------

const RULE: &str = "web.restart_on_down";

fn execution(job_id: &JobId, drone: &str, created_at: DateTime<Utc>) -> NewExecution {
    NewExecution {
        id: new_id(),
        job_id: job_id.clone(),
        drone_id: drone.into(),
        created_at,
        expires_at: created_at + Duration::minutes(10),
    }
}

fn cooldown(minutes: u64) -> Option<Cooldown> {
    Some(Cooldown {
        key: "{{ labels.instance }}".to_string(),
        period: std::time::Duration::from_secs(minutes * 60),
    })
}

/// A firing of `rule` for a new event at `now`, acting on `drones`.
fn firing(
    rule: &str,
    policy: Policy,
    cooldown_key: Option<&str>,
    drones: &[&str],
    now: DateTime<Utc>,
) -> RuleFiring {
    let event_id: EventId = new_id();
    let job = NewJob {
        id: new_id(),
        target: drones.join(","),
        requester: format!("rule:{rule}"),
        command: command("systemctl restart nginx"),
        created_at: now,
        origin: JobOrigin {
            action_ref: Some("web.restart".to_string()),
            rule: Some(rule.to_string()),
            event_id: Some(event_id.clone()),
            parameters: Some(json!({ "service": "nginx" })),
        },
    };
    RuleFiring {
        rule: rule.to_string(),
        event_id,
        policy,
        cooldown_key: cooldown_key.map(str::to_string),
        matching_fleet: 100,
        executions: drones
            .iter()
            .map(|drone| execution(&job.id, drone, now))
            .collect(),
        job,
        detail: json!({ "target": drones.join(",") }),
    }
}

/// The one audit record of a firing (each firing has an event of its own).
async fn firing_audit(store: &dyn Store, firing: &RuleFiring) -> NewAuditRecord {
    let records = store
        .list_audit(&AuditFilter {
            event_id: Some(firing.event_id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(records.len(), 1, "one audit record per firing: {records:?}");
    records.into_iter().next().expect("one record")
}

fn observed(record: &NewAuditRecord) -> Observation {
    serde_json::from_value(record.detail["observation"].clone())
        .unwrap_or_else(|err| panic!("observation in {:?}: {err}", record.detail))
}

/// Fires, then checks what the store observed (its job) before returning
/// the outcome, whose correctness is `policy::decide`'s.
async fn fire(
    store: &dyn Store,
    firing: &RuleFiring,
    now: DateTime<Utc>,
) -> (FiringOutcome, Observation) {
    let outcome = store.fire_rule(firing, now).await.expect("fire rule");
    let record = firing_audit(store, firing).await;
    (outcome, observed(&record))
}

fn is_held(outcome: &FiringOutcome) -> bool {
    matches!(outcome, FiringOutcome::Held { reason } if !reason.is_empty())
}

pub async fn allowed_firing_writes_job_executions_cooldown_and_linked_audit(store: Arc<dyn Store>) {
    let policy = Policy {
        cooldown: cooldown(10),
        max_concurrent: Some(10),
        ..Policy::default()
    };
    let first = firing(
        RULE,
        policy.clone(),
        Some("web-1"),
        &["drone-b", "drone-a"],
        t(100),
    );
    let outcome = store.fire_rule(&first, t(100)).await.expect("fire rule");
    assert_eq!(outcome, FiringOutcome::Fired);

    let job = store
        .get_job(&first.job.id)
        .await
        .expect("get job")
        .expect("the job was written");
    assert_eq!(job.origin, first.job.origin);
    assert_eq!(job.command, first.job.command);
    assert_eq!(job.requester, format!("rule:{RULE}"));
    let executions: Vec<(&str, &str, ExecutionStatus)> = job
        .executions
        .iter()
        .map(|e| (e.id.as_str(), e.drone_id.as_str(), e.status))
        .collect();
    assert_eq!(
        executions,
        [
            (
                first.executions[1].id.as_str(),
                "drone-a",
                ExecutionStatus::Requested
            ),
            (
                first.executions[0].id.as_str(),
                "drone-b",
                ExecutionStatus::Requested
            ),
        ]
    );

    let record = firing_audit(&*store, &first).await;
    assert!(
        Uuid::parse_str(&record.id).is_ok(),
        "audit id {} is a uuid",
        record.id
    );
    assert_eq!(record.at, t(100));
    assert_eq!(record.actor.to_string(), "hive");
    assert_eq!(record.action.as_str(), "rule.fired");
    assert_eq!(record.job_id.as_ref(), Some(&first.job.id));
    assert_eq!(record.event_id.as_ref(), Some(&first.event_id));
    assert_eq!(record.rule.as_deref(), Some(RULE));
    assert_eq!(record.action_ref.as_deref(), Some("web.restart"));
    assert_eq!(
        record.detail["target"],
        json!("drone-b,drone-a"),
        "the firing's detail is kept"
    );
    assert_eq!(
        observed(&record),
        Observation {
            last_fired_for_key: None,
            running_jobs: 0,
            hosts_in_window: 0,
            matching_fleet: 100,
            hosts_requested: 2,
        }
    );
    let by_rule = store
        .list_audit(&AuditFilter {
            rule: Some(RULE.to_string()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(by_rule, vec![record.clone()]);
    let by_job = store
        .list_audit(&AuditFilter {
            job_id: Some(first.job.id.clone()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(by_job, vec![record]);

    // The cooldown mark: the next firing for the key observes it. (Past the
    // period, so the policy allows it whatever it makes of the rest.)
    let later = firing(RULE, policy, Some("web-1"), &["drone-c"], t(1000));
    let (outcome, observation) = fire(&*store, &later, t(1000)).await;
    assert_eq!(observation.last_fired_for_key, Some(t(100)));
    assert_eq!(observation.running_jobs, 1, "the first job is unfinished");
    assert_eq!(outcome, FiringOutcome::Fired);
    let (_, observation) = fire(
        &*store,
        &firing(
            RULE,
            Policy::default(),
            Some("web-1"),
            &["drone-c"],
            t(1001),
        ),
        t(1001),
    )
    .await;
    assert_eq!(
        observation.last_fired_for_key,
        Some(t(1000)),
        "the mark moved"
    );
}

pub async fn fired_job_names_the_firing_rule_and_event(store: Arc<dyn Store>) {
    // The policy counts a rule's jobs by the rule stored with them, so the
    // store takes rule and event from the firing, not from the job.
    let policy = Policy {
        max_concurrent: Some(1),
        ..Policy::default()
    };
    let mut careless = firing(RULE, policy.clone(), None, &["drone-a"], t(0));
    careless.job.origin.rule = None;
    careless.job.origin.event_id = Some("some-other-event".into());
    assert_eq!(
        store.fire_rule(&careless, t(0)).await.expect("fire rule"),
        FiringOutcome::Fired
    );
    let job = store
        .get_job(&careless.job.id)
        .await
        .expect("get job")
        .expect("job exists");
    assert_eq!(job.origin.rule.as_deref(), Some(RULE));
    assert_eq!(job.origin.event_id.as_ref(), Some(&careless.event_id));
    assert_eq!(job.origin.action_ref.as_deref(), Some("web.restart"));

    let (_, observation) = fire(
        &*store,
        &firing(RULE, policy, None, &["drone-b"], t(1)),
        t(1),
    )
    .await;
    assert_eq!(observation.running_jobs, 1);
}

pub async fn held_firing_writes_no_job(store: Arc<dyn Store>) {
    let policy = Policy {
        cooldown: cooldown(10),
        ..Policy::default()
    };
    let first = firing(RULE, policy.clone(), Some("web-1"), &["drone-a"], t(0));
    store.fire_rule(&first, t(0)).await.expect("fire rule");

    let second = firing(RULE, policy.clone(), Some("web-1"), &["drone-a"], t(60));
    let (outcome, observation) = fire(&*store, &second, t(60)).await;
    assert_eq!(observation.last_fired_for_key, Some(t(0)));
    assert!(
        is_held(&outcome),
        "held by the cooldown (policy::decide), got {outcome:?}"
    );
    let FiringOutcome::Held { reason } = outcome else {
        unreachable!("checked above")
    };

    assert_eq!(store.get_job(&second.job.id).await.expect("get job"), None);
    assert_eq!(
        store
            .get_execution(&second.executions[0].id)
            .await
            .expect("get execution"),
        None
    );
    assert_eq!(store.count_jobs().await.expect("count jobs"), 1);

    let record = firing_audit(&*store, &second).await;
    assert_eq!(record.action.as_str(), "rule.held");
    assert_eq!(record.actor.to_string(), "hive");
    assert_eq!(record.at, t(60));
    assert_eq!(record.job_id, None, "there is no job");
    assert_eq!(record.rule.as_deref(), Some(RULE));
    assert_eq!(record.action_ref.as_deref(), Some("web.restart"));
    assert_eq!(record.detail["reason"], json!(reason));
    assert_eq!(record.detail["target"], json!("drone-a"));

    // A held firing leaves the cooldown mark where it was.
    let (_, observation) = fire(
        &*store,
        &firing(RULE, policy, Some("web-1"), &["drone-a"], t(120)),
        t(120),
    )
    .await;
    assert_eq!(observation.last_fired_for_key, Some(t(0)));
}

pub async fn cooldown_holds_a_second_firing_for_the_same_key_only(store: Arc<dyn Store>) {
    let policy = Policy {
        cooldown: cooldown(10),
        ..Policy::default()
    };
    let at = |secs| firing(RULE, policy.clone(), Some("web-1"), &["drone-a"], t(secs));

    let (outcome, observation) = fire(&*store, &at(0), t(0)).await;
    assert_eq!(observation.last_fired_for_key, None);
    assert_eq!(outcome, FiringOutcome::Fired);

    let (outcome, observation) = fire(&*store, &at(60), t(60)).await;
    assert_eq!(observation.last_fired_for_key, Some(t(0)));
    assert!(
        is_held(&outcome),
        "same key within the period (policy::decide), got {outcome:?}"
    );

    let other_key = firing(RULE, policy.clone(), Some("web-2"), &["drone-b"], t(60));
    let (outcome, observation) = fire(&*store, &other_key, t(60)).await;
    assert_eq!(observation.last_fired_for_key, None, "keys are independent");
    assert_eq!(outcome, FiringOutcome::Fired);

    let other_rule = firing(
        "web.other",
        policy.clone(),
        Some("web-1"),
        &["drone-a"],
        t(60),
    );
    let (outcome, observation) = fire(&*store, &other_rule, t(60)).await;
    assert_eq!(
        observation.last_fired_for_key, None,
        "rules are independent"
    );
    assert_eq!(outcome, FiringOutcome::Fired);

    let (outcome, observation) = fire(&*store, &at(601), t(601)).await;
    assert_eq!(observation.last_fired_for_key, Some(t(0)));
    assert_eq!(
        outcome,
        FiringOutcome::Fired,
        "past the period (policy::decide)"
    );
}

pub async fn max_concurrent_holds_while_a_job_of_the_rule_is_unfinished(store: Arc<dyn Store>) {
    let policy = Policy {
        max_concurrent: Some(1),
        ..Policy::default()
    };
    // Jobs that are not this rule's never count.
    create_job(&*store, &["drone-a"], t(0), t(600)).await;
    store
        .fire_rule(
            &firing("web.other", policy.clone(), None, &["drone-a"], t(0)),
            t(0),
        )
        .await
        .expect("fire other rule");

    let first = firing(RULE, policy.clone(), None, &["drone-a", "drone-b"], t(1));
    let (outcome, observation) = fire(&*store, &first, t(1)).await;
    assert_eq!(observation.running_jobs, 0);
    assert_eq!(outcome, FiringOutcome::Fired);

    let (outcome, observation) = fire(
        &*store,
        &firing(RULE, policy.clone(), None, &["drone-c"], t(2)),
        t(2),
    )
    .await;
    assert_eq!(observation.running_jobs, 1);
    assert!(
        is_held(&outcome),
        "one job running (policy::decide), got {outcome:?}"
    );

    // Running and one execution finished: still unfinished.
    store
        .transition_execution(
            &first.executions[0].id,
            &update(ExecutionStatus::Running, t(3)),
            None,
        )
        .await
        .expect("transition");
    store
        .transition_execution(
            &first.executions[1].id,
            &finished(ExecutionStatus::Succeeded, t(3), result(0, "ok")),
            None,
        )
        .await
        .expect("transition");
    let (outcome, observation) = fire(
        &*store,
        &firing(RULE, policy.clone(), None, &["drone-c"], t(4)),
        t(4),
    )
    .await;
    assert_eq!(
        observation.running_jobs, 1,
        "a job with any execution not terminal is running"
    );
    assert!(is_held(&outcome), "got {outcome:?}");

    store
        .transition_execution(
            &first.executions[0].id,
            &finished(ExecutionStatus::TimedOut, t(5), result(137, "")),
            None,
        )
        .await
        .expect("transition");
    let (outcome, observation) = fire(
        &*store,
        &firing(RULE, policy, None, &["drone-c"], t(6)),
        t(6),
    )
    .await;
    assert_eq!(observation.running_jobs, 0, "every execution is terminal");
    assert_eq!(outcome, FiringOutcome::Fired);
}

pub async fn blast_radius_counts_distinct_hosts_in_the_window(store: Arc<dyn Store>) {
    let policy = Policy {
        blast_radius: Some(BlastRadius {
            max_hosts: Some(4),
            max_percent: None,
            window: std::time::Duration::from_secs(3600),
        }),
        ..Policy::default()
    };
    let fire_on = |drones: &'static [&'static str], secs: i64| {
        let store = Arc::clone(&store);
        let policy = policy.clone();
        async move {
            fire(
                &*store,
                &firing(RULE, policy, None, drones, t(secs)),
                t(secs),
            )
            .await
        }
    };
    // Another rule acting on other hosts meanwhile does not count.
    store
        .fire_rule(
            &firing(
                "web.other",
                policy.clone(),
                None,
                &["drone-x", "drone-y"],
                t(0),
            ),
            t(0),
        )
        .await
        .expect("fire other rule");

    let (outcome, observation) = fire_on(&["drone-a", "drone-b"], 0).await;
    assert_eq!(
        (observation.hosts_in_window, observation.hosts_requested),
        (0, 2)
    );
    assert_eq!(outcome, FiringOutcome::Fired);

    // The same hosts again: counted once, with the request, so acting on
    // a host twice never eats into the limit twice.
    let (outcome, observation) = fire_on(&["drone-a", "drone-b"], 10).await;
    assert_eq!(
        (observation.hosts_in_window, observation.hosts_requested),
        (0, 2)
    );
    assert_eq!(outcome, FiringOutcome::Fired);

    let (outcome, observation) = fire_on(&["drone-c"], 20).await;
    assert_eq!(
        observation.hosts_in_window, 2,
        "a host acted on twice counts once"
    );
    assert_eq!(
        outcome,
        FiringOutcome::Fired,
        "2 + 1 hosts within 4 (policy::decide)"
    );

    let (outcome, observation) = fire_on(&["drone-d", "drone-e"], 30).await;
    assert_eq!(observation.hosts_in_window, 3);
    assert!(
        is_held(&outcome),
        "3 + 2 hosts exceed 4 (policy::decide), got {outcome:?}"
    );

    // The window is the last hour, its start excluded: at t(3610) the
    // firings at t(0) and t(10) have left it, the one at t(20) has not.
    let (_, observation) = fire_on(&[], 3610).await;
    assert_eq!(observation.hosts_in_window, 1);
    let (outcome, observation) = fire_on(&["drone-d", "drone-e"], 3620).await;
    assert_eq!(observation.hosts_in_window, 0);
    assert_eq!(outcome, FiringOutcome::Fired);

    // Without a blast radius nothing is counted.
    let (_, observation) = fire(
        &*store,
        &firing(RULE, Policy::default(), None, &["drone-a"], t(3621)),
        t(3621),
    )
    .await;
    assert_eq!(observation.hosts_in_window, 0);
}

pub async fn concurrent_firings_of_one_rule_fire_once(store: Arc<dyn Store>) {
    // Every racer is a replica handling its own event for the same rule.
    const RACERS: usize = 12;
    let policy = Policy {
        max_concurrent: Some(1),
        ..Policy::default()
    };
    let firings: Vec<RuleFiring> = (0..RACERS)
        .map(|i| {
            let drone = format!("drone-{i}");
            firing(RULE, policy.clone(), None, &[drone.as_str()], t(10))
        })
        .collect();

    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for firing in firings.clone() {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.fire_rule(&firing, t(10)).await.expect("fire rule")
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("firing task"));
    }

    // What the store guarantees whatever the policy decides: firings ran one
    // at a time, so each allowed one saw every job allowed before it.
    let mut running_seen_by_fired = Vec::new();
    for (firing, outcome) in firings.iter().zip(&outcomes) {
        let record = firing_audit(&*store, firing).await;
        let fired = *outcome == FiringOutcome::Fired;
        assert_eq!(
            record.action.as_str(),
            if fired { "rule.fired" } else { "rule.held" }
        );
        if fired {
            running_seen_by_fired.push(observed(&record).running_jobs);
        }
    }
    running_seen_by_fired.sort_unstable();
    let serial: Vec<u32> = (0..u32::try_from(running_seen_by_fired.len()).expect("few")).collect();
    assert_eq!(
        running_seen_by_fired, serial,
        "two firings saw the same jobs"
    );
    assert_eq!(
        store.count_jobs().await.expect("count jobs"),
        i64::try_from(running_seen_by_fired.len()).expect("few")
    );

    let fired = outcomes
        .iter()
        .filter(|o| **o == FiringOutcome::Fired)
        .count();
    assert_eq!(fired, 1, "max_concurrent 1 (policy::decide): {outcomes:?}");
    assert!(
        outcomes
            .iter()
            .filter(|o| **o != FiringOutcome::Fired)
            .all(is_held)
    );
}

pub async fn timer_tick_is_claimed_once(store: Arc<dyn Store>) {
    assert!(
        store
            .claim_timer_tick(RULE, t(60))
            .await
            .expect("claim tick")
    );
    assert!(
        !store
            .claim_timer_tick(RULE, t(60))
            .await
            .expect("claim tick")
    );
    assert!(
        store
            .claim_timer_tick(RULE, t(120))
            .await
            .expect("claim tick"),
        "the next tick"
    );
    assert!(
        store
            .claim_timer_tick("web.other", t(60))
            .await
            .expect("claim tick"),
        "another rule"
    );

    const TICKS: i64 = 10;
    const REPLICAS: usize = 4;
    let barrier = Arc::new(tokio::sync::Barrier::new(
        usize::try_from(TICKS).expect("few") * REPLICAS,
    ));
    let mut tasks = Vec::new();
    for tick in 0..TICKS {
        for _ in 0..REPLICAS {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let won = store
                    .claim_timer_tick("web.check_hourly", t(3600 * tick))
                    .await
                    .expect("claim tick");
                (tick, won)
            }));
        }
    }
    let mut winners = BTreeMap::<i64, usize>::new();
    for task in tasks {
        let (tick, won) = task.await.expect("claimer task");
        *winners.entry(tick).or_default() += usize::from(won);
    }
    assert_eq!(
        winners,
        (0..TICKS).map(|tick| (tick, 1)).collect::<BTreeMap<_, _>>(),
        "each tick claimed by exactly one replica"
    );
}

pub async fn audit_filters_by_event_rule_and_action_ref(store: Arc<dyn Store>) {
    let record = |action: &str,
                  at: i64,
                  event: Option<&str>,
                  rule: Option<&str>,
                  action_ref: Option<&str>| {
        NewAuditRecord {
            event_id: event.map(EventId::from),
            rule: rule.map(str::to_string),
            action_ref: action_ref.map(str::to_string),
            ..audit(action.parse().expect("a verb"), t(at))
        }
    };
    // The store checks no link against the verb: any verbs make the chain.
    let records = [
        record("rule.evaluated", 10, Some("ev-1"), None, None),
        record(
            "rule.failed",
            11,
            Some("ev-1"),
            Some("web.restart_on_down"),
            None,
        ),
        record(
            "rule.fired",
            12,
            Some("ev-1"),
            Some("web.restart_on_down"),
            Some("web.restart"),
        ),
        record(
            "rule.held",
            20,
            Some("ev-2"),
            Some("web.restart_on_down"),
            Some("web.restart"),
        ),
        record("job.submitted", 30, None, None, Some("web.restart")),
        record(
            "rule.fired",
            40,
            Some("ev-3"),
            Some("db.vacuum_nightly"),
            Some("db.vacuum"),
        ),
    ];
    for record in &records {
        store.append_audit(record).await.expect("append");
    }
    let list = |filter: AuditFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_audit(&filter)
                .await
                .expect("list audit")
                .into_iter()
                .map(|record| (record.action.to_string(), (record.at - t(0)).num_seconds()))
                .collect::<Vec<_>>()
        }
    };
    let pairs = |expected: &[(&str, i64)]| -> Vec<(String, i64)> {
        expected
            .iter()
            .map(|(action, at)| (action.to_string(), *at))
            .collect()
    };

    assert_eq!(
        list(AuditFilter {
            event_id: Some("ev-1".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[
            ("rule.fired", 12),
            ("rule.failed", 11),
            ("rule.evaluated", 10)
        ]),
        "the whole chain of an event"
    );
    assert_eq!(
        list(AuditFilter {
            rule: Some("web.restart_on_down".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("rule.held", 20), ("rule.fired", 12), ("rule.failed", 11)])
    );
    assert_eq!(
        list(AuditFilter {
            action_ref: Some("web.restart".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("job.submitted", 30), ("rule.held", 20), ("rule.fired", 12)])
    );
    assert_eq!(
        list(AuditFilter {
            rule: Some("web.restart_on_down".into()),
            action: Some(AuditVerb::RuleFired),
            action_ref: Some("web.restart".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[("rule.fired", 12)]),
        "filters combine with AND"
    );
    assert_eq!(
        list(AuditFilter {
            event_id: Some("ev-404".into()),
            ..AuditFilter::default()
        })
        .await,
        pairs(&[])
    );
}

pub async fn a_rule_is_decided_once_per_event(store: Arc<dyn Store>) {
    // A replica died after firing and before finishing the event; another
    // reclaims the event and evaluates the rule again with a new job id.
    let first = firing(RULE, Policy::default(), None, &["drone-a"], t(10));
    let mut again = firing(RULE, Policy::default(), None, &["drone-a"], t(20));
    again.event_id = first.event_id.clone();
    assert_eq!(
        store.fire_rule(&first, t(10)).await.expect("fire rule"),
        FiringOutcome::Fired
    );
    assert_eq!(
        store
            .fire_rule(&again, t(20))
            .await
            .expect("fire rule again"),
        FiringOutcome::AlreadyDecided
    );
    assert_eq!(store.count_jobs().await.expect("count jobs"), 1);
    assert_eq!(
        store.get_job(&again.job.id).await.expect("get job"),
        None,
        "the second firing wrote no job"
    );
    firing_audit(&*store, &first).await;

    // A hold is a decision too.
    let held_policy = Policy {
        max_concurrent: Some(0),
        ..Policy::default()
    };
    let held = firing("web.other", held_policy, None, &["drone-b"], t(30));
    let mut held_again = firing("web.other", Policy::default(), None, &["drone-b"], t(40));
    held_again.event_id = held.event_id.clone();
    assert!(is_held(
        &store.fire_rule(&held, t(30)).await.expect("fire rule")
    ));
    assert_eq!(
        store
            .fire_rule(&held_again, t(40))
            .await
            .expect("fire rule again"),
        FiringOutcome::AlreadyDecided,
        "a held rule is not fired when its event comes back"
    );
    assert_eq!(store.count_jobs().await.expect("count jobs"), 1);

    // Another rule on the same event is a decision of its own.
    let mut other_rule = firing("web.third", Policy::default(), None, &["drone-c"], t(50));
    other_rule.event_id = first.event_id.clone();
    assert_eq!(
        store
            .fire_rule(&other_rule, t(50))
            .await
            .expect("fire rule"),
        FiringOutcome::Fired
    );
}

pub async fn batched_firings_are_decided_in_order_and_all_or_nothing(store: Arc<dyn Store>) {
    let one_at_a_time = Policy {
        max_concurrent: Some(1),
        ..Policy::default()
    };
    let batch = vec![
        firing(RULE, one_at_a_time.clone(), None, &["drone-a"], t(10)),
        firing("web.other", Policy::default(), None, &["drone-b"], t(10)),
        firing(RULE, one_at_a_time.clone(), None, &["drone-c"], t(10)),
    ];
    let outcomes = store.fire_rules(&batch, t(10)).await.expect("fire rules");
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0], FiringOutcome::Fired);
    assert_eq!(outcomes[1], FiringOutcome::Fired);
    assert!(
        is_held(&outcomes[2]),
        "the third saw the first one's job: {outcomes:?}"
    );
    assert_eq!(
        observed(&firing_audit(&*store, &batch[2]).await).running_jobs,
        1
    );
    assert_eq!(store.count_jobs().await.expect("count jobs"), 2);
    assert_eq!(
        store.fire_rules(&[], t(11)).await.expect("empty batch"),
        Vec::new()
    );

    // A firing the database refuses (its job id is taken) fails the whole
    // batch: the good firing before it writes nothing either.
    let good = firing("web.fourth", Policy::default(), None, &["drone-d"], t(20));
    let mut bad = firing("web.fifth", Policy::default(), None, &["drone-e"], t(20));
    bad.job.id = batch[1].job.id.clone();
    for execution in &mut bad.executions {
        execution.job_id = bad.job.id.clone();
    }
    store
        .fire_rules(&[good.clone(), bad], t(20))
        .await
        .expect_err("a duplicate job id is refused");
    assert_eq!(store.count_jobs().await.expect("count jobs"), 2);
    assert_eq!(
        store.fire_rule(&good, t(21)).await.expect("fire rule"),
        FiringOutcome::Fired,
        "the rolled-back firing was not decided"
    );
}

pub async fn finished_events_keep_the_rules_that_matched(store: Arc<dyn Store>) {
    let ids = record_events(&*store, "core.webhook", 3, 1).await;
    let outcomes = vec![
        EventOutcome {
            id: ids[0].clone(),
            error: None,
            matched_rules: vec!["web.restart".to_string(), "web.page".to_string()],
        },
        EventOutcome {
            id: ids[1].clone(),
            error: Some("web.restart: target: undefined value".to_string()),
            matched_rules: vec!["web.restart".to_string()],
        },
        EventOutcome {
            id: "ghost".into(),
            error: None,
            matched_rules: Vec::new(),
        },
    ];
    assert_eq!(
        store
            .finish_events(&outcomes, t(30))
            .await
            .expect("finish events"),
        2,
        "the unknown id is skipped"
    );
    let first = store.get_event(&ids[0]).await.expect("get").expect("event");
    assert_eq!(first.state, EventState::Processed);
    assert_eq!(first.processed_at, Some(t(30)));
    assert_eq!(first.matched_rules, ["web.restart", "web.page"]);
    let second = store.get_event(&ids[1]).await.expect("get").expect("event");
    assert_eq!(second.state, EventState::Failed);
    assert_eq!(
        second.error.as_deref(),
        Some("web.restart: target: undefined value")
    );
    assert_eq!(second.matched_rules, ["web.restart"]);
    let third = store.get_event(&ids[2]).await.expect("get").expect("event");
    assert_eq!(third.state, EventState::Pending);
    assert!(third.matched_rules.is_empty());

    // Finishing again (a second processor) changes nothing.
    let late = vec![EventOutcome {
        id: ids[0].clone(),
        error: Some("late".to_string()),
        matched_rules: Vec::new(),
    }];
    assert_eq!(store.finish_events(&late, t(40)).await.expect("finish"), 0);
    let first = store.get_event(&ids[0]).await.expect("get").expect("event");
    assert_eq!(
        (first.state, first.matched_rules.len()),
        (EventState::Processed, 2)
    );
    let listed = store
        .list_events(&EventFilter::default())
        .await
        .expect("list events");
    assert!(
        listed
            .iter()
            .any(|e| e.matched_rules == ["web.restart", "web.page"])
    );
}

pub async fn catalog_version_moves_with_every_catalog_change(store: Arc<dyn Store>) {
    let version = || {
        let store = Arc::clone(&store);
        async move { store.catalog_version().await.expect("catalog version") }
    };
    let start = version().await;
    install(
        &*store,
        &pack("web", "1.0.0", t(1)),
        &[action("web", "restart", "1.0.0")],
        &[rule("web", "restart_on_down", "alertmanager", true)],
        &[],
    )
    .await;
    let installed = version().await;
    assert!(installed > start, "an install moves it");

    store
        .set_rule_enabled(
            "web.restart_on_down",
            false,
            &pack_audit(AuditVerb::RuleDisabled, "web", t(2)),
        )
        .await
        .expect("disable rule");
    let disabled = version().await;
    assert!(disabled > installed, "disabling a rule moves it");
    store
        .set_rule_enabled(
            "web.nope",
            true,
            &pack_audit(AuditVerb::RuleEnabled, "web", t(3)),
        )
        .await
        .expect("enable unknown rule");
    assert_eq!(version().await, disabled, "nothing changed, nothing moves");

    // Events, jobs and firings are not the catalog.
    record_events(&*store, "alertmanager", 2, 4).await;
    store
        .fire_rule(
            &firing(RULE, Policy::default(), None, &["drone-a"], t(5)),
            t(5),
        )
        .await
        .expect("fire rule");
    assert_eq!(version().await, disabled);

    assert!(
        store
            .remove_pack("web", &pack_audit(AuditVerb::PackRemoved, "web", t(6)))
            .await
            .expect("remove pack")
    );
    assert!(version().await > disabled, "a removal moves it");
}

// --- operators' lookups ---------------------------------------------------------

/// A job with the given id, of `origin`, on `drones`, created at `at`.
async fn create_job_as(
    store: &dyn Store,
    id: &str,
    drones: &[&str],
    origin: JobOrigin,
    at: DateTime<Utc>,
) -> Vec<ExecutionId> {
    let job = NewJob {
        id: id.into(),
        target: drones.join(","),
        requester: "operator:alice".to_string(),
        command: command("uptime"),
        created_at: at,
        origin,
    };
    let executions: Vec<NewExecution> = drones
        .iter()
        .map(|drone| execution(&job.id, drone, at))
        .collect();
    store
        .create_job(&job, &executions, &audit(AuditVerb::JobSubmitted, at))
        .await
        .expect("create job");
    executions.into_iter().map(|e| e.id).collect()
}

pub async fn jobs_are_filtered_by_status_drone_rule_action_and_time(store: Arc<dyn Store>) {
    let by_rule = |rule: &str| JobOrigin {
        action_ref: Some("web.restart".to_string()),
        rule: Some(rule.to_string()),
        ..JobOrigin::default()
    };
    let ad_hoc = create_job_as(
        &*store,
        "job-1",
        &["web-1", "web-2"],
        JobOrigin::default(),
        t(10),
    )
    .await;
    create_job_as(&*store, "job-2", &["web-2"], by_rule("web.on_down"), t(20)).await;
    let failing = create_job_as(&*store, "job-3", &["db-1"], by_rule("db.on_full"), t(30)).await;
    store
        .transition_execution(
            &ad_hoc[0],
            &finished(ExecutionStatus::Failed, t(11), result(1, "")),
            None,
        )
        .await
        .expect("transition");
    store
        .transition_execution(
            &failing[0],
            &finished(ExecutionStatus::TimedOut, t(31), result(-1, "")),
            None,
        )
        .await
        .expect("transition");

    let ids = |jobs: Vec<ultron8_store::JobSummary>| -> Vec<String> {
        jobs.into_iter().map(|j| j.id.to_string()).collect()
    };
    let list = |filter: JobFilter| {
        let store = store.clone();
        async move { ids(store.list_jobs(&filter).await.expect("list jobs")) }
    };
    assert_eq!(list(latest(0)).await, ["job-3", "job-2", "job-1"]);
    assert_eq!(
        list(JobFilter {
            statuses: vec![ExecutionStatus::Failed, ExecutionStatus::TimedOut],
            ..latest(0)
        })
        .await,
        ["job-3", "job-1"]
    );
    // job-1 has one failed and one requested execution: listed once.
    assert_eq!(
        list(JobFilter {
            statuses: vec![ExecutionStatus::Requested, ExecutionStatus::Failed],
            ..latest(0)
        })
        .await,
        ["job-2", "job-1"]
    );
    assert_eq!(
        list(JobFilter {
            drone_id: Some("web-2".into()),
            ..latest(0)
        })
        .await,
        ["job-2", "job-1"]
    );
    assert_eq!(
        list(JobFilter {
            rule: Some("db.on_full".to_string()),
            ..latest(0)
        })
        .await,
        ["job-3"]
    );
    assert_eq!(
        list(JobFilter {
            action_ref: Some("web.restart".to_string()),
            since: Some(t(20)),
            ..latest(0)
        })
        .await,
        ["job-3", "job-2"]
    );
    assert_eq!(
        list(JobFilter {
            drone_id: Some("web-2".into()),
            statuses: vec![ExecutionStatus::Succeeded],
            ..latest(0)
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(JobFilter {
            drone_id: Some("web-1".into()),
            statuses: vec![ExecutionStatus::Requested],
            ..latest(0)
        })
        .await,
        Vec::<String>::new(),
        "the drone's own execution has the status: web-1 failed, web-2 waits"
    );
    assert_eq!(
        list(JobFilter {
            drone_id: Some("web-1".into()),
            statuses: vec![ExecutionStatus::Failed],
            ..latest(0)
        })
        .await,
        ["job-1"]
    );
    assert_eq!(list(latest(2)).await, ["job-3", "job-2"]);
}

pub async fn ids_are_found_by_prefix_with_no_wildcards(store: Arc<dyn Store>) {
    for id in [
        "0193a1c2-aaaa",
        "0193a1c2-aaab",
        "0193a1c2-b",
        "0193b000",
        "job_1",
        "jobx1",
        "JOB-UP",
        "abc",
        "abcd",
    ] {
        create_job_as(&*store, id, &["web-1"], JobOrigin::default(), t(1)).await;
    }
    let find = |prefix: &'static str, limit: u32| {
        let store = store.clone();
        async move {
            store
                .ids_with_prefix(IdKind::Job, prefix, limit)
                .await
                .expect("ids with prefix")
        }
    };
    assert_eq!(find("0193a1c2-aaab", 10).await, ["0193a1c2-aaab"]);
    assert_eq!(
        find("0193a1c2-aa", 10).await,
        ["0193a1c2-aaaa", "0193a1c2-aaab"]
    );
    assert_eq!(
        find("0193a1c2", 10).await,
        ["0193a1c2-b", "0193a1c2-aaaa", "0193a1c2-aaab"],
        "shorter ids first, then in order"
    );
    assert_eq!(find("0193a1c2", 2).await.len(), 2);
    assert_eq!(
        find("0193", 10).await.len(),
        4,
        "a prefix shorter than the index"
    );
    // `_` and `%` are characters like any other, and case counts.
    assert_eq!(find("job_", 10).await, ["job_1"]);
    assert!(find("%", 10).await.is_empty());
    assert!(find("_", 10).await.is_empty());
    assert!(find("job-up", 10).await.is_empty());
    assert_eq!(find("JOB-", 10).await, ["JOB-UP"]);
    // An id equal to the prefix comes first, whatever the limit.
    assert_eq!(find("abc", 1).await, ["abc"]);
    assert!(find("0193a1c2-c", 10).await.is_empty());
    // Each kind has its own ids.
    assert!(
        store
            .ids_with_prefix(IdKind::Event, "0193", 10)
            .await
            .expect("ids with prefix")
            .is_empty()
    );
    let executions = store
        .ids_with_prefix(IdKind::Execution, "", 100)
        .await
        .expect("ids with prefix");
    assert_eq!(executions.len(), 9, "every execution starts with \"\"");
}

pub async fn ids_sharing_their_first_characters_are_found(store: Arc<dyn Store>) {
    for id in [
        "0193a1c2-aaaa",
        "0193a1c2-bbbb",
        "0193a1c3-aaaa",
        "0193a1c",
        "short",
    ] {
        create_job_as(&*store, id, &["web-1"], JobOrigin::default(), t(1)).await;
    }
    let event = NewEvent {
        id: "0193a1c2-cccc".into(),
        ..event("core.event", t(2))
    };
    store.record_event(&event).await.expect("record event");
    let sharing = |ids: &[&str], limit: u32| {
        let store = store.clone();
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        async move {
            store
                .ids_sharing_prefix(IdKind::Job, &ids, limit)
                .await
                .expect("ids sharing prefix")
        }
    };
    assert_eq!(
        sharing(&["0193a1c2-aaaa"], 0).await,
        ["0193a1c2-aaaa", "0193a1c2-bbbb"]
    );
    assert_eq!(
        sharing(&["0193a1c2-aaaa", "0193a1c3-aaaa", "0193a1c2-zzzz"], 0).await,
        ["0193a1c2-aaaa", "0193a1c2-bbbb", "0193a1c3-aaaa"]
    );
    // Ids shorter than the indexed prefix share it with nothing.
    assert!(sharing(&["short", "0193a1c"], 0).await.is_empty());
    assert_eq!(sharing(&["0193a1c2-aaaa"], 1).await.len(), 1);
    assert_eq!(
        store
            .ids_sharing_prefix(IdKind::Event, &["0193a1c2-aaaa".to_string()], 0)
            .await
            .expect("ids sharing prefix"),
        ["0193a1c2-cccc"]
    );
}

pub async fn a_removed_drone_leaves_the_fleet_and_keeps_its_history(store: Arc<dyn Store>) {
    enroll(&*store, "web-1", t(0)).await;
    enroll(&*store, "web-2", t(0)).await;
    for drone in ["web-1", "web-2"] {
        store
            .record_registration(&drone.into(), &facts(drone, BTreeMap::new()), t(1))
            .await
            .expect("register");
    }
    let job = create_job(&*store, &["web-1"], t(2), t(600)).await;

    let removal = DroneRemoval {
        at: t(3),
        by: "operator:alice".to_string(),
    };
    let mut record = audit(AuditVerb::DroneRemoved, t(3));
    record.drone_id = Some("web-1".into());
    assert!(
        store
            .remove_drone(&"web-1".into(), &removal, &record)
            .await
            .expect("remove drone")
    );

    let fleet: Vec<String> = store
        .list_drones()
        .await
        .expect("list drones")
        .into_iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(fleet, ["web-2"]);
    let removed = store
        .get_drone(&"web-1".into())
        .await
        .expect("get drone")
        .expect("the record stays");
    assert_eq!(removed.removed, Some(removal.clone()));
    assert!(!removed.online);
    assert_eq!(
        store
            .get_drone(&"web-2".into())
            .await
            .expect("get drone")
            .expect("drone")
            .removed,
        None
    );
    // Its jobs and its audit trail stay readable.
    let stored = store
        .get_job(&job.job_id)
        .await
        .expect("get job")
        .expect("job stays");
    assert_eq!(stored.executions[0].drone_id, "web-1");
    let trail = store
        .list_audit(&AuditFilter {
            drone_id: Some("web-1".into()),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].action, AuditVerb::DroneRemoved);

    // It reports nothing any more, and is not removed twice.
    assert!(matches!(
        store
            .record_heartbeat(&"web-1".into(), &stats(1.0), t(4))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .record_registration(&"web-1".into(), &facts("web-1", BTreeMap::new()), t(4))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        !store
            .remove_drone(
                &"web-1".into(),
                &removal,
                &audit(AuditVerb::DroneRemoved, t(5))
            )
            .await
            .expect("remove again")
    );
    assert!(
        !store
            .remove_drone(
                &"nobody".into(),
                &removal,
                &audit(AuditVerb::DroneRemoved, t(5))
            )
            .await
            .expect("remove unknown")
    );
    let trail = store
        .list_audit(&AuditFilter {
            action: Some(AuditVerb::DroneRemoved),
            ..AuditFilter::default()
        })
        .await
        .expect("list audit");
    assert_eq!(trail.len(), 1, "a refused removal writes nothing");
}

pub async fn a_removed_drone_joins_again_with_a_new_enrollment(store: Arc<dyn Store>) {
    enroll(&*store, "web-1", t(0)).await;
    let removal = DroneRemoval {
        at: t(1),
        by: "operator:alice".to_string(),
    };
    assert!(
        store
            .remove_drone(
                &"web-1".into(),
                &removal,
                &audit(AuditVerb::DroneRemoved, t(1))
            )
            .await
            .expect("remove drone")
    );
    let again = enrollment("web-1", labels(&[("env", "staging")]), t(2));
    store.record_enrollment(&again).await.expect("enroll again");
    let drone = store
        .get_drone(&"web-1".into())
        .await
        .expect("get drone")
        .expect("drone");
    assert_eq!(drone.removed, None);
    assert_eq!(drone.certificate_fingerprint, again.certificate_fingerprint);
    store
        .record_heartbeat(&"web-1".into(), &stats(2.0), t(3))
        .await
        .expect("heartbeat after joining again");
    assert_eq!(store.list_drones().await.expect("list drones").len(), 1);
}

pub async fn a_rule_keeps_the_text_its_pack_wrote(store: Arc<dyn Store>) {
    let written = rule("web", "on_down", "alertmanager.alert", true);
    let mut older = rule("web", "older", "alertmanager.alert", true);
    older.source = None;
    install(
        &*store,
        &pack("web", "1.0.0", t(1)),
        &[action("web", "restart", "1.0.0")],
        &[written.clone(), older.clone()],
        &[],
    )
    .await;
    let stored = store
        .get_rule("web.on_down")
        .await
        .expect("get rule")
        .expect("rule");
    assert_eq!(stored.source, written.source);
    assert_eq!(stored, written);
    let listed = store.list_rules(None).await.expect("list rules");
    assert_eq!(listed, [older, written], "ordered by reference");
}

// --- secrets ------------------------------------------------------------------

fn sealed(seed: u8) -> SealedValue {
    SealedValue {
        ciphertext: vec![seed; 40],
        nonce: vec![seed; 24],
        key_id: format!("key-{seed}"),
    }
}

fn secret_write(name: &str, seed: u8, at: DateTime<Utc>, by: &str) -> SecretWrite {
    SecretWrite {
        name: name.to_string(),
        sealed: sealed(seed),
        at,
        by: by.to_string(),
    }
}

async fn secret_audit(store: &dyn Store) -> Vec<(AuditVerb, String)> {
    let mut records = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("list audit");
    records.reverse();
    records
        .into_iter()
        .map(|r| {
            (
                r.action,
                r.detail["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn named(action: AuditVerb, name: &str, at: DateTime<Utc>) -> NewAuditRecord {
    NewAuditRecord {
        detail: json!({ "name": name }),
        ..audit(action, at)
    }
}

pub async fn secrets_are_created_replaced_listed_and_deleted_with_their_audit(
    store: Arc<dyn Store>,
) {
    let created = store
        .put_secret(
            &secret_write("db_password", 1, t(1), "operator:alice"),
            &named(AuditVerb::SecretSet, "db_password", t(1)),
        )
        .await
        .expect("create");
    assert!(created, "a new name is created");
    store
        .put_secret(
            &secret_write("api_token", 2, t(2), "operator:alice"),
            &named(AuditVerb::SecretSet, "api_token", t(2)),
        )
        .await
        .expect("create another");
    let replaced = store
        .put_secret(
            &secret_write("db_password", 3, t(3), "operator:bob"),
            &named(AuditVerb::SecretSet, "db_password", t(3)),
        )
        .await
        .expect("replace");
    assert!(!replaced, "an existing name is replaced");

    let stored = store
        .get_secret("db_password")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        stored.sealed,
        sealed(3),
        "the new sealed value, key id included"
    );
    assert_eq!(
        (stored.created_at, stored.created_by.as_str()),
        (t(1), "operator:alice")
    );
    assert_eq!(
        (stored.updated_at, stored.updated_by.as_str()),
        (t(3), "operator:bob")
    );

    let listed = store.list_secrets().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api_token", "db_password"], "by name");
    assert_eq!(listed[1], stored);

    assert_eq!(store.get_secret("nope").await.expect("get unknown"), None);
    assert!(
        store
            .delete_secret(
                "db_password",
                &named(AuditVerb::SecretDeleted, "db_password", t(4))
            )
            .await
            .expect("delete")
    );
    assert_eq!(
        store.get_secret("db_password").await.expect("get deleted"),
        None
    );
    assert!(
        !store
            .delete_secret(
                "db_password",
                &named(AuditVerb::SecretDeleted, "db_password", t(5))
            )
            .await
            .expect("delete again"),
        "nothing left to delete"
    );
    assert_eq!(
        secret_audit(&*store).await,
        [
            (AuditVerb::SecretSet, "db_password".to_string()),
            (AuditVerb::SecretSet, "api_token".to_string()),
            (AuditVerb::SecretSet, "db_password".to_string()),
            (AuditVerb::SecretDeleted, "db_password".to_string()),
        ],
        "one record per change, none for a delete that found nothing"
    );
}

pub async fn concurrent_creations_of_one_secret_create_it_once(store: Arc<dyn Store>) {
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_secret(
                        &secret_write("shared", i, t(i64::from(i)), "operator:alice"),
                        &named(AuditVerb::SecretSet, "shared", t(i64::from(i))),
                    )
                    .await
            })
        })
        .collect();
    let mut created = 0;
    for writer in writers {
        if writer.await.expect("join").expect("put secret") {
            created += 1;
        }
    }
    assert_eq!(created, 1, "one creates, the others replace");
    assert_eq!(store.list_secrets().await.expect("list").len(), 1);
    assert_eq!(secret_audit(&*store).await.len(), 8);
}

pub async fn a_secret_write_that_fails_leaves_no_trace(store: Arc<dyn Store>) {
    let mut bad = secret_write("db_password", 1, t(1), "operator:alice");
    bad.sealed.nonce = vec![0; 12];
    store
        .put_secret(&bad, &named(AuditVerb::SecretSet, "db_password", t(1)))
        .await
        .expect_err("a nonce of the wrong size is refused");
    assert_eq!(store.get_secret("db_password").await.expect("get"), None);
    assert!(
        secret_audit(&*store).await.is_empty(),
        "no audit record either"
    );
}

// --- probes -------------------------------------------------------------------

pub async fn probe_rounds_are_claimed_once_and_never_backwards(store: Arc<dyn Store>) {
    let claim = |probe: &'static str, at: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .claim_probe_round(probe, t(at))
                .await
                .expect("claim round")
        }
    };
    assert!(claim("web.http", 10).await, "the first round");
    assert!(!claim("web.http", 10).await, "the same round again");
    assert!(
        !claim("web.http", 5).await,
        "an earlier round, from a lagging replica"
    );
    assert!(claim("web.http", 20).await, "the next round");
    assert!(claim("web.tcp", 10).await, "another probe");

    const REPLICAS: usize = 4;
    let barrier = Arc::new(tokio::sync::Barrier::new(REPLICAS));
    let mut tasks = Vec::new();
    for _ in 0..REPLICAS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .claim_probe_round("web.http", t(30))
                .await
                .expect("claim round")
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.expect("claimer task"));
    }
    assert_eq!(won, 1, "one replica runs the round");
}

fn probe_state(probe: &str, target: &str, state: CheckState, at: i64) -> ProbeStateRecord {
    let mut tracker = Tracker::new(Thresholds::default());
    tracker.observe(RunOutcome::Unhealthy, t(at));
    ProbeStateRecord {
        probe: probe.into(),
        target: target.into(),
        address: format!("http://{target}/healthz"),
        state,
        since: Some(t(at - 5)),
        last_run: t(at),
        last_outcome: RunOutcome::Unhealthy,
        detail: "HTTP 503, expected 2xx".into(),
        latency_us: 1_234,
        tracker,
    }
}

pub async fn probe_states_are_replaced_per_round_and_forgotten_with_their_probe(
    store: Arc<dyn Store>,
) {
    let first = vec![
        probe_state("web.http", "127.77.0.5:8080", CheckState::Pending, 10),
        probe_state("web.http", "127.77.0.6:8080", CheckState::Failing, 10),
    ];
    store
        .save_probe_states("web.http", &first)
        .await
        .expect("save round");
    store
        .save_probe_states(
            "web.tcp",
            &[probe_state(
                "web.tcp",
                "127.77.0.5:22",
                CheckState::Healthy,
                10,
            )],
        )
        .await
        .expect("save round");
    assert_eq!(
        store.probe_states(Some("web.http")).await.expect("read"),
        first,
        "every field round-trips, tracker included"
    );

    // The next round no longer selects .5 and adds .7.
    let second = vec![
        probe_state("web.http", "127.77.0.6:8080", CheckState::Failing, 20),
        probe_state("web.http", "127.77.0.7:8080", CheckState::Pending, 20),
    ];
    store
        .save_probe_states("web.http", &second)
        .await
        .expect("save round");
    let all = store.probe_states(None).await.expect("read");
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s.probe.as_str(), s.target.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("web.http", "127.77.0.6:8080"),
            ("web.http", "127.77.0.7:8080"),
            ("web.tcp", "127.77.0.5:22"),
        ]
    );

    assert!(
        store
            .claim_probe_round("web.http", t(20))
            .await
            .expect("claim")
    );
    assert_eq!(
        store
            .retain_probes(&["web.tcp".to_string()])
            .await
            .expect("retain"),
        2
    );
    let left: Vec<String> = store
        .probe_states(None)
        .await
        .expect("read")
        .into_iter()
        .map(|s| s.probe)
        .collect();
    assert_eq!(left, vec!["web.tcp"]);
    assert!(
        store
            .claim_probe_round("web.http", t(20))
            .await
            .expect("claim"),
        "a removed probe's rounds are forgotten too"
    );
}

fn check_status(
    check: &str,
    state: ultron8_core::health::CheckState,
    since_ms: Option<i64>,
    output: &str,
) -> ultron8_core::checks::CheckStatus {
    ultron8_core::checks::CheckStatus {
        check: check.to_string(),
        state,
        since_ms,
        last_run_ms: since_ms.map(|ms| ms + 1),
        last_output: output.to_string(),
    }
}

pub async fn a_drones_check_summary_replaces_the_last_one(store: Arc<dyn Store>) {
    use ultron8_core::health::CheckState::{Failing, Healthy, Pending};
    enroll(&*store, "web-1", t(0)).await;
    enroll(&*store, "web-2", t(0)).await;
    let web1: DroneId = "web-1".into();
    let web2: DroneId = "web-2".into();
    store
        .replace_drone_checks(
            &web1,
            &[
                check_status("k8s.node_ok", Healthy, Some(5), "ok"),
                check_status("k8s.disk", Pending, None, ""),
            ],
            t(1),
        )
        .await
        .expect("first summary");
    store
        .replace_drone_checks(
            &web2,
            &[check_status(
                "k8s.node_ok",
                Failing,
                Some(7),
                "kubelet down ✗",
            )],
            t(1),
        )
        .await
        .expect("web-2 summary");
    // The next summary replaces web-1's whole: k8s.disk is gone.
    store
        .replace_drone_checks(
            &web1,
            &[check_status("k8s.node_ok", Failing, Some(9), "no /run/ok")],
            t(2),
        )
        .await
        .expect("second summary");
    // A drone the store does not know writes nothing and is no error.
    store
        .replace_drone_checks(
            &"ghost".into(),
            &[check_status("k8s.node_ok", Failing, Some(9), "")],
            t(2),
        )
        .await
        .expect("unknown drone");

    let listed = store.list_drone_checks().await.expect("list");
    let record = |drone: &str, status, at| ultron8_store::DroneCheckRecord {
        drone_id: drone.into(),
        status,
        reported_at: at,
    };
    assert_eq!(
        listed,
        vec![
            record(
                "web-1",
                check_status("k8s.node_ok", Failing, Some(9), "no /run/ok"),
                t(2)
            ),
            record(
                "web-2",
                check_status("k8s.node_ok", Failing, Some(7), "kubelet down ✗"),
                t(1)
            ),
        ]
    );

    // A removed drone's checks leave the list with it.
    let mut record = audit(AuditVerb::DroneRemoved, t(3));
    record.drone_id = Some("web-2".into());
    store
        .remove_drone(
            &web2,
            &DroneRemoval {
                at: t(3),
                by: "operator:alice".to_string(),
            },
            &record,
        )
        .await
        .expect("remove");
    let left: Vec<String> = store
        .list_drone_checks()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.drone_id.to_string())
        .collect();
    assert_eq!(left, vec!["web-1".to_string()]);

    // An empty summary clears the drone's checks.
    store
        .replace_drone_checks(&web1, &[], t(4))
        .await
        .expect("empty summary");
    assert!(store.list_drone_checks().await.expect("list").is_empty());
}

// --- fleet: discovery sources and targets ------------------------------------

fn http_source(name: &str, at: DateTime<Utc>) -> NewSource {
    NewSource {
        name: name.to_string(),
        spec: SourceSpec::Http {
            url: "http://127.0.0.1:9001".to_string(),
            concurrency: 8,
            timeout_ms: 2000,
        },
        interval: std::time::Duration::from_secs(30),
        origin: "operator".to_string(),
        created_at: at,
        created_by: "operator:alice".to_string(),
    }
}

fn fleet_instance(
    source: &str,
    name: &str,
    service: &str,
    cpu: f64,
    at: DateTime<Utc>,
) -> Instance {
    Instance {
        source: source.to_string(),
        name: name.to_string(),
        address: Some(name.to_string()),
        service: service.to_string(),
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        cpu: Some(cpu),
        memory: Some(12.5),
        status: if cpu >= 80.0 {
            InstanceStatus::Unhealthy
        } else {
            InstanceStatus::Healthy
        },
        error: None,
        last_seen: Some(at),
        updated_at: at,
        history: vec![
            Sample {
                at_ms: at.timestamp_millis() - 30_000,
                cpu: 1.25,
                memory: 2.5,
            },
            Sample {
                at_ms: at.timestamp_millis(),
                cpu,
                memory: 12.5,
            },
        ],
    }
}

fn refresh(instances: Vec<Instance>, at: DateTime<Utc>) -> SourceRefresh {
    SourceRefresh {
        instances,
        error: None,
        at,
        next_due_at: at + Duration::seconds(30),
    }
}

pub async fn sources_are_created_listed_and_removed_with_their_audit_and_instances(
    store: Arc<dyn Store>,
) {
    assert!(
        store
            .create_source(
                &http_source("cloud", t(1)),
                &named(AuditVerb::SourceAdded, "cloud", t(1))
            )
            .await
            .expect("create")
    );
    assert!(
        !store
            .create_source(
                &http_source("cloud", t(2)),
                &named(AuditVerb::SourceAdded, "cloud", t(2))
            )
            .await
            .expect("create again"),
        "a name is created once"
    );
    let files = NewSource {
        spec: SourceSpec::File {
            path: "/etc/ultron8/targets".to_string(),
        },
        ..http_source("files", t(3))
    };
    store
        .create_source(&files, &named(AuditVerb::SourceAdded, "files", t(3)))
        .await
        .expect("create another");

    let listed = store.list_sources().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cloud", "files"]);
    let cloud = &listed[0];
    assert_eq!(cloud.spec, http_source("cloud", t(1)).spec);
    assert_eq!(cloud.interval, std::time::Duration::from_secs(30));
    assert_eq!(
        (cloud.created_at, cloud.next_due_at),
        (t(1), t(1)),
        "due at once"
    );
    assert_eq!((cloud.last_refresh_at, cloud.instances), (None, 0));
    assert_eq!(
        store
            .get_source("files")
            .await
            .expect("get")
            .map(|s| s.spec),
        Some(files.spec)
    );
    assert_eq!(store.get_source("nope").await.expect("get unknown"), None);

    assert!(
        store
            .claim_source("cloud", "hive-a", t(5), t(65))
            .await
            .expect("claim")
    );
    let instances = vec![fleet_instance("cloud", "127.0.0.1", "Web", 10.0, t(6))];
    assert!(
        store
            .finish_source_refresh("cloud", "hive-a", &refresh(instances, t(6)))
            .await
            .expect("finish")
    );
    assert_eq!(
        store
            .get_source("cloud")
            .await
            .expect("store call")
            .expect("store call")
            .instances,
        1
    );

    assert!(
        store
            .remove_source("cloud", &named(AuditVerb::SourceRemoved, "cloud", t(7)))
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_source("cloud", &named(AuditVerb::SourceRemoved, "cloud", t(8)))
            .await
            .expect("remove again")
    );
    assert!(
        store
            .list_targets(&TargetFilter::default())
            .await
            .expect("targets")
            .is_empty(),
        "its instances went with it"
    );
    let trail = store
        .list_audit(&AuditFilter::default())
        .await
        .expect("audit");
    let verbs: Vec<(AuditVerb, String)> = trail
        .iter()
        .map(|r| {
            (
                r.action,
                r.detail["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        verbs,
        [
            (AuditVerb::SourceRemoved, "cloud".to_string()),
            (AuditVerb::SourceAdded, "files".to_string()),
            (AuditVerb::SourceAdded, "cloud".to_string()),
        ],
        "one record per change, none for refused ones"
    );
}

pub async fn one_claimant_of_a_due_source_wins_and_a_lost_lease_stores_nothing(
    store: Arc<dyn Store>,
) {
    store
        .create_source(
            &http_source("cloud", t(10)),
            &named(AuditVerb::SourceAdded, "cloud", t(10)),
        )
        .await
        .expect("create");
    assert!(
        !store
            .claim_source("cloud", "hive-a", t(9), t(69))
            .await
            .expect("store call"),
        "not due yet"
    );
    assert!(
        !store
            .claim_source("nope", "hive-a", t(10), t(70))
            .await
            .expect("store call"),
        "no such source"
    );

    let claimants: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_source("cloud", &format!("hive-{i}"), t(10), t(70))
                    .await
            })
        })
        .collect();
    let mut claims = Vec::new();
    for claimant in claimants {
        claims.push(claimant.await.expect("join").expect("claim"));
    }
    assert_eq!(claims.iter().filter(|won| **won).count(), 1, "{claims:?}");
    let winner = format!(
        "hive-{}",
        claims.iter().position(|won| *won).expect("store call")
    );
    assert!(
        !store
            .claim_source("cloud", "hive-x", t(69), t(129))
            .await
            .expect("store call"),
        "the lease holds"
    );

    // The winner stalls past its lease; another replica takes over.
    assert!(
        store
            .claim_source("cloud", "hive-x", t(70), t(130))
            .await
            .expect("store call")
    );
    let late = refresh(
        vec![fleet_instance("cloud", "127.0.0.9", "Web", 1.0, t(71))],
        t(71),
    );
    assert!(
        !store
            .finish_source_refresh("cloud", &winner, &late)
            .await
            .expect("store call"),
        "lease lost"
    );
    assert!(
        store
            .list_targets(&TargetFilter::default())
            .await
            .expect("store call")
            .is_empty()
    );

    let fresh = refresh(
        vec![fleet_instance("cloud", "127.0.0.1", "Web", 1.0, t(72))],
        t(72),
    );
    assert!(
        store
            .finish_source_refresh("cloud", "hive-x", &fresh)
            .await
            .expect("store call")
    );
    let source = store
        .get_source("cloud")
        .await
        .expect("store call")
        .expect("store call");
    assert_eq!(
        (source.last_refresh_at, source.next_due_at),
        (Some(t(72)), t(102))
    );
    assert!(
        !store
            .claim_source("cloud", "hive-a", t(101), t(161))
            .await
            .expect("store call"),
        "not due again yet"
    );
    assert!(
        store
            .claim_source("cloud", "hive-a", t(102), t(162))
            .await
            .expect("store call"),
        "due again"
    );
}

pub async fn a_refresh_replaces_its_sources_instances_only(store: Arc<dyn Store>) {
    for name in ["a", "b"] {
        store
            .create_source(
                &http_source(name, t(0)),
                &named(AuditVerb::SourceAdded, name, t(0)),
            )
            .await
            .expect("create");
        assert!(
            store
                .claim_source(name, "hive", t(0), t(60))
                .await
                .expect("store call")
        );
    }
    let a1 = vec![
        fleet_instance("a", "127.0.0.1", "Web", 10.0, t(1)),
        fleet_instance("a", "127.0.0.2", "Web", 90.0, t(1)),
        fleet_instance("a", "127.0.0.3", "Db", 20.0, t(1)),
    ];
    assert!(
        store
            .finish_source_refresh("a", "hive", &refresh(a1.clone(), t(1)))
            .await
            .expect("store call")
    );
    let mut failing = fleet_instance("b", "127.0.0.4", "Db", 0.0, t(2));
    failing.cpu = None;
    failing.memory = None;
    failing.status = InstanceStatus::Unknown;
    failing.error = Some("timed out after 2s".to_string());
    failing.address = None;
    failing.last_seen = None;
    assert!(
        store
            .finish_source_refresh("b", "hive", &refresh(vec![failing.clone()], t(2)))
            .await
            .expect("store call")
    );

    let all = store
        .list_targets(&TargetFilter::default())
        .await
        .expect("store call");
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|i| (i.service.as_str(), i.name.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("Db", "127.0.0.3"),
            ("Db", "127.0.0.4"),
            ("Web", "127.0.0.1"),
            ("Web", "127.0.0.2")
        ],
        "by service, then name"
    );
    assert_eq!(all[2], a1[0], "every field round-trips");
    assert_eq!(all[1], failing);

    // The next refresh of a drops one instance and changes another.
    assert!(
        store
            .claim_source("a", "hive", t(31), t(91))
            .await
            .expect("store call")
    );
    let a2 = vec![fleet_instance("a", "127.0.0.2", "Web", 15.0, t(31))];
    assert!(
        store
            .finish_source_refresh("a", "hive", &refresh(a2.clone(), t(31)))
            .await
            .expect("store call")
    );
    let of_a = store
        .list_targets(&TargetFilter {
            source: Some("a".to_string()),
            ..TargetFilter::default()
        })
        .await
        .expect("store call");
    assert_eq!(of_a, a2);
    let db = store
        .list_targets(&TargetFilter {
            service: Some("Db".to_string()),
            ..TargetFilter::default()
        })
        .await
        .expect("store call");
    assert_eq!(db, [failing], "b's instance is untouched");
}

pub async fn a_failed_refresh_keeps_the_instances(store: Arc<dyn Store>) {
    store
        .create_source(
            &http_source("a", t(0)),
            &named(AuditVerb::SourceAdded, "a", t(0)),
        )
        .await
        .expect("create");
    assert!(
        store
            .claim_source("a", "hive", t(0), t(60))
            .await
            .expect("store call")
    );
    let before = vec![fleet_instance("a", "127.0.0.1", "Web", 10.0, t(1))];
    assert!(
        store
            .finish_source_refresh("a", "hive", &refresh(before.clone(), t(1)))
            .await
            .expect("store call")
    );
    assert!(
        store
            .claim_source("a", "hive", t(31), t(91))
            .await
            .expect("store call")
    );
    let failed = SourceRefresh {
        error: Some("GET /servers: connection refused".to_string()),
        ..refresh(Vec::new(), t(32))
    };
    assert!(
        store
            .finish_source_refresh("a", "hive", &failed)
            .await
            .expect("store call")
    );
    assert_eq!(
        store
            .list_targets(&TargetFilter::default())
            .await
            .expect("store call"),
        before
    );
    let source = store
        .get_source("a")
        .await
        .expect("store call")
        .expect("store call");
    assert_eq!(
        source.last_error.as_deref(),
        Some("GET /servers: connection refused")
    );
    assert_eq!(source.last_refresh_at, Some(t(32)));
}
