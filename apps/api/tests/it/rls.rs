//! Row-level security seen as the runtime role the server connects as: with no tenant set it sees
//! nothing, with tenant A set it sees none of tenant B's rows, and it cannot write into B.

use kernel::{Clock, Role, TenantId, UserId};
use sqlx::{AssertSqlSafe, PgPool, Row};
use store_postgres::{DbContext, begin, identity};
use testkit::TestDb;

/// Every table in `public` that holds tenant data: those with a `tenant_id` column, plus
/// `tenants` itself. Read from the catalog so a new table is covered the day it is added.
async fn tenant_scoped_tables(pool: &PgPool) -> Vec<(String, &'static str)> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, \
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS has_tenant \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .filter_map(|row| {
            let name: String = row.get("name");
            let has_tenant: bool = row.get("has_tenant");
            match (name.as_str(), has_tenant) {
                ("tenants", _) => Some((name, "id")),
                (_, true) => Some((name, "tenant_id")),
                _ => None,
            }
        })
        .collect()
}

/// A practice with one admin, a session, an API key and an audit entry: one row in every
/// tenant-scoped table, so isolation checks have something to leak. Returns the admin's context.
async fn seed_tenant(db: &TestDb, name: &str) -> DbContext {
    let tenant = TenantId::new();
    let admin = UserId::new();
    let context = DbContext::user(tenant, admin, Role::Admin);
    let now = kernel::SystemClock.now();
    let mut tx = begin(&db.app_pool, &context).await.unwrap();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(tenant.as_uuid())
        .bind(name)
        .execute(&mut *tx)
        .await
        .unwrap();
    identity::insert_user(
        &mut tx,
        &identity::NewUser {
            id: admin,
            tenant,
            email: format!("admin@{}.test", name.to_lowercase()),
            role: Role::Admin,
            patient: None,
            password_hash: "not-a-real-hash".into(),
            created_at: now,
        },
    )
    .await
    .unwrap();
    identity::insert_session(
        &mut tx,
        &identity::NewSession {
            id: uuid::Uuid::now_v7(),
            tenant,
            user: admin,
            role: Role::Admin,
            token_hash: *uuid::Uuid::new_v4().as_bytes().repeat(2).first_chunk::<32>().unwrap(),
            created_at: now,
            expires_at: now + time::Duration::hours(1),
        },
    )
    .await
    .unwrap();
    identity::insert_api_key(
        &mut tx,
        &identity::NewApiKey {
            id: uuid::Uuid::now_v7(),
            tenant,
            key_id: format!("k{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            name: "seed".into(),
            token_hash: *uuid::Uuid::new_v4().as_bytes().repeat(2).first_chunk::<32>().unwrap(),
            scopes: vec!["patients:read".into()],
            created_by: admin,
            created_at: now,
            expires_at: None,
        },
    )
    .await
    .unwrap();
    store_postgres::keys::insert(
        &mut tx,
        &store_postgres::keys::NewPatientKey {
            tenant,
            patient: kernel::PatientId::new(),
            generation: 1,
            kek_id: "seed".into(),
            kek_version: "1".into(),
            wrapped_dek: vec![7; 61],
            created_at: now,
        },
    )
    .await
    .unwrap();
    store_postgres::tenant_keys::insert_first(&mut tx, tenant, "blind-index", "seed", "1", &[7; 61], now)
        .await
        .unwrap();
    // A patient (ciphertexts are opaque bytes to the store) with one consent change.
    let patient = kernel::PatientId::from_uuid(uuid::Uuid::now_v7());
    store_postgres::patients::insert(
        &mut tx,
        &store_postgres::patients::NewPatientRow {
            id: patient,
            tenant,
            dek_generation: 1,
            assigned_therapist: None,
            fields: [(patients::PatientField::Name, vec![9; 60])].into_iter().collect(),
            email_index: Some([3; 32]),
            phone_index: None,
            created_at: now,
        },
    )
    .await
    .unwrap();
    let mut record = consent::ConsentRecord::new(patient, consent::Purpose::DataProcessing);
    let evidence = consent::Evidence::new(
        consent::ConsentText::from_text("seed-v1", "Seed consent text.").unwrap(),
        consent::Channel::Paper,
        kernel::Actor::User { tenant, user: admin, role: Role::Admin },
    );
    let event = record.apply(consent::ConsentCommand::Grant { expires_at: None }, evidence, now).unwrap();
    store_postgres::patients::record_consent(&mut tx, tenant, &event, &record).await.unwrap();
    tx.commit().await.unwrap();
    // An inbound webhook and a logged message (written by the webhook handlers' service context).
    let mut tx = begin(&db.app_pool, &DbContext::service(tenant)).await.unwrap();
    let inbox = store_postgres::webhooks::InboxEvent {
        tenant,
        provider: "stripe",
        event_key: "evt_seed",
        event_type: "invoice.paid",
        body_sha256: [1; 32],
        received_at: now,
        detail: serde_json::json!({}),
    };
    assert!(store_postgres::webhooks::record_event(&mut tx, &inbox).await.unwrap());
    let message = store_postgres::webhooks::NewMessage {
        tenant,
        provider: "whatsapp",
        channel: "whatsapp",
        message_id: "wamid.seed".into(),
        patient: Some(patient),
        message_type: "text".into(),
        content_sha256: Some([2; 32]),
        stop_keyword: false,
        sent_at: None,
        received_at: now,
    };
    store_postgres::webhooks::log_message(&mut tx, &message).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = begin(&db.app_pool, &context).await.unwrap();
    // An appointment (the admin stands in for a therapist) with a reminder, working hours, an absence.
    let appointment = uuid::Uuid::now_v7();
    let start = now + time::Duration::days(3);
    let slot = scheduling::Slot::new(start, start + time::Duration::hours(1)).unwrap();
    store_postgres::appointments::insert(
        &mut tx,
        &store_postgres::appointments::NewAppointment {
            id: appointment,
            tenant,
            patient,
            therapist: admin,
            slot,
            kind: scheduling::AppointmentKind::TherapySession,
            notes_enc: None,
            created_at: now,
        },
    )
    .await
    .unwrap();
    let planned = scheduling::plan_reminders(start, now, &scheduling::ReminderPolicy::default());
    store_postgres::appointments::insert_reminders(&mut tx, tenant, appointment, start, &planned, now).await.unwrap();
    let hours = scheduling::WeeklyHours::new("Europe/Berlin", []).unwrap();
    store_postgres::appointments::put_working_hours(&mut tx, tenant, admin, &hours, now).await.unwrap();
    let absence = scheduling::Absence::new(start + time::Duration::days(1), start + time::Duration::days(2)).unwrap();
    let absence = store_postgres::appointments::AbsenceRow {
        id: uuid::Uuid::now_v7(),
        therapist: admin,
        absence,
        created_at: now,
    };
    store_postgres::appointments::insert_absence(&mut tx, tenant, &absence).await.unwrap();
    let actor = kernel::Actor::User { tenant, user: admin, role: Role::Admin };
    let event = audit::AuditEvent::new(tenant, actor, audit::Action::UserCreate, "user", &kernel::SystemClock)
        .with_resource_id(admin.to_string());
    store_postgres::audit::append(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();
    // The sealer links the entry into the chain (and creates the chain head).
    store_postgres::audit::seal_pending(&db.app_pool, tenant).await.unwrap();
    // A checkpoint too (written by the operator path, from the entries).
    store_postgres::audit::write_checkpoint(&db.app_pool, tenant, None, &kernel::SystemClock).await.unwrap();
    context
}

fn tenant_of(context: &DbContext) -> TenantId {
    context.tenant.unwrap()
}

async fn count(pool: &PgPool, context: &DbContext, sql: &str) -> i64 {
    let mut tx = begin(pool, context).await.unwrap();
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    n
}

#[tokio::test]
async fn every_tenant_table_forces_row_level_security() {
    let db = TestDb::new().await;
    let tables = tenant_scoped_tables(&db.owner_pool).await;
    assert!(tables.len() >= 2, "{tables:?}");
    for (table, _) in &tables {
        let (enabled, forced): (bool, bool) =
            sqlx::query_as("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = $1 AND relnamespace = 'public'::regnamespace")
                .bind(table)
                .fetch_one(&db.owner_pool)
                .await
                .unwrap();
        assert!(enabled && forced, "{table}: RLS enabled={enabled} forced={forced}");
    }
}

#[tokio::test]
async fn runtime_role_without_a_tenant_sees_no_rows() {
    let db = TestDb::new().await;
    seed_tenant(&db, "Alpha").await;
    seed_tenant(&db, "Beta").await;
    for (table, _) in tenant_scoped_tables(&db.app_pool).await {
        // No context at all: outside any transaction that set it.
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&db.app_pool)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} leaks rows with no tenant set");
        // An explicitly empty context.
        assert_eq!(
            count(&db.app_pool, &DbContext::anonymous(), &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn runtime_role_with_tenant_a_sees_none_of_tenant_b() {
    let db = TestDb::new().await;
    let as_alpha = seed_tenant(&db, "Alpha").await;
    let (alpha, beta) = (tenant_of(&as_alpha), tenant_of(&seed_tenant(&db, "Beta").await));
    // The strongest role of practice A: it sees all of A and nothing of B.
    for (table, column) in tenant_scoped_tables(&db.app_pool).await {
        let all = count(&db.app_pool, &as_alpha, &format!("SELECT count(*) FROM {table}")).await;
        let beta_rows =
            count(&db.app_pool, &as_alpha, &format!("SELECT count(*) FROM {table} WHERE {column} = '{beta}'")).await;
        let alpha_rows =
            count(&db.app_pool, &as_alpha, &format!("SELECT count(*) FROM {table} WHERE {column} = '{alpha}'")).await;
        assert_eq!(beta_rows, 0, "{table}: tenant A sees tenant B's rows");
        assert!(alpha_rows > 0, "{table}: tenant A sees none of its own rows (seed missing?)");
        assert_eq!(all, alpha_rows, "{table}: tenant A sees rows of no tenant or another tenant");
    }
}

#[tokio::test]
async fn runtime_role_cannot_write_into_another_tenant() {
    let db = TestDb::new().await;
    let as_alpha = seed_tenant(&db, "Alpha").await;
    let beta = tenant_of(&seed_tenant(&db, "Beta").await);
    let mut tx = begin(&db.app_pool, &as_alpha).await.unwrap();
    let insert = sqlx::query(
        "INSERT INTO users (id, tenant_id, email, role, password_hash) VALUES ($1, $2, 'x@y.z', 'admin', 'x')",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(beta.as_uuid())
    .execute(&mut *tx)
    .await;
    let error = insert.unwrap_err().to_string();
    assert!(error.contains("row-level security"), "{error}");
    tx.rollback().await.unwrap();

    // Updating B's rows from A's context touches nothing.
    let mut tx = begin(&db.app_pool, &as_alpha).await.unwrap();
    let updated = sqlx::query("UPDATE users SET disabled_at = now() WHERE tenant_id = $1")
        .bind(beta.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn context_does_not_leak_to_the_next_user_of_a_pooled_connection() {
    let db = TestDb::new().await;
    let as_alpha = seed_tenant(&db, "Alpha").await;
    // A one-connection pool guarantees the second query reuses the first one's connection.
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&db.app_url).await.unwrap();
    assert_eq!(count(&pool, &as_alpha, "SELECT count(*) FROM users").await, 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0, "tenant context survived the transaction");
}

#[tokio::test]
async fn the_runtime_role_is_safe_and_the_owner_is_not() {
    let db = TestDb::new().await;
    assert_eq!(store_postgres::verify_runtime_role(&db.app_pool).await.unwrap(), vec![]);
    let owner_problems = store_postgres::verify_runtime_role(&db.owner_pool).await.unwrap();
    assert!(
        owner_problems.iter().any(|p| matches!(p, store_postgres::RoleProblem::OwnsTables(_, _))),
        "{owner_problems:?}"
    );
}

#[tokio::test]
async fn runtime_role_cannot_disable_rls_or_change_the_schema() {
    let db = TestDb::new().await;
    for statement in [
        "ALTER TABLE users DISABLE ROW LEVEL SECURITY",
        "DROP POLICY users_admin ON users",
        "CREATE TABLE sneaky (id int)",
    ] {
        let error = sqlx::query(AssertSqlSafe(statement)).execute(&db.app_pool).await.unwrap_err().to_string();
        assert!(error.contains("must be owner") || error.contains("permission denied"), "{statement}: {error}");
    }
}

#[tokio::test]
async fn serve_refuses_to_run_as_a_role_that_bypasses_rls() {
    let db = TestDb::new().await;
    // The owner role owns the tables: it could switch RLS off, so the server must not use it.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_praxis"))
        .arg("serve")
        .env_clear()
        .env("PRAXIS__DATABASE__URL", &db.owner_url)
        .env("PRAXIS__REDIS__URL", testkit::redis_url())
        .env("PRAXIS__SERVER__BIND", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "serve started as the owner role");
    assert!(stderr.contains("database role is unsafe") && stderr.contains("owns"), "{stderr}");
}

#[tokio::test]
async fn operators_may_list_practices_but_see_no_tenant_rows() {
    let db = TestDb::new().await;
    seed_tenant(&db, "Alpha").await;
    seed_tenant(&db, "Beta").await;
    // The owner (maintenance commands) lists practices...
    let practices: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&db.owner_pool).await.unwrap();
    assert_eq!(practices, 2);
    // ...but the owner, too, is bound by FORCEd RLS everywhere else.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db.owner_pool).await.unwrap();
    assert_eq!(users, 0);
    // The runtime role cannot list practices.
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&db.app_pool).await.unwrap();
    assert_eq!(visible, 0);
}

/// The SQLSTATE and constraint of a statement run as `context` (rolled back), or `None` when it
/// succeeded.
async fn refusal(pool: &PgPool, context: &DbContext, sql: &str, ids: &[uuid::Uuid]) -> Option<(String, String)> {
    let mut tx = begin(pool, context).await.unwrap();
    let mut query = sqlx::query(AssertSqlSafe(sql.to_owned()));
    for id in ids {
        query = query.bind(*id);
    }
    let outcome = query.execute(&mut *tx).await;
    tx.rollback().await.ok();
    match outcome {
        Ok(_) => None,
        Err(sqlx::Error::Database(db)) => {
            Some((db.code().unwrap_or_default().into_owned(), db.constraint().unwrap_or_default().to_owned()))
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// References between practice-owned rows stay inside the practice, by construction: under A's
/// context the runtime role cannot book B's patient with B's therapist, nor assign B's therapist
/// to A's patient; and the refusal is the same as for an id that exists nowhere, so it tells
/// nothing about other practices.
#[tokio::test]
async fn references_cannot_cross_practices_nor_reveal_another_practices_ids() {
    let db = TestDb::new().await;
    let a = seed_tenant(&db, "Alpha").await;
    let b = seed_tenant(&db, "Beta").await;
    let first_patient = |context: DbContext| {
        let pool = db.app_pool.clone();
        async move {
            let mut tx = begin(&pool, &context).await.unwrap();
            let id: uuid::Uuid =
                sqlx::query_scalar("SELECT id FROM patients LIMIT 1").fetch_one(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            id
        }
    };
    let a_patient = first_patient(a.clone()).await;
    let b_patient = first_patient(b.clone()).await;
    let a_therapist = *a.user.unwrap().as_uuid();
    let b_therapist = *b.user.unwrap().as_uuid();
    let nowhere = uuid::Uuid::now_v7();

    let book = "INSERT INTO appointments (id, tenant_id, patient_id, therapist_id, starts_at, ends_at, kind, status, \
                created_at, updated_at) VALUES (gen_random_uuid(), current_tenant_id(), $1, $2, now() + interval '1 day', \
                now() + interval '1 day 1 hour', 'therapy_session', 'scheduled', now(), now())";
    // The practice's own patient and therapist: accepted (the statement itself is valid).
    assert_eq!(refusal(&db.app_pool, &a, book, &[a_patient, a_therapist]).await, None);
    let cross_patient = refusal(&db.app_pool, &a, book, &[b_patient, a_therapist]).await;
    let cross_therapist = refusal(&db.app_pool, &a, book, &[a_patient, b_therapist]).await;
    assert_eq!(cross_patient, Some(("23503".into(), "appointments_patient_fk".into())));
    assert_eq!(cross_therapist, Some(("23503".into(), "appointments_therapist_fk".into())));
    // Exactly what an id that exists in no practice gets: no oracle.
    assert_eq!(refusal(&db.app_pool, &a, book, &[nowhere, a_therapist]).await, cross_patient);
    assert_eq!(refusal(&db.app_pool, &a, book, &[a_patient, nowhere]).await, cross_therapist);

    let assign = "UPDATE patients SET assigned_therapist_id = $2 WHERE id = $1";
    assert_eq!(refusal(&db.app_pool, &a, assign, &[a_patient, a_therapist]).await, None);
    let cross = refusal(&db.app_pool, &a, assign, &[a_patient, b_therapist]).await;
    assert_eq!(cross, Some(("23503".into(), "patients_assigned_therapist_fk".into())));
    assert_eq!(refusal(&db.app_pool, &a, assign, &[a_patient, nowhere]).await, cross);

    // The other references too: a session, a working-hours row and a consent of A naming B's rows.
    let session = "INSERT INTO sessions (id, tenant_id, user_id, role, token_hash, created_at, last_seen_at, expires_at) \
                   VALUES (gen_random_uuid(), current_tenant_id(), $1, 'admin', sha256(gen_random_uuid()::text::bytea), \
                   now(), now(), now() + interval '1 hour')";
    assert_eq!(refusal(&db.app_pool, &a, session, &[b_therapist]).await.map(|r| r.0), Some("23503".into()));
    let hours = "INSERT INTO working_hours (tenant_id, therapist_id, time_zone, ranges, updated_at) \
                 VALUES (current_tenant_id(), $1, 'Europe/Berlin', '[]', now())";
    assert_eq!(refusal(&db.app_pool, &a, hours, &[b_therapist]).await.map(|r| r.0), Some("23503".into()));
}

/// The workers' cross-practice scans (`audit_practices_to_seal()`, `reminders_due_practices()`,
/// and the start-up check's `kms_probe_keys()`) answer only in the workers' scan context: a request of any practice, or a transaction with no
/// context, is refused, so a bug or an injection on the request path cannot list other
/// practices' ids. The scan context itself sees no rows anywhere, even with the scan settings
/// switched on by hand.
#[tokio::test]
async fn only_the_workers_scan_context_may_list_practices_with_due_work() {
    let db = TestDb::new().await;
    let as_alpha = seed_tenant(&db, "Alpha").await;
    let as_beta = seed_tenant(&db, "Beta").await;
    let beta = tenant_of(&as_beta);
    // One unsealed entry of Beta's: Beta has work for the sealer.
    let mut tx = begin(&db.app_pool, &as_beta).await.unwrap();
    let actor = kernel::Actor::User { tenant: beta, user: as_beta.user.unwrap(), role: Role::Admin };
    let event = audit::AuditEvent::new(beta, actor, audit::Action::UserCreate, "user", &kernel::SystemClock)
        .with_resource_id(UserId::new().to_string());
    store_postgres::audit::append(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();

    // kms_probe_keys() (the start-up check's newest stored keys) takes no limit of its own.
    for context in [as_alpha.clone(), DbContext::anonymous(), DbContext::service(beta)] {
        let refused = refusal(&db.app_pool, &context, "SELECT * FROM kms_probe_keys()", &[]).await;
        assert_eq!(refused.map(|(code, _)| code).as_deref(), Some("42501"), "kms_probe_keys() as {context:?}");
    }
    assert_eq!(refusal(&db.app_pool, &DbContext::practice_scan(), "SELECT * FROM kms_probe_keys()", &[]).await, None);
    let scans = ["SELECT * FROM audit_practices_to_seal(10)", "SELECT * FROM reminders_due_practices(now(), 10)"];
    for scan in scans {
        for context in [as_alpha.clone(), as_beta.clone(), DbContext::anonymous(), DbContext::service(beta)] {
            let refused = refusal(&db.app_pool, &context, scan, &[]).await;
            assert_eq!(refused.map(|(code, _)| code).as_deref(), Some("42501"), "{scan} as {context:?}");
        }
        // Outside any transaction that set a context, too.
        let error = sqlx::query(scan).execute(&db.app_pool).await.unwrap_err().to_string();
        assert!(error.contains("scan context only"), "{error}");
        // A limit beyond the bound is refused, in the right context as well.
        let too_many = scan.replace("10)", "1001)");
        let refused = refusal(&db.app_pool, &DbContext::practice_scan(), &too_many, &[]).await;
        assert_eq!(refused.map(|(code, _)| code).as_deref(), Some("22023"), "{too_many}");
    }

    // The scan context gets the ids, and only the ids of practices with due work.
    let mut tx = begin(&db.app_pool, &DbContext::practice_scan()).await.unwrap();
    let to_seal: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT audit_practices_to_seal(10)").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(to_seal, [*beta.as_uuid()]);
    tx.rollback().await.unwrap();

    // Switching the functions' scan settings on by hand opens nothing to the runtime role.
    for table in tenant_scoped_tables(&db.app_pool).await.into_iter().map(|(table, _)| table) {
        let mut tx = begin(&db.app_pool, &DbContext::practice_scan()).await.unwrap();
        sqlx::query(
            "SELECT set_config('praxis.audit_seal_scan', 'on', true), \
                    set_config('praxis.reminder_due_scan', 'on', true)",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(n, 0, "{table} is readable in the scan context");
    }
}

/// The patient read that is one statement (`patients::get_in_one_statement`, the function
/// `patient_read()`), as the runtime role: it sees a patient exactly when a transaction begun with
/// the same context would, nothing of another practice whatever ids it is given, and it leaves no
/// context behind, neither on the pooled connection after it nor in a caller's transaction.
#[tokio::test]
async fn the_one_statement_patient_read_sees_what_its_context_may_and_leaves_no_context() {
    use store_postgres::patients::get_in_one_statement;

    let db = TestDb::new().await;
    let as_alpha = seed_tenant(&db, "Alpha").await;
    let as_beta = seed_tenant(&db, "Beta").await;
    let (alpha, beta) = (tenant_of(&as_alpha), tenant_of(&as_beta));
    let patient_of = |context: DbContext| {
        let pool = db.app_pool.clone();
        async move {
            let mut tx = begin(&pool, &context).await.unwrap();
            let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM patients").fetch_one(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            kernel::PatientId::from_uuid(id)
        }
    };
    let (alpha_patient, beta_patient) = (patient_of(as_alpha.clone()).await, patient_of(as_beta.clone()).await);

    // One connection, so every read below and the checks after it run on the same one.
    let options = store_postgres::PoolOptions { max_connections: 1, ..store_postgres::PoolOptions::default() };
    let pool = store_postgres::connect(&db.app_url, &options).await.unwrap();
    // The server's own lock timeout, which the function must give back (it sets the configured
    // statement timeout while it reads).
    let server_lock_timeout: String =
        sqlx::query_scalar("SELECT current_setting('lock_timeout')").fetch_one(&pool).await.unwrap();
    let read = get_in_one_statement(&pool, &as_alpha, alpha, alpha_patient).await.unwrap().expect("its own patient");
    assert_eq!((read.id, read.tenant), (alpha_patient, alpha));
    assert!(read.fields.contains_key(&patients::PatientField::Name));

    // Another practice's patient, named with either practice's id: nothing.
    for (tenant, patient) in [(beta, beta_patient), (alpha, beta_patient)] {
        assert!(get_in_one_statement(&pool, &as_alpha, tenant, patient).await.unwrap().is_none());
    }
    // Weaker contexts of the right practice: no identity, a therapist the patient is not assigned
    // to, a bare practice context, another practice's service.
    for context in [
        DbContext::anonymous(),
        DbContext::user(alpha, UserId::new(), Role::Therapist),
        DbContext::tenant(alpha),
        DbContext::service(beta),
    ] {
        assert!(
            get_in_one_statement(&pool, &context, alpha, alpha_patient).await.unwrap().is_none(),
            "{context:?} must not see the patient"
        );
    }
    // A service of the practice (an API key) may.
    assert!(get_in_one_statement(&pool, &DbContext::service(alpha), alpha, alpha_patient).await.unwrap().is_some());

    // Nothing is left on the connection: no identity, the server's lock timeout.
    let (tenant_after, lock_timeout): (Option<String>, String) =
        sqlx::query_as("SELECT nullif(current_setting('app.tenant_id', true), ''), current_setting('lock_timeout')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((tenant_after, lock_timeout), (None, server_lock_timeout.clone()));

    // Called inside a transaction of another context (here one whose every setting is set), the
    // function reads under the context it was given and gives the caller's back, all of it.
    let caller = DbContext { token_hash: Some([0xab; 32]), login_email: Some("x@beta.test".into()), ..as_beta.clone() };
    let mut tx = begin(&pool, &caller).await.unwrap();
    let found: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM patient_read('1s', $1, $2, 'admin', '', '', $1::uuid, $3)")
            .bind(alpha.to_string())
            .bind(as_alpha.user.unwrap().to_string())
            .bind(alpha_patient.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .unwrap();
    assert_eq!(found, Some(*alpha_patient.as_uuid()));
    let now: (String, String, String, String, String, String, i64) = sqlx::query_as(
        "SELECT current_setting('app.tenant_id'), current_setting('app.user_id'), current_setting('app.role'), \
                current_setting('app.token_hash'), current_setting('app.login_email'), \
                current_setting('lock_timeout'), (SELECT count(*) FROM patients)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let expected = (
        beta.to_string(),
        as_beta.user.unwrap().to_string(),
        "admin".to_owned(),
        "ab".repeat(32),
        "x@beta.test".to_owned(),
        server_lock_timeout,
        1,
    );
    assert_eq!(now, expected);
    tx.rollback().await.unwrap();
}
