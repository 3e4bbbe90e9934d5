//! Runs the conformance suite against [`SqliteStore`]: once on a fresh
//! database file per test, in its own temporary directory, and once on a
//! fresh in-memory database per test.
//!
//! Where a test needs SQL access of its own it opens a separate connection
//! to the file, as an operator's sqlite3 shell would: what the database
//! refuses must not depend on how the store configures its connections.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteQueryResult};
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;
use ultron8_core::audit::{Actor, AuditVerb};
use ultron8_core::ids::{DroneId, ExecutionId, JobId};
use ultron8_core::{CommandSpec, Program};
use ultron8_store::sqlite::SqliteStore;
use ultron8_store::{
    AuditFilter, DroneEnrollment, NewAuditRecord, NewExecution, NewJob, NewJoinToken, Store,
    StoreError,
};
use uuid::Uuid;

/// A database path in a directory of its own, removed with everything in it
/// (the `-wal` and `-shm` files too) when dropped.
struct TestFile {
    _dir: TempDir,
    path: PathBuf,
}

impl TestFile {
    fn new() -> TestFile {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let path = dir.path().join("hive.db");
        TestFile { _dir: dir, path }
    }
}

/// Runs `test` against a fresh [`SqliteStore`] on a new file, handing it the
/// file's path too, and removes the file afterwards, whether the test passed
/// or panicked.
async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(SqliteStore, PathBuf) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let file = TestFile::new();
    let store = SqliteStore::open(&file.path)
        .await
        .expect("open SqliteStore");
    // A spawned task turns a panic into a JoinError, so cleanup still runs.
    let outcome = tokio::spawn(test(store.clone(), file.path.clone())).await;
    store.close().await;
    drop(file);
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}

async fn run<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_store(|store, _| test(Arc::new(store))).await;
}

crate::suite::conformance_tests!(run);

/// The suite again on [`SqliteStore::open_in_memory`], where one connection
/// serves reads and writes alike: a method that held the writer while
/// waiting for a reader would time out here.
mod in_memory {
    use super::*;

    async fn run<F, Fut>(test: F)
    where
        F: FnOnce(Arc<dyn Store>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let store = SqliteStore::open_in_memory()
            .await
            .expect("open in-memory SqliteStore");
        test(Arc::new(store)).await;
    }

    crate::suite::conformance_tests!(run);
}

// --- SQLite-only guarantees --------------------------------------------------

/// A connection of its own to the file, configured as little as a sqlite3
/// shell would be.
async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
        .await
        .expect("open a raw connection")
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("valid time") + Duration::seconds(secs)
}

fn some_audit() -> NewAuditRecord {
    NewAuditRecord {
        id: Uuid::now_v7().to_string(),
        at: t(0),
        actor: Actor::Hive,
        action: AuditVerb::ExecutionExpired,
        job_id: None,
        execution_id: None,
        drone_id: None,
        status: None,
        event_id: None,
        rule: None,
        action_ref: None,
        detail: serde_json::json!({ "n": 1 }),
    }
}

fn assert_append_only_error(result: Result<SqliteQueryResult, sqlx::Error>, what: &str) {
    let err = result.expect_err(&format!("{what} on audit_log must be rejected"));
    let message = err
        .as_database_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| panic!("{what}: expected a database error, got {err:?}"));
    assert!(
        message.contains("append-only"),
        "{what}: unexpected message {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_rejects_update_delete_and_replace_in_the_database() {
    with_store(|store, path| async move {
        let record = some_audit();
        store.append_audit(&record).await.expect("append");
        let mut conn = raw_connection(&path).await;

        assert_append_only_error(
            sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE id = $1")
                .bind(&record.id)
                .execute(&mut conn)
                .await,
            "UPDATE",
        );
        assert_append_only_error(
            sqlx::query("DELETE FROM audit_log WHERE id = $1")
                .bind(&record.id)
                .execute(&mut conn)
                .await,
            "DELETE",
        );
        // SQLite's TRUNCATE: a DELETE without WHERE.
        assert_append_only_error(
            sqlx::query("DELETE FROM audit_log")
                .execute(&mut conn)
                .await,
            "DELETE of every row",
        );
        // REPLACE would delete the row it collides with without firing the
        // delete trigger.
        assert_append_only_error(
            sqlx::query(
                "INSERT OR REPLACE INTO audit_log (id, at, actor, action, detail) \
                 VALUES ($1, 0, 'mallory', 'audit.rewritten', '{}')",
            )
            .bind(&record.id)
            .execute(&mut conn)
            .await,
            "INSERT OR REPLACE",
        );
        assert_append_only_error(
            sqlx::query(
                "INSERT INTO audit_log (id, at, actor, action, detail) \
                 VALUES ($1, 0, 'mallory', 'audit.rewritten', '{}') \
                 ON CONFLICT (id) DO UPDATE SET actor = excluded.actor",
            )
            .bind(&record.id)
            .execute(&mut conn)
            .await,
            "upsert",
        );
        conn.close().await.ok();

        let listed = store
            .list_audit(&AuditFilter::default())
            .await
            .expect("list audit");
        assert_eq!(listed, vec![record], "the record is untouched");

        // Inserting is still allowed.
        store
            .append_audit(&some_audit())
            .await
            .expect("append after refusals");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_rejects_unknown_execution_status_and_mistyped_values() {
    with_store(|_store, path| async move {
        let mut conn = raw_connection(&path).await;
        sqlx::query(
            "INSERT INTO jobs (id, target, requester, command, created_at) \
             VALUES ('j', 't', 'r', '{}', 0)",
        )
        .execute(&mut conn)
        .await
        .expect("insert job");

        let err = sqlx::query(
            "INSERT INTO executions (id, job_id, drone_id, status, created_at, expires_at) \
             VALUES ('e', 'j', 'd', 'done', 0, 0)",
        )
        .execute(&mut conn)
        .await
        .expect_err("status outside the state machine");
        let db = err.as_database_error().expect("database error");
        assert_eq!(
            db.kind(),
            sqlx::error::ErrorKind::CheckViolation,
            "got {db:?}"
        );

        // STRICT tables: a time written as text would sort apart from every
        // other time, so it is refused.
        let err = sqlx::query(
            "INSERT INTO executions (id, job_id, drone_id, created_at, expires_at) \
             VALUES ('e', 'j', 'd', '2030-01-01 00:00:00', 0)",
        )
        .execute(&mut conn)
        .await
        .expect_err("text in a time column");
        let message = err.as_database_error().expect("database error").message();
        assert!(
            message.contains("cannot store TEXT value in INTEGER column"),
            "unexpected message {message:?}"
        );

        let err = sqlx::query(
            "INSERT INTO drones (id, token_labels, enrolled_at, certificate_fingerprint, \
                                 certificate_not_after, token_id) \
             VALUES ('d', '[1, 2]', 0, 'fp', 0, 'tok')",
        )
        .execute(&mut conn)
        .await
        .expect_err("labels that are not a JSON object");
        assert_eq!(
            err.as_database_error().expect("database error").kind(),
            sqlx::error::ErrorKind::CheckViolation
        );
        conn.close().await.ok();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_is_in_wal_mode_and_foreign_keys_are_enforced() {
    with_store(|store, path| async move {
        let mut conn = raw_connection(&path).await;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .expect("read journal mode");
        assert_eq!(mode, "wal");
        conn.close().await.ok();

        // SQLite only enforces foreign keys on connections that ask for it,
        // so this checks the store's own: an execution of a job that does
        // not exist is refused, and the job written before it goes too.
        let job = NewJob {
            id: JobId::new(Uuid::now_v7().to_string()),
            target: "drone-a".to_string(),
            requester: "operator:alice".to_string(),
            command: CommandSpec {
                program: Program::Shell("true".to_string()),
                env: Default::default(),
                working_dir: None,
                timeout_ms: None,
                output_limit_bytes: None,
                redact: Vec::new(),
                secret_env: Default::default(),
            },
            created_at: t(0),
            origin: Default::default(),
        };
        let orphan = NewExecution {
            id: ExecutionId::new(Uuid::now_v7().to_string()),
            job_id: JobId::new("no-such-job"),
            drone_id: DroneId::new("drone-a"),
            created_at: t(0),
            expires_at: t(60),
        };
        store
            .create_job(&job, std::slice::from_ref(&orphan), &some_audit())
            .await
            .expect_err("execution of a job that does not exist");
        assert_eq!(store.count_jobs().await.expect("count jobs"), 0);
        assert_eq!(
            store
                .get_execution(&orphan.id)
                .await
                .expect("get execution"),
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_keep_microsecond_precision() {
    with_store(|store, _path| async move {
        // Nanoseconds, as `Utc::now()` gives them: the store keeps the
        // microseconds, as Postgres does.
        let enrolled_at = t(0) + Duration::nanoseconds(123_456_789);
        store
            .record_enrollment(&DroneEnrollment {
                drone_id: DroneId::new("drone-a"),
                certificate_fingerprint: "fp".to_string(),
                certificate_not_after: t(90 * 86_400),
                labels: Default::default(),
                token_id: "tok".to_string(),
                enrolled_at,
            })
            .await
            .expect("enroll");
        let drone = store
            .get_drone(&DroneId::new("drone-a"))
            .await
            .expect("get drone")
            .expect("drone exists");
        assert_eq!(drone.enrolled_at, t(0) + Duration::microseconds(123_456));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_time_out_of_range_reads_as_corrupt_data() {
    with_store(|store, path| async move {
        // Microseconds beyond what a chrono time can hold: only a writer
        // other than the store can have put them there.
        let mut conn = raw_connection(&path).await;
        sqlx::query(
            "INSERT INTO drones (id, token_labels, enrolled_at, certificate_fingerprint, \
                                 certificate_not_after, token_id) \
             VALUES ('drone-a', '{}', 9223372036854775807, 'fp', 0, 'tok')",
        )
        .execute(&mut conn)
        .await
        .expect("insert drone");
        conn.close().await.ok();

        let err = store
            .get_drone(&DroneId::new("drone-a"))
            .await
            .expect_err("a time out of range");
        match err {
            StoreError::Corrupt(message) => assert!(
                message.contains("enrolled_at"),
                "the message names the column: {message:?}"
            ),
            other => panic!("expected corrupt data, got {other:?}"),
        }
    })
    .await;
}

/// The message of a [`StoreError::Corrupt`], or a panic saying what came.
fn corrupt_message(err: StoreError) -> String {
    match err {
        StoreError::Corrupt(message) => message,
        other => panic!("expected corrupt data, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stored_verb_or_actor_reads_as_corrupt_data() {
    with_store(|store, path| async move {
        // Text the trail's vocabulary does not know: only a writer other
        // than the store can have put it there. The two records are a
        // second apart (times are microseconds), so each can be listed
        // alone.
        let mut conn = raw_connection(&path).await;
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, detail) VALUES \
                 ('bad-verb', 0, 'hive', 'rule.exploded', '{}'), \
                 ('bad-actor', 1000000, 'robot:r2', 'job.submitted', '{}')",
        )
        .execute(&mut conn)
        .await
        .expect("insert audit records");
        conn.close().await.ok();

        let second = DateTime::UNIX_EPOCH + Duration::seconds(1);
        let err = store
            .list_audit(&AuditFilter {
                until: Some(second),
                ..AuditFilter::default()
            })
            .await
            .expect_err("an unknown verb");
        let message = corrupt_message(err);
        assert!(
            message.contains("audit record bad-verb") && message.contains("rule.exploded"),
            "the message names the record and the verb: {message:?}"
        );

        let err = store
            .list_audit(&AuditFilter {
                since: Some(second),
                ..AuditFilter::default()
            })
            .await
            .expect_err("an unknown actor");
        let message = corrupt_message(err);
        assert!(
            message.contains("audit record bad-actor") && message.contains("robot:r2"),
            "the message names the record and the actor: {message:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_definition_that_does_not_decode_reads_as_corrupt_data() {
    with_store(|store, path| async move {
        let installed = crate::suite::pack("web", "1.0.0", t(0));
        store
            .install_pack(
                &installed,
                &[crate::suite::action("web", "restart", "1")],
                &[crate::suite::rule(
                    "web",
                    "restart_on_down",
                    "alertmanager",
                    true,
                )],
                &[],
                &some_audit(),
            )
            .await
            .expect("install pack");

        // Valid JSON, as the schema requires, but not a pack, an action or
        // a rule: written by something other than the store.
        let mut conn = raw_connection(&path).await;
        for statement in [
            "UPDATE actions SET definition = '{\"runner\": \"teleport\"}'",
            "UPDATE rules SET definition = '{}'",
            "UPDATE packs SET content = '{\"manifest\": 1}'",
        ] {
            sqlx::query(statement)
                .execute(&mut conn)
                .await
                .expect(statement);
        }
        conn.close().await.ok();

        let names = |err: StoreError, what: &str| {
            let message = corrupt_message(err);
            assert!(message.contains(what), "{what:?} in {message:?}");
        };
        names(
            store.get_action("web.restart").await.expect_err("action"),
            "actions.definition of web.restart",
        );
        names(
            store.list_actions(None).await.expect_err("actions"),
            "actions.definition of web.restart",
        );
        names(
            store
                .get_rule("web.restart_on_down")
                .await
                .expect_err("rule"),
            "rules.definition of web.restart_on_down",
        );
        names(
            store.list_rules(None).await.expect_err("rules"),
            "rules.definition of web.restart_on_down",
        );
        names(
            store.get_pack("web").await.expect_err("pack"),
            "packs.content of web",
        );
        names(
            store.list_packs().await.expect_err("packs"),
            "packs.content of web",
        );

        // An upgrade moves the stored content to the history as it is.
        store
            .install_pack(
                &crate::suite::pack("web", "2.0.0", t(10)),
                &[],
                &[],
                &[],
                &some_audit(),
            )
            .await
            .expect("upgrade pack");
        assert!(store.get_pack("web").await.expect("get pack").is_some());
        names(
            store.pack_history("web").await.expect_err("history"),
            "pack_history.content of web",
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_file_keeps_the_state() {
    let file = TestFile::new();
    let token = NewJoinToken {
        id: "tok-1".to_string(),
        secret_sha256: vec![1; 32],
        labels: Default::default(),
        created_by: "operator:alice".to_string(),
        created_at: t(0),
        expires_at: t(3600),
        drone_id: None,
        replaces: false,
    };

    let store = SqliteStore::open(&file.path).await.expect("open");
    store.create_join_token(&token).await.expect("create token");
    store.close().await;

    let store = SqliteStore::open(&file.path).await.expect("reopen");
    store
        .consume_join_token(
            &token.id,
            &token.secret_sha256,
            &DroneId::new("drone-a"),
            t(10),
        )
        .await
        .expect("the token survived the restart");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hive_starts_migrate_safely() {
    let file = TestFile::new();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let path = file.path.clone();
            tokio::spawn(async move { SqliteStore::open(&path).await })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.expect("start task").expect("open and migrate"));
    }
    for store in &stores {
        store.ping().await.expect("ping");
    }

    let mut conn = raw_connection(&file.path).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .expect("count migrations");
    conn.close().await.ok();
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .expect("read migrations dir")
    .filter(|entry| {
        entry
            .as_ref()
            .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "sql"))
    })
    .count();
    assert_eq!(
        applied,
        i64::try_from(files).expect("few files"),
        "each migration applied once"
    );
    for store in stores {
        store.close().await;
    }
}
