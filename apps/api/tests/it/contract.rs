//! The OpenAPI document is as strict as the server: closed sets are enums, limits are the code's
//! constants, instants are `date-time`, cursors are strings, the export's parts have their real
//! schemas, and real responses conform to the schemas the document gives them. A malformed
//! body or query is answered naming the field, never with the parser's words.

use crate::identity::{bearer, create_practice, fast_hashing, login};
use crate::support::{TestApp, assert_problem};
use serde_json::{Value, json};

fn document() -> Value {
    serde_json::from_str(&api::openapi_document::document().unwrap()).unwrap()
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

fn property<'a>(doc: &'a Value, name: &str, field: &str) -> &'a Value {
    let property = &schema(doc, name)["properties"][field];
    assert!(property.is_object(), "{name} has no property {field}");
    property
}

/// The named component a `$ref` points at.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let name = reference.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {reference}"));
    schema(doc, name)
}

fn enum_of(doc: &Value, schema_name: &str) -> Vec<String> {
    schema(doc, schema_name)["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("{schema_name} is no enum"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn parameter<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
    let parameters = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
    parameters.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("GET {path} has no parameter {name}"))
}

/// Checks `value` against `schema` (of the document `doc`), collecting every mismatch with its
/// JSON path: types, required and unknown members, enums, formats and lengths. Patterns are
/// left to the unit tests of the fields' validators.
fn conform(doc: &Value, schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    if let Some(reference) = schema["$ref"].as_str() {
        conform(doc, resolve(doc, reference), value, path, problems);
        return;
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let matching = alternatives
            .iter()
            .filter(|alternative| {
                let mut found = Vec::new();
                conform(doc, alternative, value, path, &mut found);
                found.is_empty()
            })
            .count();
        if matching != 1 {
            problems.push(format!("{path}: matches {matching} of the oneOf alternatives: {value}"));
        }
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let type_ok = types.is_empty() || types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
    if !type_ok {
        problems.push(format!("{path}: {actual} where the schema says {types:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    match value {
        Value::String(text) => {
            let format_ok = match schema["format"].as_str() {
                Some("date-time") => {
                    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok()
                }
                Some("uuid") => text.parse::<uuid::Uuid>().is_ok(),
                Some("date") => patients::parse_date(text).is_some(),
                _ => true,
            };
            if !format_ok {
                problems.push(format!("{path}: {text:?} is no {}", schema["format"]));
            }
            let chars = text.chars().count() as u64;
            if schema["maxLength"].as_u64().is_some_and(|max| chars > max)
                || schema["minLength"].as_u64().is_some_and(|min| chars < min)
            {
                problems.push(format!("{path}: length {chars} outside the schema's bounds"));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    conform(doc, item_schema, item, &format!("{path}[{index}]"), problems);
                }
            }
        }
        Value::Object(members) => {
            let properties = schema["properties"].as_object();
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap();
                if !members.contains_key(required) {
                    problems.push(format!("{path}: required member {required} is missing"));
                }
            }
            for (name, member) in members {
                match properties.and_then(|p| p.get(name)) {
                    Some(member_schema) => conform(doc, member_schema, member, &format!("{path}.{name}"), problems),
                    None if schema["additionalProperties"] == false || properties.is_some() => {
                        problems.push(format!("{path}: member {name} is not in the schema"));
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
}

/// Panics with every mismatch unless `value` conforms to the document's schema `name`.
pub fn assert_conforms(value: &Value, name: &str) {
    let doc = document();
    let mut problems = Vec::new();
    conform(&doc, schema(&doc, name), value, name, &mut problems);
    assert!(problems.is_empty(), "the response does not conform to {name}:\n{}\n{value:#}", problems.join("\n"));
}

/// As `assert_conforms`, for a JSON array of `name`s.
pub fn assert_each_conforms(value: &Value, name: &str) {
    for item in value.as_array().unwrap_or_else(|| panic!("not an array: {value}")) {
        assert_conforms(item, name);
    }
}

#[test]
fn closed_sets_are_enums_of_what_the_server_accepts() {
    let doc = document();
    let kinds: Vec<&str> = scheduling::AppointmentKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(enum_of(&doc, "AppointmentKind"), kinds);
    let statuses: Vec<&str> = scheduling::AppointmentStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(enum_of(&doc, "AppointmentStatus"), statuses);
    assert!(!enum_of(&doc, "StatusChange").contains(&"cancelled".to_owned()), "cancelling needs /cancel and a reason");
    assert_eq!(enum_of(&doc, "PaymentState"), ["unpaid", "failed", "paid", "refunded"]);
    assert!(!enum_of(&doc, "CancelReason").contains(&"patient_erased".to_owned()), "set by erasure only");
    assert!(enum_of(&doc, "CancellationReason").contains(&"patient_erased".to_owned()));
    assert_eq!(enum_of(&doc, "ConsentPurpose").len(), consent::Purpose::ALL.len());
    assert_eq!(enum_of(&doc, "ConsentAction"), ["request", "grant", "withdraw", "archive"]);
    assert_eq!(enum_of(&doc, "EvidenceChannel").len(), consent::Channel::ALL.len());
    assert_eq!(
        enum_of(&doc, "Weekday"),
        ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    );
    assert!(!enum_of(&doc, "StaffRole").contains(&"patient".to_owned()));
    assert_eq!(enum_of(&doc, "AuditAction").len(), audit::Action::ALL.len());
    let zones = enum_of(&doc, "TimeZone");
    assert!(zones.len() > 300, "{} time zones", zones.len());
    for zone in ["Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"] {
        assert!(zones.contains(&zone.to_owned()), "{zone}");
        assert!(scheduling::WeeklyHours::new(zone, Vec::new()).is_ok(), "{zone}");
    }
    for zone in &zones {
        assert!(scheduling::WeeklyHours::new(zone, Vec::new()).is_ok(), "the server refuses listed zone {zone}");
    }

    // The fields use them.
    let refers = |name: &str, field: &str, target: &str| {
        let p = property(&doc, name, field);
        let reference = p["$ref"]
            .as_str()
            .or_else(|| p["items"]["$ref"].as_str())
            .or_else(|| p["oneOf"].as_array().and_then(|alts| alts.iter().find_map(|alt| alt["$ref"].as_str())));
        assert_eq!(reference, Some(format!("#/components/schemas/{target}").as_str()), "{name}.{field}: {p}");
    };
    refers("NewAppointmentRequest", "kind", "AppointmentKind");
    refers("AppointmentView", "kind", "AppointmentKind");
    refers("AppointmentView", "status", "AppointmentStatus");
    refers("AppointmentView", "payment_state", "PaymentState");
    refers("StatusRequest", "status", "StatusChange");
    refers("CancelRequest", "reason", "CancelReason");
    refers("CancellationView", "reason", "CancellationReason");
    refers("ReminderView", "status", "ReminderStatus");
    refers("ConsentChangeRequest", "purpose", "ConsentPurpose");
    refers("ConsentChangeRequest", "action", "ConsentAction");
    refers("ConsentChangeRequest", "channel", "EvidenceChannel");
    refers("ConsentView", "allowed_actions", "ConsentAction");
    refers("WorkingRange", "weekday", "Weekday");
    refers("WorkingHoursDocument", "time_zone", "TimeZone");
    refers("NewUserRequest", "role", "StaffRole");
    refers("NewApiKeyRequest", "scopes", "ApiScope");
    refers("EntryView", "action", "AuditAction");
    assert_eq!(parameter(&doc, "/api/v1/appointments", "status")["schema"]["enum"].as_array().unwrap().len(), 5);
    assert_eq!(parameter(&doc, "/api/v1/audit", "outcome")["schema"]["enum"], json!(["success", "failure", "denied"]));
}

#[test]
fn limits_are_the_codes_constants() {
    let doc = document();
    let number = |name: &str, field: &str, key: &str| property(&doc, name, field)[key].as_u64();
    let as_u64 = |n: usize| Some(n as u64);
    let policy = identity::PasswordPolicy::default();
    for (name, field) in
        [("NewUserRequest", "password"), ("PasswordChange", "new_password"), ("PatientAccountRequest", "password")]
    {
        assert_eq!(number(name, field, "minLength"), as_u64(policy.min_chars), "{name}.{field}");
        assert_eq!(number(name, field, "maxLength"), as_u64(policy.max_bytes), "{name}.{field}");
    }
    assert_eq!(number("LoginRequest", "password", "maxLength"), as_u64(app::sessions::PASSWORD_MAX_BYTES));
    assert_eq!(number("LoginRequest", "email", "maxLength"), as_u64(app::sessions::LOGIN_EMAIL_MAX_BYTES));
    assert_eq!(number("NewUserRequest", "email", "maxLength"), as_u64(identity::account::EMAIL_MAX_LEN));
    assert_eq!(number("NewApiKeyRequest", "scopes", "minItems"), Some(1));
    assert_eq!(number("NewApiKeyRequest", "scopes", "maxItems"), as_u64(app::accounts::API_KEY_MAX_SCOPES));
    assert_eq!(number("NewApiKeyRequest", "name", "maxLength"), as_u64(app::accounts::API_KEY_NAME_MAX_CHARS));
    assert_eq!(
        number("NewApiKeyRequest", "expires_in_days", "maximum"),
        Some(u64::from(app::accounts::API_KEY_MAX_DAYS))
    );
    for name in ["NewPatientRequest", "PatientPatchRequest"] {
        assert_eq!(number(name, "name", "maxLength"), as_u64(patients::NAME_MAX_CHARS));
        assert_eq!(number(name, "email", "maxLength"), as_u64(patients::EMAIL_MAX_LEN));
        assert_eq!(number(name, "address", "maxLength"), as_u64(patients::ADDRESS_MAX_CHARS));
        assert_eq!(number(name, "clinical_notes", "maxLength"), as_u64(patients::CLINICAL_NOTES_MAX_CHARS));
        assert_eq!(property(&doc, name, "date_of_birth")["format"], "date");
        assert_eq!(property(&doc, name, "phone")["pattern"], r"^\+[1-9][0-9]{6,14}$");
    }
    for (name, field) in [("NewAppointmentRequest", "notes"), ("AppointmentPatch", "notes"), ("CancelRequest", "note")]
    {
        assert_eq!(number(name, field, "maxLength"), as_u64(app::appointments::MAX_NOTE_CHARS), "{name}.{field}");
    }
    assert_eq!(number("WorkingHoursDocument", "ranges", "maxItems"), as_u64(7 * scheduling::MAX_RANGES_PER_DAY));
    let text_version = property(&doc, "ConsentChangeRequest", "text_version")["pattern"].as_str().unwrap();
    assert!(text_version.ends_with(&format!("{{1,{}}}$", consent::evidence::MAX_TEXT_VERSION_BYTES)), "{text_version}");
    let evidence_ref = property(&doc, "ConsentChangeRequest", "evidence_ref")["pattern"].as_str().unwrap();
    assert!(evidence_ref.ends_with(&format!("{{1,{}}}$", consent::evidence::MAX_NOTE_REF_BYTES)), "{evidence_ref}");

    let maximum = |path: &str, name: &str| parameter(&doc, path, name)["schema"]["maximum"].as_u64();
    assert_eq!(maximum("/api/v1/patients", "limit"), Some(u64::from(app::patients::MAX_PAGE_SIZE)));
    assert_eq!(maximum("/api/v1/appointments", "limit"), Some(u64::from(app::appointments::MAX_PAGE_SIZE)));
    assert_eq!(maximum("/api/v1/audit", "limit"), Some(u64::from(audit::Page::MAX_LIMIT)));
    assert_eq!(maximum("/api/v1/therapists/{id}/availability", "limit"), as_u64(scheduling::MAX_FREE_SLOTS));
}

#[test]
fn instants_are_date_times_and_cursors_opaque_strings_everywhere() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for p in operation["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                if name == "from" || name == "to" {
                    assert_eq!(
                        p["schema"],
                        json!({ "type": "string", "format": "date-time" }),
                        "{method} {path} {name}"
                    );
                }
                if name == "cursor" {
                    assert_eq!(p["schema"], json!({ "type": "string" }), "{method} {path} cursor");
                }
            }
        }
    }
    for page in ["PatientPage", "AppointmentPage", "AuditEntries"] {
        assert_eq!(property(&doc, page, "next_cursor")["type"], json!(["string", "null"]), "{page}");
        assert!(property(&doc, page, "next_cursor").get("format").is_none(), "{page}");
    }
}

#[test]
fn the_export_and_the_patch_say_what_they_are() {
    let doc = document();
    for (field, item) in [
        ("appointments", "AppointmentView"),
        ("consents", "ConsentView"),
        ("consent_history", "ConsentEventView"),
        ("messages", "MessageView"),
        ("audit", "EntryView"),
    ] {
        assert_eq!(
            property(&doc, "PatientExport", field)["items"]["$ref"],
            format!("#/components/schemas/{item}"),
            "PatientExport.{field}"
        );
    }
    let history = &doc["paths"]["/api/v1/patients/{id}/consents/history"]["get"]["responses"]["200"];
    assert_eq!(
        history["content"]["application/json"]["schema"]["items"]["$ref"],
        "#/components/schemas/ConsentEventView"
    );

    // `status` and `payment_state` change elsewhere: the patch does not list them (the server
    // refuses them by name, see the appointments tests).
    let patch = schema(&doc, "AppointmentPatch");
    assert!(patch["properties"].get("status").is_none() && patch["properties"].get("payment_state").is_none());
    assert_eq!(patch["additionalProperties"], false);

    // Every reference resolves.
    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(members) => {
                if let Some(Value::String(reference)) = members.get("$ref") {
                    found.push(reference);
                }
                members.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    references(&doc, &mut found);
    for reference in found {
        // Schemas and the shared response headers (`#/components/headers/...`).
        let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("not a local $ref: {reference}"));
        assert!(doc.pointer(pointer).is_some_and(Value::is_object), "{reference} points at nothing");
    }
}

#[actix_web::test]
async fn a_body_that_does_not_fit_is_answered_naming_the_field() {
    let app = TestApp::start_with(fast_hashing, api::server::no_extra_routes).await;
    let practice = create_practice(&app, "Malformed").await;
    let admin = login(&app, practice.tenant, &practice.admin_email).await;
    let send = |path: &'static str, body: String| {
        app.client
            .post(app.url(path))
            .header("authorization", bearer(&admin))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let patient = json!({ "name": "Field Named" });
    let created: Value = send("/api/v1/patients", patient.to_string()).await.unwrap().json().await.unwrap();
    let patient_id = created["id"].as_str().unwrap().to_owned();
    let therapist = practice.admin.to_string();

    let cases = [
        (
            "/api/v1/appointments",
            json!({ "patient_id": "0190a1b2-c3d4", "therapist_id": therapist, "start": "2030-01-01T09:00:00Z",
                    "end": "2030-01-01T10:00:00Z", "kind": "follow_up" }),
            "patient_id",
            "must be a UUID",
        ),
        (
            "/api/v1/appointments",
            json!({ "patient_id": patient_id, "therapist_id": therapist, "start": "2030-01-01T09:00:00Z",
                    "end": "2030-01-01T10:00:00Z", "kind": "follow_up", "room": "3" }),
            "room",
            "is not a field of this body",
        ),
        ("/api/v1/appointments", json!({ "patient_id": patient_id }), "therapist_id", "is required"),
        ("/api/v1/patients", json!({ "name": 7 }), "name", "must be a string"),
        ("/api/v1/patients", json!([{ "name": "A" }]), "body", "must be a JSON object"),
        ("/api/v1/api-keys", json!({ "name": "k", "scopes": "audit:read" }), "scopes", "must be an array"),
    ];
    for (path, body, field, message) in cases {
        let response = send(path, body.to_string()).await.unwrap();
        let problem = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
        assert_eq!(problem["errors"], json!([{ "field": field, "message": message }]), "{path} {body}");
        assert!(problem.get("detail").is_none(), "{problem}");
        assert_conforms(&problem, "Problem");
    }

    // Query parameters are named the same way.
    for (query, field, message) in [
        ("/api/v1/patients?limit=abc", "limit", "must be a non-negative integer in range"),
        ("/api/v1/patients?sort=name", "sort", "is not a parameter of this operation"),
        ("/api/v1/audit?actor_user=12", "actor_user", "must be a UUID"),
    ] {
        let response = app.client.get(app.url(query)).header("authorization", bearer(&admin)).send().await.unwrap();
        let problem = assert_problem(response, 400, "urn:praxis:problem:validation-failed").await;
        assert_eq!(problem["errors"], json!([{ "field": field, "message": message }]), "{query}");
    }

    // Not JSON at all: where, not what the parser thought.
    let response = send("/api/v1/patients", r#"{"name": "A",}"#.to_owned()).await.unwrap();
    let problem = assert_problem(response, 400, "urn:praxis:problem:bad-request").await;
    let detail = problem["detail"].as_str().unwrap();
    assert_eq!(detail, "The body is not well-formed JSON (line 1, column 14).");
    for body in [r#"{"patient_id": "0190a1b2-c3d4"}"#, "[1, 2", "{\"name\": \"A\"} trailing"] {
        let problem = send("/api/v1/appointments", body.to_owned()).await.unwrap().json::<Value>().await.unwrap();
        let text = problem.to_string();
        for internal in ["Json deserialize", "UUID parsing", "invalid length", "expected"] {
            assert!(!text.contains(internal), "{body} -> {text}");
        }
    }
    app.stop().await;
}
