//! Runs the conformance suite against [`PgStore`], one database per test.
//!
//! Needs a Postgres server whose user may create databases. The admin URL
//! defaults to `postgres://postgres@127.0.0.1:5432/postgres`; override it
//! with `ULTRON8_TEST_DATABASE_URL`. Each test creates `u8t_<uuid>`, so tests
//! run in parallel without seeing each other's rows, and drops it afterwards.

use std::future::Future;
use std::sync::Arc;

use sqlx::{Connection, Executor, PgConnection};
use ultron8_core::audit::{Actor, AuditVerb};
use ultron8_store::postgres::PgStore;
use ultron8_store::{AuditFilter, NewAuditRecord, ScriptRecord, Store, StoreError};
use uuid::Uuid;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("ULTRON8_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// `url` with its database name replaced by `database`, query kept.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A database that exists for one test.
struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let name = format!("u8t_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&admin_url()).await.expect(
            "connect to the admin database (is Postgres up? see ULTRON8_TEST_DATABASE_URL)",
        );
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
        admin.close().await.ok();
        TestDatabase {
            url: with_database(&admin_url(), &name),
            name,
        }
    }

    /// Best effort: a leftover database is clutter, not a failure.
    async fn drop(self) {
        let Ok(mut admin) = PgConnection::connect(&admin_url()).await else {
            return;
        };
        // FORCE: a connection a failed test left open must not keep it alive.
        let _ = admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name).as_str())
            .await;
        admin.close().await.ok();
    }
}

/// Runs `test` against a fresh, migrated [`PgStore`] and drops the database
/// afterwards, whether the test passed or panicked.
async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let database = TestDatabase::create().await;
    let store = PgStore::connect(&database.url)
        .await
        .expect("connect PgStore");
    // A spawned task turns a panic into a JoinError, so cleanup still runs.
    let outcome = tokio::spawn(test(store.clone())).await;
    store.pool().close().await;
    database.drop().await;
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
    with_store(|store| test(Arc::new(store))).await;
}

crate::suite::conformance_tests!(run);

// --- Postgres-only guarantees ------------------------------------------------

fn some_audit() -> NewAuditRecord {
    NewAuditRecord {
        id: Uuid::now_v7().to_string(),
        at: chrono::DateTime::from_timestamp(1_893_456_000, 0).expect("valid time"),
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

fn assert_append_only_error(
    result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
    what: &str,
) {
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
async fn audit_log_rejects_update_delete_and_truncate_in_the_database() {
    with_store(|store| async move {
        let record = some_audit();
        store.append_audit(&record).await.expect("append");
        let pool = store.pool();

        assert_append_only_error(
            sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE id = $1")
                .bind(&record.id)
                .execute(pool)
                .await,
            "UPDATE",
        );
        assert_append_only_error(
            sqlx::query("DELETE FROM audit_log WHERE id = $1")
                .bind(&record.id)
                .execute(pool)
                .await,
            "DELETE",
        );
        assert_append_only_error(
            sqlx::query("TRUNCATE audit_log").execute(pool).await,
            "TRUNCATE",
        );

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
async fn schema_rejects_unknown_execution_status() {
    with_store(|store| async move {
        let pool = store.pool();
        sqlx::query("INSERT INTO jobs (id, target, requester, command, created_at) VALUES ('j', 't', 'r', '{}', now())")
            .execute(pool)
            .await
            .expect("insert job");
        let err = sqlx::query(
            "INSERT INTO executions (id, job_id, drone_id, status, created_at, expires_at) \
             VALUES ('e', 'j', 'd', 'done', now(), now())",
        )
        .execute(pool)
        .await
        .expect_err("status outside the state machine");
        let db = err.as_database_error().expect("database error");
        assert_eq!(db.code().as_deref(), Some("23514"), "check_violation, got {db:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_must_be_stored_under_the_hash_of_their_content() {
    with_store(|store| async move {
        let pack = crate::suite::pack(
            "web",
            "1.0.0",
            chrono::DateTime::from_timestamp(1_893_456_000, 0).expect("valid time"),
        );
        // The SHA-256 of "#!/bin/sh\ndf -h\n", with other bytes.
        let forged = ScriptRecord {
            sha256: "9b5b6dd6b560779926f3521c722bcbe7124dc0fd3988e3604c838db40c87be65".to_string(),
            content: b"#!/bin/sh\nrm -rf /\n".to_vec(),
        };
        let err = store
            .install_pack(
                &pack,
                &[],
                &[],
                std::slice::from_ref(&forged),
                &some_audit(),
            )
            .await
            .expect_err("a script under another's hash");
        let StoreError::Database(err) = err else {
            panic!("expected a database error, got {err:?}");
        };
        let db = err.as_database_error().expect("database error");
        assert_eq!(
            db.code().as_deref(),
            Some("23514"),
            "check_violation, got {db:?}"
        );
        assert_eq!(store.get_pack("web").await.expect("get pack"), None);
        assert_eq!(
            store.get_script(&forged.sha256).await.expect("get script"),
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hive_starts_migrate_safely() {
    let database = TestDatabase::create().await;
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(
            start
                .await
                .expect("start task")
                .expect("connect and migrate"),
        );
    }
    for store in &stores {
        store.ping().await.expect("ping");
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(stores[0].pool())
        .await
        .expect("count migrations");
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/postgres"
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
        store.pool().close().await;
    }
    database.drop().await;
}

#[test]
fn database_name_is_swapped_in_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "u8t_x"),
        "postgres://postgres@127.0.0.1:5432/u8t_x"
    );
    assert_eq!(
        with_database("postgres://u:p@db:5432/admin?sslmode=disable", "u8t_x"),
        "postgres://u:p@db:5432/u8t_x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://db", "u8t_x"),
        "postgres://db/u8t_x"
    );
}

// --- Postgres going away --------------------------------------------------------
//
// Stopping the shared Postgres would break every other test, so these start
// a private server of their own: initdb into a temporary directory, on a
// free port on 127.0.0.1.

/// A Postgres server of one test's own, stopped (immediately, as a crash
/// would) and removed when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("Postgres's server binaries under /usr/lib/postgresql")
            .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let server = PrivatePostgres { dir, bin, port };
        if server.as_root() {
            // initdb refuses to run as root; the server's files belong to
            // the postgres user.
            let status = std::process::Command::new("chown")
                .arg("postgres")
                .arg(server.dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown the data directory to postgres");
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        server.start_again();
        server
    }

    fn as_root(&self) -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// One of Postgres's programs, to run as the postgres user when this
    /// is root.
    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if self.as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .expect("run a Postgres program");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        // -w: returns once the server accepts connections (or fails).
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the way a crash would: no goodbye to clients.
    fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    /// Best effort, and never a panic while a failed test unwinds.
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_ping_fails_fast_and_requests_within_the_acquire_timeout() {
    use std::time::{Duration, Instant};
    use ultron8_store::postgres::PgSettings;

    /// How long past a deadline giving up may take on a busy machine.
    const SLACK: Duration = Duration::from_millis(700);
    let settings = PgSettings {
        acquire_timeout: Duration::from_secs(2),
    };
    let server = PrivatePostgres::start();
    let store = PgStore::connect_with(&server.url(), settings)
        .await
        .expect("connect to the private Postgres");
    store.ping().await.expect("ping while Postgres is up");
    store
        .list_drones()
        .await
        .expect("a read while Postgres is up");

    server.stop();

    // Readiness: within the ping's own deadline, well inside a probe's.
    let started = Instant::now();
    let refused = store.ping().await.expect_err("Postgres is down");
    let took = started.elapsed();
    assert!(
        took <= PgStore::PING_TIMEOUT + SLACK,
        "ping took {took:?} with Postgres down; its deadline is {:?}",
        PgStore::PING_TIMEOUT
    );
    let message = refused.to_string();
    assert!(message.contains("did not answer within"), "{message}");

    // A request: within the configured acquire timeout, as a database error
    // (which the hive answers as `unavailable`).
    let started = Instant::now();
    let failed = store.list_drones().await.expect_err("Postgres is down");
    let took = started.elapsed();
    assert!(
        took <= settings.acquire_timeout + SLACK,
        "a read took {took:?} with Postgres down; the acquire timeout is {:?}",
        settings.acquire_timeout
    );
    assert!(
        matches!(failed, StoreError::Database(_)),
        "expected a database error, got {failed:?}"
    );

    // Postgres comes back, and the same store works again without help.
    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "ping still fails after Postgres came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store
        .list_drones()
        .await
        .expect("a read after Postgres came back");
    store.pool().close().await;
}
