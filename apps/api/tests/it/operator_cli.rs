//! Incident-response commands of the real `praxis` binary, checked over HTTP.

use crate::identity::{PASSWORD, bearer, create_practice, fast_hashing, login, login_response};
use crate::support::{TestApp, assert_problem};

pub fn praxis(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_praxis"))
        .args(args)
        .env_clear()
        .env("PRAXIS__DATABASE__URL", &app.db.app_url)
        .env("PRAXIS__REDIS__URL", &app.redis.url)
        .env("PRAXIS__REDIS__KEY_PREFIX", &app.redis.prefix)
        .output()
        .unwrap()
}

/// `praxis tenants create` runs the API's use case: the configured argon2id cost, the API's email
/// rule, and the practice's audit trail starts with the practice's and its admin's creation.
#[actix_web::test]
async fn tenants_create_is_audited_and_hashed_with_the_configured_cost() {
    let app = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let with_cost = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_praxis"))
            .args(args)
            .env_clear()
            .env("PRAXIS__DATABASE__URL", &app.db.app_url)
            .env("PRAXIS__REDIS__URL", &app.redis.url)
            .env("PRAXIS__AUTH__ARGON2_MEMORY_KIB", "2048")
            .env("PRAXIS__AUTH__ARGON2_ITERATIONS", "3")
            .output()
            .unwrap()
    };

    // The API's email rule: whitespace inside an address is refused, naming the flag.
    let refused = with_cost(&["tenants", "create", "--name", "Gamma", "--admin-email", "ad min@gamma.test"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--admin-email: must be an email address"));

    let output = with_cost(&["tenants", "create", "--name", "Gamma", "--admin-email", " Admin@Gamma.TEST "]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let value_of = |label: &str| {
        stdout.lines().find_map(|line| line.trim().strip_prefix(label)).map(|v| v.trim().to_owned()).unwrap()
    };
    let tenant: kernel::TenantId =
        value_of("tenant id:").parse::<uuid::Uuid>().map(kernel::TenantId::from_uuid).unwrap();
    assert_eq!(value_of("admin email:"), "admin@gamma.test");
    let password = value_of("admin password:");

    // Hashed with the configured cost, not a built-in one.
    let mut tx = store_postgres::begin(&app.db.app_pool, &store_postgres::DbContext::operator(tenant)).await.unwrap();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=2048,t=3,p=1$"), "{hash}");

    // The admin can log in, and the trail starts with the practice and the admin, intact.
    let response = login_response(&app, tenant, "admin@gamma.test", &password).await;
    assert_eq!(response.status(), 200);
    let session: serde_json::Value = response.json().await.unwrap();
    // Verifying seals what is pending (as the server's sealer would within a moment).
    let verify: serde_json::Value = app
        .client
        .get(app.url("/api/v1/audit/verify"))
        .header("authorization", bearer(&session))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], serde_json::json!(true), "{verify}");
    let audit: serde_json::Value = app
        .client
        .get(app.url("/api/v1/audit"))
        .header("authorization", bearer(&session))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let oldest: Vec<(&str, u64)> =
        entries.iter().rev().take(2).map(|e| (e["action"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
    assert_eq!(oldest, vec![("practice.create", 1), ("user.create", 2)]);
    assert_eq!(entries.last().unwrap()["resource_id"], serde_json::json!(tenant.to_string()));
    assert_eq!(entries.last().unwrap()["actor"]["kind"], serde_json::json!("system"), "{}", entries.last().unwrap());

    app.stop().await;
}

#[actix_web::test]
async fn sessions_revoke_and_users_disable_end_access_at_once() {
    let app = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let practice = create_practice(&app, "Alpha").await;
    let session = login(&app, practice.tenant, &practice.admin_email).await;
    let tenant = practice.tenant.to_string();

    let output = praxis(&app, &["sessions", "revoke", "--tenant", &tenant, "--user", &practice.admin_email]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 session(s)"));
    let response =
        app.client.get(app.url("/api/v1/me")).header("authorization", bearer(&session)).send().await.unwrap();
    assert_problem(response, 401, "urn:praxis:problem:unauthorized").await;

    let again = login(&app, practice.tenant, &practice.admin_email).await;
    let output = praxis(&app, &["users", "disable", "--tenant", &tenant, "--email", &practice.admin_email]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let response = app.client.get(app.url("/api/v1/me")).header("authorization", bearer(&again)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(login_response(&app, practice.tenant, &practice.admin_email, PASSWORD).await.status(), 401);

    let output = praxis(&app, &["users", "disable", "--tenant", &tenant, "--email", "nobody@alpha.test"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no account"));

    // Both commands are in the practice's trail, as the `cli` component's doing.
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, actor_kind, actor_name FROM audit_entries \
         WHERE tenant_id = $1 AND action IN ('auth.session_revoked', 'user.disable') ORDER BY seq",
    )
    .bind(practice.tenant.as_uuid())
    .fetch_all(
        &mut *store_postgres::begin(&app.db.app_pool, &store_postgres::DbContext::operator(practice.tenant))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|(action, _, _)| action.as_str()).collect();
    assert_eq!(actions, ["auth.session_revoked", "user.disable"]);
    assert!(rows.iter().all(|(_, kind, name)| kind == "system" && name.as_deref() == Some("cli")), "{rows:?}");
    app.stop().await;
}

#[actix_web::test]
async fn blocked_ips_get_403_until_unblocked() {
    let app = TestApp::start().await;
    let output = praxis(&app, &["ip", "block", "127.0.0.1", "--ttl-secs", "60", "--reason", "incident 42"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let response = app.get("/api/v1/me").await;
    assert_problem(response, 403, "urn:praxis:problem:forbidden").await;
    // Probes still answer, so an orchestrator does not kill a healthy instance.
    assert_eq!(app.get("/health/live").await.status(), 200);

    let listing = praxis(&app, &["ip", "list"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("127.0.0.1"));
    let output = praxis(&app, &["ip", "unblock", "127.0.0.1"]);
    assert!(output.status.success());
    assert_eq!(app.get("/api/v1/me").await.status(), 401);
    app.stop().await;
}

#[actix_web::test]
async fn audit_verify_purge_and_verify_again_through_the_binary() {
    let app = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let practice = create_practice(&app, "Alpha").await;
    for _ in 0..3 {
        login(&app, practice.tenant, &practice.admin_email).await;
    }
    let tenant = practice.tenant.to_string();
    // The audit commands sign and verify checkpoints with a key wrapped by the configured KMS.
    let kms_dir = tempfile::tempdir().unwrap();
    let key_file = kms_dir.path().join("kms.key");
    let with_owner = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_praxis"))
            .args(args)
            .env_clear()
            .env("PRAXIS__DATABASE__URL", &app.db.app_url)
            .env("PRAXIS__DATABASE__OWNER_URL", &app.db.owner_url)
            .env("PRAXIS__KMS__LOCAL__KEY_FILE", &key_file)
            .output()
            .unwrap()
    };
    let verify = with_owner(&["audit", "verify", "--tenant", &tenant]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("chain intact (3 sealed entries"));

    // The runtime role may not purge; the owner may, behind checkpoints.
    let refused = praxis(&app, &["audit", "purge", "--tenant", &tenant, "--before-seq", "3"]);
    assert!(!refused.status.success());
    let purge = with_owner(&["audit", "purge", "--tenant", &tenant, "--before-seq", "3"]);
    assert!(purge.status.success(), "{}", String::from_utf8_lossy(&purge.stderr));
    assert!(String::from_utf8_lossy(&purge.stdout).contains("2 entries before seq 3 purged"));

    let verify = with_owner(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("intact"));
    app.stop().await;
}

/// `praxis keys rotate --help` says how rotation works for every backend an operator may run.
#[test]
fn keys_rotate_help_covers_every_backend() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_praxis"))
        .args(["keys", "rotate", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let help = String::from_utf8_lossy(&output.stdout);
    for backend in ["local:", "aws:", "vault:", "azure:", "transit/rewrap", "az keyvault key rotate"] {
        assert!(help.contains(backend), "{backend:?} missing from:\n{help}");
    }
}
