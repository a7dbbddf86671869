//! Audit checkpoints signed with the practice's KMS-wrapped key: written by the real binary
//! (`praxis audit checkpoint`, `praxis audit purge`), checked by `praxis audit verify` and
//! `GET /api/v1/audit/verify`. An attacker with the owner role (full database access, no KMS)
//! rewrites the chain and forges the checkpoint that would betray it: reported as a break.

use crate::identity::{Practice, bearer, create_practice, fast_hashing, login};
use crate::support::TestApp;
use audit::{AuditFilter, ChainHead, ChainedEntry, Outcome, Page, next_entry};
use kernel::TenantId;
use serde_json::Value;
use sqlx::PgConnection;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use store_postgres::{DbContext, PgAuditLog, begin};

/// The binary with the server's database, owner role and KMS key file.
fn praxis(app: &TestApp, key_file: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_praxis"))
        .args(args)
        .env_clear()
        .env("PRAXIS__DATABASE__URL", &app.db.app_url)
        .env("PRAXIS__DATABASE__PREPARED_STATEMENTS", testkit::prepared_statements_setting())
        .env("PRAXIS__DATABASE__OWNER_URL", &app.db.owner_url)
        .env("PRAXIS__KMS__LOCAL__KEY_FILE", key_file)
        .env("PRAXIS__TELEMETRY__LOG_LEVEL", "warn")
        .output()
        .unwrap();
    eprintln!("praxis {args:?}\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server whose local KMS key file is `key_file` (the CLI runs use the same one).
async fn start(key_file: &Path) -> TestApp {
    let key_file = key_file.to_owned();
    TestApp::start_with(
        move |config| {
            fast_hashing(config);
            config.kms.local.key_file = key_file;
        },
        api::server::no_extra_routes,
    )
    .await
}

/// A practice with a few audited logins; returns it with an admin session.
async fn practice_with_entries(app: &TestApp, name: &str) -> (Practice, Value) {
    let practice = create_practice(app, name).await;
    for _ in 0..3 {
        login(app, practice.tenant, &practice.admin_email).await;
    }
    let admin = login(app, practice.tenant, &practice.admin_email).await;
    (practice, admin)
}

async fn verify_over_http(app: &TestApp, admin: &Value) -> Value {
    let response =
        app.client.get(app.url("/api/v1/audit/verify")).header("authorization", bearer(admin)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The practice's whole chain, oldest first, read as the owner (after sealing what is pending).
async fn chain(app: &TestApp, tenant: TenantId) -> Vec<ChainedEntry> {
    store_postgres::audit::seal_pending(&app.db.owner_pool, tenant).await.unwrap();
    let log = PgAuditLog::new(app.db.owner_pool.clone());
    let page = log.query_entries(tenant, &AuditFilter::default(), Page::new(None, 200).unwrap()).await.unwrap();
    let mut entries: Vec<ChainedEntry> = page
        .entries
        .into_iter()
        .map(|entry| {
            let link = entry.link.expect("sealed");
            ChainedEntry { seq: link.seq, prev_hash: link.prev_hash, hash: link.hash, event: entry.event }
        })
        .collect();
    entries.sort_by_key(|entry| entry.seq);
    entries
}

/// As the owner role: triggers off, `statements`, triggers on. The owner owns the tables, so
/// it may do this; row-level security still wants the practice set.
async fn as_owner_attacker(app: &TestApp, tenant: TenantId, work: impl AsyncFnOnce(&mut PgConnection)) {
    let mut tx = begin(&app.db.owner_pool, &DbContext::tenant(tenant)).await.unwrap();
    for sql in [
        "ALTER TABLE audit_entries DISABLE TRIGGER USER",
        "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    work(&mut *tx).await;
    for sql in [
        "ALTER TABLE audit_entries ENABLE TRIGGER USER",
        "ALTER TABLE audit_checkpoints ENABLE TRIGGER audit_checkpoints_append_only",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Rewrites entry `seq` (a successful login becomes a failed one) and re-hashes everything
/// after it, so every link of the stored chain holds again. Returns the forged head.
async fn rewrite_from(conn: &mut PgConnection, entries: &[ChainedEntry], seq: u64) -> ChainHead {
    let from = entries.iter().position(|e| e.seq == seq).unwrap();
    let mut head = if from == 0 { ChainHead::GENESIS } else { entries[from - 1].head() };
    for (i, original) in entries[from..].iter().enumerate() {
        let mut event = original.event.clone();
        if i == 0 {
            event.outcome = Outcome::Failure;
        }
        let forged = next_entry(&head, event).unwrap();
        sqlx::query(
            "UPDATE audit_entries SET prev_hash = $3, hash = $4, outcome = $5 WHERE tenant_id = $1 AND seq = $2",
        )
        .bind(forged.event.tenant.as_uuid())
        .bind(forged.seq as i64)
        .bind(forged.prev_hash.as_slice())
        .bind(forged.hash.as_slice())
        .bind(forged.event.outcome.as_str())
        .execute(&mut *conn)
        .await
        .unwrap();
        head = forged.head();
    }
    head
}

/// A checkpoint row of `head`, as the attacker can write it: any signature bytes they like.
async fn plant_checkpoint(conn: &mut PgConnection, tenant: TenantId, head: ChainHead, signature: Option<Vec<u8>>) {
    sqlx::query(
        "INSERT INTO audit_checkpoints (tenant_id, seq, head_hash, created_at, signature) \
         VALUES ($1, $2, $3, now() + interval '1 second', $4)",
    )
    .bind(tenant.as_uuid())
    .bind(head.seq as i64)
    .bind(head.hash.as_slice())
    .bind(signature)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// The best forgery without the key: the signature layout (format 1, generation 1), a random tag.
fn made_up_signature() -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut tag = [0u8; crypto::MAC_LEN];
    ring::rand::SystemRandom::new().fill(&mut tag).unwrap();
    let mut signature = vec![app::checkpoint_signer::SIGNATURE_FORMAT_V1, 0, 0, 0, 1];
    signature.extend_from_slice(&tag);
    signature
}

fn key_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("kms.key")
}

#[actix_web::test]
async fn a_checkpoint_forged_with_database_access_alone_is_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = key_file(&dir);
    let app = start(&key_file).await;
    let (alpha, alpha_admin) = practice_with_entries(&app, "Alpha").await;
    let (beta, beta_admin) = practice_with_entries(&app, "Beta").await;

    // The periodic checkpoint signs with each practice's key, creating it on first use.
    let output = praxis(&app, &key_file, &["audit", "checkpoint"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output).matches("signed checkpoint at seq 4").count(), 2, "{}", stdout(&output));
    for tenant in [alpha.tenant, beta.tenant] {
        let mut tx = begin(&app.db.owner_pool, &DbContext::tenant(tenant)).await.unwrap();
        let keys = store_postgres::tenant_keys::list(&mut tx, tenant).await.unwrap();
        let signatures: Vec<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT signature FROM audit_checkpoints").fetch_all(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(
            (keys[0].purpose.as_str(), keys[0].generation, keys[0].kek_id.as_str()),
            ("audit-checkpoint", 1, "local")
        );
        assert_eq!(signatures.len(), 1);
        let signature = signatures[0].as_ref().unwrap();
        assert_eq!((signature.len(), signature[0]), (app::checkpoint_signer::SIGNATURE_LEN, 1));
        // The key's creation is on the record, after the entry the checkpoint pins.
        let newest = chain(&app, tenant).await.pop().unwrap();
        assert_eq!((newest.seq, newest.event.action), (5, audit::Action::KeyGenerate));
    }
    for admin in [&alpha_admin, &beta_admin] {
        let report = verify_over_http(&app, admin).await;
        assert_eq!(report["intact"], true, "{report}");
    }

    // Alpha: the owner hides a successful login (seq 2) and re-hashes the rest; the genuine
    // checkpoint (seq 4) would betray that, so they replace it with one of the forged chain,
    // with a signature in the right layout but a tag made up without the key.
    let entries = chain(&app, alpha.tenant).await;
    let tenant = alpha.tenant;
    as_owner_attacker(&app, tenant, async |conn| {
        let forged_head = rewrite_from(conn, &entries, 2).await;
        sqlx::query("DELETE FROM audit_checkpoints WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .execute(&mut *conn)
            .await
            .unwrap();
        plant_checkpoint(conn, tenant, forged_head, Some(made_up_signature())).await;
    })
    .await;
    // Without signature checks the forgery would pass: the chain and the checkpoint agree.
    let unchecked = PgAuditLog::new(app.db.owner_pool.clone()).verify_chain(tenant).await.unwrap();
    assert!(unchecked.is_intact(), "{unchecked:?}");
    // With the KMS-held key it is a break, over HTTP and from the binary alike.
    let report = verify_over_http(&app, &alpha_admin).await;
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(
        report["first_break"],
        serde_json::json!({ "seq": 5, "kind": { "kind": "checkpoint_signature_invalid", "checkpoint_seq": 5 } })
    );
    let output = praxis(&app, &key_file, &["audit", "verify"]);
    assert!(!output.status.success());
    assert!(
        stdout(&output).contains(&format!(
            "practice {}: BROKEN at seq 5: CheckpointSignatureInvalid {{ checkpoint_seq: 5 }}",
            alpha.tenant
        )),
        "{}",
        stdout(&output)
    );
    assert!(stdout(&output).contains(&format!("practice {}: chain intact", beta.tenant)), "{}", stdout(&output));

    // Beta: same rewrite, and the planted checkpoint simply carries no signature. The practice
    // has had a signing key since before it, so a missing signature is a break too.
    let entries = chain(&app, beta.tenant).await;
    let tenant = beta.tenant;
    as_owner_attacker(&app, tenant, async |conn| {
        let forged_head = rewrite_from(conn, &entries, 2).await;
        sqlx::query("DELETE FROM audit_checkpoints WHERE tenant_id = $1")
            .bind(tenant.as_uuid())
            .execute(&mut *conn)
            .await
            .unwrap();
        plant_checkpoint(conn, tenant, forged_head, None).await;
    })
    .await;
    let report = verify_over_http(&app, &beta_admin).await;
    assert_eq!(
        report["first_break"],
        serde_json::json!({ "seq": 5, "kind": { "kind": "checkpoint_unsigned", "checkpoint_seq": 5 } }),
        "{report}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_signed_purge_still_verifies_and_another_kms_cannot_vouch_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = key_file(&dir);
    let app = start(&key_file).await;
    let (practice, admin) = practice_with_entries(&app, "Alpha").await;
    let tenant = practice.tenant.to_string();

    // The purge signs its checkpoints (creating the key first, outside the chain lock).
    let output = praxis(&app, &key_file, &["audit", "purge", "--tenant", &tenant, "--before-seq", "3"]);
    assert!(output.status.success());
    let output = praxis(&app, &key_file, &["audit", "verify", "--tenant", &tenant]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert_eq!(verify_over_http(&app, &admin).await["intact"], true);

    // A deployment with another KMS key cannot vouch for these checkpoints (the practice's key
    // row does not unwrap under it): without a trusted anchor the purged prefix is a gap.
    let other = dir.path().join("other.key");
    let output = praxis(&app, &other, &["audit", "verify", "--tenant", &tenant]);
    assert!(!output.status.success());
    assert!(stdout(&output).contains("BROKEN at seq 1: SequenceGap { expected: 1, found: 3 }"), "{}", stdout(&output));
    app.stop().await;
}
