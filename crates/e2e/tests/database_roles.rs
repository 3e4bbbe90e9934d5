//! A hive serving as a role that does not own its schema: `ultron8-hive
//! migrate` applies the migrations as the owner and grants the serving
//! role what it needs, and the serving role, whatever it tries, cannot
//! rewrite the audit trail; a hive whose schema is behind refuses to start
//! and says what to run.

use std::process::Command;

use sqlx::{Connection, PgConnection, Row};
use ultron8_e2e::{DEADLINE, Hive, Proc, TestEnv, bin, free_port, stderr, stdout, wait_for};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PASSWORD: &str = "u8-test-password";

fn admin_url() -> String {
    std::env::var("ULTRON8_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// `url` (of the test's database) with `role` and its password as the user.
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}:{PASSWORD}@{host}")
}

async fn admin_execute(sql: &str) {
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect to Postgres as the admin");
    sqlx::query(sql)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    admin.close().await.ok();
}

/// Two login roles of the test's own, dropped when it ends. Declared
/// before the [`TestEnv`], so they drop after its database, which holds
/// the only objects and privileges they have.
struct Roles {
    owner: String,
    server: String,
    runtime: tokio::runtime::Runtime,
}

impl Roles {
    fn create() -> Roles {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let short = &id[id.len() - 12..];
        let roles = Roles {
            owner: format!("u8owner_{short}"),
            server: format!("u8hive_{short}"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        };
        for role in [&roles.owner, &roles.server] {
            roles.runtime.block_on(admin_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"
            )));
        }
        roles
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        for role in [&self.server, &self.owner] {
            self.runtime
                .block_on(admin_execute(&format!("DROP ROLE IF EXISTS {role}")));
        }
    }
}

/// The audit trail as the serving role reads it, oldest first.
async fn audit_rows(conn: &mut PgConnection) -> Vec<(String, String, String)> {
    sqlx::query("SELECT id, actor, action FROM audit_log ORDER BY id")
        .fetch_all(conn)
        .await
        .expect("the serving role reads the audit trail")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Runs `ultron8-hive migrate` as the owner.
fn migrate(owner_url: &str, grant_to: &str) -> std::process::Output {
    Command::new(bin("ultron8-hive"))
        .args([
            "migrate",
            "--database-url",
            owner_url,
            "--grant-to",
            grant_to,
        ])
        .output()
        .expect("run ultron8-hive migrate")
}

#[test]
fn a_hive_serving_as_a_role_that_does_not_own_the_schema_cannot_rewrite_the_audit_trail() {
    let roles = Roles::create();
    let env = TestEnv::new("roles");
    env.block_on(admin_execute(&format!(
        "ALTER DATABASE {} OWNER TO {}",
        env.database_name, roles.owner
    )));
    let owner_url = as_role(&env.database_url, &roles.owner);
    let server_url = as_role(&env.database_url, &roles.server);

    // The owner migrates and grants; the owner itself, or a superuser,
    // cannot be the serving role.
    let migrated = migrate(&owner_url, &roles.server);
    assert!(migrated.status.success(), "migrate: {}", stderr(&migrated));
    assert!(
        stdout(&migrated).contains("GRANT SELECT, INSERT ON TABLE public.audit_log"),
        "{}",
        stdout(&migrated)
    );
    let refused = migrate(&owner_url, &roles.owner);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("the hive must serve as another role"),
        "{}",
        stderr(&refused)
    );
    let refused = migrate(&owner_url, "postgres");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("superuser"),
        "{}",
        stderr(&refused)
    );
    // Migrating a current schema again changes nothing and grants the same.
    let again = migrate(&owner_url, &roles.server);
    assert!(again.status.success(), "migrate again: {}", stderr(&again));

    // The hive serves as the other role: the schema is current, so it
    // migrates nothing, and what it does is audited.
    let mut hive = Hive::start_as(&env, &server_url, "");
    hive.join_token(&["role=web"]);
    let fired = hive.ctl(&[
        "event",
        "fire",
        "core.event",
        "--payload",
        "{\"why\": \"test\"}",
    ]);
    assert!(fired.status.success(), "event fire: {}", stderr(&fired));

    env.block_on(async {
        let mut conn = PgConnection::connect(&server_url)
            .await
            .expect("connect as the serving role");
        let before = audit_rows(&mut conn).await;
        let actions: Vec<&str> = before
            .iter()
            .map(|(_, _, action)| action.as_str())
            .collect();
        assert!(
            actions.contains(&"join_token.created"),
            "audited: {actions:?}"
        );
        let first = before[0].0.clone();
        let attempts = [
            format!("UPDATE audit_log SET actor = 'operator:mallory' WHERE id = '{first}'"),
            "DELETE FROM audit_log".to_string(),
            "ALTER TABLE audit_log DISABLE TRIGGER ALL".to_string(),
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_or_delete".to_string(),
            "TRUNCATE audit_log".to_string(),
            "DROP TABLE audit_log".to_string(),
            "ALTER TABLE audit_log RENAME TO audit_log_old".to_string(),
            "ALTER TABLE audit_log OWNER TO CURRENT_USER".to_string(),
            "DROP TRIGGER audit_log_no_truncate ON audit_log".to_string(),
            "UPDATE _sqlx_migrations SET success = false".to_string(),
        ];
        for sql in &attempts {
            let error = sqlx::query(sql)
                .execute(&mut conn)
                .await
                .expect_err(&format!("{sql} must be refused"));
            let code = error
                .as_database_error()
                .and_then(|e| e.code())
                .map(|code| code.to_string());
            // 42501: insufficient_privilege ("permission denied", "must be
            // owner"): refused for who asks, not by the trigger.
            assert_eq!(code.as_deref(), Some("42501"), "{sql}: {error}");
        }
        assert_eq!(
            audit_rows(&mut conn).await,
            before,
            "the records are intact"
        );
        conn.close().await.ok();
    });

    // The hive still works after all that, as the serving role.
    hive.join_token(&["role=db"]);

    // A schema behind this hive: as the serving role, it refuses to start
    // and says what to run; it does not try to migrate.
    if let Some(mut proc) = hive.proc.take() {
        proc.stop();
    }
    env.block_on(async {
        let mut owner = PgConnection::connect(&owner_url)
            .await
            .expect("connect as the owner");
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
            .execute(&mut owner)
            .await
            .expect("the owner forgets a migration");
        owner.close().await.ok();
    });
    let mut command = Command::new(bin("ultron8-hive"));
    command
        .args(["serve", "--data-dir"])
        .arg(&hive.data_dir)
        .args(["--database-url", &server_url, "--amqp-url", &env.amqp_url])
        .args(["--grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())]);
    let mut behind = Proc::spawn("hive-behind", command, env.dir.join("hive-behind.log"));
    wait_for("the hive to refuse the schema", DEADLINE, || {
        match behind.is_running() {
            true => Err(behind.log_text()),
            false => Ok(()),
        }
    });
    let log = behind.log_text();
    assert!(log.contains("are not applied"), "{log}");
    assert!(
        log.contains(&format!(
            "ultron8-hive migrate --database-url <owner's URL> --grant-to {}",
            roles.server
        )),
        "{log}"
    );
}
