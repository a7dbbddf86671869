//! Appointments over HTTP: no double booking under concurrency, every bad input and illegal
//! transition as problem+json, roles, working hours and absences, reminders (with a clock the
//! test controls), notes under the patient's key, the payment state.

use crate::identity::{PASSWORD, Practice, bearer, create_practice, login};
use crate::support::{TestApp, assert_problem};
use api::reminders::{Notifier, NotifyError, ReminderMessage, ReminderWorker, WorkerSettings};
use async_trait::async_trait;
use kernel::{Clock, FixedClock, PatientId, Role, SystemClock, TenantId, UserId};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use store_postgres::{DbContext, begin};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const SLOT_TAKEN: &str = "urn:praxis:problem:slot-unavailable";
const INVALID: &str = "urn:praxis:problem:validation-failed";
const ILLEGAL: &str = "urn:praxis:problem:illegal-transition";

async fn start() -> TestApp {
    TestApp::start_with(
        |config| {
            crate::identity::fast_hashing(config);
            // Tests send many requests as one user; the limits have their own tests.
            config.rate_limits.user_per_minute = 1_000_000;
            config.rate_limits.global_per_minute = 1_000_000;
            config.reminders.enabled = false;
        },
        api::server::no_extra_routes,
    )
    .await
}

/// A practice with an admin, two therapists (working every day, all day, UTC), a receptionist,
/// and a patient who has a phone number and a login.
struct Setup {
    practice: Practice,
    admin: Value,
    receptionist: Value,
    therapist_a: Value,
    therapist_a_id: String,
    therapist_b: Value,
    therapist_b_id: String,
    patient_id: String,
    patient: Value,
}

async fn send(app: &TestApp, method: Method, path: &str, who: &Value, body: Option<Value>) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).header("authorization", bearer(who));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn post(app: &TestApp, path: &str, who: &Value, body: Value) -> reqwest::Response {
    send(app, Method::POST, path, who, Some(body)).await
}

async fn get(app: &TestApp, path: &str, who: &Value) -> reqwest::Response {
    send(app, Method::GET, path, who, None).await
}

async fn json_of(response: reqwest::Response, status: StatusCode) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "{body}");
    body
}

async fn create_user(app: &TestApp, admin: &Value, email: &str, role: &str) -> String {
    let body = json!({ "email": email, "role": role, "password": PASSWORD });
    let created = json_of(post(app, "/api/v1/users", admin, body).await, StatusCode::CREATED).await;
    created["id"].as_str().unwrap().to_owned()
}

/// Every day, 00:00 to 23:59 UTC.
fn all_day() -> Value {
    let days = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    json!({
        "time_zone": "UTC",
        "ranges": days.iter().map(|d| json!({ "weekday": d, "start": "00:00", "end": "23:59" })).collect::<Vec<_>>(),
    })
}

async fn set_hours(app: &TestApp, who: &Value, therapist: &str, hours: Value) {
    let path = format!("/api/v1/therapists/{therapist}/working-hours");
    json_of(send(app, Method::PUT, &path, who, Some(hours)).await, StatusCode::OK).await;
}

async fn create_patient(app: &TestApp, who: &Value, body: Value) -> String {
    let created = json_of(post(app, "/api/v1/patients", who, body).await, StatusCode::CREATED).await;
    created["id"].as_str().unwrap().to_owned()
}

async fn setup(app: &TestApp, name: &str) -> Setup {
    let practice = create_practice(app, name).await;
    let admin = login(app, practice.tenant, &practice.admin_email).await;
    let domain = format!("{}.test", name.to_lowercase());
    let therapist_a_id = create_user(app, &admin, &format!("ta@{domain}"), "therapist").await;
    let therapist_b_id = create_user(app, &admin, &format!("tb@{domain}"), "therapist").await;
    create_user(app, &admin, &format!("rc@{domain}"), "receptionist").await;
    set_hours(app, &admin, &therapist_a_id, all_day()).await;
    set_hours(app, &admin, &therapist_b_id, all_day()).await;
    let patient_id = create_patient(
        app,
        &admin,
        json!({ "name": "Ottilie Brennecke", "phone": "+4915112340000", "email": "ottilie@example.org",
                "assigned_therapist_id": therapist_a_id }),
    )
    .await;
    let account = json!({ "email": format!("patient@{domain}"), "password": PASSWORD });
    json_of(post(app, &format!("/api/v1/patients/{patient_id}/account"), &admin, account).await, StatusCode::CREATED)
        .await;
    Setup {
        therapist_a: login(app, practice.tenant, &format!("ta@{domain}")).await,
        therapist_b: login(app, practice.tenant, &format!("tb@{domain}")).await,
        receptionist: login(app, practice.tenant, &format!("rc@{domain}")).await,
        patient: login(app, practice.tenant, &format!("patient@{domain}")).await,
        practice,
        admin,
        therapist_a_id,
        therapist_b_id,
        patient_id,
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// `hour`:00 UTC, `days` days from today.
fn at(days: i64, hour: u8) -> OffsetDateTime {
    let day = (SystemClock.now() + Duration::days(days)).date();
    day.with_hms(hour, 0, 0).unwrap().assume_utc()
}

fn booking(patient: &str, therapist: &str, start: OffsetDateTime, minutes: i64) -> Value {
    json!({ "patient_id": patient, "therapist_id": therapist, "start": rfc3339(start),
            "end": rfc3339(start + Duration::minutes(minutes)), "kind": "therapy_session" })
}

async fn book(app: &TestApp, who: &Value, body: Value) -> Value {
    json_of(post(app, "/api/v1/appointments", who, body).await, StatusCode::CREATED).await
}

#[actix_web::test]
async fn twenty_parallel_bookings_of_overlapping_slots_exactly_one_wins() {
    let app = start().await;
    let s = setup(&app, "Race").await;
    let base = at(5, 10);
    let requests = (0..20i64).map(|i| {
        // Every slot overlaps every other: starts at most 19 minutes apart, each an hour long.
        let body = booking(&s.patient_id, &s.therapist_a_id, base + Duration::minutes(i), 60);
        let (client, url, auth) = (app.client.clone(), app.url("/api/v1/appointments"), bearer(&s.receptionist));
        tokio::spawn(async move { client.post(url).header("authorization", auth).json(&body).send().await.unwrap() })
    });
    let responses: Vec<reqwest::Response> =
        futures_util::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            201 => winners.push(response.json::<Value>().await.unwrap()),
            _ => losers.push(assert_problem(response, 409, SLOT_TAKEN).await),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one booking wins");
    assert_eq!(losers.len(), 19);
    let winner = &winners[0];
    for problem in &losers {
        assert_eq!(problem["reason"], "slot_taken", "{problem}");
        // The loser learns which slot is taken (staff may know it).
        assert_eq!(problem["conflicting_slot"]["start"], winner["start"], "{problem}");
        assert_eq!(problem["conflicting_slot"]["end"], winner["end"], "{problem}");
    }
    let mut tx =
        begin(&app.db.app_pool, &DbContext::user(s.practice.tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM appointments WHERE status IN ('scheduled', 'confirmed')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(active, 1);
    // Back to back is not an overlap; another therapist is not blocked.
    let winner_end = OffsetDateTime::parse(winner["end"].as_str().unwrap(), &Rfc3339).unwrap();
    book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, winner_end, 30)).await;
    book(&app, &s.admin, booking(&s.patient_id, &s.therapist_b_id, base, 60)).await;
    app.stop().await;
}

#[actix_web::test]
async fn every_bad_input_is_refused_naming_the_problem() {
    let app = start().await;
    let s = setup(&app, "Strict").await;
    let (p, t) = (s.patient_id.as_str(), s.therapist_a_id.as_str());
    let start = at(3, 9);
    let with = |changes: Value| {
        let mut body = booking(p, t, start, 50);
        for (key, value) in changes.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let cases = [
        (with(json!({ "start": "tomorrow at nine" })), "start"),
        (with(json!({ "end": "2026-13-01T00:00:00Z" })), "end"),
        (with(json!({ "end": rfc3339(start - Duration::minutes(30)) })), "end"),
        (with(json!({ "end": rfc3339(start) })), "end"),
        (with(json!({ "start": rfc3339(start + Duration::seconds(30)) })), "start"),
        (with(json!({ "end": rfc3339(start + Duration::minutes(4)) })), "end"),
        (with(json!({ "end": rfc3339(start + Duration::hours(9)) })), "end"),
        (with(json!({ "start": rfc3339(at(-1, 9)), "end": rfc3339(at(-1, 10)) })), "start"),
        (with(json!({ "start": rfc3339(at(400, 9)), "end": rfc3339(at(400, 10)) })), "start"),
        (with(json!({ "kind": "massage" })), "kind"),
        (with(json!({ "notes": "x".repeat(2001) })), "notes"),
        (with(json!({ "notes": "bell\u{7}" })), "notes"),
    ];
    for (body, field) in cases {
        let problem =
            assert_problem(post(&app, "/api/v1/appointments", &s.admin, body.clone()).await, 400, INVALID).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} -> {problem}");
        assert!(!problem["errors"][0]["message"].as_str().unwrap().is_empty());
    }
    // Bodies that do not fit the request's shape name the field in `errors[]`.
    for (body, named) in [
        (with(json!({ "room": "3" })), "room"),
        (with(json!({ "payment_state": "paid" })), "payment_state"),
        (json!({ "patient_id": p, "therapist_id": t, "kind": "follow_up" }), "start"),
    ] {
        let problem = assert_problem(
            post(&app, "/api/v1/appointments", &s.admin, body).await,
            400,
            "urn:praxis:problem:validation-failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], named, "{problem}");
    }
    // Unknown patient or therapist (or a non-therapist): 404.
    assert_problem(
        post(&app, "/api/v1/appointments", &s.admin, with(json!({ "patient_id": Uuid::now_v7() }))).await,
        404,
        "urn:praxis:problem:not-found",
    )
    .await;
    for therapist in [Uuid::now_v7().to_string(), s.practice.admin.to_string()] {
        let body = with(json!({ "therapist_id": therapist }));
        assert_problem(post(&app, "/api/v1/appointments", &s.admin, body).await, 404, "urn:praxis:problem:not-found")
            .await;
    }

    // The calendar: no hours, outside hours, during an absence.
    let newcomer = create_user(&app, &s.admin, "new@strict.test", "therapist").await;
    let problem = assert_problem(
        post(&app, "/api/v1/appointments", &s.admin, booking(p, &newcomer, start, 50)).await,
        409,
        SLOT_TAKEN,
    )
    .await;
    assert_eq!(problem["reason"], "no_working_hours");
    let mornings = json!({ "time_zone": "Europe/Berlin", "ranges": [
        { "weekday": "monday", "start": "08:00", "end": "12:00" }, { "weekday": "tuesday", "start": "08:00", "end": "12:00" },
        { "weekday": "wednesday", "start": "08:00", "end": "12:00" }, { "weekday": "thursday", "start": "08:00", "end": "12:00" },
        { "weekday": "friday", "start": "08:00", "end": "12:00" }, { "weekday": "saturday", "start": "08:00", "end": "12:00" },
        { "weekday": "sunday", "start": "08:00", "end": "12:00" } ] });
    set_hours(&app, &s.admin, &newcomer, mornings).await;
    let evening = booking(p, &newcomer, at(3, 18), 50);
    let problem = assert_problem(post(&app, "/api/v1/appointments", &s.admin, evening).await, 409, SLOT_TAKEN).await;
    assert_eq!(problem["reason"], "outside_working_hours");
    // 12:00 Berlin is 10:00 or 11:00 UTC: an hour from 10:30 UTC runs past it either way.
    let past_noon = booking(p, &newcomer, at(3, 10) + Duration::minutes(30), 60);
    let problem = assert_problem(post(&app, "/api/v1/appointments", &s.admin, past_noon).await, 409, SLOT_TAKEN).await;
    assert_eq!(problem["reason"], "outside_working_hours");
    let away = json!({ "start": rfc3339(at(3, 0)), "end": rfc3339(at(4, 0)) });
    json_of(post(&app, &format!("/api/v1/therapists/{t}/absences"), &s.admin, away).await, StatusCode::CREATED).await;
    let problem =
        assert_problem(post(&app, "/api/v1/appointments", &s.admin, with(json!({}))).await, 409, SLOT_TAKEN).await;
    assert_eq!(problem["reason"], "therapist_absent");
    assert_eq!(problem["conflicting_slot"]["start"], rfc3339(at(3, 0)));

    // Working hours and absences are checked too.
    let hours = format!("/api/v1/therapists/{t}/working-hours");
    for (body, field) in [
        (json!({ "time_zone": "Mars/Olympus", "ranges": [] }), "time_zone"),
        (
            json!({ "time_zone": "UTC", "ranges": [{ "weekday": "funday", "start": "09:00", "end": "10:00" }] }),
            "ranges",
        ),
        (json!({ "time_zone": "UTC", "ranges": [{ "weekday": "monday", "start": "9am", "end": "10:00" }] }), "ranges"),
        (
            json!({ "time_zone": "UTC", "ranges": [{ "weekday": "monday", "start": "11:00", "end": "10:00" }] }),
            "ranges",
        ),
        (
            json!({ "time_zone": "UTC", "ranges": [{ "weekday": "monday", "start": "09:00", "end": "11:00" },
                                                  { "weekday": "monday", "start": "10:00", "end": "12:00" }] }),
            "ranges",
        ),
    ] {
        let problem =
            assert_problem(send(&app, Method::PUT, &hours, &s.admin, Some(body.clone())).await, 400, INVALID).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    let absences = format!("/api/v1/therapists/{t}/absences");
    for (body, field) in [
        (json!({ "start": rfc3339(at(9, 0)), "end": rfc3339(at(8, 0)) }), "end"),
        (json!({ "start": "soon", "end": rfc3339(at(8, 0)) }), "start"),
    ] {
        let problem = assert_problem(post(&app, &absences, &s.admin, body).await, 400, INVALID).await;
        assert_eq!(problem["errors"][0]["field"], field);
    }

    // Listing and availability parameters.
    let availability = format!("/api/v1/therapists/{t}/availability");
    let (from, to) = (rfc3339(at(1, 0)), rfc3339(at(2, 0)));
    for (query, field) in [
        ("/api/v1/appointments?limit=0".to_owned(), "limit"),
        ("/api/v1/appointments?limit=101".to_owned(), "limit"),
        ("/api/v1/appointments?cursor=yesterday".to_owned(), "cursor"),
        ("/api/v1/appointments?from=monday".to_owned(), "from"),
        ("/api/v1/appointments?status=done".to_owned(), "status"),
        (format!("/api/v1/appointments?from={}&to={}", urlencode(&to), urlencode(&from)), "to"),
        (format!("{availability}?from={}&to={}", urlencode(&to), urlencode(&from)), "to"),
        (format!("{availability}?from={}&to={}", urlencode(&from), urlencode(&rfc3339(at(40, 0)))), "to"),
        (format!("{availability}?from={}&to={}&length_minutes=0", urlencode(&from), urlencode(&to)), "length_minutes"),
        (format!("{availability}?from={}&to={}&limit=5000", urlencode(&from), urlencode(&to)), "limit"),
        // Instants at the edge of what can be represented: refused, never an overflow (a panic
        // or a database error).
        (format!("{availability}?from=9999-12-30T00:00:00Z&to=9999-12-31T12:00:00Z"), "from"),
        (format!("/api/v1/therapists/{t}/absences?from=9999-12-01T00:00:00Z"), "from"),
        (format!("/api/v1/appointments?cursor=-300000000000000000_{}", uuid::Uuid::nil()), "cursor"),
    ] {
        let problem = assert_problem(get(&app, &query, &s.admin).await, 400, INVALID).await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
    assert_eq!(get(&app, "/api/v1/appointments?sort=start", &s.admin).await.status(), StatusCode::BAD_REQUEST);

    // Changes: nothing to change, fields that are not the client's to set, bad reasons.
    let created = book(&app, &s.admin, booking(p, t, at(6, 9), 50)).await;
    let path = format!("/api/v1/appointments/{}", created["id"].as_str().unwrap());
    for (body, field) in [
        (json!({}), "body"),
        (json!({ "payment_state": "paid" }), "payment_state"),
        (json!({ "status": "completed" }), "status"),
        (json!({ "start": rfc3339(at(6, 9) + Duration::seconds(1)) }), "start"),
        (json!({ "start": "9999-12-31T23:30:00Z" }), "start"),
        (json!({ "kind": "spa" }), "kind"),
    ] {
        let problem =
            assert_problem(send(&app, Method::PATCH, &path, &s.admin, Some(body.clone())).await, 400, INVALID).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    for (body, field) in [
        (json!({ "reason": "bored" }), "reason"),
        (json!({ "reason": "patient_erased" }), "reason"),
        (json!({ "reason": "other", "note": "y".repeat(2001) }), "note"),
    ] {
        let problem = assert_problem(post(&app, &format!("{path}/cancel"), &s.admin, body).await, 400, INVALID).await;
        assert_eq!(problem["errors"][0]["field"], field);
    }
    for status in ["cancelled", "done", "Confirmed"] {
        let problem = assert_problem(
            post(&app, &format!("{path}/status"), &s.admin, json!({ "status": status })).await,
            400,
            INVALID,
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "status");
    }
    assert_problem(get(&app, "/api/v1/appointments/not-a-uuid", &s.admin).await, 404, "urn:praxis:problem:not-found")
        .await;
    assert_problem(
        get(&app, &format!("/api/v1/appointments/{}", Uuid::now_v7()), &s.admin).await,
        404,
        "urn:praxis:problem:not-found",
    )
    .await;
    // Nothing half-written: the one valid booking (and its audit entry) only.
    let appointments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM appointments").fetch_one(&app.db.owner_pool).await.unwrap();
    assert_eq!(appointments, 0, "the owner sees no tenant rows");
    let mut tx =
        begin(&app.db.app_pool, &DbContext::user(s.practice.tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let appointments: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments").fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(appointments, 1);
    app.stop().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

/// An appointment of the setup's patient written straight to the store, as the practice's admin:
/// for times the API does not book (the past, one already started).
async fn insert_unchecked(
    app: &TestApp,
    s: &Setup,
    therapist: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> Uuid {
    let (id, tenant) = (Uuid::now_v7(), s.practice.tenant);
    let mut tx = begin(&app.db.app_pool, &DbContext::user(tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let appointment = store_postgres::appointments::NewAppointment {
        id,
        tenant,
        patient: PatientId::from_uuid(s.patient_id.parse().unwrap()),
        therapist: UserId::from_uuid(therapist.parse().unwrap()),
        slot: scheduling::Slot::new(start, end).unwrap(),
        kind: scheduling::AppointmentKind::FollowUp,
        notes_enc: None,
        created_at: SystemClock.now(),
    };
    store_postgres::appointments::insert(&mut tx, &appointment).await.unwrap();
    tx.commit().await.unwrap();
    id
}

#[actix_web::test]
async fn illegal_transitions_are_409_listing_what_is_allowed() {
    let app = start().await;
    let s = setup(&app, "Machine").await;
    let created = book(&app, &s.receptionist, booking(&s.patient_id, &s.therapist_a_id, at(4, 14), 50)).await;
    assert_eq!((created["status"].as_str(), created["payment_state"].as_str()), (Some("scheduled"), Some("unpaid")));
    let path = format!("/api/v1/appointments/{}", created["id"].as_str().unwrap());
    let status = |to: &str| json!({ "status": to });
    let allowed = |problem: &Value| -> Vec<String> {
        problem["allowed"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
    };

    // An outcome before the start: only what is possible now is listed.
    let problem =
        assert_problem(post(&app, &format!("{path}/status"), &s.admin, status("completed")).await, 409, ILLEGAL).await;
    assert_eq!(allowed(&problem), ["confirmed", "cancelled"]);
    let confirmed =
        json_of(post(&app, &format!("{path}/status"), &s.therapist_a, status("confirmed")).await, StatusCode::OK).await;
    assert_eq!(confirmed["status"], "confirmed");
    let problem =
        assert_problem(post(&app, &format!("{path}/status"), &s.admin, status("confirmed")).await, 409, ILLEGAL).await;
    assert_eq!(allowed(&problem), ["completed", "cancelled", "no_show"]);
    let problem =
        assert_problem(post(&app, &format!("{path}/status"), &s.admin, status("scheduled")).await, 409, ILLEGAL).await;
    assert!(problem["detail"].as_str().unwrap().contains("confirmed to scheduled"), "{problem}");
    let problem =
        assert_problem(post(&app, &format!("{path}/status"), &s.admin, status("no_show")).await, 409, ILLEGAL).await;
    assert_eq!(allowed(&problem), ["cancelled"]);

    let cancel = json!({ "reason": "patient_request", "note": "Called in with a cold." });
    let cancelled =
        json_of(post(&app, &format!("{path}/cancel"), &s.receptionist, cancel.clone()).await, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancellation"]["reason"], "patient_request");
    assert_eq!(cancelled["cancellation"]["note"], "Called in with a cold.");
    for (suffix, body) in [("cancel", cancel), ("status", status("confirmed")), ("status", status("completed"))] {
        let problem = assert_problem(post(&app, &format!("{path}/{suffix}"), &s.admin, body).await, 409, ILLEGAL).await;
        assert!(allowed(&problem).is_empty(), "a cancelled appointment allows nothing: {problem}");
    }
    let problem = assert_problem(
        send(&app, Method::PATCH, &path, &s.admin, Some(json!({ "start": rfc3339(at(5, 9)) }))).await,
        409,
        "urn:praxis:problem:conflict",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("cancelled"));

    // An appointment that has started (written straight to the store: the API books no past).
    let tenant = s.practice.tenant;
    let now = SystemClock.now();
    let past = insert_unchecked(&app, &s, &s.therapist_a_id, now - Duration::hours(2), now - Duration::hours(1)).await;
    let past_path = format!("/api/v1/appointments/{past}");
    let done =
        json_of(post(&app, &format!("{past_path}/status"), &s.therapist_a, status("completed")).await, StatusCode::OK)
            .await;
    assert_eq!(done["status"], "completed");
    let problem =
        assert_problem(post(&app, &format!("{past_path}/status"), &s.admin, status("no_show")).await, 409, ILLEGAL)
            .await;
    assert!(allowed(&problem).is_empty());
    // A patient cannot cancel or move an appointment that has started (the practice records
    // what happened), while the practice still can.
    let started =
        insert_unchecked(&app, &s, &s.therapist_b_id, now - Duration::minutes(10), now + Duration::minutes(40)).await;
    let started_path = format!("/api/v1/appointments/{started}");
    let late = json!({ "reason": "patient_request" });
    let problem = assert_problem(
        post(&app, &format!("{started_path}/cancel"), &s.patient, late.clone()).await,
        409,
        "urn:praxis:problem:conflict",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("has started"), "{problem}");
    let moved = json!({ "start": rfc3339(at(9, 9)), "end": rfc3339(at(9, 9) + Duration::minutes(50)) });
    assert_problem(
        send(&app, Method::PATCH, &started_path, &s.patient, Some(moved)).await,
        409,
        "urn:praxis:problem:conflict",
    )
    .await;
    json_of(post(&app, &format!("{started_path}/cancel"), &s.receptionist, late).await, StatusCode::OK).await;
    // The database holds the same machine, whatever the caller: completed cannot become scheduled.
    let mut tx = begin(&app.db.app_pool, &DbContext::user(tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let error = sqlx::query("UPDATE appointments SET status = 'scheduled' WHERE id = $1")
        .bind(past)
        .execute(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot change"), "{error}");
    tx.rollback().await.unwrap();

    // Every change is in the audit trail.
    let trail = json_of(
        get(&app, &format!("/api/v1/audit?resource_id={}", created["id"].as_str().unwrap()), &s.admin).await,
        StatusCode::OK,
    )
    .await;
    let actions: Vec<&str> =
        trail["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["appointment.cancel", "appointment.update", "appointment.create"]);
    app.stop().await;
}

#[actix_web::test]
async fn roles_see_and_manage_what_the_matrix_allows() {
    let app = start().await;
    let s = setup(&app, "Roles").await;
    let (p, ta, tb) = (s.patient_id.as_str(), s.therapist_a_id.as_str(), s.therapist_b_id.as_str());
    let other_patient = create_patient(&app, &s.admin, json!({ "name": "Someone Else" })).await;

    // A therapist books for themself, not for a colleague; a patient only for themself.
    let own = book(&app, &s.therapist_a, booking(p, ta, at(3, 8), 50)).await;
    assert_problem(
        post(&app, "/api/v1/appointments", &s.therapist_a, booking(p, tb, at(3, 11), 50)).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    let colleague = book(&app, &s.receptionist, booking(&other_patient, tb, at(3, 9), 50)).await;
    let mine = book(&app, &s.patient, booking(p, tb, at(3, 12), 50)).await;
    assert_problem(
        post(&app, "/api/v1/appointments", &s.patient, booking(&other_patient, tb, at(3, 14), 50)).await,
        404,
        "urn:praxis:problem:not-found",
    )
    .await;

    let ids = |page: &Value| -> Vec<String> {
        page["appointments"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
    };
    let id = |a: &Value| a["id"].as_str().unwrap().to_owned();
    // Receptionist and admin: everything. Therapist: what they conduct. Patient: their own.
    let all = json_of(get(&app, "/api/v1/appointments", &s.receptionist).await, StatusCode::OK).await;
    assert_eq!(ids(&all), [id(&own), id(&colleague), id(&mine)]);
    let a = json_of(get(&app, "/api/v1/appointments", &s.therapist_a).await, StatusCode::OK).await;
    assert_eq!(ids(&a), [id(&own)]);
    let b = json_of(get(&app, "/api/v1/appointments", &s.therapist_b).await, StatusCode::OK).await;
    assert_eq!(ids(&b), [id(&colleague), id(&mine)]);
    let patient = json_of(get(&app, "/api/v1/appointments", &s.patient).await, StatusCode::OK).await;
    assert_eq!(ids(&patient), [id(&own), id(&mine)]);
    // Filters narrow within what is visible, never beyond it.
    let filtered =
        json_of(get(&app, &format!("/api/v1/appointments?therapist_id={tb}"), &s.therapist_a).await, StatusCode::OK)
            .await;
    assert!(ids(&filtered).is_empty());
    let filtered =
        json_of(get(&app, &format!("/api/v1/appointments?patient_id={other_patient}"), &s.admin).await, StatusCode::OK)
            .await;
    assert_eq!(ids(&filtered), [id(&colleague)]);
    // Reading and changing someone else's: 404, as if it did not exist.
    for (who, appointment) in [(&s.therapist_a, &colleague), (&s.patient, &colleague), (&s.therapist_b, &own)] {
        let path = format!("/api/v1/appointments/{}", id(appointment));
        assert_problem(get(&app, &path, who).await, 404, "urn:praxis:problem:not-found").await;
        let cancel = json!({ "reason": "other" });
        assert_problem(post(&app, &format!("{path}/cancel"), who, cancel).await, 404, "urn:praxis:problem:not-found")
            .await;
    }
    // A therapist cannot hand their appointment to a colleague.
    let own_path = format!("/api/v1/appointments/{}", id(&own));
    let handover = json!({ "therapist_id": tb });
    assert_problem(
        send(&app, Method::PATCH, &own_path, &s.therapist_a, Some(handover.clone())).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    let moved =
        json_of(send(&app, Method::PATCH, &own_path, &s.receptionist, Some(handover)).await, StatusCode::OK).await;
    assert_eq!(moved["therapist_id"], tb);
    // Patients confirm and cancel, never record an outcome.
    let mine_path = format!("/api/v1/appointments/{}", id(&mine));
    assert_problem(
        post(&app, &format!("{mine_path}/status"), &s.patient, json!({ "status": "no_show" })).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    let confirmed = json_of(
        post(&app, &format!("{mine_path}/status"), &s.patient, json!({ "status": "confirmed" })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(confirmed["status"], "confirmed");

    // Calendars: a therapist manages their own, not a colleague's; patients manage none and do
    // not see absences, but do see working hours and free slots.
    set_hours(&app, &s.therapist_a, ta, all_day()).await;
    let hours_b = format!("/api/v1/therapists/{tb}/working-hours");
    assert_problem(
        send(&app, Method::PUT, &hours_b, &s.therapist_a, Some(all_day())).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    assert_problem(
        send(&app, Method::PUT, &hours_b, &s.patient, Some(all_day())).await,
        403,
        "urn:praxis:problem:forbidden",
    )
    .await;
    assert_eq!(json_of(get(&app, &hours_b, &s.patient).await, StatusCode::OK).await["time_zone"], "UTC");
    let away = json!({ "start": rfc3339(at(7, 0)), "end": rfc3339(at(8, 0)) });
    let absence_b = format!("/api/v1/therapists/{tb}/absences");
    assert_problem(post(&app, &absence_b, &s.therapist_a, away.clone()).await, 403, "urn:praxis:problem:forbidden")
        .await;
    json_of(post(&app, &absence_b, &s.therapist_b, away).await, StatusCode::CREATED).await;
    assert_problem(get(&app, &absence_b, &s.patient).await, 403, "urn:praxis:problem:forbidden").await;
    assert_problem(get(&app, &absence_b, &s.therapist_a).await, 403, "urn:praxis:problem:forbidden").await;
    assert_eq!(
        json_of(get(&app, &absence_b, &s.receptionist).await, StatusCode::OK).await.as_array().unwrap().len(),
        1
    );
    // A patient booking into the absence learns only that the time is taken.
    let problem = assert_problem(
        post(&app, "/api/v1/appointments", &s.patient, booking(p, tb, at(7, 10), 50)).await,
        409,
        SLOT_TAKEN,
    )
    .await;
    assert_eq!(problem["reason"], "slot_taken");
    assert!(problem.get("conflicting_slot").is_none(), "{problem}");
    assert!(!problem.to_string().contains(&rfc3339(at(7, 0))), "{problem}");
    let problem = assert_problem(
        post(&app, "/api/v1/appointments", &s.patient, booking(p, tb, at(3, 9), 50)).await,
        409,
        SLOT_TAKEN,
    )
    .await;
    assert!(problem.get("conflicting_slot").is_none(), "a patient is not told another patient's slot: {problem}");

    // API keys within their scopes.
    let key = |scopes: Value| {
        let (app, admin) = (&app, &s.admin);
        async move {
            let created = json_of(
                post(app, "/api/v1/api-keys", admin, json!({ "name": "widget", "scopes": scopes })).await,
                StatusCode::CREATED,
            )
            .await;
            created["api_key"].as_str().unwrap().to_owned()
        }
    };
    let reader = key(json!(["appointments:read"])).await;
    let writer = key(json!(["appointments:read", "appointments:write"])).await;
    let listed = app.client.get(app.url("/api/v1/appointments")).header("x-api-key", &reader).send().await.unwrap();
    assert_eq!(ids(&json_of(listed, StatusCode::OK).await).len(), 3);
    let refused = app
        .client
        .post(app.url("/api/v1/appointments"))
        .header("x-api-key", &reader)
        .json(&booking(p, ta, at(9, 9), 50))
        .send()
        .await
        .unwrap();
    assert_problem(refused, 403, "urn:praxis:problem:forbidden").await;
    let booked = app
        .client
        .post(app.url("/api/v1/appointments"))
        .header("x-api-key", &writer)
        .json(&booking(p, ta, at(9, 9), 50))
        .send()
        .await
        .unwrap();
    assert_eq!(booked.status(), StatusCode::CREATED);
    let hours = app.client.put(app.url(&hours_b)).header("x-api-key", &writer).json(&all_day()).send().await.unwrap();
    assert_problem(hours, 403, "urn:praxis:problem:forbidden").await;

    // Another practice sees nothing of this one.
    let other = setup(&app, "Elsewhere").await;
    assert!(ids(&json_of(get(&app, "/api/v1/appointments", &other.admin).await, StatusCode::OK).await).is_empty());
    assert_problem(get(&app, &own_path, &other.admin).await, 404, "urn:praxis:problem:not-found").await;
    app.stop().await;
}

#[actix_web::test]
async fn pages_walk_every_appointment_once_in_time_order() {
    let app = start().await;
    let s = setup(&app, "Pages").await;
    let mut booked = Vec::new();
    for day in 1..=7 {
        let created = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(day, 8), 30)).await;
        booked.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/appointments?limit=3&cursor={c}"),
            None => "/api/v1/appointments?limit=3".to_owned(),
        };
        let page = json_of(get(&app, &path, &s.receptionist).await, StatusCode::OK).await;
        seen.extend(page["appointments"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, booked);
    let range = format!(
        "/api/v1/appointments?from={}&to={}&therapist_id={}",
        urlencode(&rfc3339(at(2, 0))),
        urlencode(&rfc3339(at(4, 0))),
        s.therapist_a_id
    );
    let page = json_of(get(&app, &range, &s.admin).await, StatusCode::OK).await;
    let ids: Vec<&str> = page["appointments"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [booked[1].as_str(), booked[2].as_str()]);
    app.stop().await;
}

#[actix_web::test]
async fn availability_lists_free_slots_without_telling_absences_from_bookings() {
    let app = start().await;
    let s = setup(&app, "Free").await;
    let t = s.therapist_a_id.as_str();
    let mornings: Vec<Value> = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
        .iter()
        .map(|d| json!({ "weekday": d, "start": "09:00", "end": "13:00" }))
        .collect();
    set_hours(&app, &s.admin, t, json!({ "time_zone": "UTC", "ranges": mornings })).await;
    book(&app, &s.admin, booking(&s.patient_id, t, at(3, 10), 60)).await;
    let away = json!({ "start": rfc3339(at(3, 12)), "end": rfc3339(at(3, 13)) });
    json_of(post(&app, &format!("/api/v1/therapists/{t}/absences"), &s.admin, away).await, StatusCode::CREATED).await;
    let path = format!(
        "/api/v1/therapists/{t}/availability?from={}&to={}&length_minutes=60&step_minutes=60",
        urlencode(&rfc3339(at(3, 0))),
        urlencode(&rfc3339(at(4, 0)))
    );
    let expected = [(at(3, 9), at(3, 10)), (at(3, 11), at(3, 12))];
    for who in [&s.admin, &s.patient, &s.therapist_b] {
        let free = json_of(get(&app, &path, who).await, StatusCode::OK).await;
        let slots: Vec<(String, String)> = free["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["start"].as_str().unwrap().to_owned(), s["end"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(slots, expected.map(|(a, b)| (rfc3339(a), rfc3339(b))), "{free}");
        assert_eq!(free["time_zone"], "UTC");
    }
    // A free slot is bookable; the past never shows.
    book(&app, &s.patient, booking(&s.patient_id, t, at(3, 9), 60)).await;
    let past = format!(
        "/api/v1/therapists/{t}/availability?from={}&to={}",
        urlencode(&rfc3339(at(-2, 0))),
        urlencode(&rfc3339(at(-1, 0)))
    );
    assert!(json_of(get(&app, &past, &s.admin).await, StatusCode::OK).await["slots"].as_array().unwrap().is_empty());
    assert_problem(
        get(&app, &format!("/api/v1/therapists/{}/availability?from=a&to=b", Uuid::now_v7()), &s.admin).await,
        400,
        INVALID,
    )
    .await;
    let unknown = format!(
        "/api/v1/therapists/{}/availability?from={}&to={}",
        Uuid::now_v7(),
        urlencode(&rfc3339(at(3, 0))),
        urlencode(&rfc3339(at(4, 0)))
    );
    assert_problem(get(&app, &unknown, &s.admin).await, 404, "urn:praxis:problem:not-found").await;
    app.stop().await;
}

/// The reminders of one appointment as (status, skip reason), read as the practice.
async fn reminders_of(app: &TestApp, tenant: TenantId, appointment: &str) -> Vec<(String, Option<String>)> {
    let mut tx = begin(&app.db.app_pool, &DbContext::service(tenant)).await.unwrap();
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, skip_reason FROM appointment_reminders WHERE appointment_id = $1 ORDER BY created_at, due_at",
    )
    .bind(appointment.parse::<Uuid>().unwrap())
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    rows
}

#[actix_web::test]
async fn moving_and_cancelling_replan_and_drop_reminders_and_free_the_slot() {
    let app = start().await;
    let s = setup(&app, "Outbox").await;
    let tenant = s.practice.tenant;
    let created = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 10), 50)).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["reminders"][0]["due_at"], rfc3339(at(2, 10)), "one reminder, 24 hours before");
    assert_eq!(reminders_of(&app, tenant, id).await, [("pending".to_owned(), None)]);
    // Booked less than 25 hours ahead: the confirmation is the reminder.
    let mut soon_start =
        SystemClock.now().replace_second(0).unwrap().replace_nanosecond(0).unwrap() + Duration::hours(2);
    if soon_start.hour() >= 23 {
        // Keep clear of the minute the all-day hours leave out (23:59 to midnight).
        soon_start = at(1, 0) + Duration::minutes(5);
    }
    let soon = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_b_id, soon_start, 30)).await;
    assert!(soon["reminders"].as_array().unwrap().is_empty());

    let path = format!("/api/v1/appointments/{id}");
    let moved = json_of(
        send(&app, Method::PATCH, &path, &s.admin, Some(json!({ "start": rfc3339(at(4, 11)) }))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (moved["start"].as_str(), moved["end"].as_str()),
        (Some(rfc3339(at(4, 11)).as_str()), Some(rfc3339(at(4, 11) + Duration::minutes(50)).as_str()))
    );
    let reminders = moved["reminders"].as_array().unwrap();
    assert_eq!(reminders.len(), 2);
    assert_eq!(
        (reminders[0]["status"].as_str(), reminders[0]["skip_reason"].as_str()),
        (Some("skipped"), Some("appointment_moved"))
    );
    assert_eq!(
        (reminders[1]["status"].as_str(), reminders[1]["due_at"].as_str()),
        (Some("pending"), Some(rfc3339(at(3, 11)).as_str()))
    );
    // The old time is free again; the new one is taken.
    let other = create_patient(&app, &s.admin, json!({ "name": "Next Patient" })).await;
    book(&app, &s.admin, booking(&other, &s.therapist_a_id, at(3, 10), 50)).await;
    let problem = assert_problem(
        post(&app, "/api/v1/appointments", &s.admin, booking(&other, &s.therapist_a_id, at(4, 11), 50)).await,
        409,
        SLOT_TAKEN,
    )
    .await;
    assert_eq!(problem["conflicting_slot"]["start"], rfc3339(at(4, 11)));
    // Moving onto a taken slot is refused the same way.
    let problem = assert_problem(
        send(&app, Method::PATCH, &path, &s.admin, Some(json!({ "start": rfc3339(at(3, 10)) }))).await,
        409,
        SLOT_TAKEN,
    )
    .await;
    assert_eq!(problem["reason"], "slot_taken");

    let cancelled = json_of(
        post(&app, &format!("{path}/cancel"), &s.admin, json!({ "reason": "practice_closed" })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        reminders_of(&app, tenant, id).await,
        [
            ("skipped".to_owned(), Some("appointment_moved".to_owned())),
            ("skipped".to_owned(), Some("appointment_cancelled".to_owned()))
        ]
    );
    book(&app, &s.admin, booking(&other, &s.therapist_a_id, at(4, 11), 50)).await;
    app.stop().await;
}

#[actix_web::test]
async fn notes_are_sealed_under_the_patients_key_exported_and_shredded_with_it() {
    let app = start().await;
    let s = setup(&app, "Notes").await;
    const NOTE: &str = "Bring the Ueberweisungsschein from Dr. Kaltenbrunn";
    let mut body = booking(&s.patient_id, &s.therapist_a_id, at(5, 9), 50);
    body["notes"] = json!(NOTE);
    let created = book(&app, &s.receptionist, body).await;
    assert_eq!(created["notes"], NOTE);
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/appointments/{id}");
    // Listings say there are notes without opening them; reading one opens them for whoever may
    // see the appointment, also a therapist who may not see the patient record.
    let listed = json_of(get(&app, "/api/v1/appointments", &s.admin).await, StatusCode::OK).await;
    assert_eq!(listed["appointments"][0]["has_notes"], true);
    assert!(listed["appointments"][0].get("notes").is_none());
    let unassigned = create_patient(&app, &s.admin, json!({ "name": "Not Assigned" })).await;
    let mut body = booking(&unassigned, &s.therapist_b_id, at(5, 9), 50);
    body["notes"] = json!("Wheelchair access");
    let theirs = book(&app, &s.receptionist, body).await;
    let seen = json_of(
        get(&app, &format!("/api/v1/appointments/{}", theirs["id"].as_str().unwrap()), &s.therapist_b).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seen["notes"], "Wheelchair access");
    let patched = json_of(
        send(&app, Method::PATCH, &path, &s.therapist_a, Some(json!({ "notes": "Referral received" }))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(patched["notes"], "Referral received");
    let cleared =
        json_of(send(&app, Method::PATCH, &path, &s.therapist_a, Some(json!({ "notes": null }))).await, StatusCode::OK)
            .await;
    assert!(cleared.get("notes").is_none() && cleared["has_notes"] == false, "{cleared}");
    json_of(send(&app, Method::PATCH, &path, &s.therapist_a, Some(json!({ "notes": NOTE }))).await, StatusCode::OK)
        .await;
    let past = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_b_id, at(6, 9), 50)).await;
    let cancel = json!({ "reason": "other", "note": "Moving to Hamburg" });
    json_of(
        post(&app, &format!("/api/v1/appointments/{}/cancel", past["id"].as_str().unwrap()), &s.admin, cancel).await,
        StatusCode::OK,
    )
    .await;

    // In the database the notes are ciphertext.
    let dump: Vec<String> = sqlx::query_scalar("SELECT row_to_json(a)::text FROM appointments a")
        .fetch_all(&app.db.owner_pool)
        .await
        .unwrap();
    assert!(dump.is_empty(), "the owner sees no rows");
    let mut tx = begin(&app.db.app_pool, &DbContext::service(s.practice.tenant)).await.unwrap();
    let dump: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(a)::text FROM appointments a").fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    let dump = dump.join("\n");
    assert!(dump.contains(id));
    for clear in ["Ueberweisungsschein", "Kaltenbrunn", "Hamburg", "Wheelchair"] {
        assert!(!dump.contains(clear), "{clear} is stored in clear");
    }

    // The GDPR export holds the appointments with their notes and reminders.
    let export =
        json_of(get(&app, &format!("/api/v1/patients/{}/export", s.patient_id), &s.patient).await, StatusCode::OK)
            .await;
    crate::contract::assert_conforms(&export, "PatientExport");
    let appointments = export["appointments"].as_array().unwrap();
    assert_eq!(appointments.len(), 2, "{export}");
    assert_eq!(appointments[0]["notes"], NOTE);
    assert_eq!(appointments[0]["reminders"][0]["status"], "pending");
    assert_eq!(appointments[1]["cancellation"]["note"], "Moving to Hamburg");

    // Erasure: the future appointment is cancelled (the slot is free), the notes are gone.
    assert_eq!(
        send(&app, Method::DELETE, &format!("/api/v1/patients/{}", s.patient_id), &s.admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let after = json_of(get(&app, &path, &s.admin).await, StatusCode::OK).await;
    assert_eq!(
        (after["status"].as_str(), after["cancellation"]["reason"].as_str()),
        (Some("cancelled"), Some("patient_erased"))
    );
    assert_eq!((after["has_notes"].as_bool(), after.get("notes")), (Some(false), None));
    assert_eq!(after["reminders"][0]["skip_reason"], "patient_erased");
    let mut tx = begin(&app.db.app_pool, &DbContext::service(s.practice.tenant)).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM appointments WHERE patient_id = $1 AND (notes_enc IS NOT NULL OR cancel_note_enc IS NOT NULL)")
        .bind(s.patient_id.parse::<Uuid>().unwrap())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(left, 0);
    book(&app, &s.admin, booking(&unassigned, &s.therapist_a_id, at(5, 9), 50)).await;
    app.stop().await;
}

#[actix_web::test]
async fn the_payment_state_moves_only_through_verified_payment_events() {
    use scheduling::{PaymentEvent, PaymentState, PaymentUpdate};
    use store_postgres::appointments::apply_payment_event;
    let app = start().await;
    let s = setup(&app, "Payments").await;
    let created = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 9), 50)).await;
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let tenant = s.practice.tenant;
    let apply = |event: PaymentEvent| {
        let pool = app.db.app_pool.clone();
        async move {
            let mut tx = begin(&pool, &DbContext::service(tenant)).await.unwrap();
            let result = apply_payment_event(&mut tx, tenant, id, event).await.unwrap();
            tx.commit().await.unwrap();
            result
        }
    };
    assert_eq!(
        apply(PaymentEvent::PaymentFailed).await,
        Some((PaymentState::Unpaid, PaymentUpdate::Changed(PaymentState::Failed)))
    );
    assert_eq!(
        apply(PaymentEvent::CheckoutCompleted { paid: true }).await,
        Some((PaymentState::Failed, PaymentUpdate::Changed(PaymentState::Paid)))
    );
    assert_eq!(apply(PaymentEvent::PaymentSucceeded).await, Some((PaymentState::Paid, PaymentUpdate::Unchanged)));
    assert_eq!(apply(PaymentEvent::PaymentFailed).await, Some((PaymentState::Paid, PaymentUpdate::Stale)));
    let mut tx = begin(&app.db.app_pool, &DbContext::service(tenant)).await.unwrap();
    assert_eq!(apply_payment_event(&mut tx, tenant, Uuid::now_v7(), PaymentEvent::Refunded).await.unwrap(), None);
    tx.rollback().await.unwrap();
    let seen = json_of(get(&app, &format!("/api/v1/appointments/{id}"), &s.patient).await, StatusCode::OK).await;
    assert_eq!(seen["payment_state"], "paid");
    // No client sets it: not through the API, not through SQL as the runtime role.
    let problem = assert_problem(
        send(
            &app,
            Method::PATCH,
            &format!("/api/v1/appointments/{id}"),
            &s.admin,
            Some(json!({ "payment_state": "refunded" })),
        )
        .await,
        400,
        INVALID,
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "payment_state");
    let mut tx = begin(&app.db.app_pool, &DbContext::user(tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let error = sqlx::query("UPDATE appointments SET payment_state = 'refunded' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("verified payment event"), "{error}");
    tx.rollback().await.unwrap();
    // A refund still lands after a cancellation.
    json_of(
        post(&app, &format!("/api/v1/appointments/{id}/cancel"), &s.admin, json!({ "reason": "other" })).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        apply(PaymentEvent::Refunded).await,
        Some((PaymentState::Paid, PaymentUpdate::Changed(PaymentState::Refunded)))
    );
    app.stop().await;
}

/// Records what it is asked to send; fails the first `fail_first` sends of each reminder.
#[derive(Debug, Default)]
struct RecordingNotifier {
    sent: Mutex<Vec<ReminderMessage>>,
    attempts: Mutex<HashMap<String, u32>>,
    fail_first: u32,
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn send(&self, message: &ReminderMessage) -> Result<(), NotifyError> {
        // Take a moment, as a provider would, so that concurrent workers really overlap.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let count = attempts.entry(message.idempotency_key()).or_default();
            *count += 1;
            *count
        };
        if attempt <= self.fail_first {
            return Err(NotifyError::Temporary { code: "provider_timeout" });
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }
}

impl RecordingNotifier {
    fn sent(&self) -> Vec<ReminderMessage> {
        self.sent.lock().unwrap().clone()
    }
}

/// A worker on the test server's database and KMS, with its own clock.
fn worker(app: &TestApp, clock: &FixedClock, notifier: Arc<RecordingNotifier>) -> ReminderWorker {
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let state = api::AppState::from_config(Arc::new(app.config.clone()), clock).unwrap();
    let mut settings = WorkerSettings::from_config(&app.config.reminders);
    settings.round.batch_size = 4;
    ReminderWorker::new(state.app, notifier, settings)
}

async fn grant_reminders(app: &TestApp, who: &Value, patient: &str, action: &str) {
    let body = json!({ "purpose": "appointment_reminders", "action": action, "text_version": "rem-1",
                       "text": "Reminders of my appointments by message.", "channel": "paper" });
    json_of(post(app, &format!("/api/v1/patients/{patient}/consents"), who, body).await, StatusCode::CREATED).await;
}

#[actix_web::test]
async fn a_due_reminder_goes_out_once_when_consent_holds_and_not_after_it_is_withdrawn() {
    let app = start().await;
    let s = setup(&app, "Remind").await;
    let tenant = s.practice.tenant;
    grant_reminders(&app, &s.receptionist, &s.patient_id, "grant").await;
    let first = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 10), 50)).await;
    let second = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(4, 10), 50)).await;
    let clock = FixedClock::at(at(2, 9) + Duration::minutes(59));
    let notifier = Arc::new(RecordingNotifier::default());
    let worker = worker(&app, &clock, notifier.clone());

    // Nothing is due a minute early.
    assert_eq!(worker.tick().await.unwrap().claimed, 0);
    clock.advance(Duration::minutes(1));
    let report = worker.tick().await.unwrap();
    assert_eq!((report.claimed, report.sent), (1, 1), "{report:?}");
    let sent = notifier.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].appointment_id.to_string(), first["id"].as_str().unwrap());
    assert_eq!(sent[0].channel, scheduling::ReminderChannel::Whatsapp, "the first preferred reachable channel");
    assert_eq!(sent[0].to.expose(), "+4915112340000");
    assert_eq!(sent[0].time_zone.as_deref(), Some("UTC"));
    assert_eq!(reminders_of(&app, tenant, first["id"].as_str().unwrap()).await, [("sent".to_owned(), None)]);
    // Sent is sent: later rounds leave it alone.
    clock.advance(Duration::hours(1));
    assert_eq!(worker.tick().await.unwrap().claimed, 0);

    // The patient withdraws consent after booking: the next reminder is skipped, with the reason.
    grant_reminders(&app, &s.patient, &s.patient_id, "withdraw").await;
    clock.set(at(3, 10) + Duration::minutes(5));
    let report = worker.tick().await.unwrap();
    assert_eq!((report.claimed, report.sent, report.skipped), (1, 0, 1), "{report:?}");
    assert_eq!(notifier.sent().len(), 1, "nothing more was sent");
    assert_eq!(
        reminders_of(&app, tenant, second["id"].as_str().unwrap()).await,
        [("skipped".to_owned(), Some("no_consent".to_owned()))]
    );
    // The patient sees why in their appointment.
    let seen = json_of(
        get(&app, &format!("/api/v1/appointments/{}", second["id"].as_str().unwrap()), &s.patient).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seen["reminders"][0]["skip_reason"], "no_consent");
    // The worker's key use is in the audit trail, attributed to it.
    let unwraps = json_of(
        get(&app, &format!("/api/v1/audit?action=key.unwrap&resource_id={}", s.patient_id), &s.admin).await,
        StatusCode::OK,
    )
    .await;
    assert!(
        unwraps["entries"].as_array().unwrap().iter().any(|e| e["actor"]["component"] == "reminder-worker"),
        "{unwraps}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn reminders_without_a_contact_channel_or_for_a_cancelled_appointment_are_skipped_with_the_reason() {
    let app = start().await;
    let s = setup(&app, "Skips").await;
    let tenant = s.practice.tenant;
    let silent = create_patient(&app, &s.admin, json!({ "name": "No Phone" })).await;
    grant_reminders(&app, &s.admin, &silent, "grant").await;
    let unreachable = book(&app, &s.admin, booking(&silent, &s.therapist_a_id, at(3, 10), 50)).await;
    grant_reminders(&app, &s.admin, &s.patient_id, "grant").await;
    let cancelled = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_b_id, at(3, 10), 50)).await;
    // Cancelled after the worker could have seen it: the outbox row is dropped with the reason.
    let path = format!("/api/v1/appointments/{}/cancel", cancelled["id"].as_str().unwrap());
    json_of(post(&app, &path, &s.admin, json!({ "reason": "therapist_unavailable" })).await, StatusCode::OK).await;
    let clock = FixedClock::at(at(2, 10));
    let notifier = Arc::new(RecordingNotifier::default());
    let report = worker(&app, &clock, notifier.clone()).tick().await.unwrap();
    assert_eq!((report.claimed, report.skipped, report.sent), (1, 1, 0), "{report:?}");
    assert!(notifier.sent().is_empty());
    assert_eq!(
        reminders_of(&app, tenant, unreachable["id"].as_str().unwrap()).await,
        [("skipped".to_owned(), Some("no_contact_channel".to_owned()))]
    );
    assert_eq!(
        reminders_of(&app, tenant, cancelled["id"].as_str().unwrap()).await,
        [("skipped".to_owned(), Some("appointment_cancelled".to_owned()))]
    );
    app.stop().await;
}

#[actix_web::test]
async fn two_workers_at_once_send_each_reminder_exactly_once() {
    let app = start().await;
    let s = setup(&app, "Twins").await;
    grant_reminders(&app, &s.admin, &s.patient_id, "grant").await;
    let mut expected = Vec::new();
    for hour in 8..20u8 {
        let therapist = if hour % 2 == 0 { &s.therapist_a_id } else { &s.therapist_b_id };
        let created = book(&app, &s.admin, booking(&s.patient_id, therapist, at(3, hour), 50)).await;
        expected.push(created["id"].as_str().unwrap().to_owned());
    }
    let clock = FixedClock::at(at(3, 0));
    let notifier = Arc::new(RecordingNotifier::default());
    // Two workers (two server instances, each with its own state and pool) share one notifier.
    let (one, two) = (worker(&app, &clock, notifier.clone()), worker(&app, &clock, notifier.clone()));
    let mut rounds = 0;
    loop {
        let (a, b) = tokio::join!(one.tick(), two.tick());
        let (a, b) = (a.unwrap(), b.unwrap());
        rounds += 1;
        if a.claimed + b.claimed == 0 || rounds > 10 {
            break;
        }
    }
    let sent = notifier.sent();
    let mut keys: Vec<String> = sent.iter().map(ReminderMessage::idempotency_key).collect();
    keys.sort();
    let before = keys.len();
    keys.dedup();
    assert_eq!(before, keys.len(), "a reminder was sent twice");
    let mut appointments: Vec<String> = sent.iter().map(|m| m.appointment_id.to_string()).collect();
    appointments.sort();
    expected.sort();
    assert_eq!(appointments, expected, "every reminder was sent");
    app.stop().await;
}

#[actix_web::test]
async fn a_failed_send_is_retried_later_with_the_same_idempotency_key() {
    let app = start().await;
    let s = setup(&app, "Retry").await;
    grant_reminders(&app, &s.admin, &s.patient_id, "grant").await;
    let created = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 10), 50)).await;
    let clock = FixedClock::at(at(2, 10));
    let notifier = Arc::new(RecordingNotifier { fail_first: 1, ..RecordingNotifier::default() });
    let worker = worker(&app, &clock, notifier.clone());
    let report = worker.tick().await.unwrap();
    assert_eq!((report.claimed, report.retrying, report.sent), (1, 1, 0), "{report:?}");
    // Not again right away: the retry waits for its backoff.
    assert_eq!(worker.tick().await.unwrap().claimed, 0);
    let seen = json_of(
        get(&app, &format!("/api/v1/appointments/{}", created["id"].as_str().unwrap()), &s.admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (seen["reminders"][0]["status"].as_str(), seen["reminders"][0]["attempts"].as_i64()),
        (Some("pending"), Some(1))
    );
    clock.advance(Duration::minutes(2));
    let report = worker.tick().await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    let attempts = notifier.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 1, "both attempts carried one idempotency key: {attempts:?}");
    assert_eq!(attempts.values().copied().collect::<Vec<_>>(), [2]);
    app.stop().await;
}

#[actix_web::test]
async fn reencrypting_a_patient_moves_their_appointment_notes_to_the_new_key() {
    let app = start().await;
    let s = setup(&app, "Rekeyed").await;
    let mut body = booking(&s.patient_id, &s.therapist_a_id, at(3, 9), 50);
    body["notes"] = json!("Parking behind the house");
    let kept = book(&app, &s.admin, body).await;
    let dropped = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(4, 9), 50)).await;
    let cancel = json!({ "reason": "other", "note": "Prefers afternoons" });
    let dropped_path = format!("/api/v1/appointments/{}", dropped["id"].as_str().unwrap());
    json_of(post(&app, &format!("{dropped_path}/cancel"), &s.admin, cancel).await, StatusCode::OK).await;

    let options = api::reencrypt::Options {
        tenant: Some(s.practice.tenant),
        batch_size: 10,
        before: Some(SystemClock.now()),
        limit: None,
    };
    let summary = api::reencrypt::run(&app.config, options).await.unwrap();
    assert_eq!((summary.reencrypted, summary.failed), (1, 0));

    let kept_path = format!("/api/v1/appointments/{}", kept["id"].as_str().unwrap());
    assert_eq!(
        json_of(get(&app, &kept_path, &s.admin).await, StatusCode::OK).await["notes"],
        "Parking behind the house"
    );
    let seen = json_of(get(&app, &dropped_path, &s.admin).await, StatusCode::OK).await;
    assert_eq!(seen["cancellation"]["note"], "Prefers afternoons");
    let mut tx = begin(&app.db.app_pool, &DbContext::service(s.practice.tenant)).await.unwrap();
    let notes: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT coalesce(notes_enc, cancel_note_enc) FROM appointments WHERE notes_enc IS NOT NULL OR cancel_note_enc IS NOT NULL",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(notes.len(), 2);
    for note in notes {
        assert_eq!(crypto::FieldHeader::parse(&note).unwrap().dek().generation, 2, "sealed under the new key");
    }
    app.stop().await;
}

/// The same rules at the database, as the runtime role with one user's settings.
#[actix_web::test]
async fn runtime_role_with_one_users_settings_sees_only_their_appointments() {
    let app = start().await;
    let s = setup(&app, "Rows").await;
    let other_patient = create_patient(&app, &s.admin, json!({ "name": "Other Person" })).await;
    book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 9), 50)).await;
    book(&app, &s.admin, booking(&other_patient, &s.therapist_b_id, at(3, 9), 50)).await;
    let away = json!({ "start": rfc3339(at(8, 0)), "end": rfc3339(at(9, 0)) });
    json_of(
        post(&app, &format!("/api/v1/therapists/{}/absences", s.therapist_b_id), &s.admin, away).await,
        StatusCode::CREATED,
    )
    .await;
    let tenant = s.practice.tenant;
    let count = |context: DbContext, sql: &'static str| {
        let pool = app.db.app_pool.clone();
        async move {
            let mut tx = begin(&pool, &context).await.unwrap();
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut *tx).await.unwrap();
            tx.rollback().await.unwrap();
            n
        }
    };
    let therapist_a = DbContext::user(tenant, UserId::from_uuid(s.therapist_a_id.parse().unwrap()), Role::Therapist);
    let therapist_b = DbContext::user(tenant, UserId::from_uuid(s.therapist_b_id.parse().unwrap()), Role::Therapist);
    let patient_user: Uuid = s.patient["user"]["id"].as_str().unwrap().parse().unwrap();
    let receptionist = DbContext::user(tenant, UserId::new(), Role::Receptionist);
    assert_eq!(count(receptionist.clone(), "SELECT count(*) FROM appointments").await, 2);
    assert_eq!(count(receptionist.clone(), "SELECT count(*) FROM appointment_reminders").await, 2);
    assert_eq!(count(therapist_a.clone(), "SELECT count(*) FROM appointments").await, 1);
    assert_eq!(count(therapist_a.clone(), "SELECT count(*) FROM appointment_reminders").await, 1);
    assert_eq!(
        count(DbContext::user(tenant, UserId::new(), Role::Therapist), "SELECT count(*) FROM appointments").await,
        0
    );
    // A patient role with no linked account sees nothing (the link comes from users).
    assert_eq!(
        count(DbContext::user(tenant, UserId::new(), Role::Patient), "SELECT count(*) FROM appointments").await,
        0
    );
    let patient = DbContext::user(tenant, UserId::from_uuid(patient_user), Role::Patient);
    assert_eq!(count(patient.clone(), "SELECT count(*) FROM appointments").await, 1);
    assert_eq!(count(patient.clone(), "SELECT count(*) FROM therapist_absences").await, 0);
    assert_eq!(count(patient, "SELECT count(*) FROM working_hours").await, 2);
    // Absences: staff who manage the calendar, and the therapist themself.
    assert_eq!(count(receptionist, "SELECT count(*) FROM therapist_absences").await, 1);
    assert_eq!(count(therapist_b, "SELECT count(*) FROM therapist_absences").await, 1);
    assert_eq!(count(therapist_a.clone(), "SELECT count(*) FROM therapist_absences").await, 0);
    // Nobody deletes appointments; no context at all sees nothing; the due-reminder scan yields ids only.
    let mut tx = begin(&app.db.app_pool, &DbContext::user(tenant, s.practice.admin, Role::Admin)).await.unwrap();
    let error = sqlx::query("DELETE FROM appointments").execute(&mut *tx).await.unwrap_err().to_string();
    assert!(error.contains("permission denied"), "{error}");
    tx.rollback().await.unwrap();
    assert_eq!(count(DbContext::anonymous(), "SELECT count(*) FROM appointment_reminders").await, 0);
    assert_eq!(
        count(DbContext::anonymous(), "SELECT count(*) FROM reminders_due_practices(now() + interval '10 days', 10)")
            .await,
        1
    );
    app.stop().await;
}

/// A worker whose notifier is built from configuration, as `praxis serve` builds it: SMS through
/// Twilio at `api_base` (a local stand-in answering as Twilio does).
fn twilio_worker(app: &TestApp, clock: &FixedClock, api_base: &str) -> ReminderWorker {
    let mut config = app.config.clone();
    config.reminders.notifier = api::config::appointments::NotifierKind::Providers;
    config.reminders.channels = vec!["sms".into()];
    config.reminders.sms = Some(notifiers::twilio::TwilioSettings {
        api_base: api_base.to_owned(),
        account_sid: format!("AC{}", "0".repeat(32)),
        api_key_sid: None,
        auth_token: kernel::Secret::new(Uuid::new_v4().to_string()),
        from: Some("+15005550006".into()),
        messaging_service_sid: None,
    });
    let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "the configuration is valid: {problems:?}");
    let notifier = api::reminders::notifier_from_config(&config.reminders).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let settings = WorkerSettings::from_config(&config.reminders);
    let state = api::AppState::from_config(Arc::new(config), clock).unwrap();
    ReminderWorker::new(state.app, notifier, settings)
}

#[actix_web::test]
async fn with_the_providers_notifier_a_due_reminder_goes_out_as_a_twilio_sms_and_a_refusal_is_recorded() {
    use kms_http::test_server::{Response, Server};
    let app = start().await;
    let s = setup(&app, "Sms").await;
    let tenant = s.practice.tenant;
    grant_reminders(&app, &s.receptionist, &s.patient_id, "grant").await;
    let first = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 10), 50)).await;
    let second = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(4, 10), 50)).await;
    // Twilio accepts the first message and refuses the second: the recipient replied STOP.
    let calls = Arc::new(Mutex::new(0_u32));
    let counter = calls.clone();
    let twilio = Server::start(move |_| {
        let mut calls = counter.lock().unwrap();
        *calls += 1;
        if *calls == 1 {
            Response::json(201, &json!({ "sid": format!("SM{}", "1".repeat(32)), "status": "queued" }))
        } else {
            Response::json(
                400,
                &json!({ "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400 }),
            )
        }
    })
    .await;

    let clock = FixedClock::at(at(2, 10));
    let report = twilio_worker(&app, &clock, &twilio.url).tick().await.unwrap();
    assert_eq!((report.claimed, report.sent), (1, 1), "{report:?}");
    let request = &twilio.requests()[0];
    assert_eq!(request.path, format!("/2010-04-01/Accounts/AC{}/Messages.json", "0".repeat(32)));
    let form: HashMap<String, String> = kms_http::test_server::form_pairs(&request.body).into_iter().collect();
    assert_eq!(form["To"], "+4915112340000");
    assert_eq!(form["From"], "+15005550006");
    let start = at(3, 10);
    let expected_time = format!("{} {:02}:{:02} (UTC)", start.date(), start.hour(), start.minute());
    assert!(form["Body"].contains(&expected_time), "the local start is in the text: {}", form["Body"]);
    assert!(!form["Body"].contains("Patient"), "no name in the text: {}", form["Body"]);
    assert_eq!(reminders_of(&app, tenant, first["id"].as_str().unwrap()).await, [("sent".to_owned(), None)]);

    clock.set(at(3, 10) + Duration::minutes(5));
    let report = twilio_worker(&app, &clock, &twilio.url).tick().await.unwrap();
    assert_eq!((report.claimed, report.failed), (1, 1), "a permanent refusal is not retried: {report:?}");
    assert_eq!(reminders_of(&app, tenant, second["id"].as_str().unwrap()).await, [("failed".to_owned(), None)]);
    let mut tx = begin(&app.db.app_pool, &DbContext::service(tenant)).await.unwrap();
    let (error,): (Option<String>,) =
        sqlx::query_as("SELECT last_error FROM appointment_reminders WHERE appointment_id = $1")
            .bind(second["id"].as_str().unwrap().parse::<Uuid>().unwrap())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(error.as_deref(), Some("recipient_opted_out"));
    app.stop().await;
}

#[actix_web::test]
async fn the_providers_notifier_refuses_a_channel_without_its_settings() {
    let app = start().await;
    let mut config = app.config.clone();
    config.reminders.notifier = api::config::appointments::NotifierKind::Providers;
    config.reminders.channels = vec!["whatsapp".into(), "email".into()];
    let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
    let about_reminders: Vec<&String> = problems.iter().filter(|p| p.starts_with("reminders.")).collect();
    assert_eq!(about_reminders.len(), 2, "{problems:?}");
    assert!(
        about_reminders[0].contains("whatsapp is listed but [reminders.whatsapp] is not configured"),
        "{problems:?}"
    );
    assert!(about_reminders[1].contains("email is listed but [reminders.email] is not configured"), "{problems:?}");
    app.stop().await;
}

#[actix_web::test]
async fn a_worker_defers_reminders_when_its_lease_leaves_no_room_for_a_send() {
    let app = start().await;
    let s = setup(&app, "Lease").await;
    let tenant = s.practice.tenant;
    grant_reminders(&app, &s.receptionist, &s.patient_id, "grant").await;
    let booked = book(&app, &s.admin, booking(&s.patient_id, &s.therapist_a_id, at(3, 10), 50)).await;
    let clock = FixedClock::at(at(2, 10));
    let notifier = Arc::new(RecordingNotifier::default());

    // A lease shorter than one send may take: sending could outlast the claim, and another worker
    // could then send the same reminder again. The worker leaves it instead.
    let mut settings = WorkerSettings::from_config(&app.config.reminders);
    settings.round.lease = Duration::seconds(10);
    let worker_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let state = api::AppState::from_config(Arc::new(app.config.clone()), worker_clock).unwrap();
    let report = ReminderWorker::new(state.app, notifier.clone(), settings).tick().await.unwrap();
    assert_eq!((report.claimed, report.deferred, report.sent), (1, 1, 0), "{report:?}");
    assert!(notifier.sent().is_empty());
    assert_eq!(reminders_of(&app, tenant, booked["id"].as_str().unwrap()).await, [("pending".to_owned(), None)]);

    // Once that claim has run out, a worker with a sensible lease sends it.
    clock.advance(Duration::minutes(1));
    let report = worker(&app, &clock, notifier.clone()).tick().await.unwrap();
    assert_eq!((report.claimed, report.sent), (1, 1), "{report:?}");
    app.stop().await;
}
