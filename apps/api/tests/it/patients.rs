//! Patients over HTTP: roles and data minimisation, blind-index search, validation, consent,
//! export and erasure by crypto-shredding; plus what the database itself holds (no personal
//! value in clear) and what the runtime role sees with one user's settings.

use crate::identity::{PASSWORD, Practice, bearer, create_practice, fast_hashing, login};
use crate::support::{TestApp, assert_problem};
use kernel::{PatientId, Role, TenantId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use store_postgres::{DbContext, begin};

async fn start() -> TestApp {
    TestApp::start_with(fast_hashing, api::server::no_extra_routes).await
}

/// A practice with an admin, two therapists and a receptionist, each logged in (Bearer).
struct Staff {
    practice: Practice,
    admin: Value,
    therapist_a: Value,
    therapist_a_id: String,
    therapist_b: Value,
    receptionist: Value,
}

async fn create_user(app: &TestApp, admin: &Value, email: &str, role: &str) -> String {
    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .header("authorization", bearer(admin))
        .json(&json!({ "email": email, "role": role, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn staff(app: &TestApp, name: &str) -> Staff {
    let practice = create_practice(app, name).await;
    let admin = login(app, practice.tenant, &practice.admin_email).await;
    let domain = format!("{}.test", name.to_lowercase());
    let therapist_a_id = create_user(app, &admin, &format!("ta@{domain}"), "therapist").await;
    create_user(app, &admin, &format!("tb@{domain}"), "therapist").await;
    create_user(app, &admin, &format!("rc@{domain}"), "receptionist").await;
    Staff {
        therapist_a: login(app, practice.tenant, &format!("ta@{domain}")).await,
        therapist_b: login(app, practice.tenant, &format!("tb@{domain}")).await,
        receptionist: login(app, practice.tenant, &format!("rc@{domain}")).await,
        therapist_a_id,
        admin,
        practice,
    }
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    who: &Value,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).header("authorization", bearer(who));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, who: &Value, body: Value) -> reqwest::Response {
    send(app, reqwest::Method::POST, path, who, Some(body)).await
}

async fn get(app: &TestApp, path: &str, who: &Value) -> reqwest::Response {
    send(app, reqwest::Method::GET, path, who, None).await
}

async fn patch(app: &TestApp, path: &str, who: &Value, body: Value) -> reqwest::Response {
    send(app, reqwest::Method::PATCH, path, who, Some(body)).await
}

/// Personal values that must never appear in clear in the database.
const NAME: &str = "Henriette Quastbeck";
const EMAIL: &str = "henriette.quastbeck@example.org";
const PHONE: &str = "+4915198765432";
const BIRTH: &str = "1984-07-19";
const ADDRESS: &str = "Zwirnerstrasse 17, 50678 Koeln";
const NOTES: &str = "Intake: recurring insomnia since spring";

fn full_patient(therapist: &str) -> Value {
    json!({
        "name": NAME, "email": EMAIL, "phone": PHONE, "date_of_birth": BIRTH, "address": ADDRESS,
        "clinical_notes": NOTES, "assigned_therapist_id": therapist,
    })
}

async fn create_patient(app: &TestApp, who: &Value, body: Value) -> Value {
    let response = post(app, "/api/v1/patients", who, body).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
    response.json().await.unwrap()
}

async fn json_of(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    response.json().await.unwrap()
}

#[actix_web::test]
async fn roles_see_what_they_may_and_nothing_else() {
    let app = start().await;
    let s = staff(&app, "Minimal").await;
    let created = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["clinical_notes"], NOTES);
    let path = format!("/api/v1/patients/{id}");

    // The assigned therapist sees everything; another therapist gets 404, as for no record.
    let seen = json_of(get(&app, &path, &s.therapist_a).await, StatusCode::OK).await;
    assert_eq!((seen["name"].as_str(), seen["clinical_notes"].as_str()), (Some(NAME), Some(NOTES)));
    assert_eq!(seen["date_of_birth"], BIRTH);
    assert_problem(get(&app, &path, &s.therapist_b).await, 404, "urn:praxis:problem:not-found").await;
    let missing = format!("/api/v1/patients/{}", uuid::Uuid::now_v7());
    assert_problem(get(&app, &missing, &s.therapist_b).await, 404, "urn:praxis:problem:not-found").await;

    // The receptionist gets contact data and never the clinical notes.
    let front_desk = json_of(get(&app, &path, &s.receptionist).await, StatusCode::OK).await;
    assert_eq!(front_desk["email"], EMAIL);
    assert!(front_desk.get("clinical_notes").is_none(), "{front_desk}");
    // ... and may create patients, but not with clinical notes (403), nor assign non-therapists.
    let with_notes = json!({ "name": "Other Person", "clinical_notes": "x" });
    assert_problem(
        post(&app, "/api/v1/patients", &s.receptionist, with_notes).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    let bad_assignment = json!({ "name": "Other Person", "assigned_therapist_id": s.practice.admin });
    let problem = assert_problem(
        post(&app, "/api/v1/patients", &s.receptionist, bad_assignment).await,
        400,
        "urn:praxis:problem:validation-failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "assigned_therapist_id");
    // Therapists cannot create patients or reassign them.
    assert_problem(
        post(&app, "/api/v1/patients", &s.therapist_a, json!({ "name": "X Y" })).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    let reassign = json!({ "assigned_therapist_id": null });
    assert_problem(patch(&app, &path, &s.therapist_a, reassign).await, 403, "urn:praxis:problem:forbidden").await;
    // A therapist may update clinical notes of an assigned patient; a receptionist may not.
    let updated =
        json_of(patch(&app, &path, &s.therapist_a, json!({ "clinical_notes": "Week 2" })).await, StatusCode::OK).await;
    assert_eq!(updated["clinical_notes"], "Week 2");
    assert_problem(
        patch(&app, &path, &s.receptionist, json!({ "clinical_notes": "x" })).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;

    // A therapist's listing holds only their patients.
    create_patient(&app, &s.receptionist, json!({ "name": "Unassigned Person" })).await;
    let mine = json_of(get(&app, "/api/v1/patients", &s.therapist_a).await, StatusCode::OK).await;
    assert_eq!(mine["patients"].as_array().unwrap().len(), 1);
    let none = json_of(get(&app, "/api/v1/patients", &s.therapist_b).await, StatusCode::OK).await;
    assert!(none["patients"].as_array().unwrap().is_empty());

    // Another practice's admin sees nothing of this one.
    let other = staff(&app, "Elsewhere").await;
    assert_problem(get(&app, &path, &other.admin).await, 404, "urn:praxis:problem:not-found").await;
    let listed = json_of(get(&app, "/api/v1/patients", &other.admin).await, StatusCode::OK).await;
    assert!(listed["patients"].as_array().unwrap().is_empty());

    // Every read was audited: who read whom.
    let reads = json_of(
        get(&app, &format!("/api/v1/audit?action=patient.read&resource_id={id}"), &s.admin).await,
        StatusCode::OK,
    )
    .await;
    let readers: Vec<&str> =
        reads["entries"].as_array().unwrap().iter().map(|e| e["actor"]["role"].as_str().unwrap()).collect();
    assert!(readers.contains(&"therapist") && readers.contains(&"receptionist"), "{readers:?}");
    app.stop().await;
}

#[actix_web::test]
async fn search_by_email_and_phone_uses_the_blind_index_and_pages_are_bounded() {
    let app = start().await;
    let s = staff(&app, "Search").await;
    let created = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    for n in 0..3 {
        create_patient(&app, &s.admin, json!({ "name": format!("Patient {n}"), "email": format!("p{n}@example.org") }))
            .await;
    }
    let by_email = json_of(
        get(&app, "/api/v1/patients?email=HENRIETTE.Quastbeck@Example.org", &s.receptionist).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_email["patients"].as_array().unwrap().len(), 1);
    assert_eq!(by_email["patients"][0]["id"], created["id"]);
    let by_phone =
        json_of(get(&app, &format!("/api/v1/patients?phone=%2B{}", &PHONE[1..]), &s.admin).await, StatusCode::OK).await;
    assert_eq!(by_phone["patients"][0]["id"], created["id"]);
    let nobody = json_of(get(&app, "/api/v1/patients?email=nobody@example.org", &s.admin).await, StatusCode::OK).await;
    assert!(nobody["patients"].as_array().unwrap().is_empty());

    // Cursor pagination walks every patient exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/patients?limit=3&cursor={c}"),
            None => "/api/v1/patients?limit=3".to_owned(),
        };
        let page = json_of(get(&app, &path, &s.admin).await, StatusCode::OK).await;
        crate::contract::assert_conforms(&page, "PatientPage");
        seen.extend(page["patients"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    seen.dedup();
    assert_eq!(seen.len(), 4);

    for bad in [
        "/api/v1/patients?limit=0",
        "/api/v1/patients?limit=101",
        "/api/v1/patients?phone=0151",
        "/api/v1/patients?sort=name",
        "/api/v1/patients?cursor=not-a-cursor",
    ] {
        let response = get(&app, bad, &s.admin).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let app = start().await;
    let s = staff(&app, "Strict").await;
    let cases = [
        (json!({ "name": "" }), "name"),
        (json!({ "name": "A B", "email": "not-an-email" }), "email"),
        (json!({ "name": "A B", "phone": "0151 1234567" }), "phone"),
        (json!({ "name": "A B", "date_of_birth": "2999-01-01" }), "date_of_birth"),
        (json!({ "name": "A B", "date_of_birth": "19.07.1984" }), "date_of_birth"),
        (json!({ "name": "A B", "address": "x".repeat(501) }), "address"),
        (json!({ "name": "x".repeat(201) }), "name"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(
            post(&app, "/api/v1/patients", &s.admin, body.clone()).await,
            400,
            "urn:praxis:problem:validation-failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    // Unknown fields and wrong types are refused naming the field.
    let problem = assert_problem(
        post(&app, "/api/v1/patients", &s.admin, json!({ "name": "A B", "ssn": "123" })).await,
        400,
        "urn:praxis:problem:validation-failed",
    )
    .await;
    assert_eq!(problem["errors"], json!([{ "field": "ssn", "message": "is not a field of this body" }]));
    let problem = assert_problem(
        post(&app, "/api/v1/patients", &s.admin, json!({ "name": 7 })).await,
        400,
        "urn:praxis:problem:validation-failed",
    )
    .await;
    assert_eq!(problem["errors"], json!([{ "field": "name", "message": "must be a string" }]));
    let created = create_patient(&app, &s.admin, json!({ "name": "Valid Person", "email": "v@example.org" })).await;
    let path = format!("/api/v1/patients/{}", created["id"].as_str().unwrap());
    for (body, field) in
        [(json!({}), "body"), (json!({ "name": null }), "name"), (json!({ "phone": "12345" }), "phone")]
    {
        let problem =
            assert_problem(patch(&app, &path, &s.admin, body).await, 400, "urn:praxis:problem:validation-failed").await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    assert_problem(get(&app, "/api/v1/patients/not-a-uuid", &s.admin).await, 404, "urn:praxis:problem:not-found").await;

    // Only the one valid patient exists, with its key; nothing half-written.
    let raw = app.db.superuser_pool().await;
    let patients: i64 = sqlx::query_scalar("SELECT count(*) FROM patients").fetch_one(&raw).await.unwrap();
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM patient_keys").fetch_one(&raw).await.unwrap();
    assert_eq!((patients, keys), (1, 1));
    // A merge patch: null clears a field, absent leaves it.
    let cleared = json_of(patch(&app, &path, &s.admin, json!({ "email": null })).await, StatusCode::OK).await;
    assert_eq!(cleared["email"], Value::Null);
    assert_eq!(cleared["name"], "Valid Person");
    app.stop().await;
}

#[actix_web::test]
async fn the_database_holds_no_personal_value_in_clear() {
    let app = start().await;
    let s = staff(&app, "Cipher").await;
    let created = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let path = format!("/api/v1/patients/{}", created["id"].as_str().unwrap());
    let grant = json!({ "purpose": "marketing_email", "action": "grant", "text_version": "m-1",
                        "text": "I agree to newsletters.", "channel": "web" });
    assert_eq!(post(&app, &format!("{path}/consents"), &s.admin, grant).await.status(), StatusCode::CREATED);
    get(&app, &path, &s.therapist_a).await;
    // Every row of every table, as text, read as the superuser (no RLS: what a stolen backup
    // shows): none of the values, and no lower-cased or digits-only variants either.
    let raw = app.db.superuser_pool().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    let mut dump = String::new();
    for table in &tables {
        let rows: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT row_to_json(t)::text FROM {table} t")))
                .fetch_all(&raw)
                .await
                .unwrap();
        dump.push_str(&rows.join("\n"));
    }
    assert!(dump.contains(created["id"].as_str().unwrap()), "the dump covers the patient's rows");
    for value in [NAME, "Quastbeck", EMAIL, "henriette", &PHONE[1..], "98765432", BIRTH, "Zwirnerstrasse", "insomnia"] {
        assert!(!dump.to_lowercase().contains(&value.to_lowercase()), "{value} is in clear in the database");
    }
    app.stop().await;
}

/// No patient data leaves the server before its `patient.read` entry is committed: when the
/// database refuses the entries (a trigger the owner adds, refusing nothing else), a read and a
/// listing are answered with a problem and none of the data, and the trail holds no entry for
/// them. Before the refusal, the same requests succeed.
#[actix_web::test]
async fn a_read_whose_audit_entry_is_refused_answers_no_data() {
    let app = start().await;
    let s = staff(&app, "Unrecorded").await;
    let created = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let path = format!("/api/v1/patients/{}", created["id"].as_str().unwrap());
    assert_eq!(json_of(get(&app, &path, &s.admin).await, StatusCode::OK).await["name"], NAME);
    let listed = json_of(get(&app, "/api/v1/patients", &s.admin).await, StatusCode::OK).await;
    assert_eq!(listed["patients"][0]["name"], NAME, "the admin may list: the refusal below is the entry's");
    let recorded_before = patient_reads(&app, s.practice.tenant).await;

    sqlx::raw_sql(
        "CREATE FUNCTION refuse_patient_reads() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'patient.read entries refused for this test'; END $$; \
         CREATE TRIGGER refuse_patient_reads BEFORE INSERT ON audit_entries FOR EACH ROW \
         WHEN (NEW.action = 'patient.read') EXECUTE FUNCTION refuse_patient_reads();",
    )
    .execute(&app.db.owner_pool)
    .await
    .unwrap();
    for request in [path.as_str(), "/api/v1/patients"] {
        let response = get(&app, request, &s.admin).await;
        let body = assert_problem(response, 500, "urn:praxis:problem:internal").await;
        let text = body.to_string();
        for value in [NAME, EMAIL, PHONE, NOTES, "Quastbeck"] {
            assert!(!text.contains(value), "{request} answered {value} without its audit entry: {text}");
        }
    }
    assert_eq!(patient_reads(&app, s.practice.tenant).await, recorded_before, "the refused reads left no entry");
    app.stop().await;
}

/// How many `patient.read` entries the practice's trail holds (read as the owner, in the
/// practice's context: the policies hold for the owner too).
async fn patient_reads(app: &TestApp, tenant: TenantId) -> i64 {
    let mut tx = begin(&app.db.owner_pool, &DbContext::operator(tenant)).await.unwrap();
    let count =
        sqlx::query_scalar("SELECT count(*) FROM audit_entries WHERE tenant_id = $1 AND action = 'patient.read'")
            .bind(tenant.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    count
}

#[actix_web::test]
async fn patients_see_only_themselves_and_export_everything_held_on_them() {
    let app = start().await;
    let s = staff(&app, "Portal").await;
    let me = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let other = create_patient(&app, &s.admin, json!({ "name": "Someone Else" })).await;
    let my_id = me["id"].as_str().unwrap();
    // The assigned therapist reads the record before the export (to be found in it).
    get(&app, &format!("/api/v1/patients/{my_id}"), &s.therapist_a).await;
    let grant = json!({ "purpose": "appointment_reminders", "action": "grant", "text_version": "r-1",
                        "text": "Reminders by SMS.", "channel": "paper", "evidence_ref": "scan-0042" });
    assert_eq!(post(&app, &format!("/api/v1/patients/{my_id}/consents"), &s.receptionist, grant).await.status(), 201);

    let account = json!({ "email": "henriette@portal.test", "password": PASSWORD });
    let created = post(&app, &format!("/api/v1/patients/{my_id}/account"), &s.admin, account.clone()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_problem(
        post(&app, &format!("/api/v1/patients/{my_id}/account"), &s.admin, account).await,
        409,
        "urn:praxis:problem:conflict",
    )
    .await;
    let patient = login(&app, s.practice.tenant, "henriette@portal.test").await;

    let own = json_of(get(&app, &format!("/api/v1/patients/{my_id}"), &patient).await, StatusCode::OK).await;
    assert_eq!(own["name"], NAME);
    assert!(own.get("clinical_notes").is_none(), "clinical notes are for clinicians; the export has them");
    let others = format!("/api/v1/patients/{}", other["id"].as_str().unwrap());
    assert_problem(get(&app, &others, &patient).await, 404, "urn:praxis:problem:not-found").await;
    assert_problem(get(&app, &format!("{others}/export"), &patient).await, 404, "urn:praxis:problem:not-found").await;
    let listed = json_of(get(&app, "/api/v1/patients", &patient).await, StatusCode::OK).await;
    assert_eq!(listed["patients"].as_array().unwrap().len(), 1);
    // A patient may update their own contact data, not their notes or therapist.
    let moved = json_of(
        patch(&app, &format!("/api/v1/patients/{my_id}"), &patient, json!({ "address": "New Street 1" })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(moved["address"], "New Street 1");
    assert_problem(
        patch(&app, &format!("/api/v1/patients/{my_id}"), &patient, json!({ "clinical_notes": "x" })).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    // Staff other than admins cannot export.
    assert_problem(
        get(&app, &format!("/api/v1/patients/{my_id}/export"), &s.therapist_a).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;

    let export = json_of(get(&app, &format!("/api/v1/patients/{my_id}/export"), &patient).await, StatusCode::OK).await;
    crate::contract::assert_conforms(&export, "PatientExport");
    assert_eq!(export["format"], "praxis.patient-export.v1");
    assert_eq!(export["patient"]["name"], NAME);
    assert_eq!(export["patient"]["clinical_notes"], NOTES);
    assert_eq!(export["patient"]["address"], "New Street 1");
    assert_eq!(export["consents"][0]["purpose"], "appointment_reminders");
    assert_eq!(export["consents"][0]["state"], "granted");
    assert_eq!(export["consent_history"][0]["evidence_ref"], "scan-0042");
    let audit = export["audit"].as_array().unwrap();
    let therapist_read = audit.iter().any(|e| {
        e["action"] == "patient.read"
            && e["actor"]["role"] == "therapist"
            && e["actor"]["user"] == s.therapist_a_id.as_str()
    });
    assert!(therapist_read, "the export shows who read the record: {audit:?}");
    assert!(audit.iter().any(|e| e["action"] == "consent.granted"));
    app.stop().await;
}

#[actix_web::test]
async fn consent_lifecycle_over_http() {
    let app = start().await;
    let s = staff(&app, "Consent").await;
    let p = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let consents = format!("/api/v1/patients/{}/consents", p["id"].as_str().unwrap());
    let change = |action: &str| {
        json!({ "purpose": "marketing_sms", "action": action, "text_version": "sms-1",
                "text": "Offers by SMS.", "channel": "web" })
    };
    assert_eq!(post(&app, &consents, &s.receptionist, change("request")).await.status(), StatusCode::CREATED);
    let granted = json_of(post(&app, &consents, &s.receptionist, change("grant")).await, StatusCode::CREATED).await;
    assert_eq!(granted["state"], "granted");
    // Marketing needs data processing as well before anyone may contact the patient.
    assert_eq!(granted["active"], false);
    let problem = assert_problem(
        post(&app, &consents, &s.receptionist, change("archive")).await,
        409,
        "urn:praxis:problem:illegal-transition",
    )
    .await;
    let allowed: Vec<&str> = problem["allowed"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(allowed.contains(&"withdraw") && !allowed.contains(&"archive"), "{allowed:?}");
    let withdrawn = json_of(post(&app, &consents, &s.therapist_a, change("withdraw")).await, StatusCode::CREATED).await;
    assert_eq!(withdrawn["state"], "withdrawn");
    assert_problem(
        post(&app, &consents, &s.admin, change("withdraw")).await,
        409,
        "urn:praxis:problem:illegal-transition",
    )
    .await;

    // Bad input names its field.
    for (body, field) in [
        (
            json!({ "purpose": "spam", "action": "grant", "text_version": "v", "text": "t", "channel": "web" }),
            "purpose",
        ),
        (
            json!({ "purpose": "marketing_sms", "action": "grant", "text_version": "v", "text": "t", "channel": "fax" }),
            "channel",
        ),
        (
            json!({ "purpose": "marketing_sms", "action": "grant", "text_version": "v", "text": "t",
                 "text_sha256": "00".repeat(32), "channel": "web" }),
            "text_sha256",
        ),
        (
            json!({ "purpose": "marketing_sms", "action": "grant", "text_version": "v", "text": "t", "channel": "web",
                 "expires_at": "2001-01-01T00:00:00Z" }),
            "expires_at",
        ),
        (
            json!({ "purpose": "marketing_sms", "action": "request", "text_version": "v", "text": "t", "channel": "web",
                 "expires_at": "2999-01-01T00:00:00Z" }),
            "expires_at",
        ),
    ] {
        let problem = assert_problem(
            post(&app, &consents, &s.admin, body.clone()).await,
            400,
            "urn:praxis:problem:validation-failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    // Not visible, not changeable.
    assert_problem(post(&app, &consents, &s.therapist_b, change("grant")).await, 404, "urn:praxis:problem:not-found")
        .await;

    let history = json_of(get(&app, &format!("{consents}/history"), &s.admin).await, StatusCode::OK).await;
    let actions: Vec<&str> = history.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["request", "grant", "withdraw"]);
    assert_eq!(history[1]["text_sha256"].as_str().unwrap().len(), 64);
    let current = json_of(get(&app, &consents, &s.therapist_a).await, StatusCode::OK).await;
    assert_eq!(current[0]["state"], "withdrawn");
    app.stop().await;
}

#[actix_web::test]
async fn erasure_shreds_the_key_so_no_copy_of_the_data_decrypts() {
    let app = start().await;
    let s = staff(&app, "Erasure").await;
    let p = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let id = p["id"].as_str().unwrap();
    let path = format!("/api/v1/patients/{id}");
    let patient_id = PatientId::from_uuid(id.parse().unwrap());

    // Someone copies the encrypted row (a backup of the patients table, a leaked dump).
    let raw = app.db.superuser_pool().await;
    let copied: Vec<u8> = sqlx::query_scalar("SELECT name_enc FROM patients WHERE id = $1")
        .bind(patient_id.as_uuid())
        .fetch_one(&raw)
        .await
        .unwrap();

    // Legal hold: erasure refused until lifted; only admins set it.
    let hold = |on: bool| json!({ "legal_hold": on });
    assert_problem(
        send(&app, reqwest::Method::PUT, &format!("{path}/legal-hold"), &s.receptionist, Some(hold(true))).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    assert_eq!(
        send(&app, reqwest::Method::PUT, &format!("{path}/legal-hold"), &s.admin, Some(hold(true))).await.status(),
        204
    );
    assert_problem(
        send(&app, reqwest::Method::DELETE, &path, &s.admin, None).await,
        409,
        "urn:praxis:problem:legal-hold",
    )
    .await;
    assert_eq!(
        send(&app, reqwest::Method::PUT, &format!("{path}/legal-hold"), &s.admin, Some(hold(false))).await.status(),
        204
    );
    // Only admins erase.
    assert_problem(
        send(&app, reqwest::Method::DELETE, &path, &s.therapist_a, None).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    assert_eq!(send(&app, reqwest::Method::DELETE, &path, &s.admin, None).await.status(), StatusCode::NO_CONTENT);

    // Afterwards every read and export is 410, and erasing again too.
    assert_problem(get(&app, &path, &s.admin).await, 410, "urn:praxis:problem:gone").await;
    assert_problem(get(&app, &format!("{path}/export"), &s.admin).await, 410, "urn:praxis:problem:gone").await;
    assert_problem(get(&app, &format!("{path}/consents"), &s.admin).await, 410, "urn:praxis:problem:gone").await;
    assert_problem(send(&app, reqwest::Method::DELETE, &path, &s.admin, None).await, 410, "urn:praxis:problem:gone")
        .await;
    let listed = json_of(get(&app, "/api/v1/patients", &s.admin).await, StatusCode::OK).await;
    assert!(listed["patients"].as_array().unwrap().is_empty());

    // The tombstone keeps no personal data; the key rows are destroyed.
    let (name, email_index, erased): (Option<Vec<u8>>, Option<Vec<u8>>, bool) =
        sqlx::query_as("SELECT name_enc, email_index, erased_at IS NOT NULL FROM patients WHERE id = $1")
            .bind(patient_id.as_uuid())
            .fetch_one(&raw)
            .await
            .unwrap();
    assert_eq!((name, email_index, erased), (None, None, true));
    let live_keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM patient_keys WHERE patient_id = $1 AND wrapped_dek IS NOT NULL")
            .bind(patient_id.as_uuid())
            .fetch_one(&raw)
            .await
            .unwrap();
    assert_eq!(live_keys, 0);

    // Even with the KMS (this server's own key file), the copied ciphertext cannot be opened:
    // the header names a DEK that no longer exists anywhere.
    let header = crypto::FieldHeader::parse(&copied).unwrap();
    assert_eq!(header.dek().patient, patient_id);
    let tenant = s.practice.tenant;
    let mut tx = begin(&app.db.app_pool, &DbContext::operator(tenant)).await.unwrap();
    let key = store_postgres::keys::get(&mut tx, tenant, patient_id, header.dek().generation).await.unwrap().unwrap();
    tx.rollback().await.unwrap();
    assert!(key.wrapped_dek.is_none() && key.destroyed_at.is_some());
    // Putting the copy back into the tombstone does not bring the data back either.
    sqlx::query("ALTER TABLE patients DISABLE TRIGGER patients_guard_update").execute(&raw).await.unwrap();
    sqlx::query("UPDATE patients SET erased_at = NULL, name_enc = $2 WHERE id = $1")
        .bind(patient_id.as_uuid())
        .bind(&copied)
        .execute(&raw)
        .await
        .unwrap();
    let restored = get(&app, &path, &s.admin).await;
    assert!(restored.status().is_server_error(), "restored ciphertext must not decrypt: {}", restored.status());

    // The erasure itself is audited, without personal data.
    let trail = json_of(
        get(&app, &format!("/api/v1/audit?action=patient.erase&resource_id={id}"), &s.admin).await,
        200u16.try_into().unwrap(),
    )
    .await;
    assert_eq!(trail["entries"].as_array().unwrap().len(), 1);
    app.stop().await;
}

/// The same rules at the database, as the runtime role with one user's settings.
#[actix_web::test]
async fn runtime_role_with_one_users_settings_sees_only_their_patients() {
    let app = start().await;
    let s = staff(&app, "Rows").await;
    let mine = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    create_patient(&app, &s.admin, json!({ "name": "Not Assigned" })).await;
    let tenant: TenantId = s.practice.tenant;
    let therapist = UserId::from_uuid(s.therapist_a_id.parse().unwrap());
    let count = |context: DbContext, sql: &'static str| {
        let pool = app.db.app_pool.clone();
        async move {
            let mut tx = begin(&pool, &context).await.unwrap();
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            n
        }
    };
    let as_therapist = DbContext::user(tenant, therapist, Role::Therapist);
    assert_eq!(count(as_therapist.clone(), "SELECT count(*) FROM patients").await, 1);
    let other = DbContext::user(tenant, UserId::new(), Role::Therapist);
    assert_eq!(count(other, "SELECT count(*) FROM patients").await, 0);
    assert_eq!(
        count(DbContext::user(tenant, UserId::new(), Role::Receptionist), "SELECT count(*) FROM patients").await,
        2
    );
    // A patient role without a linked account sees nobody (the link comes from users, not a setting).
    assert_eq!(count(DbContext::user(tenant, UserId::new(), Role::Patient), "SELECT count(*) FROM patients").await, 0);
    // Consents follow the patients: the other therapist sees none of them.
    let grant = json!({ "purpose": "data_processing", "action": "grant", "text_version": "d-1", "text": "t", "channel": "paper" });
    let consents = format!("/api/v1/patients/{}/consents", mine["id"].as_str().unwrap());
    assert_eq!(post(&app, &consents, &s.admin, grant).await.status(), StatusCode::CREATED);
    assert_eq!(count(as_therapist, "SELECT count(*) FROM consent_events").await, 1);
    assert_eq!(
        count(DbContext::user(tenant, UserId::new(), Role::Therapist), "SELECT count(*) FROM consent_events").await,
        0
    );
    // No context at all: nothing.
    assert_eq!(count(DbContext::anonymous(), "SELECT count(*) FROM patients").await, 0);
    // Nobody deletes patients (erasure tombstones), and consent history is append-only.
    let mut tx = begin(&app.db.app_pool, &DbContext::user(tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let error = sqlx::query("DELETE FROM patients").execute(&mut *tx).await.unwrap_err().to_string();
    assert!(error.contains("permission denied"), "{error}");
    tx.rollback().await.unwrap();
    let raw = app.db.superuser_pool().await;
    let error = sqlx::query("DELETE FROM consent_events").execute(&raw).await.unwrap_err().to_string();
    assert!(error.contains("append-only"), "{error}");
    app.stop().await;
}

#[actix_web::test]
async fn api_keys_read_contact_data_only_within_their_scopes() {
    let app = start().await;
    let s = staff(&app, "Service").await;
    let p = create_patient(&app, &s.admin, full_patient(&s.therapist_a_id)).await;
    let key = |scopes: Value| {
        let app = &app;
        let admin = &s.admin;
        async move {
            let response = post(app, "/api/v1/api-keys", admin, json!({ "name": "crm", "scopes": scopes })).await;
            assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
            let body: Value = response.json().await.unwrap();
            body["api_key"].as_str().unwrap().to_owned()
        }
    };
    let reader = key(json!(["patients:read"])).await;
    let path = format!("/api/v1/patients/{}", p["id"].as_str().unwrap());
    let response = app.client.get(app.url(&path)).header("x-api-key", &reader).send().await.unwrap();
    let body = json_of(response, StatusCode::OK).await;
    assert_eq!(body["email"], EMAIL);
    assert!(body.get("clinical_notes").is_none());
    let response = app
        .client
        .post(app.url("/api/v1/patients"))
        .header("x-api-key", &reader)
        .json(&json!({ "name": "Via Key" }))
        .send()
        .await
        .unwrap();
    assert_problem(response, 403, "urn:praxis:problem:forbidden").await;
    let audit_only = key(json!(["audit:read"])).await;
    let response = app.client.get(app.url(&path)).header("x-api-key", &audit_only).send().await.unwrap();
    assert_problem(response, 403, "urn:praxis:problem:forbidden").await;
    app.stop().await;
}

/// `praxis keys reencrypt`: interrupted after one patient, resumed with the printed cutoff; every
/// patient ends on a new DEK with the same data, the old DEKs are destroyed, nobody is done twice.
#[actix_web::test]
async fn reencrypt_gives_every_patient_a_new_key_and_resumes_without_repeating() {
    let key_file = std::env::temp_dir().join(format!("praxis-reencrypt-{}.key", uuid::Uuid::new_v4().simple()));
    let server_key = key_file.clone();
    let app = TestApp::start_with(
        move |config| {
            fast_hashing(config);
            config.kms.local.key_file = server_key;
        },
        api::server::no_extra_routes,
    )
    .await;
    let s = staff(&app, "Rekey").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = create_patient(
            &app,
            &s.admin,
            json!({ "name": format!("Person {n}"), "clinical_notes": format!("note {n}") }),
        )
        .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let erased = create_patient(&app, &s.admin, json!({ "name": "Gone Already" })).await;
    let erased_path = format!("/api/v1/patients/{}", erased["id"].as_str().unwrap());
    assert_eq!(send(&app, reqwest::Method::DELETE, &erased_path, &s.admin, None).await.status(), 204);
    // Warm the server's DEK cache with generation 1.
    for id in &ids {
        get(&app, &format!("/api/v1/patients/{id}"), &s.admin).await;
    }

    let mut config = api::config::Config::default();
    config.database.url = Some(kernel::Secret::new(app.db.app_url.clone()));
    config.kms.local.key_file = key_file.clone();
    let cutoff = kernel::Clock::now(&kernel::SystemClock);
    let options =
        |limit| api::reencrypt::Options { tenant: Some(s.practice.tenant), batch_size: 2, before: Some(cutoff), limit };
    let first = api::reencrypt::run(&config, options(Some(1))).await.unwrap();
    assert_eq!((first.reencrypted, first.limit_reached), (1, true));
    let rest = api::reencrypt::run(&config, options(None)).await.unwrap();
    assert_eq!((rest.reencrypted, rest.failed), (2, 0), "the resumed run does only what is left");
    let again = api::reencrypt::run(&config, options(None)).await.unwrap();
    assert_eq!(again.reencrypted, 0, "nothing is re-encrypted twice");

    let raw = app.db.superuser_pool().await;
    for (n, id) in ids.iter().enumerate() {
        let seen = json_of(get(&app, &format!("/api/v1/patients/{id}"), &s.admin).await, StatusCode::OK).await;
        assert_eq!(
            (seen["name"].as_str(), seen["clinical_notes"].as_str()),
            (Some(&*format!("Person {n}")), Some(&*format!("note {n}")))
        );
        let uuid: uuid::Uuid = id.parse().unwrap();
        let (generation, name): (i32, Vec<u8>) =
            sqlx::query_as("SELECT dek_generation, name_enc FROM patients WHERE id = $1")
                .bind(uuid)
                .fetch_one(&raw)
                .await
                .unwrap();
        assert_eq!(generation, 2);
        assert_eq!(crypto::FieldHeader::parse(&name).unwrap().dek().generation, 2);
        let old_live: bool = sqlx::query_scalar(
            "SELECT wrapped_dek IS NOT NULL FROM patient_keys WHERE patient_id = $1 AND generation = 1",
        )
        .bind(uuid)
        .fetch_one(&raw)
        .await
        .unwrap();
        assert!(!old_live, "the suspect generation-1 key is destroyed");
    }
    std::fs::remove_file(&key_file).ok();
    app.stop().await;
}
