//! Data keys: `praxis keys rotate|migrate` run as the real binary over a populated database,
//! interrupted runs resumed, readiness of the KMS, and the start-up self-test.

use crate::support::{TestApp, assert_problem};
use api::config::KmsConfig;
use crypto::{KeyContext, KeyManagement, KeyPurpose, Keyring};
use kernel::{PatientId, SystemClock, TenantId};
use kms_local::LocalKmsConfig;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use store_postgres::keys::PatientKeyRecord;
use store_postgres::{DbContext, begin};
use testkit::TestDb;

/// (tenant, patient, generation) -> the plaintext DEK bytes.
pub(crate) type Deks = HashMap<(TenantId, PatientId, u32), [u8; 32]>;

const AWS_ENV: [(&str, &str); 3] =
    [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_EC2_METADATA_DISABLED", "true")];

pub(crate) fn local_kms(key_file: &Path) -> KmsConfig {
    KmsConfig {
        local: LocalKmsConfig { key_file: key_file.to_owned(), key_id: "local".into() },
        ..KmsConfig::default()
    }
}

pub(crate) async fn keyring(config: &KmsConfig) -> Arc<Keyring> {
    api::kms::build(config).await.unwrap().keyring
}

/// Two practices; `patients` patients each with DEK generation 1, and the first patient of
/// each practice also with generation 2; each practice with its two practice keys (blind index,
/// audit checkpoint). All wrapped by the local KMS in `key_file`.
pub(crate) async fn populate(db: &TestDb, key_file: &Path, patients: usize) -> Deks {
    let ring = keyring(&local_kms(key_file)).await;
    let mut deks = Deks::new();
    for name in ["Alpha", "Beta"] {
        let tenant = TenantId::new();
        let mut tx = begin(&db.app_pool, &DbContext::operator(tenant)).await.unwrap();
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(tenant.as_uuid())
            .bind(name)
            .execute(&mut *tx)
            .await
            .unwrap();
        for index in 0..patients {
            let patient = PatientId::new();
            let generations = if index == 0 { 2 } else { 1 };
            for generation in 1..=generations {
                let (dek, wrapped) = ring.generate_data_key(&KeyContext::patient_data(tenant, patient)).await.unwrap();
                let key = app::protection::SealingKey { dek: std::sync::Arc::new(dek), wrapped, generation };
                app::keys::store_patient_key(&mut tx, &SystemClock, tenant, patient, &key).await.unwrap();
                deks.insert((tenant, patient, generation), *key.dek.expose_secret());
            }
        }
        for purpose in PRACTICE_KEYS {
            let (_, wrapped) = ring.generate_data_key(&KeyContext::tenant_key(tenant, purpose)).await.unwrap();
            store_postgres::tenant_keys::insert_first(
                &mut tx,
                tenant,
                purpose.as_str(),
                &wrapped.kek_id,
                &wrapped.kek_version,
                &wrapped.ciphertext,
                time::OffsetDateTime::UNIX_EPOCH,
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    deks
}

pub(crate) async fn stored_keys(db: &TestDb, tenant: TenantId) -> Vec<PatientKeyRecord> {
    let mut tx = begin(&db.owner_pool, &DbContext::operator(tenant)).await.unwrap();
    let rows = store_postgres::keys::list_batch(&mut tx, tenant, None, 10_000).await.unwrap();
    tx.commit().await.unwrap();
    rows
}

/// Every stored DEK is under `kek_id`/`kek_version` and unwraps (through `ring`) to the key it
/// was created with.
pub(crate) async fn assert_all_under(db: &TestDb, deks: &Deks, ring: &Keyring, kek_id: &str, kek_version: &str) {
    let tenants: std::collections::HashSet<TenantId> = deks.keys().map(|(t, _, _)| *t).collect();
    let mut seen = 0;
    for tenant in tenants {
        for row in stored_keys(db, tenant).await {
            assert_eq!((row.kek_id.as_str(), row.kek_version.as_str()), (kek_id, kek_version), "{row:?}");
            assert!(row.rewrapped_at.is_some(), "{row:?}");
            let wrapped = crypto::WrappedDataKey {
                kek_id: row.kek_id.clone(),
                kek_version: row.kek_version.clone(),
                ciphertext: row.wrapped_dek.clone().unwrap(),
            };
            let key = ring.unwrap(&wrapped, &KeyContext::patient_data(tenant, row.patient)).await.unwrap();
            assert_eq!(key.expose_secret(), &deks[&(tenant, row.patient, row.generation)]);
            seen += 1;
        }
    }
    assert_eq!(seen, deks.len());
}

const PRACTICE_KEYS: [KeyPurpose; 2] = [KeyPurpose::BlindIndex, KeyPurpose::AuditCheckpoint];

/// (tenant, purpose) -> the plaintext practice key.
pub(crate) type PracticeKeys = HashMap<(TenantId, String), [u8; 32]>;

pub(crate) fn tenants_of(deks: &Deks) -> std::collections::HashSet<TenantId> {
    deks.keys().map(|(t, _, _)| *t).collect()
}

/// Every practice key of the practices in `deks`, unwrapped through `ring` (taken before a
/// rotation or migration, to compare with after).
pub(crate) async fn practice_keys(db: &TestDb, deks: &Deks, ring: &Keyring) -> PracticeKeys {
    let mut keys = PracticeKeys::new();
    for tenant in tenants_of(deks) {
        for row in stored_practice_keys(db, tenant).await {
            let key = ring.unwrap(&wrapped_practice_key(&row), &practice_key_context(&row)).await.unwrap();
            keys.insert((tenant, row.purpose.clone()), *key.expose_secret());
        }
    }
    assert_eq!(keys.len(), 2 * PRACTICE_KEYS.len());
    keys
}

async fn stored_practice_keys(db: &TestDb, tenant: TenantId) -> Vec<store_postgres::tenant_keys::TenantKeyRecord> {
    let mut tx = begin(&db.owner_pool, &DbContext::operator(tenant)).await.unwrap();
    let rows = store_postgres::tenant_keys::list(&mut tx, tenant).await.unwrap();
    tx.commit().await.unwrap();
    rows
}

fn wrapped_practice_key(row: &store_postgres::tenant_keys::TenantKeyRecord) -> crypto::WrappedDataKey {
    crypto::WrappedDataKey {
        kek_id: row.kek_id.clone(),
        kek_version: row.kek_version.clone(),
        ciphertext: row.wrapped_key.clone(),
    }
}

fn practice_key_context(row: &store_postgres::tenant_keys::TenantKeyRecord) -> KeyContext {
    let purpose = PRACTICE_KEYS.into_iter().find(|p| p.as_str() == row.purpose).unwrap();
    KeyContext::tenant_key(row.tenant, purpose)
}

/// Every practice key is under `kek_id`/`kek_version`, was rewrapped, and unwraps (through
/// `ring`, under its practice and purpose) to the key it was before.
pub(crate) async fn assert_practice_keys_under(
    db: &TestDb,
    before: &PracticeKeys,
    ring: &Keyring,
    kek_id: &str,
    kek_version: &str,
) {
    let tenants: std::collections::HashSet<TenantId> = before.keys().map(|(t, _)| *t).collect();
    let mut seen = 0;
    for tenant in tenants {
        for row in stored_practice_keys(db, tenant).await {
            assert_eq!((row.kek_id.as_str(), row.kek_version.as_str()), (kek_id, kek_version), "{row:?}");
            assert!(row.rewrapped_at.is_some(), "{row:?}");
            let key = ring.unwrap(&wrapped_practice_key(&row), &practice_key_context(&row)).await.unwrap();
            assert_eq!(key.expose_secret(), &before[&(tenant, row.purpose.clone())]);
            seen += 1;
        }
    }
    assert_eq!(seen, before.len());
}

/// Sum of the `rewrapped` counts of the audit entries `action` about patient DEKs, over every
/// practice.
pub(crate) async fn audited_rewraps(db: &TestDb, deks: &Deks, action: &str) -> (u64, u64) {
    audited(db, deks, action, "patient_keys").await
}

/// The same for the practice keys' entries.
pub(crate) async fn audited_practice_key_rewraps(db: &TestDb, deks: &Deks, action: &str) -> (u64, u64) {
    audited(db, deks, action, "tenant_keys").await
}

async fn audited(db: &TestDb, deks: &Deks, action: &str, resource_type: &str) -> (u64, u64) {
    let (mut entries, mut rewrapped) = (0u64, 0u64);
    for tenant in tenants_of(deks) {
        let mut tx = begin(&db.owner_pool, &DbContext::operator(tenant)).await.unwrap();
        let details: Vec<(String, String)> = sqlx::query_as(
            "SELECT detail::text, actor_name FROM audit_entries \
              WHERE tenant_id = $1 AND action = $2 AND resource_type = $3 ORDER BY seq",
        )
        .bind(tenant.as_uuid())
        .bind(action)
        .bind(resource_type)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        for (detail, actor) in details {
            assert_eq!(actor, "keys");
            entries += 1;
            let detail: serde_json::Value = serde_json::from_str(&detail).unwrap();
            rewrapped += detail["rewrapped"].as_u64().unwrap();
        }
    }
    (entries, rewrapped)
}

pub(crate) fn praxis(db: &TestDb, key_file: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_praxis"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PRAXIS__DATABASE__URL", &db.app_url)
        .env("PRAXIS__DATABASE__PREPARED_STATEMENTS", testkit::prepared_statements_setting())
        .env("PRAXIS__DATABASE__OWNER_URL", &db.owner_url)
        .env("PRAXIS__KMS__LOCAL__KEY_FILE", key_file)
        .env("PRAXIS__TELEMETRY__LOG_LEVEL", "warn");
    command
}

pub(crate) fn run(mut command: Command, args: &[&str]) -> Output {
    let output = command.args(args).output().unwrap();
    eprintln!("praxis {args:?}\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[actix_web::test]
async fn rotate_moves_every_dek_to_a_new_local_version_and_keeps_the_keys() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms.key");
    let deks = populate(&db, &key_file, 3).await;
    assert_eq!(deks.len(), 8);
    let before = practice_keys(&db, &deks, &*keyring(&local_kms(&key_file)).await).await;

    let output = run(praxis(&db, &key_file), &["keys", "rotate", "--batch-size", "3"]);
    assert!(output.status.success());
    assert!(
        stdout(&output).contains(
            "2 practice(s), 8 DEK(s) checked, 8 rewrapped, 0 skipped, 0 failed; \
             4 practice key(s) checked, 4 rewrapped, 0 skipped, 0 failed"
        ),
        "{}",
        stdout(&output)
    );
    // A fresh process reading the key file sees version 2 as primary and can read everything.
    let ring = keyring(&local_kms(&key_file)).await;
    assert_eq!(ring.key_info().version, "2");
    assert_all_under(&db, &deks, &ring, "local", "2").await;
    assert_practice_keys_under(&db, &before, &ring, "local", "2").await;
    // 4 DEKs per practice in batches of 3: two audit entries per practice, 8 rewraps in all;
    // one entry per practice for its two practice keys.
    assert_eq!(audited_rewraps(&db, &deks, "key.rotate").await, (4, 8));
    assert_eq!(audited_practice_key_rewraps(&db, &deks, "key.rotate").await, (2, 4));

    // Finishing an already finished rotation does nothing and records nothing.
    let output = run(praxis(&db, &key_file), &["keys", "rotate", "--resume"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("8 DEK(s) checked, 0 rewrapped, 8 skipped"), "{}", stdout(&output));
    assert!(stdout(&output).contains("4 practice key(s) checked, 0 rewrapped, 4 skipped"), "{}", stdout(&output));
    assert_eq!(audited_rewraps(&db, &deks, "key.rotate").await, (4, 8));
    assert_eq!(audited_practice_key_rewraps(&db, &deks, "key.rotate").await, (2, 4));
}

#[actix_web::test]
async fn a_practice_key_changed_since_it_was_read_is_not_overwritten() {
    // The compare-and-set of the practice keys, as a concurrent run would meet it: the row was
    // rewrapped by someone else between our read and our write.
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms.key");
    let deks = populate(&db, &key_file, 1).await;
    let tenant = *tenants_of(&deks).iter().next().unwrap();
    let row = stored_practice_keys(&db, tenant).await.remove(0);
    let mut tx = begin(&db.owner_pool, &DbContext::operator(tenant)).await.unwrap();
    let now = time::OffsetDateTime::UNIX_EPOCH;
    let stale = (row.kek_id.as_str(), "an-older-version");
    let new = ("local", "2", row.wrapped_key.as_slice());
    let updated =
        store_postgres::tenant_keys::update_wrapped(&mut tx, tenant, &row.purpose, row.generation, stale, new, now)
            .await
            .unwrap();
    assert!(!updated);
    let current = (row.kek_id.as_str(), row.kek_version.as_str());
    let updated =
        store_postgres::tenant_keys::update_wrapped(&mut tx, tenant, &row.purpose, row.generation, current, new, now)
            .await
            .unwrap();
    assert!(updated);
    tx.commit().await.unwrap();
}

#[actix_web::test]
async fn an_interrupted_rotation_resumes_without_losing_or_repeating_a_rewrap() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms.key");
    let deks = populate(&db, &key_file, 5).await;
    let total = deks.len() as u64;
    let before = practice_keys(&db, &deks, &*keyring(&local_kms(&key_file)).await).await;

    // A run stopped after two rewraps (as a crash after the second batch would).
    let output = run(praxis(&db, &key_file), &["keys", "rotate", "--batch-size", "1", "--limit", "2"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("2 rewrapped") && stdout(&output).contains("--limit"), "{}", stdout(&output));
    assert_eq!(audited_rewraps(&db, &deks, "key.rotate").await, (2, 2));

    // A resumed run killed as soon as it reports its first batch.
    let mut child = praxis(&db, &key_file)
        .args(["keys", "rotate", "--resume", "--batch-size", "1"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    for line in std::io::BufReader::new(stderr).lines() {
        if line.unwrap().contains("batch 1:") {
            break;
        }
    }
    child.kill().ok();
    child.wait().unwrap();
    let (_, after_kill) = audited_rewraps(&db, &deks, "key.rotate").await;
    assert!((2..=total).contains(&after_kill), "{after_kill}");

    // The final resume does exactly the rest.
    let output = run(praxis(&db, &key_file), &["keys", "rotate", "--resume", "--batch-size", "1"]);
    assert!(output.status.success());
    let expected = format!("{} rewrapped, {} skipped, 0 failed", total - after_kill, after_kill);
    assert!(stdout(&output).contains(&expected), "expected {expected:?} in {}", stdout(&output));
    let ring = keyring(&local_kms(&key_file)).await;
    assert_all_under(&db, &deks, &ring, "local", "2").await;
    // Every DEK rewrapped exactly once over the three runs.
    let (_, rewrapped) = audited_rewraps(&db, &deks, "key.rotate").await;
    assert_eq!(rewrapped, total);
    // And every practice key, each once, whichever run reached its practice.
    assert_practice_keys_under(&db, &before, &ring, "local", "2").await;
    assert_eq!(audited_practice_key_rewraps(&db, &deks, "key.rotate").await.1, 4);
}

fn moto_endpoint() -> String {
    match std::env::var("PRAXIS_TEST_AWS_KMS_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => endpoint,
        _ => {
            panic!("PRAXIS_TEST_AWS_KMS_ENDPOINT is not set: run the tests with `cargo xtask test`, which starts moto")
        }
    }
}

async fn fresh_aws_key(endpoint: &str) -> String {
    let config = kms_aws::AwsKmsConfig {
        key_id: "bootstrap".into(),
        region: "eu-central-1".into(),
        endpoint: Some(endpoint.to_owned()),
    };
    let credentials = kms_aws::Credentials::new("testing", "testing", None, None, "praxis-api-tests");
    let admin = kms_aws::AwsKms::connect_with_credentials(&config, credentials).await.unwrap();
    let created = admin
        .client()
        .create_key()
        .description("praxis api keys test")
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
        .send()
        .await
        .unwrap();
    created.key_metadata().and_then(|m| m.arn()).unwrap().to_owned()
}

#[actix_web::test]
async fn migrate_moves_every_dek_from_local_to_aws() {
    let endpoint = moto_endpoint();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("old.key");
    let deks = populate(&db, &key_file, 3).await;
    let before = practice_keys(&db, &deks, &*keyring(&local_kms(&key_file)).await).await;
    let arn = fresh_aws_key(&endpoint).await;
    let config_file = dir.path().join("praxis.toml");
    std::fs::write(
        &config_file,
        format!(
            "[kms]\nbackend = \"aws\"\n[kms.aws]\nkey_id = \"{arn}\"\nregion = \"eu-central-1\"\nendpoint = \"{endpoint}\"\n\
             [[kms.previous]]\nbackend = \"local\"\nkey_file = \"{}\"\n",
            key_file.display()
        ),
    )
    .unwrap();
    let migrate = |args: &[&str]| {
        let mut command = praxis(&db, &key_file);
        command.env_remove("PRAXIS__KMS__LOCAL__KEY_FILE").envs(AWS_ENV).arg("--config").arg(&config_file);
        run(command, args)
    };

    // The target must be the configured primary.
    let output = migrate(&["keys", "migrate", "--to", "local"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("kms.backend"));

    let output = migrate(&["keys", "migrate", "--to", "aws", "--batch-size", "2"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("8 DEK(s) checked, 8 rewrapped, 0 skipped, 0 failed"), "{}", stdout(&output));

    // The new primary alone reads every DEK: the local key file may now be retired.
    let aws = kms_aws::AwsKms::connect_with_credentials(
        &kms_aws::AwsKmsConfig { key_id: arn.clone(), region: "eu-central-1".into(), endpoint: Some(endpoint) },
        kms_aws::Credentials::new("testing", "testing", None, None, "praxis-api-tests"),
    )
    .await
    .unwrap();
    let ring = Keyring::new(Arc::new(aws), []).unwrap();
    assert_all_under(&db, &deks, &ring, &arn, "").await;
    assert_practice_keys_under(&db, &before, &ring, &arn, "").await;
    assert_eq!(audited_rewraps(&db, &deks, "key.wrap").await.1, 8);
    assert_eq!(audited_practice_key_rewraps(&db, &deks, "key.wrap").await.1, 4);

    // Re-running is a no-op.
    let output = migrate(&["keys", "migrate", "--to", "aws"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("0 rewrapped, 8 skipped"), "{}", stdout(&output));
}

#[actix_web::test]
async fn readiness_reports_the_kms_and_names_it_when_down() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms.key");
    let file = key_file.clone();
    let app = TestApp::start_with(move |c| c.kms.local.key_file = file, api::server::no_extra_routes).await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["kms"]["status"], "up");

    std::fs::remove_file(&key_file).unwrap();
    let body = assert_problem(app.get("/health/ready").await, 503, "urn:praxis:problem:not-ready").await;
    assert_eq!(body["failing"], serde_json::json!(["kms"]));
    assert_eq!(body["checks"]["kms"]["status"], "down");
    assert!(!body.to_string().contains("kms.key"), "{body}");
    app.stop().await;
}

#[test]
fn serve_refuses_to_start_when_the_kms_self_test_fails() {
    // An AWS key behind an endpoint where nothing listens: the adapter is built (no network
    // call), the probe wrap fails.
    let output = Command::new(env!("CARGO_BIN_EXE_praxis"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(AWS_ENV)
        .env("PRAXIS__DATABASE__URL", "postgres://app@127.0.0.1:1/praxis")
        .env("PRAXIS__REDIS__URL", "redis://127.0.0.1:1")
        .env("PRAXIS__SERVER__BIND", "127.0.0.1:0")
        .env("PRAXIS__KMS__BACKEND", "aws")
        .env("PRAXIS__KMS__AWS__KEY_ID", "arn:aws:kms:eu-central-1:000000000000:key/none")
        .env("PRAXIS__KMS__AWS__REGION", "eu-central-1")
        .env("PRAXIS__KMS__AWS__ENDPOINT", "http://127.0.0.1:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("refusing to start") && stderr.contains("KMS self-test failed"), "{stderr}");

    // A missing AWS setting is named before anything is built.
    let output = Command::new(env!("CARGO_BIN_EXE_praxis"))
        .arg("serve")
        .env_clear()
        .env("PRAXIS__DATABASE__URL", "postgres://app@127.0.0.1:1/praxis")
        .env("PRAXIS__REDIS__URL", "redis://127.0.0.1:1")
        .env("PRAXIS__KMS__BACKEND", "aws")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("kms.aws.key_id: required when kms.backend = \"aws\""), "{stderr}");
    assert!(stderr.contains("kms.aws.region: required when kms.backend = \"aws\""), "{stderr}");
}

/// `praxis serve` on `db` with the local KMS in `key_file`, until it answers ready or exits
/// (at most 30 s). Returns whether it got ready, and its stderr.
async fn serve_on_local_kms(db: &TestDb, key_file: &Path) -> (bool, String) {
    let redis = testkit::TestRedis::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::from(praxis(db, key_file))
        .arg("serve")
        .env("PRAXIS__REDIS__URL", &redis.url)
        .env("PRAXIS__REDIS__KEY_PREFIX", &redis.prefix)
        .env("PRAXIS__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("PRAXIS__SERVER__WORKERS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let mut ready = false;
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if child.try_wait().unwrap().is_none() {
        child.start_kill().unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("praxis serve\n{stderr}");
    (ready, stderr)
}

/// The `key.unwrap` entries the start-up check recorded, over both practices of `deks`.
async fn self_test_unwraps(db: &TestDb, deks: &Deks) -> i64 {
    let tenants: std::collections::BTreeSet<TenantId> = deks.keys().map(|(tenant, _, _)| *tenant).collect();
    let mut total = 0;
    for tenant in tenants {
        let mut tx = begin(&db.owner_pool, &DbContext::operator(tenant)).await.unwrap();
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'key.unwrap' \
             AND actor_name = 'kms-self-test'",
        )
        .bind(tenant.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        total += count;
    }
    total
}

#[actix_web::test]
async fn serve_refuses_to_start_when_the_local_key_file_no_longer_opens_the_stored_keys() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms.key");
    let deks = populate(&db, &key_file, 2).await;
    let backup = dir.path().join("kms.key.backup");
    std::fs::copy(&key_file, &backup).unwrap();

    // The key file is lost: the local KMS would make a new key. The start is refused, naming
    // the file and what the database holds, and the new key file does not stay behind.
    std::fs::remove_file(&key_file).unwrap();
    let (ready, stderr) = serve_on_local_kms(&db, &key_file).await;
    assert!(!ready, "{stderr}");
    assert!(stderr.contains("refusing to start") && stderr.contains("KMS self-test failed"), "{stderr}");
    assert!(stderr.contains(&key_file.display().to_string()), "{stderr}");
    assert!(stderr.contains("did not exist") && stderr.contains("removed again"), "{stderr}");
    assert!(stderr.contains("the database holds 6 live patient keys"), "{stderr}");
    assert!(!key_file.exists(), "the key file created just now must not stay behind");

    // Another key file at that place (a wrong copy): refused too.
    keyring(&local_kms(&key_file)).await;
    assert!(key_file.exists());
    let (ready, stderr) = serve_on_local_kms(&db, &key_file).await;
    assert!(!ready, "{stderr}");
    assert!(stderr.contains(&format!("The key file {} does not open them", key_file.display())), "{stderr}");
    assert!(key_file.exists(), "an existing key file is never removed");
    assert_eq!(self_test_unwraps(&db, &deks).await, 0);

    // The operator restores the file from its backup: the server starts, and the start-up
    // check's unwraps (the newest patient key and practice key) are on the trail.
    std::fs::copy(&backup, &key_file).unwrap();
    let (ready, stderr) = serve_on_local_kms(&db, &key_file).await;
    assert!(ready, "{stderr}");
    assert_eq!(self_test_unwraps(&db, &deks).await, 2);
}

#[actix_web::test]
async fn serve_creates_the_local_key_file_on_an_empty_database() {
    // A fresh development set-up: no key file, no keys stored. The key file is made and the
    // server starts.
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("kms.key");
    let (ready, stderr) = serve_on_local_kms(&db, &key_file).await;
    assert!(ready, "{stderr}");
    assert!(key_file.exists());
}
